"""The validate stage: signature checks and sample-request fit, without TensorFlow."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripts.artifact.savedmodel import SignatureInfo, TensorInfo
from scripts.artifact.validate import check_sample_request, resolve_version_dir
from scripts.config import MODELS_DIR
from scripts.errors import ConfigError, InvalidModelError
from scripts.model_spec import load_model_spec
from tests.conftest import CLIResult
from tests.fakes.savedmodel_factory import write_saved_model

DIGITS = SignatureInfo(
    name="serving_default",
    method="tensorflow/serving/predict",
    inputs={"pixels": TensorInfo("serving_default_pixels:0", "float", [-1, 8, 8])},
    outputs={"class_id": TensorInfo("x", "int64", [-1])},
)
IMAGES = SignatureInfo(
    name="serving_default",
    method="tensorflow/serving/predict",
    inputs={"image_bytes": TensorInfo("x", "string", [-1])},
    outputs={"class_id": TensorInfo("y", "int64", [-1])},
)
ROW = [[0.0] * 8 for _ in range(8)]


@pytest.mark.parametrize(
    ("signature", "sample"),
    [
        (DIGITS, {"instances": [ROW]}),
        (DIGITS, {"instances": [{"pixels": ROW}, {"pixels": ROW}]}),
        (DIGITS, {"inputs": [ROW, ROW]}),
        (DIGITS, {"inputs": {"pixels": [ROW]}}),
        (IMAGES, {"instances": [{"b64": "aGVsbG8="}]}),
    ],
)
def test_fitting_samples_have_no_problems(signature: SignatureInfo, sample: dict[str, Any]) -> None:
    assert check_sample_request(signature, sample) == []


@pytest.mark.parametrize(
    ("signature", "sample", "problem"),
    [
        (DIGITS, {"instances": [[0.0] * 64]}, "rank 1"),
        (DIGITS, {"instances": [[[0.0] * 7] * 8]}, "dimension 1 is 7"),
        (DIGITS, {"instances": [[["a"] * 8] * 8]}, "expects numbers"),
        (DIGITS, {"instances": [{"pixelz": ROW}]}, "missing inputs ['pixels']"),
        (DIGITS, {"instances": []}, "non-empty"),
        (DIGITS, {"signature_name": "x"}, "neither"),
        (IMAGES, {"instances": [1.5]}, "expects strings"),
    ],
)
def test_misfitting_samples_are_explained(
    signature: SignatureInfo, sample: dict[str, Any], problem: str
) -> None:
    problems = check_sample_request(signature, sample)
    assert any(problem in p for p in problems), problems


def test_every_shipped_model_yaml_is_valid() -> None:
    specs = sorted(MODELS_DIR.glob("*/model.yaml"))
    assert specs, "models/*/model.yaml missing"
    for path in specs:
        spec = load_model_spec(path)
        assert spec.name == path.parent.name
        assert "smoke" in spec.load_profiles


def test_bad_model_yaml_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "model.yaml"
    bad.write_text(
        "name: digits\nsample_request: {instances: [1]}\nslos: {latency_p50_ms: -1}\n"
        "load_profiles: {}\n"
    )
    with pytest.raises(ConfigError, match=r"slos\.latency_p50_ms"):
        load_model_spec(bad)


def test_version_dir_resolution_picks_the_highest(tmp_path: Path) -> None:
    for v in (1, 10, 2):
        write_saved_model(tmp_path / "digits" / str(v))
    assert resolve_version_dir(tmp_path / "digits") == (tmp_path / "digits" / "10", 10)
    with pytest.raises(InvalidModelError, match="no SavedModel version"):
        resolve_version_dir(tmp_path / "nothing")


def test_validate_command_checks_the_digits_sample(
    cli: Callable[..., CLIResult], model_dir: Path
) -> None:
    ok = cli(
        "validate",
        model_dir.parent,
        "--model-config",
        MODELS_DIR / "digits" / "model.yaml",
        "--json",
    )
    assert ok.exit_code == 0, ok.stderr
    assert ok.json()["sample_request_checked"] is True


def test_validate_command_rejects_a_sample_for_another_model(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    other = write_saved_model(
        tmp_path / "m" / "1",
        signatures={"serving_default": ({"features": ("float", [-1, 4])}, {"y": ("float", [-1])})},
    )
    result = cli("validate", other, "--model-config", MODELS_DIR / "digits" / "model.yaml")
    assert result.exit_code == ConfigError.exit_code
    assert "does not fit" in result.stderr
