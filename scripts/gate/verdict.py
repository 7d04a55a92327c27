"""The promotion gate: absolute SLOs plus a Kayenta-style comparison with the baseline.

Outcomes (each with its own exit code, README "Exit codes"):

* ``pass`` — every deciding metric meets its rule;
* ``fail`` — a deciding metric breaks its rule;
* ``inconclusive`` — no data, too few samples, or a saturated load generator
  (it measured itself, not the server): never a pass;
* ``error`` — the load test itself broke.

Baseline comparison, as Kayenta does it: the baseline (stable) and the canary
were loaded at the same time with the same traffic. Latency is compared on time
blocks, the units that carry the real variance (:mod:`scripts.gate.blocks`): a
one-sided Wilcoxon signed-rank test on the per-block log ratios at ``confidence``
*and* an effect-size tolerance (the median block ratio above ``latency_tolerance``,
and at least ``latency_min_delta_ms`` slower): a tiny but consistent shift does not
fail, a large but noisy one does not either; too few blocks is inconclusive. Error
ratios are compared per request (requests are the unit there) with Fisher's exact
test plus an absolute tolerance. With several pods per track, a track's value in a
block is the median of its pods' percentiles (each pod loaded at its own address). Each
metric has a direction; metrics listed in ``dry_run`` are reported, not decisive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scripts.errors import ConfigError
from scripts.loadtest.results import TrackResult, latencies, successes
from scripts.model_spec import SLOs

if TYPE_CHECKING:
    from scripts.gate.blocks import BlockComparison

PASS, FAIL, INCONCLUSIVE, ERROR = "pass", "fail", "inconclusive", "error"
EXIT_CODES = {PASS: 0, FAIL: 50, INCONCLUSIVE: 51, ERROR: 52}


class BaselineRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    confidence: float = Field(0.98, gt=0.5, lt=1)
    # Effect size on the median by default: on a shared 2-core machine two identical
    # servers' p95s differ by ~10 % run to run, their medians much less (docs/gate.md).
    latency_tolerance: float = Field(1.15, ge=1)
    latency_percentile: float = Field(50, gt=0, lt=100)
    # Differences below this are timer and scheduler noise on a loopback run: never a
    # failure. It was 1 ms, which for a 4 ms model equals the +25 % regression the gate
    # must catch (benchmarks/gate_accuracy.py detected 80 %); docs/gate.md.
    latency_min_delta_ms: float = Field(0.25, ge=0)
    # An absolute increase in the error ratio that is tolerated even when significant.
    # 0.005 let a 1 % regression through whenever the binomial draw fell to ≤ 0.5 %.
    error_tolerance: float = Field(0.002, ge=0)
    # The latency comparison's replicates: the window in at most `blocks` time blocks,
    # each counted with `min_block_samples` successful requests on both tracks; fewer
    # than `min_units` such blocks is inconclusive (docs/gate.md).
    blocks: int = Field(10, ge=2, le=100)
    min_block_samples: int = Field(10, ge=3)
    min_units: int = Field(6, ge=4)
    # A latency-only failure whose ratio is within this of the tolerance is borderline:
    # a second, independent load test decides (fail only if both fail; docs/gate.md).
    confirm_margin: float = Field(0.05, ge=0)
    # Set by gate-calibration.yaml (scripts/gate/calibration.py), never by hand: where
    # latency_tolerance came from, shown in the verdict's rule.
    calibration: str | None = None


class GateRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    slos: SLOs
    dry_run: list[str] = Field(default_factory=list)
    baseline: BaselineRules = BaselineRules()


def load_rules(path: Path, overlay: str | None = None) -> GateRules:
    """A gate file, or a model.yaml (its ``slos`` and optional ``gate`` section); with
    ``overlay``, its calibrated latency tolerance from ``gate-calibration.yaml`` beside
    the file, when there is one (scripts/gate/calibration.py)."""
    from scripts.gate.calibration import apply_calibration

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read SLO file {path}: {exc}",
            fix="pass --slo FILE (YAML with an slos: section)",
        ) from exc
    if isinstance(raw, dict) and "load_profiles" in raw:  # a model.yaml
        raw = {"slos": raw.get("slos"), **(raw.get("gate") or {})}
    given = raw.get("baseline") if isinstance(raw, dict) else None
    if isinstance(given, dict) and "calibration" in given:
        raise ConfigError(
            f"{path}: gate.baseline.calibration is written by `gate calibrate`, not by hand",
            fix="remove it; set latency_tolerance, or run `python -m scripts gate calibrate`",
        )
    try:
        rules = GateRules.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            f"{path} is not a valid gate configuration: {exc}",
            fix="see docs/gate.md for the format",
        ) from exc
    return apply_calibration(rules, path, overlay)


@dataclass
class Row:
    metric: str
    value: float | None
    rule: str
    verdict: str  # pass | fail | inconclusive | dry-run
    reason: str
    deciding: bool = True


@dataclass
class Verdict:
    outcome: str
    rows: list[Row]
    reasons: list[str]
    candidate: dict[str, Any]
    baseline: dict[str, Any] | None
    exit_code: int = field(init=False)
    # A borderline failure's first run, when a confirmation run decided (confirm.py).
    first_run: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.exit_code = EXIT_CODES[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "reasons": self.reasons,
            "rows": [asdict(r) for r in self.rows],
            "candidate": self.candidate,
            "baseline": self.baseline,
            "first_run": self.first_run,
        }


def _slo_rows(result: TrackResult, slos: SLOs, dry: set[str]) -> list[Row]:
    rows: list[Row] = []

    def add(metric: str, value: float | None, limit: float, ok: bool, rule: str) -> None:
        verdict = PASS if ok else FAIL
        if metric in dry:
            rows.append(
                Row(
                    metric,
                    value,
                    rule,
                    "dry-run",
                    f"measured only ({'would pass' if ok else 'would fail'})",
                    False,
                )
            )
        else:
            rows.append(
                Row(
                    metric,
                    value,
                    rule,
                    verdict,
                    "within the SLO" if ok else f"breaks the SLO ({rule})",
                )
            )
        del limit

    for name, key in (
        ("latency_p50_ms", "p50"),
        ("latency_p95_ms", "p95"),
        ("latency_p99_ms", "p99"),
    ):
        limit = float(getattr(slos, name))
        value = result.latency_ms.get(key)
        add(name, value, limit, value is not None and value <= limit, f"≤ {limit:g} ms")
    add(
        "error_ratio",
        result.error_ratio,
        slos.error_ratio_max,
        result.error_ratio <= slos.error_ratio_max,
        f"≤ {slos.error_ratio_max:g}",
    )
    fraction = result.achieved_rate / result.target_rate if result.target_rate else 0.0
    add(
        "throughput_fraction",
        fraction,
        slos.throughput_min_fraction,
        fraction >= slos.throughput_min_fraction,
        f"≥ {slos.throughput_min_fraction:g} of {result.target_rate:g} req/s",
    )
    return rows


def hodges_lehmann_shift(canary: np.ndarray, base: np.ndarray, limit: int = 2000) -> float:
    """Median of all canary − baseline differences: the location shift Mann–Whitney tests.

    Reported so a reader sees *how much* slower, in ms. Beyond ``limit`` samples a
    track is thinned evenly (a soak run would otherwise need billions of pairs).
    """
    thin = [
        np.sort(a)[np.linspace(0, a.size - 1, limit).astype(int)] if a.size > limit else a
        for a in (canary, base)
    ]
    return float(np.median(np.subtract.outer(thin[0], thin[1])))


def _pods_text(blocks: BlockComparison) -> str:
    """With several pods on a track: how many, and each pod's own percentile, so one slow
    pod shows (a block's track value is the median of its pods')."""
    if max(blocks.pod_counts()) < 2:
        return ""
    shown = "; ".join(
        f"{name} pods " + "/".join(f"{ms:.1f}" for ms in pods.values()) + " ms"
        for name, pods in blocks.pods.items()
    )
    canary, baseline = blocks.pod_counts()
    return (
        f", {canary} canary and {baseline} baseline pod(s), each block the median of its "
        f"pods: {shown}"
    )


def _baseline_rows(
    candidate_dir: Path, baseline_dir: Path, rules: BaselineRules, dry: set[str]
) -> list[Row]:
    from scipy.stats import fisher_exact

    from scripts.gate.blocks import TimedLatencies, compare_blocks

    rows: list[Row] = []
    canary, base = latencies(candidate_dir), latencies(baseline_dir)
    q = rules.latency_percentile
    metric = "latency_vs_baseline"
    rule = (
        f"p{q:g} ≤ {rules.latency_tolerance:g}× baseline, per time block "
        f"(direction: increase is bad, confidence {rules.confidence:g})"
        + (f"; tolerance {rules.calibration}" if rules.calibration else "")
    )
    blocks = compare_blocks(
        TimedLatencies.read(candidate_dir),
        TimedLatencies.read(baseline_dir),
        percentile=q,
        blocks=rules.blocks,
        min_block_samples=rules.min_block_samples,
    )
    if not (canary.size and base.size):
        rows.append(
            Row(
                metric,
                None,
                "needs samples on both tracks",
                INCONCLUSIVE,
                "no data on one track (NODATA)",
            )
        )
    elif blocks.units < rules.min_units:
        rows.append(
            Row(
                metric,
                None,
                rule,
                INCONCLUSIVE,
                f"only {blocks.units} time block(s) with ≥ {rules.min_block_samples} "
                "successful requests on "
                + ("every pod of " if max(blocks.pod_counts()) > 1 else "")
                + f"both tracks; {rules.min_units} needed (run the load test longer or "
                "faster)",
            )
        )
    else:
        significant = blocks.p_value < 1 - rules.confidence
        worse = (
            blocks.ratio > rules.latency_tolerance and blocks.delta_ms > rules.latency_min_delta_ms
        )
        failed = significant and worse
        shift = hodges_lehmann_shift(canary, base)
        reason = (
            f"canary p{q:g} {blocks.canary_ms:.1f} ms vs baseline {blocks.baseline_ms:.1f} ms "
            f"(×{blocks.ratio:.2f}, the median of {blocks.units} {blocks.block_s:.1f}-s "
            f"blocks{_pods_text(blocks)}), shift {shift:+.2f} ms; Wilcoxon over the blocks "
            f"p={blocks.p_value:.2g} "
            + (
                "— significantly slower beyond the tolerance"
                if failed
                else "— not slower beyond tolerance"
                if not worse
                else "— slower but not consistently across the blocks"
            )
        )
        rows.append(
            Row(
                metric,
                blocks.ratio,
                rule,
                "dry-run" if metric in dry else (FAIL if failed else PASS),
                reason,
                metric not in dry,
            )
        )
    (c_ok, c_n), (b_ok, b_n) = successes(candidate_dir), successes(baseline_dir)
    if c_n and b_n:
        c_err, b_err = c_n - c_ok, b_n - b_ok
        p_value = float(fisher_exact([[c_err, c_ok], [b_err, b_ok]], alternative="greater")[1])
        delta = c_err / c_n - b_err / b_n
        failed = p_value < 1 - rules.confidence and delta > rules.error_tolerance
        metric = "errors_vs_baseline"
        rows.append(
            Row(
                metric,
                delta,
                f"error ratio ≤ baseline + {rules.error_tolerance:g} "
                f"(Fisher exact, confidence {rules.confidence:g})",
                "dry-run" if metric in dry else (FAIL if failed else PASS),
                f"canary {c_err}/{c_n} vs baseline {b_err}/{b_n} errors, Fisher p={p_value:.2g}",
                metric not in dry,
            )
        )
    return rows


def decide(candidate_dir: Path, rules: GateRules, baseline_dir: Path | None = None) -> Verdict:
    """Judge one candidate run (and its baseline, when there is one)."""
    from scripts.loadtest.results import load

    try:
        candidate = load(candidate_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return Verdict(ERROR, [], [f"no readable results in {candidate_dir}: {exc}"], {}, None)
    baseline = None
    if baseline_dir is not None:
        try:
            baseline = load(baseline_dir)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return Verdict(
                ERROR, [], [f"no readable baseline results: {exc}"], candidate.to_dict(), None
            )
    reasons: list[str] = []
    for result in filter(None, (candidate, baseline)):
        if result.broken:
            return Verdict(
                ERROR,
                [],
                [f"{result.track}: the load test broke: {result.broken}"],
                candidate.to_dict(),
                baseline.to_dict() if baseline else None,
            )
    dry = set(rules.dry_run)
    rows = _slo_rows(candidate, rules.slos, dry)
    if baseline is not None:
        rows += _baseline_rows(candidate_dir, baseline_dir, rules.baseline, dry)  # type: ignore[arg-type]
    for result in filter(None, (candidate, baseline)):
        if result.samples == 0:
            reasons.append(f"{result.track}: no data (0 samples)")
        elif result.samples < rules.slos.min_samples:
            reasons.append(
                f"{result.track}: {result.samples} samples, fewer than the "
                f"{rules.slos.min_samples} required"
            )
        if result.saturated:
            reasons.append(
                f"{result.track}: the load generator was saturated "
                f"({'; '.join(result.saturation_reasons)}): it measured itself"
            )
    failing = [r for r in rows if r.deciding and r.verdict == FAIL]
    if reasons:
        outcome = INCONCLUSIVE
    elif failing:
        outcome = FAIL
        reasons = [f"{r.metric}: {r.reason}" for r in failing]
    elif any(r.verdict == INCONCLUSIVE and r.deciding for r in rows):
        outcome = INCONCLUSIVE
        reasons = [f"{r.metric}: {r.reason}" for r in rows if r.verdict == INCONCLUSIVE]
    else:
        outcome = PASS
        reasons = ["every deciding metric meets its rule"]
    if outcome == INCONCLUSIVE and failing:
        # Too little or untrustworthy data: what failed is reported, but does not decide.
        reasons += [f"(also measured) {r.metric}: {r.reason}" for r in failing]
    return Verdict(
        outcome, rows, reasons, candidate.to_dict(), baseline.to_dict() if baseline else None
    )
