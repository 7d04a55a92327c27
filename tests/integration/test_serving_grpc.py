"""gRPC ``tensorflow.serving.PredictionService`` of ``python -m scripts serve``.

Predict with ``tf.make_tensor_proto`` inputs and GetModelMetadata (a packed SignatureDefMap),
through the stubs of tensorflow-serving-api, plus the canonical error codes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.integration.serving_fixtures import Server, digits_images, running_server

pytestmark = [pytest.mark.tensorflow, pytest.mark.integration]


Reference = Callable[[np.ndarray, int], dict[str, np.ndarray]]
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def server(digits_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        ["--model_name=digits", f"--model_base_path={digits_export}"],
        log_dir=tmp_path_factory.mktemp("grpc"),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server: Server) -> Iterator[Any]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(
    inputs: dict[str, Any], *, model: str = "digits", version: int | None = None
) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = "serving_default"
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_predict(stub: Any, digits_reference: Reference) -> None:
    images = digits_images(5)
    response = stub.Predict(predict_request({"pixels": images}), timeout=TIMEOUT_S)
    assert response.model_spec.name == "digits"
    assert response.model_spec.version.value == 2  # the latest version
    assert response.model_spec.signature_name == "serving_default"
    assert set(response.outputs) == {"probabilities", "class_id"}
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    class_id = tf.make_ndarray(response.outputs["class_id"])
    assert probabilities.dtype == np.float32 and probabilities.shape == (5, 10)
    assert class_id.dtype == np.int64 and class_id.shape == (5,)
    expected = digits_reference(images, 2)
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(class_id, expected["class_id"])
    assert class_id[0] == 0


def test_predict_a_specific_version(stub: Any, digits_reference: Reference) -> None:
    images = digits_images(3)
    response = stub.Predict(predict_request({"pixels": images}, version=2), timeout=TIMEOUT_S)
    assert response.model_spec.version.value == 2
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(
        probabilities, digits_reference(images, 2)["probabilities"], rtol=1e-5, atol=1e-6
    )
    # Version 1 is on disk but not loaded (the default policy serves the latest only).
    assert not np.allclose(probabilities, digits_reference(images, 1)["probabilities"], atol=1e-4)
    error = _rpc_error(
        lambda: stub.Predict(predict_request({"pixels": images}, version=1), timeout=TIMEOUT_S)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_get_model_metadata(stub: Any) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "digits"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=TIMEOUT_S)
    assert response.model_spec.name == "digits"
    assert response.model_spec.version.value == 2
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert "serving_default" in signature_map.signature_def
    signature = signature_map.signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    pixels = signature.inputs["pixels"]
    assert pixels.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in pixels.tensor_shape.dim] == [-1, 8, 8]
    assert set(signature.outputs) == {"probabilities", "class_id"}
    assert signature.outputs["class_id"].dtype == tf.int64.as_datatype_enum
    assert [d.size for d in signature.outputs["probabilities"].tensor_shape.dim] == [-1, 10]


def _rpc_error(call: Callable[[], Any]) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_unknown_model_is_not_found(stub: Any) -> None:
    images = digits_images(1)
    error = _rpc_error(
        lambda: stub.Predict(predict_request({"pixels": images}, model="nope"), timeout=TIMEOUT_S)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in error.details()
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "nope"
    request.metadata_field.append("signature_def")
    error = _rpc_error(lambda: stub.GetModelMetadata(request, timeout=TIMEOUT_S))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_unknown_version_is_not_found(stub: Any) -> None:
    request = predict_request({"pixels": digits_images(1)}, version=9)
    error = _rpc_error(lambda: stub.Predict(request, timeout=TIMEOUT_S))
    assert error.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param({"pixels": np.zeros((2, 7, 8), np.float32)}, id="wrong-shape"),
        pytest.param({"pixels": np.zeros((2, 64), np.float32)}, id="wrong-rank"),
        pytest.param({"pixels": np.array([b"not", b"pixels"], dtype=object)}, id="string-dtype"),
        pytest.param({"pixels": np.zeros((1, 8, 8), np.float64)}, id="double-for-float"),
        pytest.param({"image": np.zeros((1, 8, 8), np.float32)}, id="wrong-input-name"),
        pytest.param(
            {"pixels": np.zeros((1, 8, 8), np.float32), "extra": np.zeros(1)}, id="extra-input"
        ),
    ],
)
def test_bad_input_is_invalid_argument(stub: Any, inputs: dict[str, Any]) -> None:
    error = _rpc_error(lambda: stub.Predict(predict_request(inputs), timeout=TIMEOUT_S))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert error.details()


def test_server_still_serves_after_errors(stub: Any, server: Server) -> None:
    response = stub.Predict(predict_request({"pixels": digits_images(2)}), timeout=TIMEOUT_S)
    assert tf.make_ndarray(response.outputs["class_id"]).shape == (2,)
    assert server.alive()
