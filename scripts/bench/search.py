"""The open-loop capacity search: the highest offered rate at which an overlay meets the SLO.

After the practice of Triton's model_analyzer and perf_analyzer (REFERENCE §8):

1. a short warm-up at the start rate (not judged);
2. a geometric ramp (×``factor``) until a step fails the SLO;
3. bisection (geometric midpoints) between the last pass and the first failure,
   until they are within ``resolution`` of each other, in at most ``max_bisect`` steps;
4. an early stop in the ramp when throughput stops rising (< ``min_gain`` over the
   last ``gain_window`` steps): the server is saturated whatever the SLO says;
5. the capacity point is measured ``repeats`` times in all; it stands when most
   repeats pass, otherwise the search retreats to the next lower passing rate.

A step whose generator was saturated is *invalid*: it measured the generator, so it
is never a pass. An invalid step ends the search with the last pass as a lower
bound, and says so. The search knows nothing about servers: ``measure(rate, phase)``
does the measuring, which makes it testable on synthetic servers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from scripts.bench.results import Step

Measure = Callable[[float, str], Step]


@dataclass(frozen=True)
class SearchPlan:
    start_rps: float = 10.0
    factor: float = 2.0
    max_rps: float = 20_000.0  # a ceiling: passing here ends the search ("at least")
    resolution: float = 0.05  # bisection stops when (fail - pass) / pass <= this
    max_bisect: int = 5
    min_gain: float = 0.05
    gain_window: int = 2
    repeats: int = 3  # measurements of the capacity point, the first included
    max_retreats: int = 2


@dataclass
class Capacity:
    rps: float | None  # None: not even the start rate met the SLO
    at: Step | None  # the median repeat at capacity
    repeats: list[Step] = field(default_factory=list)
    spread: float | None = None
    stopped: str = ""
    steps: list[Step] = field(default_factory=list)
    lower_bound: bool = False  # the upper bracket is a saturated generator, not a failure


def find_capacity(measure: Measure, plan: SearchPlan) -> Capacity:
    steps: list[Step] = []

    def step(rate: float, phase: str) -> Step:
        result = measure(rate, phase)
        steps.append(result)
        return result

    step(plan.start_rps, "warmup")
    last_pass: Step | None = None
    first_fail: Step | None = None
    stopped = ""
    at_ceiling = False
    rate = plan.start_rps
    while True:
        current = step(rate, "ramp")
        if current.verdict == "invalid":
            stopped = _invalid_stop(current, last_pass)
            break
        if current.passed:
            last_pass = current
        else:
            first_fail = current
            stopped = f"the SLO broke at {rate:.4g} req/s ({'; '.join(current.reasons)})"
            break
        if _flat(steps, plan):
            stopped = (
                f"throughput stopped rising (< {plan.min_gain:.0%} over the last "
                f"{plan.gain_window} steps) at {current.achieved_rps:.4g} req/s"
            )
            break
        if rate >= plan.max_rps:
            stopped = f"met the SLO at the search's ceiling, {plan.max_rps:.4g} req/s"
            at_ceiling = True
            break
        rate = min(rate * plan.factor, plan.max_rps)
    if last_pass is None:
        return Capacity(rps=None, at=None, stopped=stopped or "no rate met the SLO", steps=steps)
    if first_fail is None and steps[-1].verdict == "invalid":
        first_fail = steps[-1]  # an upper bracket that only says "the generator gave up"
    if first_fail is not None:
        last_pass, first_fail, note = _bisect(step, last_pass, first_fail, plan)
        stopped += note
    capacity = _confirm(step, steps, best=last_pass, above=first_fail, plan=plan, stopped=stopped)
    saturated = first_fail is not None and first_fail.verdict == "invalid"
    capacity.lower_bound = capacity.rps is not None and (saturated or at_ceiling)
    if capacity.lower_bound:
        why = "the generator saturated first" if saturated else "the ceiling, --max-rps"
        capacity.stopped += f"; capacity is at least {capacity.rps:.4g} req/s ({why})"
    return capacity


def _invalid_stop(current: Step, last_pass: Step | None) -> str:
    return (
        f"the load generator saturated at {current.offered_rps:.4g} req/s "
        f"({'; '.join(current.reasons)})"
        + ("" if last_pass else ": nothing valid was measured")
        + "; give the generator more CPU (--workers, --processes)"
    )


def _flat(steps: list[Step], plan: SearchPlan) -> bool:
    ramp = [s for s in steps if s.phase == "ramp"]
    if len(ramp) <= plan.gain_window:
        return False
    before = max(s.achieved_rps for s in ramp[: -plan.gain_window])
    recent = max(s.achieved_rps for s in ramp[-plan.gain_window :])
    return before > 0 and recent < before * (1 + plan.min_gain)


def _bisect(
    step: Callable[[float, str], Step], low: Step, high: Step, plan: SearchPlan
) -> tuple[Step, Step, str]:
    """Geometric midpoints between a pass and a failure (or a saturated generator).

    An invalid midpoint lowers the upper bracket like a failure does, but it proves
    nothing about the server: if the bracket ends on one, capacity is a lower bound."""
    done = 0
    while done < plan.max_bisect and (high.offered_rps - low.offered_rps) > (
        plan.resolution * low.offered_rps
    ):
        middle = step(math.sqrt(low.offered_rps * high.offered_rps), "bisect")
        done += 1
        if middle.passed:
            low = middle
        else:
            high = middle
    width = (high.offered_rps - low.offered_rps) / low.offered_rps
    return low, high, f"; bisected to within {width:.1%} in {done} step(s)"


def _confirm(
    step: Callable[[float, str], Step],
    steps: list[Step],
    *,
    best: Step,
    above: Step | None,
    plan: SearchPlan,
    stopped: str,
) -> Capacity:
    """Repeat the capacity point; retreat to the next lower pass when most repeats fail."""
    for round_ in range(plan.max_retreats + 1):
        repeats = [best] + [step(best.offered_rps, "repeat") for _ in range(plan.repeats - 1)]
        passes = [r for r in repeats if r.passed]
        if len(passes) * 2 > len(repeats):
            return _capacity(
                best=best, above=above, repeats=repeats, passes=passes, steps=steps,
                stopped=stopped,
            )  # fmt: skip
        stopped += (
            f"; {len(repeats) - len(passes)} of {len(repeats)} repeats at "
            f"{best.offered_rps:.4g} req/s failed"
        )
        lower = [
            s
            for s in steps
            if s.passed and s.phase in ("ramp", "bisect") and s.offered_rps < best.offered_rps
        ]
        if not lower or round_ == plan.max_retreats:
            break
        above = best
        best = max(lower, key=lambda s: s.offered_rps)
        stopped += f", retreated to {best.offered_rps:.4g} req/s"
    return Capacity(rps=None, at=None, stopped=stopped + ": no rate held", steps=steps)


def _capacity(
    *,
    best: Step,
    above: Step | None,
    repeats: list[Step],
    passes: list[Step],
    steps: list[Step],
    stopped: str,
) -> Capacity:
    """Capacity = the rate; spread = the larger of the bracket and the repeats' range.

    The bracket (first failure − capacity) is what the search could not resolve; the
    repeats' relative range of achieved throughput (and a failed repeat, which widens
    it to the bracket at least) is what the measurement itself varies by.
    """
    rate = best.offered_rps
    bracket = (above.offered_rps - rate) / rate if above is not None else 0.0
    achieved = [r.achieved_rps for r in repeats]
    middle = statistics.median(achieved)
    spread_repeats = (max(achieved) - min(achieved)) / middle if middle > 0 else 0.0
    at = sorted(passes, key=lambda s: s.p99_ms)[len(passes) // 2]
    return Capacity(
        rps=rate,
        at=at,
        repeats=repeats,
        spread=max(bracket, spread_repeats),
        stopped=stopped,
        steps=steps,
    )
