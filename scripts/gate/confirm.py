"""Confirmation of a borderline failure: a second, independent load test decides.

A latency comparison can fail on noise that belongs to one run (a process that shared
a core with the generator, a neighbour busy for the whole window): blocks within the
run share it, so only another run can tell. When the *only* failing deciding metric is
``latency_vs_baseline`` and its ratio is within ``confirm_margin`` of the tolerance,
the load test runs once more — new generator processes, in a directory of its own —
and the release fails only if that run fails too. A clear regression (a larger ratio,
an SLO or error failure) fails at once; a pass or an inconclusive run is final. The
extra minute is spent only on borderline cases.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from scripts.gate.verdict import FAIL, GateRules, Verdict
from scripts.log import log

LATENCY_METRIC = "latency_vs_baseline"


def is_borderline(verdict: Verdict, rules: GateRules) -> bool:
    failing = [r for r in verdict.rows if r.deciding and r.verdict == FAIL]
    if verdict.outcome != FAIL or [r.metric for r in failing] != [LATENCY_METRIC]:
        return False
    ratio = failing[0].value
    limit = rules.baseline.latency_tolerance + rules.baseline.confirm_margin
    return ratio is not None and ratio <= limit


def combine(first: Verdict, second: Verdict) -> Verdict:
    """The second run's verdict, carrying the first: fail only if both failed."""
    first_ratio = next(r.value for r in first.rows if r.metric == LATENCY_METRIC)
    lead = f"borderline latency failure in the first run (×{first_ratio:.2f}): " + (
        "confirmed by a second, independent run"
        if second.outcome == FAIL
        else f"not confirmed by a second, independent run ({second.outcome})"
    )
    return Verdict(
        second.outcome,
        second.rows,
        [lead, *second.reasons],
        second.candidate,
        second.baseline,
        first_run=first.to_dict(),
    )


def confirm_if_borderline(
    verdict: Verdict,
    run: Callable[[Path], None],
    judge: Callable[[Path], Verdict],
    rules: GateRules,
    results_dir: Path,
) -> tuple[Verdict, Path]:
    """``verdict`` (of the run in ``results_dir``) as final, or — when it is a borderline
    failure — the verdict after one more load test into ``results_dir/confirmation``.
    Returns the verdict and the directory of the run it came from."""
    if not is_borderline(verdict, rules):
        return verdict, results_dir
    log.warning("gate: %s — borderline; confirming with a second run", verdict.reasons[0])
    again = results_dir / "confirmation"
    run(again)
    return combine(verdict, judge(again)), again
