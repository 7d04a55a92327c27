"""Recorded GitHub events replayed through the committed workflows, end to end.

``tests/events/*.json`` (shaped like GitHub's payloads) drive ``release.yml`` and
``deploy.yml``, which call ``deliver.yml``: the very ``python -m scripts`` commands the
jobs run, in ``needs`` order, with their ``if:`` conditions, outputs and concurrency
groups (tests/workflow_runner.py). Around them, real components on 127.0.0.1: the fake
GitHub API (releases, assets, deployments, statuses, release notes), the real registry
the images are pushed to and the local target pulls them from, real TensorFlow models
served by the local target, real Locust load and the real gate.

The repository under test is a copy of this one, as a user's would be, with a shorter
smoke profile and a gate tolerance for mechanics (see tests/data/gate_mechanics.yaml:
these tests prove the delivery, not the gate's accuracy, which benchmarks measure).

The story, in order (each test builds on the previous one's stable release):
1. digits-v1 is published; the first attempt breaks half-way (GitHub fails while the
   canary job records); the re-run delivers it: one deployment record, not two.
2. digits-v2 rejects every request (packaged without warm-up records, which it would
   fail at load): the gate fails, the canary is rolled back at once,
   the record says failure, the release notes say so, v1 keeps serving.
3. digits-v3 and digits-v4 are published seconds apart: the second delivery waits for
   the first, then is gated against v3, the first's outcome.
4. A manual deploy of `previous` rolls back on purpose: v3's digest, no rebuild.
5. A manual dry run changes nothing and records nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT, DigitsReleases, package_digits, requirement_missing
from tests.fakes.github_api import FakeGitHub
from tests.fakes.registry_server import RegistryServer, registry_available
from tests.workflow_runner import ConcurrencyGroups, RunnerConfig, WorkflowResult, WorkflowRunner

pytestmark = [pytest.mark.integration, pytest.mark.tensorflow, pytest.mark.slow]
EVENTS = REPO_ROOT / "tests" / "events"
TOKEN = "ghs_replayed_workflow_token"


@dataclass
class Repository:
    workspace: Path
    github: FakeGitHub
    registry: RegistryServer
    runner: WorkflowRunner
    releases: dict[int, Path]
    run_ids: Iterator[int]

    def publish(self, version: int, *, release_id: int | None = None) -> dict[str, Any]:
        """Create the release on the fake GitHub (with its assets) and return the event."""
        release_id = release_id or 204481000 + version
        release = self.github.add_release(release_id, f"digits-v{version}", body="Notes.")
        archive = self.releases[version]
        self.github.add_asset(release, archive.name, archive.read_bytes())
        checksum = archive.with_name(archive.name + ".sha256")
        self.github.add_asset(release, checksum.name, checksum.read_bytes())
        event = json.loads((EVENTS / "release.published.json").read_text())
        event["release"] |= {"id": release_id, "tag_name": f"digits-v{version}"}
        assert isinstance(event, dict)
        return event

    def deliver(
        self, event: dict[str, Any], *, run_id: int | None = None, attempt: int = 1
    ) -> WorkflowResult:
        return self.runner.run_event(
            "release.yml",
            "release",
            event,
            run_id=run_id or next(self.run_ids),
            run_attempt=attempt,
        )

    def dispatch(self, **inputs: Any) -> WorkflowResult:
        event = json.loads((EVENTS / "workflow_dispatch.json").read_text())
        event["inputs"] |= inputs
        return self.runner.run_event(
            "deploy.yml", "workflow_dispatch", event, run_id=next(self.run_ids)
        )

    def stable(self) -> dict[str, Any]:
        state = json.loads(
            (
                self.workspace / ".pipeline" / "local" / "default" / "digits" / "state.json"
            ).read_text()
        )
        assert "canary" not in state["tracks"], "a canary was left running"
        stable: dict[str, Any] = state["tracks"]["stable"]
        return stable

    def artifact(self, result: WorkflowResult, name: str) -> Path:
        path = self.runner.config.artifacts / name
        assert path.is_dir(), f"no artifact {name}: {sorted(p.name for p in path.parent.iterdir())}"
        return path


def _export_rejecting(work: Path, version: int) -> subprocess.Popen[bytes]:
    """Start exporting the model that rejects every request (package it when it ends)."""
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "tests" / "fakes" / "rejecting_model.py"),
            str(work / "export"),
            str(version),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _workspace(root: Path) -> Path:
    """A copy of this repository (what a user's checkout would hold), with a shorter smoke
    test and the mechanics gate tolerance."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    workspace = root / "workspace"
    for name in files:
        source = REPO_ROOT / name
        if source.is_file():
            target = workspace / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    spec_path = workspace / "models" / "digits" / "model.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    # 180 samples a track (7 s at 25 req/s gave 175), in 3 s: the failing release is judged
    # on as many samples as before, above the min_samples below.
    spec["load_profiles"]["smoke"] = {"users": 4, "rate": 60, "duration_s": 3, "warmup_s": 2}
    spec["slos"]["min_samples"] = 120
    mechanics = yaml.safe_load((REPO_ROOT / "tests" / "data" / "gate_mechanics.yaml").read_text())
    spec["gate"] = {"baseline": mechanics["baseline"]}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return workspace


@pytest.fixture(scope="module")
def repository(
    tmp_path_factory: pytest.TempPathFactory, digits_releases: DigitsReleases
) -> Iterator[Repository]:
    if not registry_available():
        requirement_missing("docker-registry (Debian package)")
    root = tmp_path_factory.mktemp("replay")
    rejecting = _export_rejecting(root, 2)  # beside the digits releases being trained
    try:
        releases = digits_releases(1, 3, 4)
        _, err = rejecting.communicate(timeout=300)
    finally:
        if rejecting.poll() is None:
            rejecting.kill()
            rejecting.wait()
    assert rejecting.returncode == 0, err.decode(errors="replace")[-3000:]
    # Without warm-up records: with them, v2 would fail its own warm-up request and never
    # become ready (as under TF Serving; tests/integration/test_warmup.py), and the gate
    # this story shows rejecting it would never see it.
    releases[2] = package_digits(root, 2, "--no-warmup")
    github = FakeGitHub().start()
    github.token = TOKEN
    registry = RegistryServer().start()
    workspace = _workspace(root)
    runner = WorkflowRunner(
        RunnerConfig(
            workspace=workspace,
            python_bin=Path(sys.executable).parent,
            vars={
                "DELIVERY_TARGET": "local",
                "IMAGE_REPOSITORY": f"{registry.host}/models",
                "TF_SERVING_BASE": "scratch",
                "RELEASE_ENVIRONMENT": "production",
                "RELEASE_OVERLAY": "local",
            },
            env={
                "GITHUB_API_URL": github.api_url,
                "XDG_CACHE_HOME": str(root / "cache"),
                "HOME": str(root / "home"),
                "TF_CPP_MIN_LOG_LEVEL": "2",
                "TF_PIPELINE_GITHUB_PACING": "0",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            token=TOKEN,
            repository=github.full_name,
            artifacts=root / "artifacts",
            concurrency=ConcurrencyGroups(),
        )
    )
    (root / "artifacts").mkdir()
    (root / "home").mkdir()
    repo = Repository(
        workspace, github, registry, runner, releases, iter(range(9_100_001, 9_200_000))
    )
    try:
        yield repo
    finally:
        subprocess.run(
            [sys.executable, "-m", "scripts", "teardown", "--target", "local", "-q"],
            cwd=workspace,
            capture_output=True,
            timeout=120,
            check=False,
        )
        registry.stop()
        github.stop()


def _check(result: WorkflowResult, expected: str) -> None:
    assert result.conclusion == expected, result.log()


def _records(github: FakeGitHub, environment: str) -> list[Any]:
    return sorted(github.deployments_to(environment), key=lambda d: d.id)


# -- 1 ---------------------------------------------------------------------------------------
def test_a_release_is_delivered_and_a_rerun_after_a_failure_records_it_once(
    repository: Repository,
) -> None:
    github = repository.github
    event = repository.publish(1)
    run_id = next(repository.run_ids)

    # Attempt 1: GitHub fails every deployment creation once the canary job starts.
    original = repository.runner._job

    def failing_canary(name: str, job: dict[str, Any], *args: Any) -> Any:
        if name == "canary":
            github.fail("POST", "/deployments", 503, times=1000)
        return original(name, job, *args)

    repository.runner._job = failing_canary  # type: ignore[method-assign]
    try:
        first = repository.deliver(event, run_id=run_id, attempt=1)
    finally:
        repository.runner._job = original  # type: ignore[method-assign]
        github.failures.clear()
    _check(first, "failure")
    jobs = first.all_jobs()
    assert jobs["deliver/canary"].result == "failure"
    assert jobs["deliver/promote"].result == "skipped"
    assert jobs["deliver/rollback"].result == "failure"  # it ran, and reports exit 52
    main = _records(github, "production")
    assert len(main) == 1 and github.states(main[0])[-1] == "error"

    # Attempt 2 of the same run: everything again, the same records.
    second = repository.deliver(event, run_id=run_id, attempt=2)
    _check(second, "success")
    jobs = second.all_jobs()
    assert jobs["deliver/promote"].result == "success"
    assert jobs["deliver/rollback"].result == "skipped"
    main = _records(github, "production")
    assert len(main) == 1, "a re-run created a second deployment record"
    record = main[0]
    assert github.states(record) == ["queued", "in_progress", "error", "in_progress", "success"]
    assert record.payload["model"] == "digits" and record.payload["version"] == 1
    assert record.payload["overlay"] == "local"
    canary = _records(github, "production-canary")
    assert len(canary) == 1 and github.states(canary[0]) == ["in_progress", "success", "inactive"]
    assert canary[0].transient
    for status in record.statuses:
        assert status.log_url == f"https://github.com/acme/models/actions/runs/{run_id}"

    # The image: pushed by digest to the registry, running as the stable track.
    image = second.outputs.get("image-digest") or jobs["deliver"].outputs["image-digest"]
    assert image.startswith(f"{repository.registry.host}/models/digits@sha256:")
    assert record.payload["image"] == image
    assert repository.stable()["image"] == image
    # Reports: the step summary has the gate table and Mermaid charts; the artifact the rest.
    summary = jobs["deliver/canary"].summary
    assert "Gate for digits v1" in summary and "xychart-beta" in summary
    report = repository.artifact(second, "delivery-digits-v1-production-2")
    assert (report / "report" / "verdict.json").is_file()
    assert (report / "loadtest" / "locust.html").is_file()
    assert (report / "report" / "latency.png").is_file()
    run_record = json.loads((report / "run.json").read_text())
    assert [s["name"] for s in run_record["stages"]][:2] == ["image", "render"]
    # The release notes carry the outcome.
    body = github.releases[204481001].body
    assert body.startswith("Notes.") and "Delivered to `production`: promoted" in body
    assert image in body


# -- 2 ---------------------------------------------------------------------------------------
def test_a_bad_release_records_failure_and_is_rolled_back_at_once(repository: Repository) -> None:
    github = repository.github
    before = repository.stable()
    result = repository.deliver(repository.publish(2))
    _check(result, "failure")
    jobs = result.all_jobs()
    assert jobs["deliver/canary"].outputs["verdict"] == "fail", result.log()
    assert jobs["deliver/promote"].result == "skipped"
    rollback = jobs["deliver/rollback"]
    assert rollback.result == "failure"
    assert rollback.steps[-1].returncode == 50  # the gate's exit code
    record = _records(github, "production")[-1]
    assert record.payload["version"] == 2
    assert github.states(record) == ["queued", "in_progress", "failure"]
    canary = _records(github, "production-canary")[-1]
    assert github.states(canary) == ["in_progress", "failure", "inactive"]
    assert (
        "error_ratio" in canary.statuses[1].description
        or "gate fail" in canary.statuses[1].description
    )
    assert repository.stable() == before, "a failed canary touched the stable track"
    assert "rolled back" in github.releases[204481002].body
    assert "error_ratio" in jobs["deliver/canary"].summary


# -- 3 ---------------------------------------------------------------------------------------
def test_releases_published_seconds_apart_are_delivered_in_turn(repository: Repository) -> None:
    results: dict[int, WorkflowResult] = {}
    events = {3: repository.publish(3), 4: repository.publish(4)}

    def deliver(version: int) -> None:
        results[version] = repository.deliver(events[version])

    first = threading.Thread(target=deliver, args=(3,))
    first.start()
    second = threading.Thread(target=deliver, args=(4,))
    threading.Timer(1.0, second.start).start()
    first.join(timeout=900)
    second.join(timeout=900)
    _check(results[3], "success")
    _check(results[4], "success")
    v3, v4 = results[3].all_jobs(), results[4].all_jobs()
    assert results[3].jobs["deliver"].called.concurrency_group == "deliver-digits-production"  # type: ignore[union-attr]
    # Whichever started first, the other waited until it had finished.
    order = sorted(((v3["deliver/preflight"].started, 3), (v4["deliver/preflight"].started, 4)))
    earlier, later = (v3, v4) if order[0][1] == 3 else (v4, v3)
    assert later["deliver/preflight"].started >= earlier["deliver/conclude"].finished
    # ... and was gated against the earlier one's outcome, now stable.
    later_version = order[1][1]
    earlier_image = (v3 if later_version == 4 else v4)["deliver"].outputs["image-digest"]
    report = repository.artifact(
        results[later_version], f"delivery-digits-v{later_version}-production-1"
    )
    gate = next(
        s for s in json.loads((report / "run.json").read_text())["stages"] if s["name"] == "gate"
    )
    assert gate["result"]["baseline_image"] == earlier_image
    assert gate["result"]["baseline"]["samples"] > 0
    later_image = (v4 if later_version == 4 else v3)["deliver"].outputs["image-digest"]
    assert repository.stable()["image"] == later_image


# -- 4 ---------------------------------------------------------------------------------------
def test_a_manual_deploy_of_the_previous_release_redeploys_its_digest(
    repository: Repository,
) -> None:
    github = repository.github
    live = _records(github, "production")
    successes = [d for d in live if "success" in github.states(d)]
    current, previous = successes[-1].payload, successes[-2].payload
    assert repository.stable()["image"] == current["image"]
    result = repository.dispatch(version="previous", environment="production", overlay="local")
    _check(result, "success")
    jobs = result.all_jobs()
    assert jobs["resolve"].outputs["image"] == previous["image"]
    assert jobs["resolve"].outputs["source"] == ""  # no archive: the digest delivered before
    build = jobs["deliver/build"]
    assert '"builder"' not in build.steps[-1].stdout  # nothing was built
    record = _records(github, "production")[-1]
    assert record.payload["image"] == previous["image"]
    assert record.payload["version"] == previous["version"]
    assert github.states(record)[-1] == "success"
    assert repository.stable()["image"] == previous["image"]


# -- 5 ---------------------------------------------------------------------------------------
def test_a_manual_dry_run_changes_and_records_nothing(repository: Repository) -> None:
    github = repository.github
    before_state = repository.stable()
    before_records = len(github.deployments)
    result = repository.dispatch(
        version="4", environment="production", overlay="local", **{"dry-run": True}
    )
    _check(result, "success")
    jobs = result.all_jobs()
    assert jobs["deliver/canary"].outputs["verdict"] == "dry-run"
    assert jobs["deliver/promote"].result == "skipped"
    assert jobs["deliver/rollback"].result == "skipped"
    assert jobs["deliver/conclude"].outputs["action"] == "dry-run"
    assert len(github.deployments) == before_records
    assert repository.stable() == before_state
