"""The capacity search on synthetic servers whose capacity is known exactly."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from scripts.bench.results import Slo, Step
from scripts.bench.search import SearchPlan, find_capacity

SLO = Slo(p99_ms=50.0, error_ratio=0.01)


def _step(phase: str, rate: float, achieved: float, p99: float, *, saturated: bool = False) -> Step:
    reasons = []
    if saturated:
        verdict = "invalid"
        reasons.append("generator saturated")
    else:
        if p99 > SLO.p99_ms:
            reasons.append(f"p99 {p99:.1f} ms")
        if achieved < SLO.min_achieved * rate:
            reasons.append("answered too few")
        verdict = "fail" if reasons else "pass"
        if phase == "warmup":
            verdict = "warmup"
    return Step(
        phase=phase,
        offered_rps=rate,
        achieved_rps=achieved,
        p50_ms=p99 / 3,
        p95_ms=p99 / 1.5,
        p99_ms=p99,
        error_ratio=0.0,
        samples=int(achieved * 10),
        throttled_ratio=None,
        throttling_note="synthetic",
        generator_saturated=saturated,
        generator_cpu=0.1,
        verdict=verdict,
        reasons=reasons,
    )


def queue_server(
    capacity: float, *, generator_limit: float = math.inf
) -> Callable[[float, str], Step]:
    """An M/D/1-like server: p99 grows as 1/(1-ρ) and explodes past its capacity."""
    calls: list[tuple[float, str]] = []

    def measure(rate: float, phase: str) -> Step:
        calls.append((rate, phase))
        rho = rate / capacity
        p99 = 10.0 / (1 - rho) if rho < 1 else 10_000.0
        achieved = min(rate, capacity)
        return _step(phase, rate, achieved, p99, saturated=rate > generator_limit)

    measure.calls = calls  # type: ignore[attr-defined]
    return measure


def slo_capacity(capacity: float) -> float:
    """Where the synthetic server's p99 reaches the SLO: 10 / (1 - ρ) = 50 → ρ = 0.8."""
    return capacity * (1 - 10.0 / SLO.p99_ms)


@pytest.mark.parametrize("capacity", [37.0, 180.0, 1234.0])
def test_the_search_lands_within_its_resolution_of_the_true_capacity(capacity: float) -> None:
    measure = queue_server(capacity)
    found = find_capacity(measure, SearchPlan(start_rps=10))
    truth = slo_capacity(capacity)
    assert found.rps is not None
    assert truth * 0.95 <= found.rps <= truth, (found.rps, truth)
    bisects = [s for s in found.steps if s.phase == "bisect"]
    assert len(bisects) <= 5
    assert len([s for s in found.steps if s.phase == "repeat"]) == 2  # 3 measurements
    assert found.spread is not None and found.spread <= 0.05 + 1e-9
    assert found.steps[0].phase == "warmup"
    assert "bisected" in found.stopped


def test_a_saturated_generator_is_never_a_pass_and_gives_a_lower_bound() -> None:
    measure = queue_server(1000.0, generator_limit=100.0)  # the server could do far more
    found = find_capacity(measure, SearchPlan(start_rps=10))
    invalid = [s for s in found.steps if s.verdict == "invalid"]
    assert invalid and all(not s.passed for s in invalid)
    assert all(s.offered_rps <= 100.0 for s in found.steps if s.passed)
    # The bracket closes on the generator's limit, not the server's: a lower bound.
    assert found.rps is not None and 95.0 <= found.rps <= 100.0
    assert found.lower_bound
    assert "saturated" in found.stopped and "at least" in found.stopped


def test_a_real_failure_below_the_generator_limit_is_a_measured_capacity() -> None:
    found = find_capacity(queue_server(100.0, generator_limit=150.0), SearchPlan(start_rps=10))
    assert found.rps is not None and not found.lower_bound
    assert slo_capacity(100.0) * 0.95 <= found.rps <= slo_capacity(100.0)


def test_nothing_passes_when_even_the_start_rate_breaks_the_slo() -> None:
    found = find_capacity(queue_server(5.0), SearchPlan(start_rps=10))
    assert found.rps is None
    assert found.at is None
    assert "SLO broke" in found.stopped


def test_most_repeats_failing_retreats_to_a_lower_passing_rate() -> None:
    """A server that passes at a rate once, then fails there: the point does not stand."""
    seen: dict[float, int] = {}

    def flaky(rate: float, phase: str) -> Step:
        seen[rate] = seen.get(rate, 0) + 1
        if rate >= 90 and phase == "repeat":
            return _step(phase, rate, rate, 80.0)  # repeats at or above 90 fail
        return _step(phase, rate, rate, 20.0 if rate < 100 else 200.0)

    found = find_capacity(flaky, SearchPlan(start_rps=10))
    assert found.rps is not None and found.rps < 90
    assert "retreated" in found.stopped
    assert all(r.passed for r in found.repeats)
    assert len(found.repeats) == 3


def test_a_point_that_never_holds_gives_no_capacity() -> None:
    def never_again(rate: float, phase: str) -> Step:
        return _step(phase, rate, rate, 80.0 if phase == "repeat" else 20.0)

    found = find_capacity(never_again, SearchPlan(start_rps=10, max_rps=80))
    assert found.rps is None
    assert "no rate held" in found.stopped


def test_throughput_that_stops_rising_ends_the_ramp_early() -> None:
    """With a gentle ramp, a server flat at 50 req/s stops the search before the SLO says so."""

    def flat(rate: float, phase: str) -> Step:
        return _step(phase, rate, min(rate, 50.0), 20.0)  # p99 never breaks; only throughput

    plan = SearchPlan(start_rps=45, factor=1.02, min_gain=0.05, gain_window=2, repeats=1)
    found = find_capacity(flat, plan)
    assert "stopped rising" in found.stopped or "SLO broke" in found.stopped
    ramp = [s for s in found.steps if s.phase == "ramp"]
    assert len(ramp) < 12


def test_quick_mode_measures_the_capacity_point_once() -> None:
    found = find_capacity(queue_server(200.0), SearchPlan(start_rps=20, repeats=1))
    assert found.rps is not None
    assert not [s for s in found.steps if s.phase == "repeat"]
    assert found.repeats and len(found.repeats) == 1


def test_the_ceiling_ends_a_search_that_never_fails() -> None:
    found = find_capacity(queue_server(1e9), SearchPlan(start_rps=10, max_rps=160))
    assert found.rps == 160
    assert "ceiling" in found.stopped
    assert found.lower_bound and "at least" in found.stopped
