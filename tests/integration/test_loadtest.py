"""The gRPC load test: TF-free PredictRequests that TF Serving's own protos read, and a
real Locust run of the gRPC user against ``python -m scripts serve`` on 127.0.0.1.
"""

from __future__ import annotations

import base64
import csv
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
import yaml
from tensorflow_serving.apis import predict_pb2

from scripts.loadtest.grpc_payload import fetch_signature, predict_request
from tests.conftest import CLIResult
from tests.integration.serving_fixtures import ExportedModels, Server, running_server

pytestmark = [pytest.mark.tensorflow, pytest.mark.integration]


DIGITS_SAMPLE = yaml.safe_load((Path("models/digits/model.yaml")).read_text())["sample_request"]
# 100 samples a track, as 4 s at 25 req/s gave, in half the time (mechanics, not power).
LOAD = ("--duration", "2", "--warmup", "1", "--rate", "50", "--users", "2")


@pytest.fixture(scope="module")
def digits(
    exported_models: ExportedModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with running_server(
        ["--model_name=digits", f"--model_base_path={exported_models.digits}"],
        log_dir=tmp_path_factory.mktemp("grpc-load"),
    ) as server:
        yield server


def _parsed(raw: bytes) -> Any:
    request = predict_pb2.PredictRequest()
    request.ParseFromString(raw)
    return request


def test_predict_request_bytes_are_tf_servings_message(digits: Server) -> None:
    signature = fetch_signature(f"grpc://{digits.grpc_target}", "digits", "serving_default")
    request = _parsed(predict_request(DIGITS_SAMPLE, "digits", signature))
    assert request.model_spec.name == "digits"
    assert request.model_spec.signature_name == "serving_default"
    (key,) = request.inputs
    tensor = tf.make_ndarray(request.inputs[key])
    # The JSON integers became the signature's float32, batch first: what TF Serving's
    # REST API would have made of the same body.
    assert tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor, np.asarray(DIGITS_SAMPLE["instances"], np.float32))


def test_columnar_and_b64_bodies_convert_like_the_rest_api(
    exported_models: ExportedModels, tmp_path: Path
) -> None:
    with running_server(
        ["--model_name=text", f"--model_base_path={exported_models.base('text')}"],
        model_name="text",
        log_dir=tmp_path,
    ) as server:
        signature = fetch_signature(server.grpc_target, "text", "serving_default")
    body = {"inputs": [{"b64": base64.b64encode(b"\x00\xffraw").decode()}, "plain"]}
    request = _parsed(predict_request(body, "text", signature))
    assert list(request.inputs["text"].string_val) == [b"\x00\xffraw", b"plain"]


def test_a_sample_that_does_not_fit_the_signature_is_a_config_error(digits: Server) -> None:
    from scripts.errors import ConfigError

    signature = fetch_signature(digits.grpc_target, "digits", "serving_default")
    with pytest.raises(ConfigError, match="does not fit"):
        predict_request({"instances": [[1.0, 2.0]]}, "digits", signature)
    with pytest.raises(ConfigError, match="no signature 'nope'"):
        fetch_signature(digits.grpc_target, "digits", "nope")


def _samples(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_grpc_load_test_spreads_over_tracks_and_reports(
    cli: Callable[..., CLIResult], digits: Server, exported_models: ExportedModels, tmp_path: Path
) -> None:
    with running_server(
        [
            "--model_name=digits",
            f"--model_base_path={exported_models.digits}",
            "--unsafe_fault_injection=error_ratio=0.5,seed=3",
        ],
        log_dir=tmp_path,
    ) as failing:
        result = cli(
            "loadtest",
            "--protocol",
            "grpc",
            "--endpoint",
            failing.grpc_target,
            "--baseline-endpoint",
            f"grpc://{digits.grpc_target}",
            "--model",
            "digits",
            "--out",
            str(tmp_path / "out"),
            *LOAD,
            "--json",
        )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    canary, baseline = data["canary"], data["baseline"]
    # 50 req/s for 2 s on each track, open loop.
    assert 80 <= canary["samples"] <= 120 and 80 <= baseline["samples"] <= 120
    assert baseline["errors"] == 0
    assert 0.25 <= canary["errors"] / canary["samples"] <= 0.75
    rows = _samples(tmp_path / "out" / "canary" / "samples.csv")
    assert {r["endpoint"] for r in rows} == {failing.grpc_target}
    failed = [r for r in rows if r["ok"] == "0"]
    assert failed and all(r["status"] != "0" for r in failed)  # a gRPC status code, not OK
    stats = json.loads((tmp_path / "out" / "locust.json").read_text())
    assert {s["method"] for s in stats} == {"grpc"}
    assert (tmp_path / "out" / "locust.html").stat().st_size > 0
    slo = tmp_path / "gate.yaml"
    rules = yaml.safe_load(Path("models/digits/model.yaml").read_text())["slos"]
    slo.write_text(yaml.safe_dump({"slos": {**rules, "min_samples": 50}}))
    verdict = cli(
        "gate",
        "--results",
        str(tmp_path / "out" / "canary"),
        "--baseline",
        str(tmp_path / "out" / "baseline"),
        "--slo",
        str(slo),
        "--json",
    )
    gated = json.loads(verdict.stdout)
    assert gated["outcome"] == "fail", gated["reasons"]
    failing = {r["metric"] for r in gated["rows"] if r["verdict"] == "fail"}
    assert {"error_ratio", "errors_vs_baseline"} <= failing


def test_wrong_port_or_scheme_is_named(
    cli: Callable[..., CLIResult], digits: Server, tmp_path: Path
) -> None:
    common = ("--model", "digits", "--out", str(tmp_path / "o"), *LOAD)
    rest_as_grpc = cli("loadtest", "--protocol", "grpc", "--endpoint", digits.rest_url, *common)
    assert rest_as_grpc.exit_code == 3 and "does not fit the grpc protocol" in rest_as_grpc.stderr
    http_port = digits.rest_url.removeprefix("http://")
    not_grpc = cli("loadtest", "--protocol", "grpc", "--endpoint", http_port, *common)
    assert not_grpc.exit_code == 14, not_grpc.stderr
    assert f"the canary endpoint {http_port} does not answer" in not_grpc.stderr
    assert "no gRPC connection" in not_grpc.stderr


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_without_a_sample_request_the_payload_comes_from_the_served_signature(
    cli: Callable[..., CLIResult], digits: Server, tmp_path: Path, protocol: str
) -> None:
    spec = yaml.safe_load(Path("models/digits/model.yaml").read_text())
    del spec["sample_request"]
    config = tmp_path / "model.yaml"
    config.write_text(yaml.safe_dump(spec))
    endpoint = digits.rest_url if protocol == "rest" else digits.grpc_target
    result = cli(
        "loadtest",
        "--protocol",
        protocol,
        "--endpoint",
        endpoint,
        "--model",
        "digits",
        "--model-config",
        str(config),
        "--out",
        str(tmp_path / "out"),
        *LOAD,
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert "no sample_request" in result.stderr
    canary = json.loads(result.stdout)["canary"]
    assert canary["samples"] >= 80 and canary["errors"] == 0  # the server accepted it
    body = json.loads((tmp_path / "out" / "request.json").read_text())
    # digits serves pixels float [?, 8, 8]: one 8x8 instance of zeros.
    assert np.asarray(body["instances"], dtype=np.float32).shape == (1, 8, 8)
    assert not np.asarray(body["instances"]).any()


def test_requests_still_in_flight_when_sending_stops_are_measured_not_dropped(
    cli: Callable[..., CLIResult], exported_models: ExportedModels, tmp_path: Path
) -> None:
    """Every request of the window is answered 2.5 s late: Locust stops sending 1 s after
    the window and then waits for the answers (up to 2 s more), so the last ones, still in
    flight when it stops, are measured too, and the run ends when they are answered."""
    with running_server(
        [
            "--model_name=digits",
            f"--model_base_path={exported_models.digits}",
            "--unsafe_fault_injection=latency_ms=2500",
        ],
        log_dir=tmp_path,
    ) as slow:
        started = time.monotonic()
        result = cli(
            "loadtest", "--endpoint", slow.rest_url, "--model", "digits",
            "--out", str(tmp_path / "out"), "--duration", "2", "--warmup", "1",
            "--rate", "4", "--users", "2", "--json",
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.stderr
    canary = json.loads(result.stdout)["canary"]
    assert canary["samples"] >= 7, canary  # 4 req/s × 2 s, open loop (± one at an edge)
    assert canary["errors"] == 0
    rows = _samples(tmp_path / "out" / "canary" / "samples.csv")
    assert all(float(r["latency_ms"]) >= 2500 for r in rows)
    assert elapsed < 1 + 2 + 1 + 2 + 10  # window, margin, the last answers, start-up
