"""`bench` on the command line: what it refuses, and `--compare`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from scripts.bench.report import write_report
from tests.conftest import CLIResult
from tests.unit.test_bench_report import measured, result_of, shape

IMAGE = "oci:/nonexistent@sha256:" + "0" * 64


def test_bench_needs_a_model_overlays_and_an_image(cli: Callable[..., CLIResult]) -> None:
    missing = cli("bench", "--overlays", "local-1x500m", "--image", IMAGE, "--json")
    assert missing.exit_code == 2
    assert "--model" in missing.json()["error"]["message"]
    no_image = cli("bench", "--model", "digits", "--overlays", "local-1x500m", "--json")
    assert no_image.exit_code == 2
    both = cli("bench", "--model", "digits", "--overlays", "a", "--image", IMAGE,
               "--source", "x.tar.gz")  # fmt: skip
    assert both.exit_code == 2


def test_a_bad_slo_file_is_a_config_error(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    slo = tmp_path / "slo.yaml"
    slo.write_text("p99_ms: -3\nlatency: 4\n")
    result = cli("bench", "--model", "digits", "--overlays", "local-1x500m", "--image", IMAGE,
                 "--slo", slo, "--out", tmp_path / "out", "--json")  # fmt: skip
    assert result.exit_code == 3
    assert "p99_ms" in result.json()["error"]["message"]


def test_no_overlay_that_renders_is_exit_60_and_names_each(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    result = cli("bench", "--model", "digits", "--overlays", "nope,neither", "--image", IMAGE,
                 "--out", tmp_path / "out", "--state-dir", tmp_path / "s", "--json")  # fmt: skip
    assert result.exit_code == 60, result.stderr
    message = result.json()["error"]["message"]
    assert "nope" in message and "neither" in message
    assert not list((tmp_path / "s").glob("**/state.json"))  # nothing was deployed


def test_compare_two_runs(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    small = shape(2, 1.0, 2.0, "E2")
    old = result_of([measured("a", small, [(100, 20), (200, 150)], 100.0, 0.05)])
    new = result_of([measured("a", small, [(100, 20), (200, 40), (400, 150)], 200.0, 0.05)])
    write_report(old, tmp_path / "old")
    write_report(new, tmp_path / "new")
    compared = cli("bench", "--compare", tmp_path / "old/bench.json", tmp_path / "new/bench.json",
                   "--json")  # fmt: skip
    assert compared.exit_code == 0, compared.stderr
    changes = str(compared.json()["changes"])
    assert "a" in changes and "100" in changes and "200" in changes
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "other"}))
    refused = cli("bench", "--compare", tmp_path / "bad.json", tmp_path / "new/bench.json")
    assert refused.exit_code == 3
