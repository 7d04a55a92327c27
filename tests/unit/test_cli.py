"""The CLI contract: one JSON object on stdout, exit codes, GitHub Actions integration."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from scripts import errors
from scripts.cli import main
from tests.conftest import REPO_ROOT, CLIResult, run_without_tensorflow


def test_json_output_is_exactly_one_object(
    cli: Callable[..., CLIResult], packaged: dict[str, object], tmp_path: Path
) -> None:
    result = cli("fetch", str(packaged["path"]), "--dest", tmp_path / "d", "--json")
    assert result.exit_code == 0
    decoder = json.JSONDecoder()
    obj, end = decoder.raw_decode(result.stdout)
    assert isinstance(obj, dict)
    assert result.stdout[end:].strip() == ""
    assert "fetch" in result.stderr  # logs go to stderr


def test_errors_in_json_mode_are_one_object_with_cause_and_fix(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    result = cli("fetch", tmp_path / "missing.tar.gz", "--dest", tmp_path / "d", "--json")
    assert result.exit_code == errors.ArtifactNotFoundError.exit_code
    error = result.json()["error"]
    assert isinstance(error, dict)
    assert error["kind"] == "artifact-not-found"
    assert error["cause"] and error["fix"]
    assert "Likely cause:" in result.stderr and "Fix:" in result.stderr


def test_usage_errors_exit_2(cli: Callable[..., CLIResult]) -> None:
    assert cli("fetch").exit_code == 2
    assert cli("no-such-command").exit_code == 2
    assert cli("fetch", "ftp://host/x", "--dest", "/tmp/x").exit_code == 2
    assert cli("fetch", "http://example.com/x.tar.gz", "--dest", "/tmp/x").exit_code == 2


def test_quiet_hides_info_logs(
    cli: Callable[..., CLIResult], packaged: dict[str, object], tmp_path: Path
) -> None:
    result = cli("fetch", str(packaged["path"]), "--dest", tmp_path / "d", "-q")
    assert result.exit_code == 0
    assert "INFO" not in result.stderr


def test_github_actions_groups_annotations_summary_and_outputs(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    packaged: dict[str, object],
    tmp_path: Path,
) -> None:
    summary = tmp_path / "summary.md"
    outputs = tmp_path / "outputs.txt"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))

    assert main(["fetch", str(packaged["path"]), "--dest", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    assert "::group::fetch" in err and "::endgroup::" in err
    assert "### Fetched `digits` v1" in summary.read_text()
    assert f"model_dir={tmp_path / 'd' / 'digits'}" in outputs.read_text()

    code = main(["fetch", str(tmp_path / "nope.tar.gz"), "--dest", str(tmp_path / "e")])
    assert code == errors.ArtifactNotFoundError.exit_code
    err = capsys.readouterr().err
    assert "::error::" in err
    assert "%0ALikely cause:" in err  # multi-line message escaped into one annotation
    assert "failed (exit 10)" in summary.read_text()


def test_every_exit_code_is_documented_in_the_readme() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    classes = [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.PipelineError)
    ]
    codes = {c.exit_code for c in classes}
    assert len(codes) == len(classes), "two error classes share an exit code"
    for cls in classes:
        assert f"| {cls.exit_code} | `{cls.kind}`" in readme, cls.__name__


def test_deploy_path_does_not_import_tensorflow(
    packaged: dict[str, object], tmp_path: Path
) -> None:
    run_without_tensorflow("fetch", str(packaged["path"]), "--dest", tmp_path / "d", "-q")
