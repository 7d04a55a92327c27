"""The GitHub Actions workflows, statically: linters, hygiene, and drift against the CLI.

* actionlint (with shellcheck on every ``run:`` block), zizmor (offline, default persona,
  no finding at any severity) and GitHub's workflow schema (check-jsonschema) pass;
  shellcheck also reads the composite action's ``run:`` blocks, which actionlint skips.
* Hygiene: ``permissions: {}`` at the top and least privilege per job, ``timeout-minutes``
  on every job, ``persist-credentials: false`` on every checkout, third-party actions
  pinned by commit SHA with the version in a comment, no ``${{ }}`` inside ``run:``.
* Drift: every ``python -m scripts …`` a workflow runs is expanded by bash (as the runner
  does) and parsed by the CLI's own parser, so a renamed flag breaks this test, not a
  release.

The linters are installed by ``make test`` (requirements-dev.txt, Debian's shellcheck):
under ``make test`` a missing one fails here; it is never skipped there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.cli import build_parser
from scripts.errors import UsageError
from scripts.manifests.policy import ABLATION
from tests.conftest import requirement_missing

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONS = sorted((ROOT / ".github" / "actions").glob("*/action.yml"))
BIN = Path(sys.executable).parent
DELIVERY = ("deliver.yml", "release.yml", "deploy.yml")
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(?:/[\w./-]+)?@[0-9a-f]{40}$")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads `on:` as True
    assert isinstance(data, dict)
    return data


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        requirement_missing(name)
    return found


def steps(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield name, job, step


# -- linters ---------------------------------------------------------------------------------
def actionlint(repository: Path) -> subprocess.CompletedProcess[str]:
    """actionlint on a repository's workflows, with shellcheck on their run: blocks."""
    return subprocess.run(
        [tool("actionlint"), "-shellcheck", tool("shellcheck")],
        cwd=repository,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_actionlint_with_shellcheck_passes() -> None:
    proc = actionlint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_would_catch_a_shell_mistake(tmp_path: Path) -> None:
    # The check above can fail: the same linters on a workflow with an unquoted variable.
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "bad.yml").write_text(
        "on: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-24.04\n"
        "    timeout-minutes: 1\n    steps:\n      - run: ls $HOME/*\n"
    )
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    proc = actionlint(tmp_path)
    assert proc.returncode == 1 and "SC2086" in proc.stdout, proc.stdout


def test_shellcheck_passes_on_the_composite_actions_run_blocks(tmp_path: Path) -> None:
    for path in ACTIONS:
        for index, step in enumerate(load(path)["runs"]["steps"]):
            if "run" not in step:
                continue
            script = tmp_path / f"{path.parent.name}-{index}.sh"
            script.write_text("#!/usr/bin/env bash\n" + step["run"])
            proc = subprocess.run(
                [tool("shellcheck"), "-s", "bash", str(script)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, f"{path}: {proc.stdout}"


def test_zizmor_finds_nothing_at_any_severity() -> None:
    proc = subprocess.run(
        [tool("zizmor"), "--offline", "--min-severity", "informational", ".github"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout + proc.stderr


def test_the_workflows_and_the_action_match_githubs_schemas() -> None:
    checker = tool("check-jsonschema")
    for schema, files in (
        ("vendor.github-workflows", WORKFLOWS),
        ("vendor.github-actions", ACTIONS),
    ):
        proc = subprocess.run(
            [checker, "--builtin-schema", schema, *map(str, files)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


# -- hygiene ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_timeouts_and_pinned_actions(path: Path) -> None:
    workflow = load(path)
    assert workflow.get("permissions") == {}, "permissions: {} at the top"
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, f"{name}: no job-level permissions"
        if "uses" not in job:  # a job calling a workflow has no runner of its own
            assert isinstance(job.get("timeout-minutes"), int), f"{name}: no timeout-minutes"
    text = path.read_text()
    for job_name, _, step in steps(workflow):
        uses = step.get("uses")
        if uses is None:
            assert "${{" not in step["run"], f"{job_name}: an expression inside run:"
            continue
        if uses.startswith("$/"):
            continue
        assert SHA_PIN.match(uses), f"{job_name}: {uses} is not pinned by commit SHA"
        line = next(line for line in text.splitlines() if uses in line)
        assert re.search(r"# v\d+\.\d+\.\d+$", line), f"{uses}: no version comment"
        if uses.startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False


def test_jobs_bind_environments_as_the_delivery_needs() -> None:
    deliver = load(ROOT / ".github" / "workflows" / "deliver.yml")
    jobs = deliver["jobs"]
    promote = jobs["promote"]["environment"]
    # Promotion waits for the target environment's reviewers; nothing else does.
    assert promote == {"name": "${{ inputs.environment }}", "deployment": False}
    for name in ("preflight", "build", "canary", "rollback"):
        assert jobs[name]["environment"] == {
            "name": "${{ inputs.environment }}-canary",
            "deployment": False,
        }, name
    assert "environment" not in jobs["conclude"]
    concurrency = deliver["concurrency"]
    assert "inputs.model" in concurrency["group"] and "inputs.environment" in concurrency["group"]
    assert concurrency["cancel-in-progress"] is False
    # The rollback never waits for a promotion that passed, and runs for every other end.
    assert "always()" in jobs["rollback"]["if"]
    assert set(jobs["conclude"]["needs"]) == set(jobs) - {"conclude"}


def test_callers_pass_only_declared_inputs_and_grant_what_deliver_needs() -> None:
    deliver = load(ROOT / ".github" / "workflows" / "deliver.yml")
    declared = deliver["on"]["workflow_call"]["inputs"]
    required = {k for k, v in declared.items() if v.get("required")}
    needed: dict[str, str] = {}
    for job in deliver["jobs"].values():
        for scope, level in job["permissions"].items():
            if level == "write" or needed.get(scope) != "write":
                needed[scope] = level
    for caller in ("release.yml", "deploy.yml"):
        job = load(ROOT / ".github" / "workflows" / caller)["jobs"]["deliver"]
        assert job["uses"] == "$/.github/workflows/deliver.yml"
        assert set(job["with"]) <= set(declared), caller
        assert required <= set(job["with"]), caller
        for scope, level in needed.items():
            granted = job["permissions"].get(scope, "none")
            assert (granted, level) in {("write", "write"), ("write", "read"), ("read", "read")}, (
                f"{caller} grants {scope}: {granted}; deliver.yml needs {level}"
            )


def test_the_manual_deploy_offers_exactly_the_models_and_overlays_here() -> None:
    inputs = load(ROOT / ".github" / "workflows" / "deploy.yml")["on"]["workflow_dispatch"][
        "inputs"
    ]
    models = sorted(p.parent.name for p in (ROOT / "models").glob("*/model.yaml"))
    overlays = sorted(  # ablations (docs/bench.md) are measured, never deployed
        p.parent.name
        for p in (ROOT / "kustomize" / "overlays").glob("*/kustomization.yaml")
        if ABLATION not in p.read_text()
    )
    assert sorted(inputs["model"]["options"]) == models
    assert sorted(inputs["overlay"]["options"]) == sorted(["auto", *overlays])
    assert inputs["environment"]["type"] == "environment"
    assert len(inputs) <= 25


def test_the_base_image_workflow_offers_the_buildable_bases_and_splits_its_powers() -> None:
    from scripts.commands.bases import DEFAULT_WAIT_S
    from scripts.image.base_build import CLOUDBUILD_CONFIG
    from scripts.image.bases import load_catalog

    workflow = load(ROOT / ".github" / "workflows" / "base-image.yml")
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    buildable = sorted(n for n, b in load_catalog().bases.items() if b.build is not None)
    assert sorted(inputs["base"]["options"]) == buildable
    assert inputs["base"]["type"] == "choice"
    assert workflow["concurrency"]["cancel-in-progress"] is False
    assert "inputs.base" in workflow["concurrency"]["group"]
    build, pull = workflow["jobs"]["build"], workflow["jobs"]["pull-request"]
    # Cloud credentials and repository writes never meet in one job.
    assert build["permissions"] == {"contents": "read", "id-token": "write"}
    assert pull["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert pull["needs"] == "build"
    for name, job in workflow["jobs"].items():
        writes = {k for k, v in job["permissions"].items() if v == "write"}
        assert not ({"id-token"} < writes), f"{name} mixes cloud credentials with writes"
    # The wait fits in the job, and the Cloud Build (queue and run) fits in the wait.
    config = yaml.safe_load(CLOUDBUILD_CONFIG.read_text())
    build_s = float(config["timeout"].rstrip("s")) + float(config["queueTtl"].rstrip("s"))
    assert build_s < DEFAULT_WAIT_S < build["timeout-minutes"] * 60 - 10 * 60
    assert build["timeout-minutes"] <= 360  # GitHub-hosted runners' limit
    submit = next(s for s in build["steps"] if "gcloud builds submit" in s.get("run", ""))
    args = submit["run"].split()
    assert "--no-source" in args and "--async" in args
    assert args[args.index("--config") + 1] == str(CLOUDBUILD_CONFIG.relative_to(ROOT))
    assert submit["env"]["SUBSTITUTIONS"] == "${{ steps.plan.outputs.substitutions }}"
    assert submit["if"] == "inputs.build-id == ''"  # a resumed build is not submitted again
    assert build["outputs"]["build"] == "${{ steps.wait.outputs.build }}"
    assert pull["steps"][-1]["env"]["BUILD_JSON"] == "${{ needs.build.outputs.build }}"


def test_the_calibration_workflow_offers_the_deploy_choices_and_splits_its_powers() -> None:
    workflow = load(ROOT / ".github" / "workflows" / "gate-calibrate.yml")
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    deploy = load(ROOT / ".github" / "workflows" / "deploy.yml")["on"]["workflow_dispatch"]
    assert inputs["model"]["options"] == deploy["inputs"]["model"]["options"]
    assert inputs["overlay"]["options"] == [
        o for o in deploy["inputs"]["overlay"]["options"] if o != "auto"
    ]
    assert inputs["environment"]["type"] == "environment"
    # It takes the canary slot: queued with the environment's deliveries, never cancelled.
    deliver = load(ROOT / ".github" / "workflows" / "deliver.yml")
    assert workflow["concurrency"]["group"] == deliver["concurrency"]["group"]
    assert workflow["concurrency"]["cancel-in-progress"] is False
    calibrate, pull = workflow["jobs"]["calibrate"], workflow["jobs"]["pull-request"]
    # Cluster credentials and repository writes never meet in one job.
    assert calibrate["permissions"] == {"contents": "read", "id-token": "write"}
    assert pull["permissions"] == {"contents": "write", "pull-requests": "write"}
    assert calibrate["environment"]["name"] == "${{ inputs.environment }}-canary"
    assert calibrate["outputs"]["calibration"] == "${{ steps.calibrate.outputs.calibration }}"
    assert pull["steps"][-1]["env"]["CALIBRATION"] == "${{ needs.calibrate.outputs.calibration }}"


# -- drift ------------------------------------------------------------------------------------
# Values for the variables the run: blocks read, valid for the flags they feed.
SAMPLES = {
    "TARGET": "k8s",
    "MODEL": "digits",
    "VERSION": "3",
    "OVERLAY": "production",
    "ENVIRONMENT": "production",
    "IMAGE_REPOSITORY": "europe-west4-docker.pkg.dev/acme/models",
    "BASE_IMAGE": "",  # unset repository variable: the pinned default base
    "SOURCE": "github://acme/models/releases/204481001/digits-3.tar.gz",
    "SHA256": "a" * 64,
    "ARCHIVE_SHA256": "a" * 64,
    "KNOWN_IMAGE": "",
    "IMAGE": "europe-west4-docker.pkg.dev/acme/models/digits@sha256:" + "b" * 64,
    "DEPLOYMENT_ID": "101",
    "CANARY_DEPLOYMENT_ID": "102",
    "RELEASE_ID": "204481001",
    "PROTOCOL": "rest",
    "GATE_MODE": "baseline",
    "DRY_RUN": "false",
    "VERDICT": "fail",
    "PROMOTE_RESULT": "skipped",
    "ACTION": "rolled back",
    "ENVIRONMENT_URL": "",
    "RELEASE_ENVIRONMENT": "production",
    "RELEASE_OVERLAY": "",
    "GENERATOR_IMAGE": "localhost:5000/tf-loadgen@sha256:" + "c" * 64,
    "LOADGEN_BASE": "",  # unset repository variable: the default Python base
    "PYTHONUNBUFFERED": "1",
    "BENCH_ALLOW_FORKS": "false",
    "BENCH_MODEL": "",
    "BENCH_PLAN": '{"pr": 42}',
    "BENCH_NAMESPACE": "tf-bench",
    "BENCH_RESULT": "cancelled",
    "BENCH_MAX_RPS": "",  # unset repository variable: bench's own ceiling
    "BASE": "c2-cascadelake",
    "BASE_REPOSITORY": "us-docker.pkg.dev/acme/serving-bases/tensorflow-serving",
    "GCP_PROJECT": "acme",
    "CLOUD_BUILD_REGION": "global",
    "BUILD_ID": "",  # the workflow_dispatch input left empty: a new build
    "BUILD_JSON": '{"id":"3b8e0a52-0d0f-4c2e-9a57-6f3b1c2d4e5f","status":"SUCCESS"}',
    "TRIALS": "10",
    "CALIBRATION": '{"target":"k8s","trials":10}',
}
CAPTURE = (
    'python() { if [ "$1" = -m ] && [ "$2" = scripts ]; then shift 2; '
    'printf "%s\\0" "$@" >> "$CAPTURED"; printf "\\n\\0" >> "$CAPTURED"; else exit 97; fi; }\n'
)


def invocations() -> list[tuple[str, str, list[str]]]:
    """(workflow, step, argv) of every `python -m scripts` the workflows run, as bash
    expands it with sample values."""
    found = []
    for path in [*WORKFLOWS, *ACTIONS]:
        data = load(path)
        env_top = data.get("env", {})
        if "jobs" in data:
            entries = [
                (
                    f"{n}/{s.get('id', s.get('name', '?'))}",
                    {**env_top, **j.get("env", {}), **s.get("env", {})},
                    s,
                )
                for n, j, s in steps(data)
            ]
        else:
            entries = [
                (f"action/{i}", s.get("env", {}), s) for i, s in enumerate(data["runs"]["steps"])
            ]
        for where, env, step in entries:
            script = step.get("run", "")
            if "python -m scripts" not in script:
                continue
            for argv in _expand(script, env):
                found.append((path.name, where, argv))
    return found


def _expand(script: str, env: dict[str, Any]) -> list[list[str]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        captured = Path(tmp) / "argv"
        captured.touch()
        # An existing RUNNER_TEMP, as on a runner: a step may write its output there
        # (kind.yml keeps the generator-image JSON for the next step).
        runner_temp = Path(tmp) / "runner-temp"
        runner_temp.mkdir()
        values = {name: SAMPLES.get(name, "x") for name in env}
        unknown = [n for n in env if n not in SAMPLES and n != "GITHUB_TOKEN"]
        assert not unknown, f"add sample values for {unknown} to SAMPLES"
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", CAPTURE + script],
            env={
                "PATH": os.environ["PATH"],
                "CAPTURED": str(captured),
                "RUNNER_TEMP": str(runner_temp),
                **values,
            },
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        chunks = captured.read_text().split("\n\0")
        return [chunk.split("\0")[:-1] for chunk in chunks if chunk]


def test_every_workflow_command_parses_with_the_cli() -> None:
    commands = invocations()
    names = {" ".join(argv[:2]) for _, _, argv in commands}
    # The delivery's commands are all there (a job that stops calling one is a change).
    assert {
        "preflight --target",
        "github resolve",
        "deliver build",
        "deliver canary",
        "deliver promote",
        "deliver rollback",
        "deliver conclude",
    } <= names, names
    assert {"bases plan", "bases wait", "bases record"} <= names, names
    assert {"gate calibrate", "gate record"} <= names, names
    parser = build_parser()
    for workflow, where, argv in commands:
        try:
            args = parser.parse_args(argv)
        except UsageError as exc:
            pytest.fail(f"{workflow} {where}: `python -m scripts {' '.join(argv)}`: {exc}")
        assert args.json, f"{workflow} {where}: without --json the output is not machine-read"


def test_a_renamed_flag_would_break_the_drift_test() -> None:
    workflow, where, argv = next(c for c in invocations() if c[2][:2] == ["deliver", "canary"])
    renamed = [a.replace("--gate-mode", "--gate") for a in argv]
    with pytest.raises(UsageError, match="--gate"):
        build_parser().parse_args(renamed)
    assert (workflow, where) == ("deliver.yml", "canary/canary")
