"""The calibrated tolerance: the statistics, the file, and the rules the gate then reads."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import chi2

from scripts.config import MODELS_DIR
from scripts.errors import ConfigError, UsageError
from scripts.gate.calibrate import run_calibration
from scripts.gate.calibration import (
    CALIBRATION_FILE,
    MIN_TOLERANCE,
    fit,
    measured,
    read_calibration,
    write_calibration,
)
from scripts.gate.verdict import decide, load_rules
from tests.unit.test_gate import lognormal, make_run


@pytest.fixture
def model_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "digits" / "model.yaml"
    path.parent.mkdir()
    shutil.copy(MODELS_DIR / "digits" / "model.yaml", path)
    return path


def test_fit_is_three_upper_sigmas_of_the_log_ratio() -> None:
    rng = np.random.default_rng(7)
    ratios = list(np.exp(rng.normal(0.0, 0.04, 12)))
    mean, sigma, upper, tolerance = fit(ratios)
    logs = np.log(ratios)
    assert mean == pytest.approx(logs.mean())
    assert sigma == pytest.approx(logs.std(ddof=1))
    assert upper == pytest.approx(sigma * math.sqrt(11 / chi2.ppf(0.10, 11)))
    assert upper > sigma  # ten-odd trials: σ is uncertain, the bound is above it
    assert tolerance == pytest.approx(math.exp(abs(mean) + 3 * upper))
    # A systematic shift between the twins widens the tolerance by itself (|mean|).
    shifted = fit([r * 1.03 for r in ratios])
    assert shifted[3] == pytest.approx(tolerance * 1.03, rel=0.02)


def test_a_quiet_machine_gets_the_floor_and_too_few_trials_are_refused() -> None:
    assert fit([1.0, 1.001, 0.999, 1.0, 1.0005])[3] == MIN_TOLERANCE
    with pytest.raises(ValueError, match="at least 5"):
        fit([1.0, 1.1, 0.9, 1.0])


def test_the_gate_reads_the_overlays_calibration_and_says_so(
    model_yaml: Path, tmp_path: Path
) -> None:
    noisy = [1.12, 0.9, 1.05, 0.95, 1.1, 0.93, 1.08, 0.97]
    entry = measured(noisy, inconclusive=1, target="local", image="oci:x@sha256:1", profile="smoke")
    assert entry.latency_tolerance > 1.3  # noisy twins: a wide tolerance
    write_calibration(model_yaml.parent / CALIBRATION_FILE, "digits", "local", entry)
    quiet = measured(
        [1.01, 0.99, 1.0, 1.02, 0.98], inconclusive=0, target="k8s", image="r@sha256:2",
        profile="smoke",
    )  # fmt: skip
    write_calibration(model_yaml.parent / CALIBRATION_FILE, "digits", "production", quiet)
    saved = read_calibration(model_yaml.parent / CALIBRATION_FILE)
    assert saved is not None and set(saved.overlays) == {"local", "production"}  # both kept
    assert saved.overlays["local"] == entry

    default = load_rules(model_yaml)
    local = load_rules(model_yaml, "local")
    production = load_rules(model_yaml, "production")
    assert default.baseline.latency_tolerance == 1.15 and default.baseline.calibration is None
    assert local.baseline.latency_tolerance == entry.latency_tolerance
    assert production.baseline.latency_tolerance == quiet.latency_tolerance
    assert load_rules(model_yaml, "elsewhere") == default  # an overlay never calibrated

    # The same +25 % run: the noisy overlay's tolerance lets it through, the quiet one's
    # does not — and the verdict names where its tolerance came from.
    run = tmp_path / "run"
    make_run(run / "canary", lognormal(10.0, seed=1))
    make_run(run / "baseline", lognormal(8.0, seed=2), track="baseline")
    on_local = decide(run / "canary", local, run / "baseline")
    on_production = decide(run / "canary", production, run / "baseline")
    row = {r.metric: r for r in on_local.rows}["latency_vs_baseline"]
    assert row.verdict == "pass" and "calibrated" in row.rule and "8 A/A runs" in row.rule
    assert {r.metric: r for r in on_production.rows}["latency_vs_baseline"].verdict == "fail"


def test_a_broken_or_foreign_calibration_is_refused(model_yaml: Path) -> None:
    path = model_yaml.parent / CALIBRATION_FILE
    path.write_text("model: digits\noverlays:\n  local: {latency_tolerance: fast}\n")
    with pytest.raises(ConfigError, match="not a valid gate calibration"):
        load_rules(model_yaml, "local")
    path.write_text(yaml.safe_dump({"model": "mnist", "overlays": {}}))
    entry = measured([1.0, 1.1, 0.9, 1.0, 1.05], inconclusive=0, target="local", image="i",
                     profile="smoke")  # fmt: skip
    with pytest.raises(ConfigError, match="calibrates model 'mnist'"):
        write_calibration(path, "digits", "local", entry)
    text = model_yaml.read_text() + "gate:\n  baseline:\n    calibration: made up\n"
    model_yaml.write_text(text)
    with pytest.raises(ConfigError, match="written by `gate calibrate`"):
        load_rules(model_yaml)


def test_too_few_trials_are_refused_before_anything_is_deployed(tmp_path: Path) -> None:
    class Untouchable:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the target was used: {name}")

    with pytest.raises(UsageError, match="at least 5"):
        run_calibration(
            target=Untouchable(),  # type: ignore[arg-type]
            rendered=Untouchable(),  # type: ignore[arg-type]
            rules=load_rules(MODELS_DIR / "digits" / "model.yaml"),
            trials=3,
            load_test=lambda tracks, out: None,
            workdir=tmp_path,
            options=Untouchable(),  # type: ignore[arg-type]
            profile="smoke",
        )
