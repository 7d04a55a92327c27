"""The latency comparison on time blocks (scripts/gate/blocks.py), on synthetic samples
whose noise has a known structure: per-request noise, a drift both tracks share, a
transient shift on one track, and a real regression."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from scripts.gate.blocks import TimedLatencies, compare_blocks
from scripts.gate.verdict import FAIL, INCONCLUSIVE, PASS, decide
from tests.unit.test_gate import RULES, lognormal, make_run

WINDOW_S = 30.0


def track(n: int, factor: object, seed: int, median_ms: float = 4.0) -> TimedLatencies:
    """``n`` requests over the window, lognormal per-request noise, times ``factor(t)``."""
    rng = np.random.default_rng(seed)
    scheduled = np.sort(rng.uniform(0, WINDOW_S, n))
    noise = median_ms * np.exp(rng.normal(0, 0.25, n))
    return TimedLatencies(scheduled, noise * factor(scheduled))  # type: ignore[operator]


def flat(t: np.ndarray) -> np.ndarray:
    return np.ones_like(t)


def per_request_p(canary: TimedLatencies, baseline: TimedLatencies) -> float:
    return float(mannwhitneyu(canary.latency_ms, baseline.latency_ms, alternative="greater").pvalue)


def test_a_drift_both_tracks_share_is_paired_away() -> None:
    def drift(t: np.ndarray) -> np.ndarray:
        return 1 + 0.5 * np.sin(t)  # the whole machine slows and recovers

    result = compare_blocks(track(1500, drift, 1), track(1500, drift, 2))
    assert result.units == 10 and result.blocks == 10
    assert result.p_value > 0.1 and 0.9 < result.ratio < 1.1


def test_a_transient_shift_on_one_track_is_significant_per_request_but_not_per_block() -> None:
    """The false alarm of issue 16: noise that moves one process for a few seconds gives a
    per-request p near 1e-11; as 2 blocks in 10 it is what it is, noise."""

    def hiccup(t: np.ndarray) -> np.ndarray:
        return np.where((t > 9) & (t < 15), 1.4, 1.0)

    canary, baseline = track(1500, hiccup, 3), track(1500, flat, 4)
    assert per_request_p(canary, baseline) < 1e-6
    result = compare_blocks(canary, baseline)
    assert result.p_value > 0.02 and result.ratio < 1.15


def test_a_real_25_percent_regression_is_significant_in_every_block() -> None:
    result = compare_blocks(track(1500, lambda t: 1.25 * flat(t), 5), track(1500, flat, 6))
    assert result.units == 10 and result.p_value < 0.002
    assert 1.18 < result.ratio < 1.32
    assert all(r > 1.0 for r in result.ratios)


def pods(*factors: float, n: int = 1500, seed: int = 0) -> TimedLatencies:
    """One track of ``len(factors)`` pods, requests round-robin, pod i's latency × factor i."""
    base = track(n, flat, seed)
    endpoint = np.array([f"http://10.0.0.{i % len(factors) + 1}:8501" for i in range(n)])
    scale = np.array([factors[i % len(factors)] for i in range(n)])
    return TimedLatencies(base.scheduled, base.latency_ms * scale, endpoint.astype(object))


def pooled(timed: TimedLatencies) -> TimedLatencies:
    return TimedLatencies(timed.scheduled, timed.latency_ms)


def test_one_slow_pod_of_three_does_not_move_the_ratio_as_pooling_would() -> None:
    """A canary pod on a noisy node (×1.5) beside two good ones: each block takes the
    median of the pods, so the track is judged by its typical pod; pooling the requests
    would let the slow pod's third of them push the percentile up."""
    canary, baseline = pods(1.5, 1.0, 1.0, seed=21), pods(1.0, 1.0, 1.0, seed=22)
    per_pod = compare_blocks(canary, baseline)
    assert per_pod.units == 10 and per_pod.pod_counts() == (3, 3)
    assert per_pod.ratio < 1.05, per_pod.ratios
    assert compare_blocks(pooled(canary), pooled(baseline)).ratio > 1.1
    slow = per_pod.pods["canary"]["http://10.0.0.1:8501"]
    assert all(
        slow > 1.35 * ms
        for pod, ms in per_pod.pods["canary"].items()
        if pod != "http://10.0.0.1:8501"
    )


def test_a_regression_on_every_pod_fails_and_the_pods_are_reported(tmp_path: Path) -> None:
    result = compare_blocks(pods(1.25, 1.25, seed=23), pods(1.0, 1.0, seed=24))
    assert result.units == 10 and result.pod_counts() == (2, 2)
    assert 1.18 < result.ratio < 1.32 and result.p_value < 0.002
    endpoints = ("http://10.0.0.1:8501", "http://10.0.0.2:8501")
    canary = make_run(
        tmp_path / "c", 1.25 * lognormal(8, seed=25), track="canary", endpoints=endpoints
    )
    baseline = make_run(
        tmp_path / "b", lognormal(8, seed=26), track="baseline", endpoints=endpoints
    )
    row = next(r for r in decide(canary, RULES, baseline).rows if r.metric == "latency_vs_baseline")
    assert row.verdict == FAIL, row.reason
    assert "2 canary and 2 baseline pod(s)" in row.reason and "canary pods " in row.reason


def test_a_pod_that_stopped_half_way_leaves_its_blocks_out() -> None:
    """Blocks count only with every pod of both tracks in them: a pod gone half-way (its
    errors are the error rule's business) leaves half the blocks, too few to judge."""
    canary = pods(1.0, 1.0, seed=27)
    assert canary.endpoint is not None
    gone = (canary.endpoint == "http://10.0.0.2:8501") & (canary.scheduled > WINDOW_S / 2)
    keep = ~gone
    half = TimedLatencies(canary.scheduled[keep], canary.latency_ms[keep], canary.endpoint[keep])
    result = compare_blocks(half, pods(1.0, 1.0, seed=28))
    assert result.blocks == 10 and result.units <= 5 and result.pod_counts() == (2, 2)
    # A pod that never had enough in any block: no units, and the pods are still counted.
    starved = TimedLatencies(
        np.append(canary.scheduled, [1.0]),
        np.append(canary.latency_ms, [4.0]),
        np.append(canary.endpoint, ["http://10.0.0.9:8501"]),
    )
    none = compare_blocks(starved, pods(1.0, 1.0, seed=28))
    assert none.units == 0 and none.pod_counts() == (3, 2)


def test_few_requests_give_fewer_blocks_and_none_gives_no_units() -> None:
    result = compare_blocks(track(45, flat, 7), track(200, flat, 8), min_block_samples=10)
    assert result.blocks == 4  # 45 // 10: each block can hold its 10
    empty = compare_blocks(TimedLatencies(np.array([]), np.array([])), track(100, flat, 9))
    assert empty.units == 0 and empty.p_value == 1.0


def _write(path: Path, timed: TimedLatencies, track_name: str) -> Path:
    """A track's samples.csv with these scheduled times (make_run spaces them evenly)."""
    order = np.argsort(timed.scheduled)
    return make_run(path, timed.latency_ms[order], rate=len(order) / WINDOW_S, track=track_name)


@pytest.mark.parametrize(
    ("canary_factor", "outcome"),
    [
        (lambda t: np.where((t > 9) & (t < 15), 1.4, 1.0), PASS),
        (lambda t: 1.25 * np.ones_like(t), FAIL),
    ],
)
def test_the_gate_decides_on_blocks(tmp_path: Path, canary_factor: object, outcome: str) -> None:
    canary = _write(tmp_path / "c", track(1500, canary_factor, 10), "canary")
    baseline = _write(tmp_path / "b", track(1500, flat, 11), "baseline")
    verdict = decide(canary, RULES, baseline)
    row = next(r for r in verdict.rows if r.metric == "latency_vs_baseline")
    assert row.verdict == outcome, row.reason
    assert "blocks" in row.reason


def test_too_few_blocks_is_inconclusive_never_a_pass(tmp_path: Path) -> None:
    canary = _write(tmp_path / "c", track(40, flat, 12), "canary")
    baseline = _write(tmp_path / "b", track(40, flat, 13), "baseline")
    verdict = decide(canary, RULES, baseline)
    row = next(r for r in verdict.rows if r.metric == "latency_vs_baseline")
    assert row.verdict == INCONCLUSIVE and "6 needed" in row.reason
    assert verdict.outcome == INCONCLUSIVE
