"""``report``: one row per release from run records, with the report paths."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from scripts.errors import ConfigError
from tests.conftest import CLIResult


def _record(path: Path, releases: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"source": "x", "status": "ok", "stages": [], "releases": releases}))
    return path


def test_one_row_per_release_with_its_figures(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    v1 = _record(
        tmp_path / "v1" / "run.json",
        [
            {
                "version": 1,
                "verdict": "pass",
                "action": "promoted",
                "p95_ms": 4.72,
                "p99_ms": 6.1,
                "error_ratio": 0.0,
                "req_per_s": 40.0,
            }
        ],
    )
    v3 = _record(
        tmp_path / "v3" / "run.json",
        [
            {
                "version": 3,
                "verdict": "fail",
                "action": "rolled back",
                "p95_ms": 66.14,
                "p99_ms": None,
                "error_ratio": 0.0125,
                "req_per_s": 39.5,
            }
        ],
    )
    empty = _record(tmp_path / "v9" / "run.json", [])  # stopped before the gate: no row
    result = cli("report", v1, v3, empty)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| version | verdict | action |")
    assert "| v1 | pass | promoted | 4.7 | 6.1 | 0.00% | 40.0 |" in lines
    assert "| v3 | fail | rolled back | 66.1 | — | 1.25% | 39.5 |" in lines
    assert f"v3: {tmp_path / 'v3' / 'summary.md'} (charts: {tmp_path / 'v3' / 'report'})" in (
        result.stdout
    )
    data = cli("report", v1, v3, "--json").json()
    rows = data["releases"]
    assert [r["version"] for r in rows] == [1, 3]  # type: ignore[index]
    assert rows[1]["record"] == str(v3)  # type: ignore[index]


def test_an_unreadable_record_is_a_config_error(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    broken = tmp_path / "run.json"
    broken.write_text("{not json")
    result = cli("report", broken, tmp_path / "missing.json", "--json")
    assert result.exit_code == ConfigError.exit_code
    assert str(broken) in result.json()["error"]["message"]  # type: ignore[index]
