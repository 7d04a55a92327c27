"""A borderline latency failure gets exactly one confirmation run; a clear one none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scripts.gate.confirm import confirm_if_borderline, is_borderline
from scripts.gate.verdict import FAIL, PASS, Verdict, decide
from tests.unit.test_gate import RULES, lognormal, make_run


def runner(ratios: list[float], errors: int = 0) -> tuple[Callable[[Path], None], list[Path]]:
    """A fake load test: each call writes a run whose canary is ×ratio the baseline."""
    calls: list[Path] = []

    def run(out: Path) -> None:
        ratio = ratios[len(calls)]
        calls.append(out)
        make_run(out / "canary", lognormal(8 * ratio, seed=len(calls)), errors=errors)
        make_run(out / "baseline", lognormal(8, seed=100 + len(calls)), track="baseline")

    return run, calls


def judge(run_dir: Path) -> Verdict:
    return decide(run_dir / "canary", RULES, run_dir / "baseline")


@pytest.mark.parametrize(
    ("ratios", "runs", "outcome"),
    [
        ([1.0], 1, PASS),  # a pass is final
        ([1.6], 1, FAIL),  # a clear regression fails at once
        ([1.17, 1.0], 2, PASS),  # borderline, not confirmed: promoted
        ([1.17, 1.17], 2, FAIL),  # borderline twice: fails
    ],
)
def test_only_a_borderline_latency_failure_runs_again_once(
    tmp_path: Path, ratios: list[float], runs: int, outcome: str
) -> None:
    run, calls = runner(ratios)
    run(tmp_path)
    verdict, final_dir = confirm_if_borderline(judge(tmp_path), run, judge, RULES, tmp_path)
    assert len(calls) == runs
    assert verdict.outcome == outcome, verdict.reasons
    if runs == 2:
        assert final_dir == tmp_path / "confirmation"
        assert verdict.first_run is not None and verdict.first_run["outcome"] == FAIL
        assert verdict.reasons[0].startswith("borderline latency failure in the first run")
        assert ("confirmed" if outcome == FAIL else "not confirmed") in verdict.reasons[0]
        assert verdict.to_dict()["first_run"] == verdict.first_run
    else:
        assert final_dir == tmp_path and verdict.first_run is None


def test_a_failure_with_errors_is_never_borderline(tmp_path: Path) -> None:
    run, calls = runner([1.17], errors=60)  # 5 % errors: an SLO and a baseline failure
    run(tmp_path)
    first = judge(tmp_path)
    assert first.outcome == FAIL and not is_borderline(first, RULES)
    verdict, _ = confirm_if_borderline(first, run, judge, RULES, tmp_path)
    assert len(calls) == 1 and verdict is first


def test_the_margin_is_the_rules(tmp_path: Path) -> None:
    run, _ = runner([1.17])
    run(tmp_path)
    verdict = judge(tmp_path)
    strict = RULES.model_copy(
        update={"baseline": RULES.baseline.model_copy(update={"confirm_margin": 0.0})}
    )
    assert is_borderline(verdict, RULES) and not is_borderline(verdict, strict)
    assert np.isfinite(next(r.value for r in verdict.rows if r.metric == "latency_vs_baseline"))
