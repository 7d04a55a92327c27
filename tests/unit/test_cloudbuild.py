"""cloudbuild/tf-serving-base.yaml against the Cloud Build API's own ``Build`` message.

Cloud Build's config file is the ``Build`` resource in YAML (cloud.google.com/build/docs/
build-config). The schema here is the real one: the ``google-cloud-build`` client's
generated ``Build`` type (the API's protos), parsed strictly, so a misspelt field, a
wrong type or an enum value Cloud Build does not have fails here instead of at
``gcloud builds submit``. Beside it: every ``$_VAR`` the file uses is declared and every
declared one is used (``substitutionOption: MUST_MATCH`` refuses either), each base with
a ``build:`` block gives exactly the substitutions the workflow passes, and the steps'
shell scripts, substituted as Cloud Build would, pass bash and shellcheck (the check step
is run, on good and bad values).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.cloud.devtools.cloudbuild_v1.types import Build, BuildOptions
from google.protobuf.json_format import ParseError

from scripts.image.base_build import CLOUDBUILD_CONFIG, SUBSTITUTION_KEYS, plan_build
from scripts.image.bases import load_catalog
from tests.conftest import requirement_missing

REPOSITORY = "us-docker.pkg.dev/acme-ml/serving-bases/tensorflow-serving"
COMMIT = "bc7e9d2b9a419294c4526e293c2df8727b0d3116"  # tensorflow/serving's tag 2.20.0
# What a build config may hold (the fields of Build a request sets); the rest of Build
# (id, status, results, logUrl, createTime…) is output only.
CONFIG_FIELDS = {
    "steps",
    "timeout",
    "queueTtl",
    "logsBucket",
    "options",
    "substitutions",
    "tags",
    "serviceAccount",
    "secrets",
    "availableSecrets",
    "artifacts",
    "images",
}
BUILT_IN = {"PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION"}  # sourceless builds
# $$ is a literal $; then $NAME or ${NAME}.
_REFERENCE = re.compile(r"\$\$|\$\{([A-Za-z0-9_]+)\}|\$([A-Za-z0-9_]+)")


def config() -> dict[str, Any]:
    data = yaml.safe_load(CLOUDBUILD_CONFIG.read_text())
    assert isinstance(data, dict)
    return data


def parse(data: dict[str, Any]) -> Build:
    """Strictly: an unknown field is an error (ignore_unknown_fields=False)."""
    return Build.from_json(json.dumps(data), ignore_unknown_fields=False)


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def referenced(data: dict[str, Any]) -> set[str]:
    """The substitutions used where Cloud Build applies them: steps and images."""
    names = set()
    for text in strings(data["steps"]) + strings(data["images"]):
        for match in _REFERENCE.finditer(text):
            if match.group(0) != "$$":
                names.add(match.group(1) or match.group(2))
    return names


def substitute(text: str, values: dict[str, str]) -> str:
    """Cloud Build's substitution: $$ → $, $_VAR and ${_VAR} → the value."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return values[match.group(1) or match.group(2)]

    return _REFERENCE.sub(one, text)


def step(data: dict[str, Any], step_id: str) -> dict[str, Any]:
    found = next(s for s in data["steps"] if s.get("id") == step_id)
    assert isinstance(found, dict)
    return found


# -- the format ------------------------------------------------------------------------------
def test_the_config_parses_strictly_into_the_cloud_build_api_build_message() -> None:
    data = config()
    build = parse(data)
    assert set(data) <= CONFIG_FIELDS, set(data) - CONFIG_FIELDS
    assert [s.id for s in build.steps] == ["check", "clone", "devel", "runtime"]
    assert build.options.machine_type == BuildOptions.MachineType.E2_HIGHCPU_32
    assert build.options.disk_size_gb >= 200
    assert data["options"]["substitutionOption"] == "MUST_MATCH"
    assert build.options.logging == BuildOptions.LoggingMode.CLOUD_LOGGING_ONLY
    assert build.timeout.total_seconds() >= 3 * 3600  # a TF Serving build takes hours
    assert build.queue_ttl.total_seconds() > 0
    assert list(build.images) == ["${_IMAGE}:${_TF_SERVING_VERSION}-${_MARCH}"]
    assert set(build.tags) == {"tf-release-pipeline", "tf-serving-base"}
    for tag in build.tags:  # Cloud Build's tag rule
        assert re.fullmatch(r"[\w][\w.-]{0,127}", tag), tag


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("a top-level field", lambda d: d.__setitem__("optoins", d.pop("options"))),
        (
            "an option",
            lambda d: d["options"].__setitem__("machinetype", d["options"].pop("machineType")),
        ),
        ("a step field", lambda d: d["steps"][0].__setitem__("entrypont", "bash")),
        ("an enum value", lambda d: d["options"].__setitem__("machineType", "E2_HIGHCPU_64")),
        ("a type", lambda d: d.__setitem__("tags", "tf-serving-base")),
        ("a duration", lambda d: d.__setitem__("timeout", "4.5 hours")),
    ],
)
def test_a_misspelt_or_mistyped_copy_fails_the_schema(
    where: str, change: Any, tmp_path: Path
) -> None:
    copy = tmp_path / "tf-serving-base.yaml"
    shutil.copy(CLOUDBUILD_CONFIG, copy)
    data = yaml.safe_load(copy.read_text())
    change(data)
    copy.write_text(yaml.safe_dump(data))
    with pytest.raises(ParseError):
        parse(yaml.safe_load(copy.read_text()))


def test_the_build_json_fixture_is_a_build_resource_of_this_config() -> None:
    path = Path(__file__).resolve().parents[1] / "data" / "cloudbuild" / "build-success.json"
    data = json.loads(path.read_text())
    build = parse(data)  # the fixture has the API's real shape, output fields included
    assert build.status == Build.Status.SUCCESS
    assert build.results.images[0].digest.startswith("sha256:")
    assert [s.id for s in build.steps] == [s["id"] for s in config()["steps"]]


# -- substitutions ---------------------------------------------------------------------------
def test_every_substitution_used_is_declared_and_every_declared_one_is_used() -> None:
    data = config()
    declared = set(data["substitutions"])
    used = referenced(data)
    custom = {n for n in used if n.startswith("_")}
    assert custom == declared, (
        f"used, not declared: {custom - declared}; declared, unused: {declared - custom}"
    )
    assert used - custom <= BUILT_IN, used - custom  # anything else needs $$ (a shell $)
    for name in declared:
        assert re.fullmatch(r"_[A-Z0-9_]+", name), name  # Cloud Build's rule for user keys


def test_each_buildable_base_gives_exactly_the_substitutions_the_workflow_passes() -> None:
    catalog = load_catalog()
    declared = set(config()["substitutions"])
    buildable = [n for n, b in catalog.bases.items() if b.build is not None]
    assert buildable, "kustomize/bases.yaml has no base with a build: block"
    for name in buildable:
        plan = plan_build(catalog, name, REPOSITORY)
        given = plan.substitutions()
        assert set(given) == set(SUBSTITUTION_KEYS) <= declared, name
        base = catalog.bases[name]
        assert base.build is not None
        assert given["_MARCH"] == base.build.march
        assert given["_TF_SERVING_VERSION"] == base.build.tf_serving_version
        # What `gcloud builds submit --substitutions` receives parses back to the same map.
        flag = dict(item.split("=", 1) for item in plan.substitutions_flag().split(","))
        assert flag == given
        assert plan.image == f"{REPOSITORY}:{base.build.tf_serving_version}-{base.build.march}"


# -- the steps' scripts ----------------------------------------------------------------------
def _values(name: str | None) -> dict[str, str]:
    values = {k: str(v) for k, v in config()["substitutions"].items()}
    if name is not None:
        values |= plan_build(load_catalog(), name, REPOSITORY).substitutions()
    return values


def _run_step(
    step_data: dict[str, Any], values: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    env = dict(item.split("=", 1) for item in (substitute(e, values) for e in step_data["env"]))
    args = [substitute(a, values) for a in step_data["args"]]
    return subprocess.run(
        [step_data["entrypoint"], *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize("base", ["c2-cascadelake", "c3-sapphirerapids"])
def test_the_check_step_accepts_every_buildable_base(base: str) -> None:
    if base not in load_catalog().bases:
        pytest.skip(f"{base} is no longer in kustomize/bases.yaml")
    proc = _run_step(step(config(), "check"), _values(base))
    assert proc.returncode == 0, proc.stderr
    assert f"for {REPOSITORY}" in proc.stdout


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("_IMAGE", None, "_IMAGE=REGION-docker.pkg.dev/PROJECT"),  # the file's placeholder
        ("_IMAGE", f"{REPOSITORY}:2.20.0", "without a tag"),
        ("_TF_SERVING_VERSION", "master", "release tag"),
        ("_MARCH", "native", "build machine's CPU"),
        ("_MARCH", "-march=x86-64", "-march value"),
        ("_BAZEL_JOBS", "0", "number of jobs"),
    ],
)
def test_the_check_step_refuses_bad_substitutions_in_seconds(
    key: str, value: str | None, says: str
) -> None:
    values = _values(None)  # the file's own defaults: the _IMAGE placeholder
    if key != "_IMAGE" or value is not None:
        values |= plan_build(load_catalog(), "c2-cascadelake", REPOSITORY).substitutions()
    if value is not None:
        values[key] = value
    proc = _run_step(step(config(), "check"), values)
    assert proc.returncode == 1, proc.stdout
    assert says in proc.stderr


def test_the_steps_scripts_pass_bash_and_shellcheck(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        requirement_missing("shellcheck")
    values = _values("c2-cascadelake")
    for step_data in config()["steps"]:
        assert step_data["entrypoint"] == "bash" and step_data["args"][0] == "-ec"
        script = tmp_path / f"{step_data['id']}.sh"
        script.write_text("#!/usr/bin/env bash\n" + substitute(step_data["args"][1], values))
        syntax = subprocess.run(
            ["bash", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False
        )
        assert syntax.returncode == 0, f"{step_data['id']}: {syntax.stderr}"
        lint = subprocess.run(
            [shellcheck, "-s", "bash", str(script)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert lint.returncode == 0, f"{step_data['id']}: {lint.stdout}"


FAKE_DOCKER = '#!/bin/sh\nfor a in "$@"; do printf "%s\\0" "$a"; done >> "$DOCKER_ARGV"\n'


def _docker_argv(tmp_path: Path, step_id: str, base: str) -> list[str]:
    """Run a docker step as Cloud Build would (its env, its dir under /workspace), with a
    docker that only records its argv."""
    workspace = tmp_path / "workspace"
    (workspace / "serving").mkdir(parents=True, exist_ok=True)
    (workspace / "tf-serving-commit").write_text(COMMIT + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    argv_file = tmp_path / f"{step_id}.argv"
    data = step(config(), step_id)
    values = _values(base)
    env = dict(item.split("=", 1) for item in (substitute(e, values) for e in data["env"]))
    proc = subprocess.run(
        [data["entrypoint"], *(substitute(a, values) for a in data["args"])],
        cwd=workspace / data["dir"],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "DOCKER_ARGV": str(argv_file), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return argv_file.read_text().split("\0")[:-1]


def _build_args(argv: list[str]) -> dict[str, str]:
    pairs = [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"]
    return dict(p.split("=", 1) for p in pairs)


def test_the_devel_step_builds_the_tags_commit_with_an_explicit_march(tmp_path: Path) -> None:
    argv = _docker_argv(tmp_path, "devel", "c3-sapphirerapids")
    assert argv[0] == "build"
    assert argv[argv.index("--file") + 1] == "tensorflow_serving/tools/docker/Dockerfile.devel"
    args = _build_args(argv)
    # The release flags, then the target CPU; host tools keep the toolchain's generic flags.
    assert args["TF_SERVING_BUILD_OPTIONS"] == "--config=release --copt=-march=sapphirerapids"
    # Dockerfile.devel downloads TF_SERVING_VERSION_GIT_COMMIT (master by default).
    assert args["TF_SERVING_VERSION_GIT_COMMIT"] == COMMIT
    assert args["TF_SERVING_VERSION_GIT_BRANCH"] == "2.20.0"
    assert args["TF_SERVING_BAZEL_OPTIONS"] == "--jobs=24"
    text = " ".join(argv)
    assert "--host_copt" not in text and "nativeopt" not in text and "=native" not in text
    assert argv[-1] == "."


def test_the_runtime_step_tags_the_image_the_config_pushes(tmp_path: Path) -> None:
    argv = _docker_argv(tmp_path, "runtime", "c2-cascadelake")
    assert argv[argv.index("--file") + 1] == "tensorflow_serving/tools/docker/Dockerfile"
    args = _build_args(argv)
    assert args["TF_SERVING_BUILD_IMAGE"] == "tf-serving-devel:build"  # the devel step's tag
    tag = argv[argv.index("--tag") + 1]
    pushed = substitute(config()["images"][0], _values("c2-cascadelake"))
    assert tag == pushed == f"{REPOSITORY}:2.20.0-cascadelake"
    labels = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--label")
    assert labels["org.opencontainers.image.revision"] == COMMIT
    assert labels["org.opencontainers.image.version"] == "2.20.0"
    assert labels["dev.tf-release-pipeline.base.march"] == "cascadelake"
