"""Model warm-up end to end: records written by ``package`` (no TensorFlow), read back by
TensorFlow and TF Serving's real ``PredictionLog``, and replayed by ``python -m scripts
serve`` before a version is AVAILABLE.

* The TFRecord framing against TensorFlow's reader and writer, both ways.
* The records of a real digits release (``digits_releases``: trained and packaged as an ML
  engineer would) parsed with ``tensorflow_serving.apis.prediction_log_pb2``.
* The replay (in this process, on the loaded release): every record run, other log kinds
  skipped and counted, and each way a warm-up fails the load.
* A real server: the records replayed before the first readiness answer (log and
  ``:tensorflow:serving:model_warmup_latency``), a hot-swapped version with a corrupt file
  reported END while the old one serves, a server whose only version has a corrupt file
  never ready, and ``--enable_model_warmup=false``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import yaml

# Set before TensorFlow is imported so its C++ start-up logging stays quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf
from prometheus_client import CollectorRegistry
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from scripts import tfrecord
from scripts.config import MODELS_DIR
from scripts.serving.models import Servable, load_servable
from scripts.serving.warmup import Warmup, WarmupError, replay_file
from scripts.warmup import WARMUP_FILE
from tests.conftest import REPO_ROOT, DigitsReleases, free_port
from tests.integration.serving_fixtures import (
    MONITORING_CONFIG,
    SAMPLE_DIGIT,
    Server,
    loads,
    metric_value,
    predict,
    running_server,
)

pytestmark = [pytest.mark.tensorflow, pytest.mark.integration]

LATENCY_COUNT = ":tensorflow:serving:model_warmup_latency_count"
RECORDS = 1  # models/digits/model.yaml has no warmup block: the default count
SAMPLE = yaml.safe_load((MODELS_DIR / "digits" / "model.yaml").read_text())["sample_request"]


@pytest.fixture(scope="module")
def digits_v1(digits_releases: DigitsReleases, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits v1 as `package` made it (warm-up records included), unpacked: …/digits/1."""
    root = tmp_path_factory.mktemp("warmup-release")
    with tarfile.open(digits_releases(1)[1]) as tar:
        tar.extractall(root, filter="data")
    return root / "digits" / "1"


@pytest.fixture(scope="module")
def servable(digits_v1: Path) -> Servable:
    return load_servable("digits", 1, digits_v1)


def _predict_log(
    signature: str = "serving_default", pixels: Any = SAMPLE_DIGIT
) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="digits", signature_name=signature)
    )
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(np.array([pixels], np.float32)))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def _warmup_file(tmp_path: Path, *logs: prediction_log_pb2.PredictionLog | bytes) -> Path:
    path = tmp_path / "tf_serving_warmup_requests"
    path.write_bytes(
        tfrecord.encode(x if isinstance(x, bytes) else x.SerializeToString() for x in logs)
    )
    return path


# -- the file format ---------------------------------------------------------------------------
def test_tensorflow_reads_our_records_and_we_read_its(tmp_path: Path) -> None:
    records = [b"", b"warm", os.urandom(100_000), bytes(range(256)) * 3]
    ours = tmp_path / "ours.tfrecord"
    ours.write_bytes(tfrecord.encode(records))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == records
    assert list(tf.compat.v1.io.tf_record_iterator(str(ours))) == records

    theirs = tmp_path / "theirs.tfrecord"
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in records:
            writer.write(record)
    assert theirs.read_bytes() == ours.read_bytes()  # the same bytes, not just readable
    with theirs.open("rb") as stream:
        assert list(tfrecord.read_records(stream)) == records


def test_packaged_records_are_the_prediction_logs_tf_serving_expects(digits_v1: Path) -> None:
    raw = list(tf.compat.v1.io.tf_record_iterator(str(digits_v1 / WARMUP_FILE)))
    assert len(raw) == RECORDS
    expected = _predict_log(pixels=SAMPLE["instances"][0])
    for record in raw:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        np.testing.assert_array_equal(
            tf.make_ndarray(request.inputs["pixels"]), np.array(SAMPLE["instances"], np.float32)
        )
        assert log == expected, log
        # Nothing but the request: no response, no metadata, no unknown fields.
        assert log.SerializeToString() == expected.SerializeToString()


# -- the replay, in this process -----------------------------------------------------------------
def test_every_packaged_record_is_replayed(servable: Servable, digits_v1: Path) -> None:
    report = replay_file(servable, digits_v1 / WARMUP_FILE)
    assert (report.records, report.skipped) == (RECORDS, {})


def test_streamed_and_empty_logs_are_skipped_and_counted(
    servable: Servable, tmp_path: Path
) -> None:
    streamed = prediction_log_pb2.PredictionLog()
    streamed.predict_streamed_log.request.add().model_spec.name = "digits"
    path = _warmup_file(tmp_path, _predict_log(), streamed, b"", streamed)
    report = replay_file(servable, path)
    assert report.records == 4
    assert report.skipped == {"predict_streamed_log": 2, "empty": 1}


def _examples(request: Any, *values: float) -> None:
    for value in values:
        example = request.input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(value)


@pytest.fixture(scope="module")
def scorer(tmp_path_factory: pytest.TempPathFactory) -> Servable:
    """A tiny model with a classification and a regression signature over tf.Example."""
    features = {"x": tf.io.FixedLenFeature([1], tf.float32)}
    serialized = tf.TensorSpec([None], tf.string)

    class Scorer(tf.Module):
        @tf.function(input_signature=[serialized])
        def classify(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            x = tf.io.parse_example(inputs, features)["x"]
            labels = tf.tile(tf.constant([["low", "high"]]), [tf.shape(x)[0], 1])
            return {"classes": labels, "scores": tf.concat([1 - x, x], axis=1)}

        @tf.function(input_signature=[serialized])
        def regress(self, inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"outputs": 2 * tf.io.parse_example(inputs, features)["x"]}

    path = tmp_path_factory.mktemp("scorer") / "1"
    module = Scorer()
    tf.saved_model.save(
        module, str(path), signatures={"classify": module.classify, "regress": module.regress}
    )
    return load_servable("scorer", 1, path)


def test_classify_regress_and_multi_inference_logs_are_replayed(
    scorer: Servable, tmp_path: Path
) -> None:
    classify = prediction_log_pb2.PredictionLog()
    classify.classify_log.request.model_spec.signature_name = "classify"
    _examples(classify.classify_log.request, 0.25, 0.5)
    regress = prediction_log_pb2.PredictionLog()
    regress.regress_log.request.model_spec.signature_name = "regress"
    _examples(regress.regress_log.request, 1.0)
    multi = prediction_log_pb2.PredictionLog()
    for signature, method in [
        ("classify", "tensorflow/serving/classify"),
        ("regress", "tensorflow/serving/regress"),
    ]:
        task = multi.multi_inference_log.request.tasks.add(method_name=method)
        task.model_spec.signature_name = signature
    _examples(multi.multi_inference_log.request, 0.75)
    report = replay_file(scorer, _warmup_file(tmp_path, classify, regress, multi))
    assert (report.records, report.skipped) == (3, {})

    # The records really run the model: an example it cannot parse fails the warm-up.
    bad = prediction_log_pb2.PredictionLog()
    bad.regress_log.request.model_spec.signature_name = "regress"
    bad.regress_log.request.input.example_list.examples.add()  # no feature "x"
    with pytest.raises(WarmupError, match=r"INVALID_ARGUMENT: warmup record 1 \(regress_log\)"):
        replay_file(scorer, _warmup_file(tmp_path, regress, bad))


def test_a_classify_log_for_a_model_that_cannot_classify_fails(
    servable: Servable, tmp_path: Path
) -> None:
    classify = prediction_log_pb2.PredictionLog()
    _examples(classify.classify_log.request, 1.0)  # digits' serving_default is predict-only
    with pytest.raises(WarmupError, match=r"INVALID_ARGUMENT: warmup record 0 \(classify_log\)"):
        replay_file(servable, _warmup_file(tmp_path, classify))


def test_each_record_runs_num_request_iterations_times(servable: Servable, tmp_path: Path) -> None:
    calls: list[str] = []
    path = _warmup_file(tmp_path, _predict_log(), _predict_log("other"))
    replay_file(
        servable,
        path,
        iterations=3,
        replays={"predict_log": lambda s, r: calls.append(r.model_spec.signature_name)},
    )
    assert calls == ["serving_default"] * 3 + ["other"] * 3


@pytest.mark.parametrize(
    ("logs", "code", "fragment"),
    [
        ([_predict_log(), _predict_log(pixels=SAMPLE_DIGIT[:7])], "INVALID_ARGUMENT", "record 1"),
        ([_predict_log("nope")], "INVALID_ARGUMENT", '"nope" not found in signature def'),
        ([b"\xff\xff\xff"], "INVALID_ARGUMENT", "Failed to parse warmup record 0"),
        (
            [prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog())],
            "UNIMPLEMENTED",
            "session_run_log",
        ),
        ([b""] * 1001, "INVALID_ARGUMENT", "exceeds the maximum (1000)"),
    ],
    ids=["bad-shape", "bad-signature", "not-a-prediction-log", "session-run", "too-many"],
)
def test_a_failing_record_fails_the_warmup(
    servable: Servable, tmp_path: Path, logs: list[Any], code: str, fragment: str
) -> None:
    with pytest.raises(WarmupError) as caught:
        replay_file(servable, _warmup_file(tmp_path, *logs))
    assert caught.value.code == code
    assert fragment in str(caught.value)


def test_a_corrupt_file_is_data_loss_and_observed_in_the_metric(
    servable: Servable, digits_v1: Path, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    warmup = Warmup(registry)
    warmup(servable)  # the packaged file
    version_dir = tmp_path / "1"
    shutil.copytree(digits_v1, version_dir)
    _corrupt(version_dir / WARMUP_FILE)
    broken = Servable("digits", 1, version_dir, servable.signatures)
    with pytest.raises(WarmupError, match="DATA_LOSS: corrupted record data") as caught:
        warmup(broken)
    assert "Please verify your warmup data is in TFRecord format" in str(caught.value)

    def count(path: Path, status: str) -> float | None:
        labels = {"model_path": str(path), "status": status}
        return registry.get_sample_value(LATENCY_COUNT, labels)

    assert count(digits_v1, "OK") == 1
    assert count(version_dir, "DATA_LOSS") == 1


def _corrupt(path: Path) -> None:
    """Flip one byte inside the first record's data (its length and crcs stay intact)."""
    data = bytearray(path.read_bytes())
    data[8 + 4 + 5] ^= 0x01  # past the length (8) and its crc (4)
    path.write_bytes(bytes(data))


# -- a real server -------------------------------------------------------------------------------
def _states(server: Server) -> dict[str, dict[str, Any]]:
    response = requests.get(server.model_url(), timeout=10)
    assert response.status_code == 200, response.text
    return {s["version"]: s for s in loads(response)["model_version_status"]}


def _wait_for(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_records_are_replayed_before_the_version_is_available(
    digits_v1: Path, tmp_path: Path
) -> None:
    base = tmp_path / "digits"
    shutil.copytree(digits_v1, base / "1")
    with running_server(
        [
            "--model_name=digits",
            f"--model_base_path={base}",
            f"--monitoring_config_file={MONITORING_CONFIG}",
            "--file_system_poll_wait_seconds=0.2",
        ],
        log_dir=tmp_path,
    ) as server:
        # The first answer of the readiness probe already follows the replay.
        metrics = server.metrics()
        assert metric_value(metrics, LATENCY_COUNT, model_path=str(base / "1"), status="OK") == 1
        log = server.log()
        assert f"Number of warmup records read: {RECORDS}." in log
        assert log.index("Number of warmup records read") < log.index("loaded digits version 1")
        # Warm-up requests are not client requests.
        assert metric_value(metrics, ":tensorflow:serving:request_count", model_name="digits") == 0
        assert predict(server, {"instances": [SAMPLE_DIGIT]}).status_code == 200

        # A new version whose warm-up file is corrupt is never served; version 1 serves on.
        incoming = base / ".incoming-2"
        shutil.copytree(digits_v1, incoming)
        _corrupt(incoming / WARMUP_FILE)
        incoming.rename(base / "2")
        _wait_for("version 2 reported", lambda: _states(server).get("2", {}).get("state") == "END")
        states = _states(server)
        message = states["2"]["status"]["error_message"]
        assert "WarmupError: DATA_LOSS: corrupted record data" in message, states
        assert str(base / "2" / WARMUP_FILE) in message
        assert states["1"]["state"] == "AVAILABLE", states
        response = predict(server, {"instances": [SAMPLE_DIGIT]})
        assert response.status_code == 200, response.text
        assert "failed to load digits version 2: WarmupError: DATA_LOSS" in server.log()
        metrics = server.metrics()
        assert (
            metric_value(metrics, LATENCY_COUNT, model_path=str(base / "2"), status="DATA_LOSS")
            == 1
        )


@pytest.fixture
def corrupt_base(digits_v1: Path, tmp_path: Path) -> Path:
    base = tmp_path / "digits"
    shutil.copytree(digits_v1, base / "1")
    _corrupt(base / "1" / WARMUP_FILE)
    return base


def test_a_corrupt_warmup_file_keeps_the_server_from_ever_being_ready(corrupt_base: Path) -> None:
    port = free_port()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scripts",
            "serve",
            "--port=0",
            f"--rest_api_port={port}",
            "--bind_address=127.0.0.1",
            "--model_name=digits",
            f"--model_base_path={corrupt_base}",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "model digits has no servable version" in proc.stderr
    assert "v1: WarmupError: DATA_LOSS: corrupted record data" in proc.stderr
    assert "Please verify your warmup data is in TFRecord format" in proc.stderr
    assert "REST on" not in proc.stderr  # its ports never opened


def test_enable_model_warmup_false_loads_without_replaying(
    corrupt_base: Path, tmp_path: Path
) -> None:
    with running_server(
        [
            "--model_name=digits",
            f"--model_base_path={corrupt_base}",
            f"--monitoring_config_file={MONITORING_CONFIG}",
            "--enable_model_warmup=false",
        ],
        log_dir=tmp_path,
    ) as server:
        assert _states(server)["1"]["state"] == "AVAILABLE"
        assert LATENCY_COUNT not in server.metrics()
        assert "warmup" not in server.log().lower()
