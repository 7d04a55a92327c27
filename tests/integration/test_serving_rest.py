"""REST conformance of ``python -m scripts serve``, from TF Serving's REST API documentation.

One server for the module, configured by a models.config: digits versions 1 and 2 (labels
``stable`` -> 1, ``canary`` -> 2), a two-input/two-output model with extra signatures
(``scale``: one output; ``log``: NaN/-Infinity outputs) and a string model with a ``*_bytes``
output. Served predictions are compared with the same SavedModels run here by TensorFlow.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import requests

from tests.integration.serving_fixtures import (
    MONITORING_CONFIG,
    SAMPLE_DIGIT,
    ExportedModels,
    Server,
    assert_error,
    digits_images,
    loads,
    metric_names,
    metric_value,
    predict,
    running_server,
    write_text,
)

pytestmark = [pytest.mark.tensorflow, pytest.mark.integration]

MAX_BODY_BYTES = 65536
REQUEST_COUNT = ":tensorflow:serving:request_count"
Reference = Callable[[np.ndarray, int], dict[str, np.ndarray]]


@pytest.fixture(scope="module")
def server(
    exported_models: ExportedModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("rest")
    config = write_text(
        work / "models.config",
        f"""
model_config_list {{
  config {{
    name: "digits"
    base_path: "{exported_models.digits}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "pair" base_path: "{exported_models.base("pair")}" model_platform: "tensorflow" }}
  config {{ name: "text" base_path: "{exported_models.base("text")}" model_platform: "tensorflow" }}
}}
""",
    )
    with running_server(
        [
            f"--model_config_file={config}",
            f"--monitoring_config_file={MONITORING_CONFIG}",
            f"--rest_api_max_body_bytes={MAX_BODY_BYTES}",
        ],
        log_dir=work,
    ) as running:
        yield running


def ok_json(response: requests.Response) -> Any:
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    return loads(response)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- model status ------------------------------------------------------------------------------
def _status(server: Server, suffix: str) -> list[dict[str, Any]]:
    body = ok_json(requests.get(server.model_url(suffix), timeout=10))
    assert set(body) == {"model_version_status"}, body
    statuses = body["model_version_status"]
    assert isinstance(statuses, list)
    return statuses


def test_status_lists_every_loaded_version(server: Server) -> None:
    statuses = _status(server, "")
    assert sorted(s["version"] for s in statuses) == ["1", "2"]  # versions are strings
    for status in statuses:
        assert status["state"] == "AVAILABLE"
        assert status["status"] == {"error_code": "OK", "error_message": ""}


@pytest.mark.parametrize(
    ("suffix", "version"),
    [("/versions/1", "1"), ("/versions/2", "2"), ("/labels/stable", "1"), ("/labels/canary", "2")],
)
def test_status_of_one_version(server: Server, suffix: str, version: str) -> None:
    statuses = _status(server, suffix)
    assert [(s["version"], s["state"]) for s in statuses] == [(version, "AVAILABLE")]


# -- metadata ----------------------------------------------------------------------------------
def _dims(info: dict[str, Any]) -> list[str]:
    shape = info["tensor_shape"]
    assert shape.get("unknown_rank", False) is False
    sizes = [d["size"] for d in shape["dim"]]
    assert all(isinstance(s, str) for s in sizes), "TF Serving writes int64 sizes as strings"
    return sizes


def test_metadata_of_digits(server: Server) -> None:
    body = ok_json(requests.get(server.model_url("/versions/1/metadata"), timeout=10))
    assert body["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default"}
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert set(default["inputs"]) == {"pixels"}
    pixels = default["inputs"]["pixels"]
    assert pixels["dtype"] == "DT_FLOAT"
    assert _dims(pixels) == ["-1", "8", "8"]
    assert pixels["name"].endswith(":0")
    outputs = default["outputs"]
    assert set(outputs) == {"probabilities", "class_id"}
    assert outputs["probabilities"]["dtype"] == "DT_FLOAT"
    assert _dims(outputs["probabilities"]) == ["-1", "10"]
    assert outputs["class_id"]["dtype"] == "DT_INT64"
    assert _dims(outputs["class_id"]) == ["-1"]


def test_metadata_follows_version_and_label(server: Server) -> None:
    latest = ok_json(requests.get(server.model_url("/metadata"), timeout=10))
    assert latest["model_spec"]["version"] == "2"
    stable = ok_json(requests.get(server.model_url("/labels/stable/metadata"), timeout=10))
    assert stable["model_spec"]["version"] == "1"


def test_metadata_lists_every_signature_and_dtype(server: Server) -> None:
    pair = ok_json(requests.get(server.model_url("/metadata", "pair"), timeout=10))
    signatures = pair["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "scale", "log"}
    assert set(signatures["serving_default"]["inputs"]) == {"a", "b"}
    assert _dims(signatures["serving_default"]["inputs"]["a"]) == ["-1", "3"]
    assert set(signatures["scale"]["outputs"]) == {"y"}
    text = ok_json(requests.get(server.model_url("/metadata", "text"), timeout=10))
    default = text["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert default["inputs"]["text"]["dtype"] == "DT_STRING"
    assert default["outputs"]["echo_bytes"]["dtype"] == "DT_STRING"
    assert default["outputs"]["length"]["dtype"] == "DT_INT32"


# -- predict: request and response formats ------------------------------------------------------
def _assert_digits_rows(predictions: Any, expected: dict[str, np.ndarray]) -> None:
    assert isinstance(predictions, list) and len(predictions) == len(expected["class_id"])
    for row, probabilities, class_id in zip(
        predictions, expected["probabilities"], expected["class_id"], strict=True
    ):
        assert set(row) == {"probabilities", "class_id"}, row
        assert isinstance(row["class_id"], int)
        assert row["class_id"] == class_id
        np.testing.assert_allclose(row["probabilities"], probabilities, rtol=1e-5, atol=1e-6)


def test_row_format_list_of_instances(server: Server, digits_reference: Reference) -> None:
    images = digits_images(3)
    body = ok_json(predict(server, {"instances": images.tolist()}))
    assert set(body) == {"predictions"}
    _assert_digits_rows(body["predictions"], digits_reference(images, 2))
    assert body["predictions"][0]["class_id"] == 0  # the sample is a handwritten 0


def test_row_format_objects_keyed_by_input_name(
    server: Server, digits_reference: Reference
) -> None:
    images = digits_images(2)
    body = ok_json(predict(server, {"instances": [{"pixels": i} for i in images.tolist()]}))
    _assert_digits_rows(body["predictions"], digits_reference(images, 2))
    pair = ok_json(
        predict(
            server,
            {"instances": [{"a": [1, 2, 3], "b": [4, 5, 6]}, {"a": [0, 1, 0], "b": [7, 8, 9]}]},
            model="pair",
        )
    )
    assert pair == {
        "predictions": [
            {"sum": [5.0, 7.0, 9.0], "dot": 32.0},
            {"sum": [7.0, 9.0, 9.0], "dot": 8.0},
        ]
    }


def test_columnar_value(server: Server, digits_reference: Reference) -> None:
    images = digits_images(2)
    body = ok_json(predict(server, {"inputs": images.tolist()}))
    assert set(body) == {"outputs"}
    outputs = body["outputs"]
    expected = digits_reference(images, 2)
    assert set(outputs) == {"probabilities", "class_id"}
    assert outputs["class_id"] == expected["class_id"].tolist()
    np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"], rtol=1e-5)


def test_columnar_object_keyed_by_input_name(server: Server) -> None:
    body = ok_json(
        predict(
            server,
            {"inputs": {"a": [[1, 2, 3], [1, 1, 1]], "b": [[1, 0, 0], [2, 2, 2]]}},
            model="pair",
        )
    )
    assert body == {"outputs": {"sum": [[2.0, 2.0, 3.0], [3.0, 3.0, 3.0]], "dot": [1.0, 6.0]}}


def test_signature_name_and_single_output_plain_list(server: Server) -> None:
    rows = ok_json(
        predict(server, {"signature_name": "scale", "instances": [1.0, -2.5]}, model="pair")
    )
    assert rows == {"predictions": [2.0, -5.0]}
    columns = ok_json(predict(server, {"signature_name": "scale", "inputs": [3, 4]}, model="pair"))
    assert columns == {"outputs": [6.0, 8.0]}


def test_version_and_label_select_the_model(server: Server, digits_reference: Reference) -> None:
    images = digits_images(4)
    served: dict[str, list[list[float]]] = {}
    for suffix in ("", "/versions/1", "/versions/2", "/labels/stable", "/labels/canary"):
        body = ok_json(predict(server, {"instances": images.tolist()}, suffix=suffix))
        served[suffix] = [row["probabilities"] for row in body["predictions"]]
    v1, v2 = digits_reference(images, 1), digits_reference(images, 2)
    assert not np.allclose(v1["probabilities"], v2["probabilities"], atol=1e-4)
    for suffix, version in [
        ("", v2),
        ("/versions/1", v1),
        ("/versions/2", v2),
        ("/labels/stable", v1),
        ("/labels/canary", v2),
    ]:
        np.testing.assert_allclose(served[suffix], version["probabilities"], rtol=1e-5, atol=1e-6)


def test_b64_inputs_and_bytes_outputs(server: Server) -> None:
    blobs = [b"\xff\xd8\xff\xe0 not utf-8 \x00\x81", b"plain"]
    rows = ok_json(predict(server, {"instances": [{"b64": b64(b)} for b in blobs]}, model="text"))
    assert rows == {
        "predictions": [{"echo_bytes": {"b64": b64(b)}, "length": len(b)} for b in blobs]
    }
    keyed = ok_json(
        predict(server, {"instances": [{"text": {"b64": b64(blobs[0])}}]}, model="text")
    )
    assert keyed["predictions"] == [{"echo_bytes": {"b64": b64(blobs[0])}, "length": len(blobs[0])}]
    columns = ok_json(
        predict(server, {"inputs": {"text": [{"b64": b64(b)} for b in blobs]}}, model="text")
    )
    assert columns == {
        "outputs": {
            "echo_bytes": [{"b64": b64(b)} for b in blobs],
            "length": [len(b) for b in blobs],
        }
    }
    # Plain JSON strings are strings; a *_bytes output still comes back as b64.
    plain = ok_json(predict(server, {"instances": ["héllo"]}, model="text"))
    assert plain["predictions"] == [{"echo_bytes": {"b64": b64("héllo".encode())}, "length": 6}]


def test_nan_and_infinity_are_written_as_json_literals(server: Server) -> None:
    response = predict(
        server, {"signature_name": "log", "instances": [-1.0, 0.0, 1.0]}, model="pair"
    )
    body = ok_json(response)
    assert "NaN" in response.text and "-Infinity" in response.text
    assert "null" not in response.text
    y = body["predictions"]
    assert math.isnan(y[0]) and y[1] == -math.inf and y[2] == 0.0
    # NaN in a request is accepted too.
    doubled = predict(
        server, {"signature_name": "scale", "instances": [math.nan, 1.0]}, model="pair"
    )
    assert math.isnan(ok_json(doubled)["predictions"][0])


# -- errors ----------------------------------------------------------------------------------
SAMPLE = {"instances": [SAMPLE_DIGIT]}
WRONG_ROWS = {"instances": [SAMPLE_DIGIT[:7]]}


@pytest.mark.parametrize(
    ("method", "suffix", "model", "body", "status", "fragment"),
    [
        pytest.param("GET", "", "nope", None, 404, "nope", id="status-unknown-model"),
        pytest.param("GET", "/metadata", "nope", None, 404, "nope", id="metadata-unknown-model"),
        pytest.param("POST", ":predict", "nope", SAMPLE, 404, "nope", id="predict-unknown-model"),
        pytest.param("GET", "/versions/9", "digits", None, 404, "9", id="status-unknown-version"),
        pytest.param(
            "GET", "/versions/9/metadata", "digits", None, 404, "9", id="metadata-unknown-version"
        ),
        pytest.param(
            "POST", "/versions/9:predict", "digits", SAMPLE, 404, "9", id="predict-unknown-version"
        ),
        pytest.param("GET", "/labels/nope", "digits", None, 400, "nope", id="status-unknown-label"),
        pytest.param(
            "POST",
            "/labels/nope:predict",
            "digits",
            SAMPLE,
            400,
            "nope",
            id="predict-unknown-label",
        ),
        pytest.param(
            "POST",
            ":predict",
            "digits",
            {**SAMPLE, "signature_name": "nope"},
            400,
            "nope",
            id="unknown-signature",
        ),
        pytest.param(
            "POST",
            ":predict",
            "digits",
            {"instances": [[["a"] * 8] * 8]},
            400,
            "pixels",
            id="string-for-float",
        ),
        pytest.param(
            "POST",
            ":predict",
            "digits",
            {"instances": [[[True] * 8] * 8]},
            400,
            "pixels",
            id="bool-for-float",
        ),
        pytest.param(
            "POST",
            ":predict",
            "digits",
            {"instances": [[[None] * 8] * 8]},
            400,
            "pixels",
            id="null-for-float",
        ),
        pytest.param(
            "POST", ":predict", "text", {"instances": [1, 2]}, 400, "text", id="number-for-string"
        ),
        pytest.param(
            "POST", ":predict", "digits", {"instances": [[1, 2, 3]]}, 400, "pixels", id="wrong-rank"
        ),
        pytest.param("POST", ":predict", "digits", WRONG_ROWS, 400, "pixels", id="wrong-dimension"),
        pytest.param(
            "POST",
            ":predict",
            "pair",
            {"inputs": {"a": [[1, 2, 3, 4]], "b": [[1, 2, 3, 4]]}},
            400,
            "3",
            id="wrong-inner-size",
        ),
        pytest.param(
            "POST",
            ":predict",
            "pair",
            {"instances": [{"a": [1, 2, 3], "b": [1, 2, 3]}, {"a": [1, 2], "b": [1, 2, 3]}]},
            400,
            "a",
            id="ragged-instances",
        ),
        pytest.param(
            "POST", ":predict", "digits", {}, 400, "instances", id="no-instances-or-inputs"
        ),
        pytest.param(
            "POST",
            ":predict",
            "digits",
            {"signature_name": "serving_default"},
            400,
            "inputs",
            id="signature-only",
        ),
        pytest.param(
            "POST",
            ":predict",
            "digits",
            {**SAMPLE, "inputs": [SAMPLE_DIGIT]},
            400,
            "",
            id="both-instances-and-inputs",
        ),
        pytest.param(
            "POST", ":predict", "digits", {"instances": []}, 400, "instances", id="empty-instances"
        ),
        pytest.param(
            "POST",
            ":predict",
            "pair",
            {"instances": [{"a": [1, 2, 3]}]},
            400,
            "b",
            id="instance-misses-an-input",
        ),
        pytest.param(
            "POST",
            ":predict",
            "pair",
            {"instances": [[1, 2, 3]]},
            400,
            "",
            id="unkeyed-instance-for-two-inputs",
        ),
        pytest.param(
            "POST", ":predict", "digits", b'{"instances": [[1, 2', 400, "json", id="malformed-json"
        ),
        pytest.param("POST", ":predict", "digits", b"instances", 400, "json", id="not-json"),
        pytest.param(
            "POST", ":predict", "digits", b"[1, 2]", 400, "object", id="json-not-an-object"
        ),
        pytest.param(  # digits has a predict signature: no classification "inputs"
            "POST",
            ":classify",
            "digits",
            {"examples": [{"x": 1}]},
            400,
            "No classification inputs found in SignatureDef",
            id="classify-a-predict-signature",
        ),
        pytest.param(
            "POST",
            ":regress",
            "digits",
            {"examples": [{"x": 1}]},
            400,
            "Expected one output Tensor.",
            id="regress-a-predict-signature",
        ),
    ],
)
def test_documented_errors(
    server: Server,
    method: str,
    suffix: str,
    model: str,
    body: dict[str, Any] | bytes | None,
    status: int,
    fragment: str,
) -> None:
    url = server.model_url(suffix, model)
    if method == "GET":
        response = requests.get(url, timeout=10)
    else:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        response = requests.post(url, data=data, timeout=10)
    assert_error(response, status, fragment)


def test_oversized_body_is_413(server: Server) -> None:
    big = json.dumps({"instances": [SAMPLE_DIGIT] * 400}).encode()
    assert len(big) > MAX_BODY_BYTES
    assert_error(predict(server, big), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    streamed = requests.post(server.model_url(":predict"), data=chunks(), timeout=10)
    assert_error(streamed, 413)
    # A body just under the limit is served.
    small = json.dumps({"instances": [SAMPLE_DIGIT] * 100}).encode()
    assert len(small) < MAX_BODY_BYTES
    assert len(ok_json(predict(server, small))["predictions"]) == 100


# -- metrics ----------------------------------------------------------------------------------
def test_prometheus_metrics_count_ok_and_error_requests(server: Server) -> None:
    before = server.metrics()
    for _ in range(3):
        ok_json(predict(server, SAMPLE))
    assert_error(predict(server, {**SAMPLE, "signature_name": "nope"}), 400)
    assert_error(predict(server, WRONG_ROWS), 400)
    assert_error(predict(server, SAMPLE, model="nope"), 404)
    response = requests.get(server.url("/monitoring/prometheus/metrics"), timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    # TF Serving's exposition: the counter's samples carry its own name (no "_total").
    assert f"# TYPE {REQUEST_COUNT} counter" in after
    assert REQUEST_COUNT in metric_names(after)

    def delta(**labels: str) -> float:
        return metric_value(after, REQUEST_COUNT, **labels) - metric_value(
            before, REQUEST_COUNT, **labels
        )

    assert delta(model_name="digits", status="OK") == 3
    assert delta(model_name="digits", status="INVALID_ARGUMENT") == 2
    assert delta(model_name="nope", status="NOT_FOUND") == 1
    latency = ":tensorflow:serving:request_latency_count"
    assert (
        metric_value(after, latency, model_name="digits")
        - metric_value(before, latency, model_name="digits")
        == 5
    )


def test_metrics_path_comes_from_the_monitoring_config(server: Server) -> None:
    assert "/monitoring/prometheus/metrics" in MONITORING_CONFIG.read_text(encoding="utf-8")
    assert requests.get(server.url("/metrics"), timeout=10).status_code == 404
