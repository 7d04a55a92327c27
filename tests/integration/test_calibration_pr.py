"""`gate record --open-pr` against the fake GitHub API: a calibration measured on the
cluster reaches models/NAME/gate-calibration.yaml by pull request — created when the
model has none, merged into the overlays it has, reused by a rerun, superseding an
older calibration of the same overlay only — and the recorded file is what `gate` reads.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from scripts.config import MODELS_DIR
from scripts.errors import ConfigError
from scripts.gate.calibration import calibration_text, measured
from scripts.gate.verdict import load_rules
from tests.conftest import CLIResult
from tests.fakes.github_api import FakeGitHub

pytestmark = pytest.mark.integration
TOKEN = "ghs_fake_installation_token"
PATH = "models/digits/gate-calibration.yaml"
ENTRY = measured(
    [1.03, 0.97, 1.01, 0.99, 1.05, 0.96, 1.02, 1.0, 0.98, 1.04],
    inconclusive=0,
    target="k8s",
    image="europe-docker.pkg.dev/acme/models/digits@sha256:" + "a" * 64,
    profile="smoke",
)


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    fake = FakeGitHub().start()
    fake.token = TOKEN
    fake.add_branch("main", {"models/digits/model.yaml": b"name: digits\n"})
    monkeypatch.setenv("GITHUB_API_URL", fake.api_url)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", fake.full_name)
    monkeypatch.setenv("GITHUB_RUN_ID", "7002")
    monkeypatch.setenv("TF_PIPELINE_GITHUB_PACING", "0")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def model_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "models" / "digits" / "model.yaml"
    path.parent.mkdir(parents=True)
    shutil.copy(MODELS_DIR / "digits" / "model.yaml", path)
    return path


@pytest.fixture
def record(
    cli: Callable[..., CLIResult], tmp_path: Path, model_yaml: Path
) -> Callable[..., CLIResult]:
    output = tmp_path / "calibrate.json"  # what `gate calibrate --no-write --json` prints
    output.write_text(json.dumps({"model": "digits", "calibration": ENTRY.model_dump()}))

    def run(overlay: str = "production", *extra: str) -> CLIResult:
        return cli("gate", "record", "--model", "digits", "--overlay", overlay,
                   "--model-config", model_yaml, "--calibration-json", output, *extra,
                   "--json")  # fmt: skip

    return run


def test_record_opens_a_pull_request_with_the_file_the_gate_then_reads(
    github: FakeGitHub, record: Callable[..., CLIResult], model_yaml: Path
) -> None:
    main_before = github.branches["main"]
    result = record("production", "--open-pr")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    pull = data["pull_request"]
    assert isinstance(pull, dict) and pull["created"] and pull["committed"]
    assert data["previous_tolerance"] == 1.15
    branch = str(pull["branch"])
    assert branch.startswith("gate-calibration/digits/production/")
    assert github.branches["main"] == main_before  # never pushed to the default branch
    assert github.file_at("main", PATH) is None  # a new file, on the branch only
    proposed = github.file_at(branch, PATH)
    assert proposed is not None
    # The same text the command wrote beside this checkout's model.yaml.
    assert proposed == (model_yaml.parent / "gate-calibration.yaml").read_bytes()
    rules = load_rules(model_yaml, "production")
    assert rules.baseline.latency_tolerance == ENTRY.latency_tolerance
    assert rules.baseline.calibration and "10 A/A runs (k8s)" in rules.baseline.calibration
    [fake_pull] = github.pulls.values()
    assert (fake_pull.head_ref, fake_pull.base_ref) == (branch, "main")
    assert f"×{ENTRY.latency_tolerance:g}" in fake_pull.title
    assert "(was ×1.15)" in fake_pull.body and "×1.030" in fake_pull.body
    assert "https://github.com/acme/models/actions/runs/7002" in fake_pull.body


def test_the_other_overlays_on_the_default_branch_are_kept_and_a_rerun_changes_nothing(
    github: FakeGitHub, record: Callable[..., CLIResult]
) -> None:
    staging = measured([1.1, 0.9, 1.0, 1.05, 0.95], inconclusive=0, target="k8s",
                       image="i", profile="smoke")  # fmt: skip
    on_main = calibration_text("", PATH, "digits", "staging", staging)
    github.add_branch("main", {"models/digits/model.yaml": b"name: digits\n", PATH: on_main})
    first = record("production", "--open-pr")
    assert first.exit_code == 0, first.stderr
    branch = str(first.json()["pull_request"]["branch"])  # type: ignore[index]
    proposed = yaml.safe_load(github.file_at(branch, PATH) or b"")
    assert set(proposed["overlays"]) == {"production", "staging"}
    assert proposed["overlays"]["staging"] == staging.model_dump()
    head = github.branches[branch]
    github.api_requests.clear()
    second = record("production", "--open-pr")
    assert second.exit_code == 0, second.stderr
    pull = second.json()["pull_request"]
    assert isinstance(pull, dict) and not pull["created"] and not pull["committed"]
    assert github.branches[branch] == head and len(github.pulls) == 1
    assert [r for r in github.api_requests if not r.startswith("GET ")] == []


def test_a_merged_calibration_needs_no_pull_request(
    github: FakeGitHub, record: Callable[..., CLIResult]
) -> None:
    merged = calibration_text("", PATH, "digits", "production", ENTRY)
    github.add_branch("main", {"models/digits/model.yaml": b"name: digits\n", PATH: merged})
    result = record("production", "--open-pr")
    assert result.exit_code == 0, result.stderr
    pull = result.json()["pull_request"]
    assert isinstance(pull, dict) and pull["already_applied"] and pull["number"] is None
    assert not github.pulls


def test_an_older_calibration_of_the_same_overlay_only_is_superseded(
    github: FakeGitHub, record: Callable[..., CLIResult]
) -> None:
    for number, branch in ((41, "gate-calibration/digits/local/0123456789ab"),
                           (42, "gate-calibration/digits/local-1x500m/0123456789ab")):  # fmt: skip
        github.branches[branch] = github.branches["main"]
        github.add_pull_request(number, head_sha=github.branches["main"])
        github.pulls[number].head_ref = branch
    result = record("local", "--open-pr")
    assert result.exit_code == 0, result.stderr
    pull = result.json()["pull_request"]
    assert isinstance(pull, dict) and pull["supersedes"] == [41]
    new = github.pulls[int(str(pull["number"]))]
    assert "Supersedes #41" in new.body and "#42" not in new.body


def test_without_github_it_only_writes_the_file_and_bad_input_is_refused(
    record: Callable[..., CLIResult], model_yaml: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("GITHUB_REPOSITORY", raising=False)
    assert record("production", "--open-pr").exit_code == 2  # needs GITHUB_REPOSITORY
    result = record("production")
    assert result.exit_code == 0, result.stderr
    assert load_rules(model_yaml, "production").baseline.latency_tolerance == (
        ENTRY.latency_tolerance
    )
    (tmp_path / "calibrate.json").write_text('{"calibration": {"trials": "many"}}')
    refused = record("production")
    assert refused.exit_code == ConfigError.exit_code
    assert "holds no calibration" in str(refused.json()["error"]["message"])  # type: ignore[index]
