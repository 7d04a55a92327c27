"""The latency tolerance from A/A runs, not a guess (``gate calibrate``; docs/gate.md).

How far apart are two *identical* versions? ``gate calibrate`` answers it for one model,
overlay and target: each trial starts a fresh canary of the stable image beside a fresh
baseline of the same image (new pods, or new processes on the local target), loads both
as the gate's smoke test does, and takes the statistic the gate judges — the median of
the per-block p50 ratios (:mod:`scripts.gate.blocks`) — then removes both. The spread of
the log ratio over the trials sets the tolerance:

    tolerance = exp(|mean| + 3 × σ_upper),  at least ×1.05

where σ_upper is the one-sided 90 % upper confidence bound on σ (chi-square on n − 1
degrees of freedom): with ten trials, σ itself is uncertain by about a third, and the
tolerance must hold for the spread the machine really has, not the one a lucky run saw.
Under a normal fit that puts an identical release above the tolerance about once in
740 runs (before the Wilcoxon test and the confirmation run, which cut it further).

The result goes to ``gate-calibration.yaml`` beside the model's ``model.yaml``, one entry
per overlay (the ratios kept, so a reviewer sees what it rests on). ``gate`` and the
pipeline read it for the overlay they judge: the calibrated tolerance replaces
``gate.baseline.latency_tolerance``, and the verdict's rule says so. Rerun it when the
overlay's size, the node type or the machine changes.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scripts.atomic import write_text_atomic
from scripts.errors import ConfigError

if TYPE_CHECKING:
    from scripts.gate.verdict import GateRules

CALIBRATION_FILE = "gate-calibration.yaml"
SIGMAS = 3.0
UPPER_CONFIDENCE = 0.90
MIN_TOLERANCE = 1.05
MIN_TRIALS = 5
# A tolerance above this cannot tell a +25 % regression (the gate's design case) from noise.
DETECTABLE = 1.25

HEADER = """\
# Written by `python -m scripts gate calibrate` (docs/gate.md): per overlay, the spread of
# the latency ratio between two identical versions (A/A), and the tolerance set from it.
# The gate reads `latency_tolerance` for the overlay it judges. Rerun the calibration when
# the overlay's size, the node type or the machine changes; do not edit by hand.
"""


class OverlayCalibration(BaseModel):
    """What one calibration measured, and the tolerance it sets."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    target: str
    image: str
    profile: str
    date: str
    trials: int = Field(ge=MIN_TRIALS)
    inconclusive: int = Field(0, ge=0)
    ratios: list[float]
    log_ratio_mean: float
    log_ratio_sigma: float = Field(ge=0)
    log_ratio_sigma_upper: float = Field(ge=0)
    latency_tolerance: float = Field(ge=1)

    def describe(self) -> str:
        return (
            f"calibrated {self.date} on {self.trials} A/A runs ({self.target}): "
            f"σ {self.log_ratio_sigma:.3f} (≤ {self.log_ratio_sigma_upper:.3f} at "
            f"{UPPER_CONFIDENCE:.0%}), mean {self.log_ratio_mean:+.3f}"
        )


class CalibrationFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    overlays: dict[str, OverlayCalibration] = Field(default_factory=dict)


def fit(ratios: list[float]) -> tuple[float, float, float, float]:
    """(mean, σ, σ_upper, tolerance) of the A/A log ratios."""
    from scipy.stats import chi2

    if len(ratios) < MIN_TRIALS:
        raise ValueError(f"{len(ratios)} ratios; at least {MIN_TRIALS} needed")
    logs = [math.log(r) for r in ratios]
    n = len(logs)
    mean = sum(logs) / n
    sigma = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    upper = sigma * math.sqrt((n - 1) / float(chi2.ppf(1 - UPPER_CONFIDENCE, n - 1)))
    tolerance = max(MIN_TOLERANCE, math.exp(abs(mean) + SIGMAS * upper))
    return mean, sigma, upper, tolerance


def measured(
    ratios: list[float], *, inconclusive: int, target: str, image: str, profile: str
) -> OverlayCalibration:
    mean, sigma, upper, tolerance = fit(ratios)
    return OverlayCalibration(
        target=target,
        image=image,
        profile=profile,
        date=time.strftime("%Y-%m-%d", time.gmtime()),
        trials=len(ratios),
        inconclusive=inconclusive,
        ratios=[round(r, 4) for r in ratios],
        log_ratio_mean=round(mean, 5),
        log_ratio_sigma=round(sigma, 5),
        log_ratio_sigma_upper=round(upper, 5),
        latency_tolerance=round(tolerance, 3),
    )


def calibration_path(rules_file: Path) -> Path:
    """Where the calibration of the model whose ``model.yaml`` (or gate file) this is lives."""
    return rules_file.parent / CALIBRATION_FILE


def read_calibration(path: Path) -> CalibrationFile | None:
    if not path.is_file():
        return None
    try:
        return CalibrationFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(
            f"{path} is not a valid gate calibration: {exc}",
            cause="it was edited by hand, or written by another version",
            fix="run `python -m scripts gate calibrate` again (or delete the file to use "
            "the model.yaml's tolerance)",
        ) from exc


def calibration_text(
    text: str, path: str, model: str, overlay: str, entry: OverlayCalibration
) -> str:
    """A calibration file's text (``""``: none yet) with ``overlay``'s entry added or
    replaced, the other overlays' kept."""
    try:
        raw = yaml.safe_load(text) if text.strip() else None
        current = CalibrationFile.model_validate(raw) if raw is not None else None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(
            f"{path} is not a valid gate calibration: {exc}",
            cause="it was edited by hand, or written by another version",
            fix="delete it (its overlays need calibrating again) or restore it from git",
        ) from exc
    current = current or CalibrationFile(model=model)
    if current.model != model:
        raise ConfigError(
            f"{path} calibrates model {current.model!r}, not {model!r}",
            fix="pass the model.yaml of the model you calibrate (--model-config)",
        )
    overlays = {**current.overlays, overlay: entry}
    document = CalibrationFile(model=model, overlays=dict(sorted(overlays.items())))
    return HEADER + yaml.safe_dump(document.model_dump(), sort_keys=False, allow_unicode=True)


def write_calibration(path: Path, model: str, overlay: str, entry: OverlayCalibration) -> None:
    """Add or replace ``overlay``'s entry in the file, keeping the others; atomic."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    write_text_atomic(path, calibration_text(text, str(path), model, overlay, entry))


def apply_calibration(rules: GateRules, rules_file: Path, overlay: str | None) -> GateRules:
    """``rules`` with the overlay's calibrated latency tolerance, when there is one."""
    if not overlay:
        return rules
    calibration = read_calibration(calibration_path(rules_file))
    entry = calibration.overlays.get(overlay) if calibration else None
    if entry is None:
        return rules
    baseline = rules.baseline.model_copy(
        update={"latency_tolerance": entry.latency_tolerance, "calibration": entry.describe()}
    )
    return rules.model_copy(update={"baseline": baseline})
