"""Integration tests for the model export scripts under models/.

Each export runs as a real subprocess (as the pipeline would run it) and the result is loaded
back with plain TensorFlow, without Keras, the same way TF Serving sees it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

# Set before TensorFlow is imported so its C++ start-up logging stays quiet. TensorFlow is
# a pinned requirement: where it is missing, this module fails (it is never skipped).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

REPO_ROOT = Path(__file__).resolve().parents[2]
DIGITS_EXPORT = REPO_ROOT / "models" / "digits" / "export.py"
RESNET_EXPORT = REPO_ROOT / "models" / "resnet50" / "export.py"
RESNET_TEST_SIZE = 32
EXPORT_TIMEOUT_S = 300


def run_export(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=EXPORT_TIMEOUT_S,
        check=False,
    )


def parse_single_json(stdout: str) -> dict[str, Any]:
    # The pipeline reads stdout as exactly one JSON document; anything else there is a bug.
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one JSON line on stdout, got: {stdout!r}"
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    return result


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def assert_spec(spec: Any, shape: list[int | None], dtype: Any) -> None:
    assert isinstance(spec, tf.TensorSpec), spec
    assert spec.shape.as_list() == shape
    assert spec.dtype == dtype


def assert_prediction_outputs(outputs: dict[str, Any], batch: int, classes: int) -> None:
    probabilities = outputs["probabilities"].numpy()
    class_id = outputs["class_id"].numpy()
    assert probabilities.shape == (batch, classes)
    assert probabilities.dtype == np.float32
    assert class_id.shape == (batch,)
    assert class_id.dtype == np.int64
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(class_id, probabilities.argmax(axis=1))


def gradient_image(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 127 // (height + width)])
    return np.moveaxis(rgb, 0, -1).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# digits


@pytest.fixture(scope="module")
def digits_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("digits_out")
    proc = run_export(DIGITS_EXPORT, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out, parse_single_json(proc.stdout)


@pytest.mark.tensorflow
def test_digits_layout_and_json(digits_export: tuple[Path, dict[str, Any]]) -> None:
    out, result = digits_export
    version_dir = out / "digits" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    assert any((version_dir / "variables").glob("variables.data-*"))
    # No temporary export directory may be left next to the version for TF Serving to see.
    assert sorted(p.name for p in (out / "digits").iterdir()) == ["1"]

    assert Path(result["path"]) == version_dir
    assert result["model_name"] == "digits"
    assert result["version"] == 1
    assert 0.0 <= result["holdout_accuracy"] <= 1.0
    assert result["train_seconds"] > 0


@pytest.mark.tensorflow
def test_digits_signature(digits_export: tuple[Path, dict[str, Any]]) -> None:
    out, _ = digits_export
    loaded = tf.saved_model.load(str(out / "digits" / "1"))
    assert list(loaded.signatures.keys()) == ["serving_default"]
    signature = loaded.signatures["serving_default"]

    args, kwargs = signature.structured_input_signature
    assert args == ()
    assert list(kwargs) == ["pixels"]
    assert_spec(kwargs["pixels"], [None, 8, 8], tf.float32)

    outputs = signature.structured_outputs
    assert set(outputs) == {"probabilities", "class_id"}
    assert_spec(outputs["probabilities"], [None, 10], tf.float32)
    assert_spec(outputs["class_id"], [None], tf.int64)


@pytest.mark.tensorflow
def test_digits_holdout_accuracy(digits_export: tuple[Path, dict[str, Any]]) -> None:
    out, result = digits_export
    _, x_test, _, y_test = load_module(DIGITS_EXPORT, "digits_export").split()
    assert x_test.shape == (450, 8, 8)
    assert x_test.dtype == np.float32

    serve = tf.saved_model.load(str(out / "digits" / "1")).signatures["serving_default"]
    outputs = serve(pixels=tf.constant(x_test))
    assert_prediction_outputs(outputs, batch=len(x_test), classes=10)

    accuracy = float(np.mean(outputs["class_id"].numpy() == y_test))
    assert accuracy >= 0.9
    # The script's own number must describe the exported graph (allow one sample of slack for
    # float differences between the in-process and the reloaded graph).
    assert abs(accuracy - result["holdout_accuracy"]) <= 1.0 / len(y_test)


@pytest.mark.tensorflow
def test_digits_refuses_existing_version(digits_export: tuple[Path, dict[str, Any]]) -> None:
    out, _ = digits_export
    saved_model = out / "digits" / "1" / "saved_model.pb"
    before = saved_model.stat().st_mtime_ns

    proc = run_export(DIGITS_EXPORT, "--out", str(out), "--version", "1")

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "already exists" in proc.stderr
    assert "--version" in proc.stderr
    assert "--force" in proc.stderr
    assert saved_model.stat().st_mtime_ns == before


@pytest.mark.tensorflow
def test_digits_force_replaces_version(tmp_path: Path) -> None:
    # One epoch keeps this cheap; only the replace mechanics are under test here.
    first = run_export(DIGITS_EXPORT, "--out", str(tmp_path), "--epochs", "1")
    assert first.returncode == 0, first.stderr
    marker = tmp_path / "digits" / "1" / "assets" / "stale-marker"
    marker.write_text("from the first export")

    second = run_export(DIGITS_EXPORT, "--out", str(tmp_path), "--epochs", "1", "--force")

    assert second.returncode == 0, second.stderr
    assert parse_single_json(second.stdout)["version"] == 1
    assert not marker.exists()
    assert (tmp_path / "digits" / "1" / "saved_model.pb").is_file()
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["1"]


# --------------------------------------------------------------------------------------------
# resnet50


@pytest.fixture(scope="module")
def resnet_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("resnet_out")
    proc = run_export(RESNET_EXPORT, "--out", str(out), "--image-size", str(RESNET_TEST_SIZE))
    assert proc.returncode == 0, proc.stderr
    return out, parse_single_json(proc.stdout)


@pytest.fixture(scope="module")
def resnet_loaded(resnet_export: tuple[Path, dict[str, Any]]) -> Any:
    out, _ = resnet_export
    return tf.saved_model.load(str(out / "resnet50" / "1"))


@pytest.mark.tensorflow
def test_resnet_layout_and_json(resnet_export: tuple[Path, dict[str, Any]]) -> None:
    out, result = resnet_export
    version_dir = out / "resnet50" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert (version_dir / "variables").is_dir()
    assert sorted(p.name for p in (out / "resnet50").iterdir()) == ["1"]

    assert Path(result["path"]) == version_dir
    assert result["model_name"] == "resnet50"
    assert result["version"] == 1
    assert result["image_size"] == RESNET_TEST_SIZE
    assert result["size_bytes"] == dir_size(version_dir)
    # ~25.6M float32 parameters; much less means the weights were not saved.
    assert result["size_bytes"] > 90_000_000


@pytest.mark.tensorflow
def test_resnet_signatures(resnet_loaded: Any) -> None:
    assert set(resnet_loaded.signatures.keys()) == {"serving_default", "predict_images"}
    size = RESNET_TEST_SIZE
    expected_inputs = {
        "serving_default": ("image_bytes", [None], tf.string),
        "predict_images": ("images", [None, size, size, 3], tf.float32),
    }
    for name, (input_name, shape, dtype) in expected_inputs.items():
        signature = resnet_loaded.signatures[name]
        args, kwargs = signature.structured_input_signature
        assert args == ()
        assert list(kwargs) == [input_name], name
        assert_spec(kwargs[input_name], shape, dtype)

        outputs = signature.structured_outputs
        assert set(outputs) == {"probabilities", "class_id"}, name
        assert_spec(outputs["probabilities"], [None, 1000], tf.float32)
        assert_spec(outputs["class_id"], [None], tf.int64)


@pytest.mark.tensorflow
def test_resnet_serving_default_jpeg(resnet_loaded: Any) -> None:
    serve = resnet_loaded.signatures["serving_default"]
    # Not the export size, so the in-graph resize is exercised.
    jpeg = tf.io.encode_jpeg(gradient_image(48, 40)).numpy()

    outputs = serve(image_bytes=tf.constant([jpeg]))
    assert_prediction_outputs(outputs, batch=1, classes=1000)

    # The JPEG path must equal decode+resize followed by the float path, i.e. both signatures
    # share the same preprocessing.
    decoded = tf.cast(tf.io.decode_jpeg(jpeg, channels=3), tf.float32)
    resized = tf.image.resize(decoded, [RESNET_TEST_SIZE, RESNET_TEST_SIZE])
    via_floats = resnet_loaded.signatures["predict_images"](images=resized[tf.newaxis])
    np.testing.assert_allclose(
        outputs["probabilities"].numpy(), via_floats["probabilities"].numpy(), atol=1e-5
    )

    # A batch mixing image sizes must decode element-wise.
    other = tf.io.encode_jpeg(gradient_image(20, 64)).numpy()
    assert_prediction_outputs(serve(image_bytes=tf.constant([jpeg, other])), batch=2, classes=1000)


@pytest.mark.tensorflow
def test_resnet_predict_images(resnet_loaded: Any) -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(1, RESNET_TEST_SIZE, RESNET_TEST_SIZE, 3))
    outputs = resnet_loaded.signatures["predict_images"](images=tf.constant(images, tf.float32))
    assert_prediction_outputs(outputs, batch=1, classes=1000)
