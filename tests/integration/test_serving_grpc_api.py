"""TF Serving's whole gRPC API on ``python -m scripts serve``, through its own stubs.

``ModelService`` (GetModelStatus, HandleReloadConfigRequest) and ``PredictionService``
(Predict with ``output_filter``, Classify, Regress, MultiInference) as
tensorflow_serving/apis/*.proto and the servables' code (predict_util.cc, classifier.cc,
regressor.cc, multi_inference.cc, util.cc, get_model_status_impl.cc, server_core.cc)
define them, then a table of bad requests, each with TF Serving's status code (never
UNKNOWN or INTERNAL for a client's mistake), and the REST ``:classify`` / ``:regress``
twins. One server for the module, on a model exported here with TensorFlow's own
``SavedModelBuilder`` and ``classification_signature_def`` / ``regression_signature_def``
(the ``tensorflow/serving/classify`` and ``…/regress`` method names that
``tf.saved_model.save`` cannot write):

* ``serving_default`` classify: tf.Example ``x`` (float [2]; ``bias`` [1], default 0) →
  ``classes`` ["cat", "dog", "eel"] and ``scores`` = softmax(x · W);
* ``scores_only`` classify (``scores`` alone); ``regress``: ``outputs`` = x0 + 2·x1 + bias;
* ``predict``: x float [?, 2] → ``sum`` [?], ``double`` [?, 2];
  ``pair``: a, b float [?, 3] → ``total`` = a + b.

Versions 1 and 2 (labels ``stable`` → 1, ``canary`` → 2) and a broken version 3 (policy
``all``), and a model ``extra`` that a reload adds.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from tests.integration.serving_fixtures import Server, assert_error, loads, running_server

pytestmark = [pytest.mark.tensorflow, pytest.mark.integration]

TIMEOUT_S = 10.0
MODEL = "infer"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"
WEIGHTS = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0]], np.float32)
LABELS = [b"cat", b"dog", b"eel"]
State = get_model_status_pb2.ModelVersionStatus.State


# -- the model -------------------------------------------------------------------------------------
def export_inference_model(path: Path) -> None:
    """The classify/regress/predict SavedModel (TF1 builder: a graph, no variables)."""
    v1 = tf.compat.v1
    with tf.Graph().as_default() as graph:
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        features = v1.io.parse_example(
            serialized,
            {
                "x": tf.io.FixedLenFeature([2], tf.float32),
                "bias": tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            },
        )
        x = features["x"]
        scores = tf.nn.softmax(tf.matmul(x, tf.constant(WEIGHTS)), name="scores")
        classes = tf.tile(tf.constant([LABELS]), [tf.shape(x)[0], 1], name="classes")
        value = tf.add(x[:, 0:1] + 2.0 * x[:, 1:2], features["bias"], name="value")
        dense = v1.placeholder(tf.float32, [None, 2], name="dense")
        a = v1.placeholder(tf.float32, [None, 3], name="a")
        b = v1.placeholder(tf.float32, [None, 3], name="b")
        signatures = {
            "serving_default": v1.saved_model.classification_signature_def(
                serialized, classes, scores
            ),
            "scores_only": v1.saved_model.classification_signature_def(serialized, None, scores),
            "regress": v1.saved_model.regression_signature_def(serialized, value),
            "predict": v1.saved_model.predict_signature_def(
                {"x": dense}, {"sum": tf.reduce_sum(dense, axis=1), "double": 2.0 * dense}
            ),
            "pair": v1.saved_model.predict_signature_def({"a": a, "b": b}, {"total": a + b}),
        }
        with v1.Session(graph=graph) as session:
            builder = v1.saved_model.Builder(str(path))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()


@dataclass(frozen=True)
class Models:
    root: Path
    config: Path

    @property
    def infer(self) -> Path:
        return self.root / MODEL

    @property
    def extra(self) -> Path:
        return self.root / "extra"


def server_config(models: Models, *, extra: bool = False) -> Any:
    config = model_server_config_pb2.ModelServerConfig()
    infer = config.model_config_list.config.add(
        name=MODEL, base_path=str(models.infer), model_platform="tensorflow"
    )
    infer.model_version_policy.all.SetInParent()
    infer.version_labels["stable"] = 1
    infer.version_labels["canary"] = 2
    if extra:
        config.model_config_list.config.add(
            name="extra", base_path=str(models.extra), model_platform="tensorflow"
        )
    return config


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    root = tmp_path_factory.mktemp("grpc-api-models")
    export_inference_model(root / MODEL / "1")
    shutil.copytree(root / MODEL / "1", root / MODEL / "2")
    broken = root / MODEL / "3"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    shutil.copytree(root / MODEL / "1", root / "extra" / "1")
    (root / "empty").mkdir()
    models = Models(root, root / "models.config")
    models.config.write_text(str(server_config(models)), encoding="utf-8")
    return models


@pytest.fixture(scope="module")
def server(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        [f"--model_config_file={models.config}"],
        model_name=MODEL,
        log_dir=tmp_path_factory.mktemp("grpc-api"),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Any:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_stub(channel: grpc.Channel) -> Any:
    return model_service_pb2_grpc.ModelServiceStub(channel)


# -- requests and expectations ---------------------------------------------------------------------
def example(**features: list[float] | list[int] | list[bytes]) -> Any:
    """A tf.train.Example: floats, ints (int64) or bytes per feature."""
    message = tf.train.Example()
    for name, values in features.items():
        feature = message.features.feature[name]
        if all(isinstance(v, bytes) for v in values):
            feature.bytes_list.value.extend(values)
        elif all(isinstance(v, int) for v in values):
            feature.int64_list.value.extend(values)
        else:
            feature.float_list.value.extend(values)
    return message


def fill_input(target: Any, examples: list[Any], context: Any = None) -> None:
    if context is None:
        target.example_list.examples.extend(examples)
    else:
        target.example_list_with_context.context.CopyFrom(context)
        target.example_list_with_context.examples.extend(examples)


def spec(
    target: Any,
    model: str = MODEL,
    *,
    signature: str = "",
    version: int | None = None,
    label: str = "",
) -> None:
    target.name = model
    if signature:
        target.signature_name = signature
    if version is not None:
        target.version.value = version
    if label:
        target.version_label = label


def classify_request(examples: list[Any], *, context: Any = None, **model: Any) -> Any:
    request = classification_pb2.ClassificationRequest()
    spec(request.model_spec, **model)
    fill_input(request.input, examples, context)
    return request


def regress_request(examples: list[Any], *, context: Any = None, **model: Any) -> Any:
    request = regression_pb2.RegressionRequest()
    spec(request.model_spec, **model)
    fill_input(request.input, examples, context)
    return request


def multi_request(tasks: list[tuple[dict[str, Any], str]], examples: list[Any]) -> Any:
    request = inference_pb2.MultiInferenceRequest()
    for model, method in tasks:
        task = request.tasks.add(method_name=method)
        spec(task.model_spec, **model)
    fill_input(request.input, examples)
    return request


def predict_request(
    inputs: dict[str, Any], *, output_filter: tuple[str, ...] = (), **model: Any
) -> Any:
    """A PredictRequest (signature ``predict`` unless given); arrays or TensorProtos."""
    request = predict_pb2.PredictRequest()
    spec(request.model_spec, **{"signature": "predict", **model})
    for key, value in inputs.items():
        if isinstance(value, tensor_pb2.TensorProto):
            request.inputs[key].CopyFrom(value)
        else:
            request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    request.output_filter.extend(output_filter)
    return request


def tensor(dtype: int, dims: list[int] | None, **fields: Any) -> Any:
    """A raw TensorProto (``dims`` None: unknown rank), malformed as a client might send."""
    proto = tensor_pb2.TensorProto(dtype=dtype)
    if dims is None:
        proto.tensor_shape.unknown_rank = True
    for size in dims or []:
        proto.tensor_shape.dim.add(size=size)
    for name, value in fields.items():
        if isinstance(value, bytes):
            setattr(proto, name, value)
        else:
            getattr(proto, name).extend(value)
    return proto


FLOAT, STRING, RESOURCE = 1, 7, 20  # tensorflow.DataType


def status_request(model: str = MODEL, **choice: Any) -> Any:
    request = get_model_status_pb2.GetModelStatusRequest()
    spec(request.model_spec, model, **choice)
    return request


def expected_scores(x: np.ndarray) -> np.ndarray:
    logits = np.asarray(x, np.float64) @ WEIGHTS
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def rpc_error(call: Callable[[], Any]) -> Any:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def statuses(response: Any) -> list[tuple[int, int, int]]:
    return [(s.version, s.state, s.status.error_code) for s in response.model_version_status]


# -- ModelService.GetModelStatus -------------------------------------------------------------------
def test_model_status_lists_every_version_newest_first(model_stub: Any) -> None:
    response = model_stub.GetModelStatus(status_request(), timeout=TIMEOUT_S)
    ok, unknown = 0, 2  # tensorflow.error.Code
    assert statuses(response) == [
        (3, State.END, unknown),  # the broken version: END with its load error
        (2, State.AVAILABLE, ok),
        (1, State.AVAILABLE, ok),
    ]
    assert response.model_version_status[0].status.error_message  # why it failed
    assert response.model_version_status[1].status.error_message == ""


@pytest.mark.parametrize(
    ("choice", "version"),
    [({"version": 1}, 1), ({"version": 2}, 2), ({"label": "stable"}, 1), ({"label": "canary"}, 2)],
)
def test_model_status_of_one_version(model_stub: Any, choice: dict[str, Any], version: int) -> None:
    response = model_stub.GetModelStatus(status_request(**choice), timeout=TIMEOUT_S)
    assert statuses(response) == [(version, State.AVAILABLE, 0)]


def test_model_status_not_found_messages(model_stub: Any) -> None:
    error = rpc_error(lambda: model_stub.GetModelStatus(status_request("nope"), timeout=TIMEOUT_S))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find any versions of model nope"
    error = rpc_error(
        lambda: model_stub.GetModelStatus(status_request(version=9), timeout=TIMEOUT_S)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"Could not find version 9 of model {MODEL}"


# -- Predict.output_filter -------------------------------------------------------------------------
X = np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)


def test_predict_returns_every_output_without_a_filter(stub: Any) -> None:
    response = stub.Predict(predict_request({"x": X}), timeout=TIMEOUT_S)
    assert set(response.outputs) == {"sum", "double"}
    assert response.model_spec.signature_name == "predict"
    assert response.model_spec.version.value == 2


@pytest.mark.parametrize("wanted", [("sum",), ("double",), ("double", "sum")])
def test_output_filter_returns_only_the_named_outputs(stub: Any, wanted: tuple[str, ...]) -> None:
    response = stub.Predict(predict_request({"x": X}, output_filter=wanted), timeout=TIMEOUT_S)
    assert set(response.outputs) == set(wanted)
    reference = {"sum": X.sum(axis=1), "double": 2 * X}
    for name in wanted:
        np.testing.assert_allclose(tf.make_ndarray(response.outputs[name]), reference[name])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([1.0, 2.0, 3.0, 4.0], [[1, 2], [3, 4]], id="exact"),
        pytest.param([1.0, 2.0], [[1, 2], [2, 2]], id="fewer-repeat-the-last"),
        pytest.param([], [[0, 0], [0, 0]], id="none-are-zeros"),
        pytest.param([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [[1, 2], [3, 4]], id="extra-are-ignored"),
    ],
)
def test_typed_tensor_values_follow_tensorflow(
    stub: Any, values: list[float], expected: list[list[float]]
) -> None:
    """TensorFlow's Tensor::FromProto: ``float_val`` shorter than the shape is filled with
    its last value (zeros when empty); values beyond the shape are ignored."""
    proto = tensor(FLOAT, [2, 2], float_val=values)
    response = stub.Predict(
        predict_request({"x": proto}, output_filter=("double",)), timeout=TIMEOUT_S
    )
    doubled = tf.make_ndarray(response.outputs["double"])
    np.testing.assert_array_equal(doubled, 2 * np.array(expected, np.float32))


def test_output_filter_unknown_alias_is_invalid_argument(stub: Any) -> None:
    request = predict_request({"x": X}, output_filter=("sum", "nope"))
    error = rpc_error(lambda: stub.Predict(request, timeout=TIMEOUT_S))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "output tensor alias not found in signature: nope Outputs expected to be in the set "
        "{double,sum}."
    )
    request = predict_request({"x": X}, output_filter=("sum", "sum"))
    error = rpc_error(lambda: stub.Predict(request, timeout=TIMEOUT_S))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "duplicate output tensor alias: sum"


def test_predict_on_a_classify_signature_with_a_filter(stub: Any) -> None:
    """Without --enable_signature_method_name_check TF Serving predicts on any signature:
    the serialised examples are the string input."""
    serialized = [example(x=[1.0, 2.0]).SerializeToString()]
    request = predict_request(
        {"inputs": np.array(serialized, dtype=object)}, signature="", output_filter=("scores",)
    )
    response = stub.Predict(request, timeout=TIMEOUT_S)
    assert set(response.outputs) == {"scores"}
    assert response.model_spec.signature_name == "serving_default"
    scores = tf.make_ndarray(response.outputs["scores"])
    np.testing.assert_allclose(scores, expected_scores(np.array([[1.0, 2.0]])), rtol=1e-5)


# -- Classify, Regress, MultiInference -------------------------------------------------------------
def test_classify_labels_and_scores(stub: Any) -> None:
    xs = [[1.0, 2.0], [0.5, -3.0], [0.0, 0.0]]
    response = stub.Classify(classify_request([example(x=x) for x in xs]), timeout=TIMEOUT_S)
    assert response.model_spec.name == MODEL
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 2
    rows = response.result.classifications
    assert len(rows) == len(xs)
    scores = expected_scores(np.array(xs))
    for row, want in zip(rows, scores, strict=True):
        assert [c.label for c in row.classes] == ["cat", "dog", "eel"]
        np.testing.assert_allclose([c.score for c in row.classes], want, rtol=1e-5)


def test_classify_with_scores_only_leaves_labels_empty(stub: Any) -> None:
    request = classify_request([example(x=[2.0, 1.0])], signature="scores_only", version=1)
    response = stub.Classify(request, timeout=TIMEOUT_S)
    assert response.model_spec.version.value == 1
    (row,) = response.result.classifications
    assert [c.label for c in row.classes] == ["", "", ""]
    np.testing.assert_allclose(
        [c.score for c in row.classes], expected_scores(np.array([[2.0, 1.0]]))[0], rtol=1e-5
    )


def test_regress_with_context(stub: Any) -> None:
    plain = stub.Regress(
        regress_request([example(x=[1.0, 2.0]), example(x=[-1.0, 0.5])], signature="regress"),
        timeout=TIMEOUT_S,
    )
    assert [r.value for r in plain.result.regressions] == pytest.approx([5.0, 0.0])
    assert plain.model_spec.signature_name == "regress"
    # The context's features go with every example; an example's own feature wins.
    with_context = stub.Regress(
        regress_request(
            [example(x=[1.0, 2.0]), example(x=[1.0, 2.0], bias=[1.0])],
            context=example(bias=[10.0]),
            signature="regress",
            label="stable",
        ),
        timeout=TIMEOUT_S,
    )
    assert [r.value for r in with_context.result.regressions] == pytest.approx([15.0, 6.0])
    assert with_context.model_spec.version.value == 1


def test_multi_inference_runs_every_task_over_one_input(stub: Any) -> None:
    xs = [[1.0, 2.0], [3.0, 1.0]]
    tasks = [
        ({}, CLASSIFY),
        ({"signature": "regress"}, REGRESS),
        ({"signature": "scores_only"}, CLASSIFY),
    ]
    request = multi_request(tasks, [example(x=x) for x in xs])
    response = stub.MultiInference(request, timeout=TIMEOUT_S)
    assert [r.model_spec.signature_name for r in response.results] == [
        "serving_default",
        "regress",
        "scores_only",
    ]
    assert {(r.model_spec.name, r.model_spec.version.value) for r in response.results} == {
        (MODEL, 2)
    }
    first, second, third = response.results
    assert first.WhichOneof("result") == "classification_result"
    assert [c.label for c in first.classification_result.classifications[1].classes] == [
        "cat",
        "dog",
        "eel",
    ]
    for row, want in zip(
        third.classification_result.classifications, expected_scores(np.array(xs)), strict=True
    ):
        np.testing.assert_allclose([c.score for c in row.classes], want, rtol=1e-5)
    assert second.WhichOneof("result") == "regression_result"
    assert [r.value for r in second.regression_result.regressions] == pytest.approx([5.0, 5.0])


def test_multi_inference_tasks_may_name_the_same_version(stub: Any) -> None:
    request = multi_request(
        [({"version": 2}, CLASSIFY), ({"signature": "regress", "label": "canary"}, REGRESS)],
        [example(x=[1.0, 1.0])],
    )
    response = stub.MultiInference(request, timeout=TIMEOUT_S)
    assert [r.model_spec.version.value for r in response.results] == [2, 2]


# -- bad requests: TF Serving's status codes -------------------------------------------------------
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED


def _no_spec(message: Any) -> Any:
    message.ClearField("model_spec")
    return message


def _metadata(fields: list[str], model: str = MODEL) -> Any:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.extend(fields)
    return request


ONE = [example(x=[1.0, 2.0])]
# fmt: off
BAD_REQUESTS = [
    # Predict: the model, version, label and signature
    ("Predict", lambda: _no_spec(predict_request({"x": X})), INVALID, "Missing ModelSpec"),
    ("Predict", lambda: predict_request({"x": X}, model=""), INVALID, "no name"),
    ("Predict", lambda: predict_request({"x": X}, model="nope"), NOT_FOUND, "Latest(nope)"),
    ("Predict", lambda: predict_request({"x": X}, version=9), NOT_FOUND, "Specific(infer, 9)"),
    ("Predict", lambda: predict_request({"x": X}, version=3), NOT_FOUND, "Specific(infer, 3)"),
    ("Predict", lambda: predict_request({"x": X}, label="nope"), INVALID, "label: nope"),
    ("Predict", lambda: predict_request({"x": X}, signature="nope"), PRECONDITION, '"nope"'),
    # Predict: the inputs
    ("Predict", lambda: predict_request({}), INVALID, "input size does not match signature"),
    ("Predict", lambda: predict_request({"a": X[:, :1].repeat(3, 1)}, signature="pair"),
     INVALID, "Missing but required: {b}"),
    ("Predict", lambda: predict_request({"x": X, "y": X}), INVALID, "Sent extra: {y}"),
    ("Predict", lambda: predict_request({"y": X}), INVALID, "alias: x(feed name: dense:0)"),
    ("Predict", lambda: predict_request({"x": X.astype(np.float64)}), INVALID, "float64"),
    ("Predict", lambda: predict_request({"x": np.array([[b"a", b"b"]], dtype=object)}),
     INVALID, "string"),
    ("Predict", lambda: predict_request({"x": np.zeros((2, 3), np.float32)}), INVALID,
     "dimension 1"),
    ("Predict", lambda: predict_request({"x": np.zeros(2, np.float32)}), INVALID, "rank"),
    ("Predict", lambda: predict_request({"x": tensor(FLOAT, [2, 2], tensor_content=b"\0" * 12)}),
     INVALID, "tensor parsing error: x"),
    ("Predict", lambda: predict_request({"x": tensor(FLOAT, [-1, 2], float_val=[1.0])}),
     INVALID, "tensor parsing error: x"),
    ("Predict", lambda: predict_request({"x": tensor(FLOAT, [1 << 40, 2], float_val=[1.0])}),
     INVALID, "tensor parsing error: x"),
    ("Predict", lambda: predict_request({"x": tensor(0, [1, 2], float_val=[1.0, 2.0])}),
     INVALID, "tensor parsing error: x"),
    ("Predict", lambda: predict_request({"x": tensor(999, [1, 2])}), INVALID,
     "tensor parsing error: x"),
    ("Predict", lambda: predict_request({"x": tensor(RESOURCE, [1, 2])}), INVALID,
     "tensor parsing error: x"),
    ("Predict", lambda: predict_request({"x": tensor(STRING, [1, 2], tensor_content=b"ab")}),
     INVALID, "tensor parsing error: x"),
    ("Predict", lambda: predict_request({"x": tensor(FLOAT, None, float_val=[1.0])}), INVALID,
     "tensor parsing error: x"),
    ("Predict", lambda: predict_request(
        {"a": np.zeros((2, 3), np.float32), "b": np.zeros((3, 3), np.float32)},
        signature="pair"), INVALID, "Incompatible shapes"),
    ("Predict", lambda: predict_request({"x": X}, output_filter=("nope",)), INVALID,
     "output tensor alias not found"),
    # Classify
    ("Classify", lambda: _no_spec(classify_request(ONE)), INVALID, "Missing ModelSpec"),
    ("Classify", lambda: classify_request(ONE, model="nope"), NOT_FOUND, "nope"),
    ("Classify", lambda: classify_request(ONE, version=7), NOT_FOUND, "7"),
    ("Classify", lambda: classify_request([]), INVALID, "Input is empty."),
    ("Classify", lambda: classify_request(ONE, signature="nope"), INVALID,
     "No signature was found with the name: nope"),
    ("Classify", lambda: classify_request(ONE, signature="predict"), INVALID,
     "No classification inputs found in SignatureDef"),
    ("Classify", lambda: classify_request(ONE, signature="pair"), INVALID,
     "Expected one input Tensor."),
    ("Classify", lambda: classify_request(ONE, signature="regress"), INVALID,
     'at least one of "classes" or "scores"'),
    ("Classify", lambda: classify_request([example(y=[1.0])]), INVALID, "x"),
    ("Classify", lambda: classify_request([example(x=[1, 2])]), INVALID, "x"),
    ("Classify", lambda: classify_request([example(x=[1.0, 2.0, 3.0])]), INVALID, "x"),
    # Regress
    ("Regress", lambda: regress_request(ONE), INVALID, "Expected one output Tensor."),
    ("Regress", lambda: regress_request(ONE, signature="scores_only"), INVALID,
     "No regression outputs found in SignatureDef"),
    ("Regress", lambda: regress_request([], signature="regress"), INVALID, "Input is empty."),
    ("Regress", lambda: regress_request(ONE, signature="regress", label="nope"), INVALID,
     "label"),
    # MultiInference
    ("MultiInference", lambda: multi_request([], ONE), INVALID, "no name"),
    ("MultiInference", lambda: multi_request([({"model": "nope"}, CLASSIFY)], ONE), NOT_FOUND,
     "nope"),
    ("MultiInference", lambda: multi_request([({}, CLASSIFY), ({"model": "extra",
     "signature": "regress"}, REGRESS)], ONE), INVALID, "same model name"),
    ("MultiInference", lambda: multi_request([({}, CLASSIFY), ({"model": "",
     "signature": "regress"}, REGRESS)], ONE), INVALID, "empty model name"),
    ("MultiInference", lambda: multi_request([({}, CLASSIFY), ({"signature": "regress",
     "version": 1}, REGRESS)], ONE), INVALID, "same model version"),
    ("MultiInference", lambda: multi_request([({}, CLASSIFY), ({}, CLASSIFY)], ONE), INVALID,
     "Duplicate evaluation of signature: serving_default"),
    ("MultiInference", lambda: multi_request([({"signature": "nope"}, CLASSIFY)], ONE), INVALID,
     "Requested signature not found in model graph: nope"),
    ("MultiInference", lambda: multi_request([({"signature": "predict"},
     "tensorflow/serving/predict")], ONE), UNIMPLEMENTED, "Unsupported signature method_name"),
    ("MultiInference", lambda: multi_request([({"signature": "regress"}, CLASSIFY)], ONE),
     INVALID, "classes"),
    ("MultiInference", lambda: multi_request([({}, CLASSIFY)], []), INVALID, "Input is empty."),
    # GetModelMetadata
    ("GetModelMetadata", lambda: _no_spec(_metadata(["signature_def"])), INVALID,
     "Missing ModelSpec"),
    ("GetModelMetadata", lambda: _metadata([]), INVALID, "at least one metadata_field"),
    ("GetModelMetadata", lambda: _metadata(["signature_def", "nope"]), INVALID,
     "Metadata field nope is not supported"),
    ("GetModelMetadata", lambda: _metadata(["signature_def"], "nope"), NOT_FOUND, "nope"),
    # GetModelStatus
    ("GetModelStatus", lambda: _no_spec(status_request()), INVALID, "Missing ModelSpec"),
    ("GetModelStatus", lambda: status_request(""), INVALID, "model name"),
    ("GetModelStatus", lambda: status_request("nope"), NOT_FOUND, "nope"),
    ("GetModelStatus", lambda: status_request(version=9), NOT_FOUND, "version 9"),
    ("GetModelStatus", lambda: status_request(label="nope"), INVALID, "label: nope"),
]
# fmt: on


@pytest.mark.parametrize(
    ("method", "build", "code", "fragment"),
    [
        pytest.param(method, build, code, fragment, id=f"{method}-{index}")
        for index, (method, build, code, fragment) in enumerate(BAD_REQUESTS)
    ],
)
def test_bad_request_gets_tf_serving_status(
    stub: Any,
    model_stub: Any,
    method: str,
    build: Callable[[], Any],
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    service = model_stub if method == "GetModelStatus" else stub
    request = build()
    error = rpc_error(lambda: getattr(service, method)(request, timeout=TIMEOUT_S))
    assert error.code() not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (
        error.code(),
        error.details(),
    )
    assert error.code() == code, (error.code(), error.details())
    assert fragment in error.details(), error.details()


def test_server_still_serves_after_bad_requests(stub: Any, server: Server) -> None:
    response = stub.Classify(classify_request(ONE), timeout=TIMEOUT_S)
    assert len(response.result.classifications) == 1
    assert server.alive()
    assert "Traceback" not in server.log()


# -- REST :classify and :regress -------------------------------------------------------------------
def post(server: Server, suffix: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(server.model_url(suffix), json=body, timeout=TIMEOUT_S)


def test_rest_classify(server: Server) -> None:
    response = post(server, ":classify", {"examples": [{"x": [1.0, 2.0]}, {"x": [0.5, -3.0]}]})
    assert response.status_code == 200, response.text
    body = loads(response)
    assert set(body) == {"results"}  # TF Serving writes "results" (its doc says "result")
    scores = expected_scores(np.array([[1.0, 2.0], [0.5, -3.0]]))
    for row, want in zip(body["results"], scores, strict=True):
        assert [label for label, _ in row] == ["cat", "dog", "eel"]
        np.testing.assert_allclose([score for _, score in row], want, rtol=1e-5)


def test_rest_regress_with_context_version_and_label(server: Server) -> None:
    body = {
        "signature_name": "regress",
        "context": {"bias": 10.0},
        "examples": [{"x": [1.0, 2.0]}, {"x": [1.0, 2.0], "bias": [1.0]}],
    }
    for suffix in (":regress", "/versions/1:regress", "/labels/canary:regress"):
        response = post(server, suffix, body)
        assert response.status_code == 200, response.text
        assert loads(response) == {"results": pytest.approx([15.0, 6.0])}


# fmt: off
REST_ERRORS = [
    (":classify", {"examples": []}, 400, "empty array"),
    (":classify", {"context": {"bias": 1.0}}, 400, "'examples'"),
    (":classify", {"examples": {"x": [1.0, 2.0]}}, 400, "list/array"),
    (":classify", {"examples": [[1.0, 2.0]]}, 400, "Example must be JSON object"),
    (":classify", {"examples": [{"x": [1, 2.5]}]}, 400, "expecting type: int64"),
    (":classify", {"examples": [{"x": [None]}]}, 400, "unexpected JSON type"),
    (":classify", {"examples": [{"x": [[1.0, 2.0]]}]}, 400, "unexpected JSON type"),
    (":classify", {"examples": [{"x": [1.0, 2.0]}], "signature_name": 3}, 400, "string"),
    (":classify", {"examples": [{"x": [1.0, 2.0]}], "signature_name": "predict"}, 400,
     "No classification inputs"),
    (":regress", {"examples": [{"x": [1.0, 2.0]}]}, 400, "Expected one output Tensor."),
    (":regress", {"examples": [{"y": [1.0]}], "signature_name": "regress"}, 400, "x"),
    ("/versions/9:regress", {"examples": [{"x": [1.0, 2.0]}]}, 404, "9"),
]
# fmt: on


@pytest.mark.parametrize(("suffix", "body", "status", "fragment"), REST_ERRORS)
def test_rest_classify_regress_errors(
    server: Server, suffix: str, body: dict[str, Any], status: int, fragment: str
) -> None:
    assert_error(post(server, suffix, body), status, fragment)


# -- ModelService.HandleReloadConfigRequest (last: it changes the server's models) -----------------
def reload(model_stub: Any, config: Any) -> Any:
    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(config)
    return model_stub.HandleReloadConfigRequest(request, timeout=60)


def _config(models: Models, change: Callable[[Any], None]) -> Any:
    config = server_config(models)
    change(config)
    return config


def _add(**fields: Any) -> Callable[[Any], None]:
    return lambda config: config.model_config_list.config.add(**fields)


def _label_v3(config: Any) -> None:
    config.model_config_list.config[0].version_labels["broken"] = 3


# fmt: off
BAD_RELOADS = [
    (lambda m: model_server_config_pb2.ModelServerConfig(), INVALID, "Only ModelConfigList"),
    (lambda m: _config(m, lambda c: c.custom_model_config.SetInParent()), INVALID,
     "Only ModelConfigList"),
    (lambda m: _config(m, _add(name=MODEL, base_path=str(m.infer), model_platform="tensorflow")),
     INVALID, "Illegal to list model infer multiple times in config list"),
    (lambda m: _config(m, _add(name="rel", base_path="models/rel", model_platform="tensorflow")),
     INVALID, "Expected model rel to have an absolute path or URI"),
    (lambda m: _config(m, _add(name="np", base_path=str(m.extra))),
     INVALID, "nor ModelServerConfig::model_platform, model name is np"),
    (lambda m: _config(m, _add(name="pt", base_path=str(m.extra), model_platform="pytorch")),
     INVALID, "Model pt requests unsupported platform pytorch"),
    (lambda m: _config(m, _label_v3), PRECONDITION,
     "Request to assign label to version 3 of model infer, which is not currently available"),
]
# fmt: on


@pytest.mark.parametrize(
    ("build", "code", "fragment"),
    [pytest.param(*case, id=f"reload-{index}") for index, case in enumerate(BAD_RELOADS)],
)
def test_bad_reload_is_refused_and_changes_nothing(
    model_stub: Any, models: Models, build: Any, code: Any, fragment: str
) -> None:
    error = rpc_error(lambda: reload(model_stub, build(models)))
    assert error.code() == code, (error.code(), error.details())
    assert fragment in error.details(), error.details()
    response = model_stub.GetModelStatus(status_request(), timeout=TIMEOUT_S)
    assert [s.version for s in response.model_version_status] == [3, 2, 1]


def test_reload_adds_and_removes_models(model_stub: Any, stub: Any, models: Models) -> None:
    try:
        response = reload(model_stub, server_config(models, extra=True))
        assert response.status.error_code == 0 and response.status.error_message == ""
        extra = model_stub.GetModelStatus(status_request("extra"), timeout=TIMEOUT_S)
        assert statuses(extra) == [(1, State.AVAILABLE, 0)]
        classified = stub.Classify(classify_request(ONE, model="extra"), timeout=TIMEOUT_S)
        assert classified.model_spec.version.value == 1
    finally:  # back to the original list
        reload(model_stub, server_config(models))
    # extra is gone; infer still serves its versions and labels
    error = rpc_error(lambda: model_stub.GetModelStatus(status_request("extra"), timeout=TIMEOUT_S))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    error = rpc_error(lambda: stub.Classify(classify_request(ONE, model="extra"), timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    stable = stub.Classify(classify_request(ONE, label="stable"), timeout=TIMEOUT_S)
    assert stable.model_spec.version.value == 1


def test_reload_with_a_model_that_never_loads(model_stub: Any, models: Models) -> None:
    """TF Serving waits for new models and answers UNKNOWN "N model(s) did not become
    available" when one does not load; the rest of the config is applied."""
    empty = _add(name="empty", base_path=str(models.root / "empty"), model_platform="tensorflow")
    config = _config(models, empty)
    try:
        error = rpc_error(lambda: reload(model_stub, config))
        assert error.code() == grpc.StatusCode.UNKNOWN
        assert error.details() == "1 model(s) did not become available: {{Latest(empty)}, }"
        error = rpc_error(
            lambda: model_stub.GetModelStatus(status_request("empty"), timeout=TIMEOUT_S)
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert statuses(model_stub.GetModelStatus(status_request(), timeout=TIMEOUT_S))[1:] == [
            (2, State.AVAILABLE, 0),
            (1, State.AVAILABLE, 0),
        ]
    finally:
        reload(model_stub, server_config(models))
