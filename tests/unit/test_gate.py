"""The gate on constructed results: each outcome and each edge case."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scripts.gate.verdict import (
    ERROR,
    FAIL,
    INCONCLUSIVE,
    PASS,
    BaselineRules,
    GateRules,
    decide,
)
from scripts.loadtest.results import SAMPLES_FILE, TrackResult, percentiles, save
from scripts.model_spec import SLOs
from tests.conftest import CLIResult

SLO = SLOs(
    latency_p50_ms=25,
    latency_p95_ms=60,
    latency_p99_ms=120,
    error_ratio_max=0.01,
    throughput_min_fraction=0.9,
    min_samples=200,
)
RULES = GateRules(slos=SLO)


def make_run(
    directory: Path,
    latencies: np.ndarray,
    *,
    errors: int = 0,
    rate: float = 40,
    duration: float = 30,
    saturated: bool = False,
    broken: str = "",
    track: str = "canary",
    endpoints: tuple[str, ...] = ("http://x",),  # request i went to endpoints[i % len]
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / SAMPLES_FILE).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["t", "track", "endpoint", "latency_ms", "service_ms", "ok", "status", "lag_ms"]
        )
        for i, value in enumerate(latencies):
            ok = i >= errors
            writer.writerow(
                [
                    1000 + i / rate,
                    track,
                    endpoints[i % len(endpoints)],
                    f"{value:.3f}",
                    f"{value:.3f}",
                    int(ok),
                    200 if ok else 500,
                    "0.1",
                ]
            )
    save(
        directory,
        TrackResult(
            track=track,
            endpoints=list(endpoints),
            target_rate=rate,
            duration_s=duration,
            warmup_s=5,
            samples=len(latencies),
            errors=errors,
            achieved_rate=len(latencies) / duration,
            latency_ms=percentiles(latencies),
            generator_cpu=0.95 if saturated else 0.2,
            generator_lag_p99_ms=0.5,
            saturated=saturated,
            saturation_reasons=["the load generator used 95% of a core"] if saturated else [],
            broken=broken,
        ),
    )
    return directory


def lognormal(median_ms: float, n: int = 1200, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(np.log(median_ms), 0.35, n)


def test_healthy_candidate_against_an_identical_baseline_passes(tmp_path: Path) -> None:
    canary = make_run(tmp_path / "c", lognormal(8, seed=1))
    base = make_run(tmp_path / "b", lognormal(8, seed=2), track="baseline")
    verdict = decide(canary, RULES, base)
    assert verdict.outcome == PASS, verdict.reasons
    assert verdict.exit_code == 0
    metrics = {r.metric for r in verdict.rows}
    assert {
        "latency_p95_ms",
        "error_ratio",
        "throughput_fraction",
        "latency_vs_baseline",
        "errors_vs_baseline",
    } <= metrics


def test_slower_candidate_fails_on_the_baseline_comparison(tmp_path: Path) -> None:
    canary = make_run(tmp_path / "c", lognormal(10, seed=1))  # +25 %, still within the SLOs
    base = make_run(tmp_path / "b", lognormal(8, seed=2), track="baseline")
    verdict = decide(canary, RULES, base)
    assert verdict.outcome == FAIL
    row = next(r for r in verdict.rows if r.metric == "latency_vs_baseline")
    assert row.verdict == FAIL and row.value is not None and row.value > 1.15
    assert "Wilcoxon over the blocks" in row.reason and "10 3.0-s blocks" in row.reason
    assert verdict.exit_code == 50


def test_tiny_shift_within_the_floor_does_not_fail(tmp_path: Path) -> None:
    canary = make_run(tmp_path / "c", lognormal(0.6, seed=1))  # +20 % of 0.5 ms: 0.1 ms
    base = make_run(tmp_path / "b", lognormal(0.5, seed=2), track="baseline")
    verdict = decide(canary, RULES, base)
    row = next(r for r in verdict.rows if r.metric == "latency_vs_baseline")
    assert row.value is not None and row.value > RULES.baseline.latency_tolerance
    assert verdict.outcome == PASS, verdict.reasons


def test_a_quarter_slower_four_ms_model_fails(tmp_path: Path) -> None:
    # The gate-accuracy benchmark's case: a ~4 ms model made 1 ms slower.
    canary = make_run(tmp_path / "c", lognormal(4.0, seed=1) + 1.0)
    base = make_run(tmp_path / "b", lognormal(4.0, seed=2), track="baseline")
    assert decide(canary, RULES, base).outcome == FAIL


def test_a_one_percent_error_regression_fails_at_the_smoke_sample_size(tmp_path: Path) -> None:
    # 1 % of 1,200 requests, drawn low (6 instead of 12): still significant and beyond
    # the 0.002 tolerance.
    canary = make_run(tmp_path / "c", lognormal(4.0, n=1200, seed=1), errors=6)
    base = make_run(tmp_path / "b", lognormal(4.0, n=1200, seed=2), track="baseline")
    verdict = decide(canary, RULES, base)
    assert verdict.outcome == FAIL
    assert {r.metric for r in verdict.rows if r.verdict == FAIL} == {"errors_vs_baseline"}


def test_more_errors_than_the_baseline_fail(tmp_path: Path) -> None:
    canary = make_run(tmp_path / "c", lognormal(8, seed=1), errors=36)  # 3 %
    base = make_run(tmp_path / "b", lognormal(8, seed=2), track="baseline")
    verdict = decide(canary, RULES, base)
    assert verdict.outcome == FAIL
    failing = {r.metric for r in verdict.rows if r.verdict == FAIL}
    assert {"error_ratio", "errors_vs_baseline"} <= failing


def test_absolute_slo_breach_fails_without_a_baseline(tmp_path: Path) -> None:
    verdict = decide(make_run(tmp_path / "c", lognormal(80, seed=1)), RULES)
    assert verdict.outcome == FAIL
    assert any(r.metric == "latency_p95_ms" and r.verdict == FAIL for r in verdict.rows)


def test_too_few_samples_is_inconclusive_even_when_metrics_look_bad(tmp_path: Path) -> None:
    verdict = decide(make_run(tmp_path / "c", lognormal(80, n=20)), RULES)
    assert verdict.outcome == INCONCLUSIVE
    assert verdict.exit_code == 51
    assert any("fewer than the 200 required" in r for r in verdict.reasons)


def test_no_data_is_inconclusive_never_a_pass(tmp_path: Path) -> None:
    verdict = decide(make_run(tmp_path / "c", np.array([])), RULES)
    assert verdict.outcome == INCONCLUSIVE
    assert any("no data" in r for r in verdict.reasons)


def test_a_saturated_generator_can_never_pass(tmp_path: Path) -> None:
    verdict = decide(make_run(tmp_path / "c", lognormal(8), saturated=True), RULES)
    assert verdict.outcome == INCONCLUSIVE
    assert any("saturated" in r for r in verdict.reasons)


def test_baseline_without_data_is_inconclusive(tmp_path: Path) -> None:
    canary = make_run(tmp_path / "c", lognormal(8))
    base = make_run(tmp_path / "b", np.array([]), track="baseline")
    assert decide(canary, RULES, base).outcome == INCONCLUSIVE


def test_a_broken_run_is_an_error(tmp_path: Path) -> None:
    broken = make_run(tmp_path / "c", lognormal(8), broken="locust exited with 2")
    verdict = decide(broken, RULES)
    assert verdict.outcome == ERROR and verdict.exit_code == 52
    assert decide(tmp_path / "missing", RULES).outcome == ERROR


def test_ties_are_handled(tmp_path: Path) -> None:
    same = np.full(1200, 5.0)  # 40 req/s for 30 s
    canary = make_run(tmp_path / "c", same)
    base = make_run(tmp_path / "b", same, track="baseline")
    assert decide(canary, RULES, base).outcome == PASS


def test_dry_run_metrics_are_reported_but_do_not_decide(tmp_path: Path) -> None:
    rules = GateRules(slos=SLO, dry_run=["latency_p50_ms"], baseline=BaselineRules())
    verdict = decide(make_run(tmp_path / "c", lognormal(30, seed=3)), rules)
    row = next(r for r in verdict.rows if r.metric == "latency_p50_ms")
    assert row.verdict == "dry-run" and not row.deciding and "would fail" in row.reason
    assert verdict.outcome == PASS


def test_low_throughput_fails(tmp_path: Path) -> None:
    verdict = decide(make_run(tmp_path / "c", lognormal(8, n=600), rate=40, duration=30), RULES)
    assert verdict.outcome == FAIL  # 20 req/s of the 40 targeted
    assert any(r.metric == "throughput_fraction" and r.verdict == FAIL for r in verdict.rows)


def test_gate_command_exit_codes_markdown_and_charts(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    canary = make_run(tmp_path / "c", lognormal(10, seed=1))
    base = make_run(tmp_path / "b", lognormal(8, seed=2), track="baseline")
    result = cli("gate", "--results", canary, "--baseline", base, "--model", "digits", "--json")
    assert result.exit_code == 50
    data = result.json()
    assert data["outcome"] == "fail"
    assert "| `latency_vs_baseline` |" in str(data["markdown"])
    for chart in data["charts"]:  # type: ignore[union-attr]
        assert Path(chart).stat().st_size > 1000
    passing = cli(
        "gate", "--results", make_run(tmp_path / "c2", lognormal(8, seed=4)), "--model", "digits"
    )
    assert passing.exit_code == 0


@pytest.mark.parametrize("bad", ["slos: {latency_p50_ms: -1}\n", "nonsense: [\n"])
def test_a_bad_slo_file_is_a_config_error(
    cli: Callable[..., CLIResult], tmp_path: Path, bad: str
) -> None:
    slo = tmp_path / "slo.yaml"
    slo.write_text(bad)
    result = cli("gate", "--results", make_run(tmp_path / "c", lognormal(8)), "--slo", slo)
    assert result.exit_code == 3


def test_the_reported_shift_is_the_hodges_lehmann_estimate() -> None:
    from scripts.gate.verdict import hodges_lehmann_shift

    base = lognormal(4.0, n=3000, seed=2)
    assert abs(hodges_lehmann_shift(base + 1.0, base) - 1.0) < 0.02  # thinned, still ~exact
    assert hodges_lehmann_shift(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
