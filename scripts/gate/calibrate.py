"""The A/A runs behind ``gate calibrate``: the stable image against fresh copies of itself.

Each trial deploys a canary *of the stable image* with a fresh baseline (the same
deploy a delivery makes, so the pods or processes, their size, age and warm-up are the
ones the gate will compare), runs the load test, takes the gate's own latency statistic
and removes both — in every outcome, and never touching the stable track. The spread of
those ratios is what :mod:`scripts.gate.calibration` turns into a tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.errors import LockError, UsageError
from scripts.gate.calibration import MIN_TRIALS, OverlayCalibration, measured
from scripts.log import log

if TYPE_CHECKING:
    from scripts.deploy.target import DeployOptions, DeployTarget
    from scripts.gate.verdict import GateRules
    from scripts.manifests.render import Rendered

# tracks ({"canary": [...], "baseline": [...]}) → a results directory with both tracks
LoadTest = Callable[[dict[str, list[str]], Path], None]


@dataclass
class CalibrationRun:
    calibration: OverlayCalibration
    false_alarms: int  # trials the gate, with its current tolerance, would have failed
    trial_dirs: list[Path] = field(default_factory=list)


def run_calibration(
    *,
    target: DeployTarget,
    rendered: Rendered,
    rules: GateRules,
    trials: int,
    load_test: LoadTest,
    workdir: Path,
    options: DeployOptions,
    profile: str,
    grpc: bool = False,
) -> CalibrationRun:
    from scripts.deploy.target import (
        STABLE,
        deployment_of,
        image_of,
        remove_canary_of,
        stable_objects,
    )
    from scripts.gate.confirm import LATENCY_METRIC
    from scripts.gate.verdict import FAIL, decide

    if trials < MIN_TRIALS:
        raise UsageError(
            f"--trials {trials}: a spread needs at least {MIN_TRIALS} A/A runs",
            fix="pass --trials 10 (the default) or more",
        )
    status = target.status()
    if not status.stable.exists or not status.stable.image:
        raise UsageError(
            f"no stable version of {rendered.model} in {status.namespace} ({status.target})",
            cause="calibration compares the stable image with fresh copies of itself",
            fix="deliver a release first (python -m scripts run / deliver), then calibrate",
        )
    image = status.stable.image
    if image_of(deployment_of(stable_objects(rendered), STABLE)) != image:
        raise UsageError(
            f"the manifests run {image_of(deployment_of(stable_objects(rendered), STABLE))}, "
            f"not the stable image {image}",
            fix="render them with the stable image (the command does this itself)",
        )
    if status.canary.exists:
        raise LockError(
            f"a canary ({status.canary.image}) is under test in {status.namespace}",
            cause="a delivery is running; calibration needs the canary slot for its A/A runs",
            fix="wait for the delivery to finish, then calibrate",
        )
    endpoint_key = "_grpc" if grpc else ""
    ratios: list[float] = []
    inconclusive = false_alarms = 0
    dirs: list[Path] = []
    fresh = replace(options, fresh_baseline=True, dry_run=False)
    for i in range(1, trials + 1):
        out = workdir / f"trial-{i:02d}"
        dirs.append(out)
        try:
            deployed = target.deploy(rendered, canary=True, options=fresh)
            tracks = {
                "canary": deployed.endpoints.get(f"canary{endpoint_key}", []),
                "baseline": deployed.endpoints.get(f"baseline{endpoint_key}", []),
            }
            if not (tracks["canary"] and tracks["baseline"]):
                raise UsageError(
                    f"the A/A deploy on {status.target} gave no endpoints for {tracks}",
                    fix="check `python -m scripts status`; the target must support "
                    "--fresh-baseline",
                )
            load_test(tracks, out)
        finally:
            remove_canary_of(target, options, image)
        verdict = decide(out / "canary", rules, out / "baseline")
        row = next((r for r in verdict.rows if r.metric == LATENCY_METRIC), None)
        if row is None or row.value is None:
            inconclusive += 1
            log.warning("calibration trial %d/%d: no latency ratio (%s)", i, trials, row)
            continue
        ratios.append(row.value)
        false_alarms += row.verdict == FAIL
        log.info("calibration trial %d/%d: A/A ratio ×%.3f", i, trials, row.value)
    if len(ratios) < MIN_TRIALS:
        raise UsageError(
            f"only {len(ratios)} of {trials} A/A runs gave a latency ratio "
            f"({inconclusive} had too few time blocks)",
            cause="the load profile is too short or too slow for the gate's blocks",
            fix="calibrate with the profile the gate uses (--profile smoke), or a longer one",
        )
    calibration = measured(
        ratios, inconclusive=inconclusive, target=status.target, image=image, profile=profile
    )
    return CalibrationRun(calibration, false_alarms, dirs)
