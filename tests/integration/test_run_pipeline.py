"""``run`` on the embedded defaults up to the manifests: fetch → validate → build → render.

(The deploy, load test and gate stages are covered by test_pipeline_e2e.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from scripts import errors
from tests.conftest import CLIResult

pytestmark = pytest.mark.integration


def run_packaged(
    cli: Callable[..., CLIResult], packaged: dict[str, object], tmp_path: Path, *extra: str
) -> CLIResult:
    """`run` on the packaged archive, workdir TMP/work, on the embedded defaults."""
    return cli(
        "run",
        "--source",
        str(packaged["path"]),
        "--sha256",
        str(packaged["sha256"]),
        "--workdir",
        tmp_path / "work",
        "--cache-dir",
        tmp_path / "cache",
        "--json",
        *extra,
    )


def test_run_records_every_stage_and_builds_a_local_image(
    cli: Callable[..., CLIResult], packaged: dict[str, object], tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    result = run_packaged(cli, packaged, tmp_path, "--stop-after", "render")
    assert result.exit_code == 0, result.stderr
    record = json.loads((workdir / "run.json").read_text())
    data = result.json()
    assert {key: data[key] for key in record} == record  # the record, plus the outcome
    assert data["model"] == "digits"
    assert data["version"] == 1
    assert data["action"] == "none"
    assert record["status"] == "ok"
    assert [s["name"] for s in record["stages"]] == ["fetch", "validate", "build", "render"]
    assert all(s["status"] == "ok" for s in record["stages"])
    build = record["stages"][2]["result"]
    assert build["image"].startswith(f"oci:{workdir / 'images'}@sha256:")
    assert build["base"] == "scratch"
    manifests = Path(record["stages"][3]["result"]["path"])
    assert manifests == workdir / "manifests" / "local.yaml"
    text = manifests.read_text()
    assert f"oci.local/digits@{build['digest']}" in text
    assert f"tf-release-pipeline.dev/oci-layout: {workdir / 'images'}" in text
    if shutil.which("skopeo"):
        out = subprocess.run(
            ["skopeo", "inspect", f"oci:{workdir / 'images'}:digits"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert "MODEL_NAME=digits" in json.loads(out)["Env"]


def test_a_failed_stage_is_recorded_with_its_error(
    cli: Callable[..., CLIResult], packaged: dict[str, object], tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    result = cli(
        "run",
        "--source",
        str(packaged["path"]),
        "--sha256",
        "0" * 64,
        "--workdir",
        workdir,
        "--json",
    )
    assert result.exit_code == errors.IntegrityError.exit_code
    record = json.loads((workdir / "run.json").read_text())
    assert record["status"] == "failed"
    assert record["stages"][0]["name"] == "fetch"
    assert record["stages"][0]["error"]["kind"] == "integrity"


def test_a_rerun_of_the_same_request_resumes_from_the_run_record(
    cli: Callable[..., CLIResult], packaged: dict[str, object], tmp_path: Path
) -> None:
    workdir = tmp_path / "work"

    def run(*extra: str) -> dict[str, object]:
        result = run_packaged(cli, packaged, tmp_path, *extra)
        assert result.exit_code == 0, result.stderr
        return result.json()

    first = run("--stop-after", "build")  # as if the runner died after the build
    second = run("--stop-after", "render")
    stages = {s["name"]: s for s in second["stages"]}  # type: ignore[union-attr]
    assert stages["fetch"]["status"] == "reused" and stages["build"]["status"] == "reused"
    assert stages["validate"]["status"] == "ok" and stages["render"]["status"] == "ok"
    assert second["resumed_from"] == first["started_at"]
    assert second["image"] == first["image"]
    # A different request (another overlay) starts again from the top.
    other = run("--stop-after", "render", "--overlay", "staging")
    assert {s["status"] for s in other["stages"]} == {"ok"}  # type: ignore[union-attr]
    assert other["resumed_from"] is None
    # A model directory that went missing is fetched again, not trusted.
    shutil.rmtree(workdir / "models" / "digits" / "1")
    again = run("--stop-after", "render", "--overlay", "staging")
    assert again["stages"][0]["status"] == "ok"  # type: ignore[index]
