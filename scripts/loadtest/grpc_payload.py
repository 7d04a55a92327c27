"""TF Serving gRPC messages for the load generator, without TensorFlow.

tensorflow-serving-api's ``predict_pb2`` imports the whole of TensorFlow; neither the
deploy path nor Locust's process may. Only field numbers reach the wire, so the
messages the load test needs are declared here (scripts/proto_builder.py) over
tensorboard's copies of ``TensorProto`` and ``SignatureDef`` — the same fields as
TensorFlow's — and go out as raw bytes on TF Serving's method paths. A test parses
these bytes with the real ``predict_pb2`` (tests/integration/test_loadtest.py).

Field numbers, from tensorflow_serving/apis/{model,predict,get_model_metadata}.proto:
``ModelSpec{name=1, version=2, signature_name=3, version_label=4}``,
``PredictRequest{model_spec=1, inputs=2 (map), output_filter=3}``,
``GetModelMetadataRequest{model_spec=1, metadata_field=2}``,
``GetModelMetadataResponse{model_spec=1, metadata=2 (map of Any)}``,
``SignatureDefMap{signature_def=1 (map)}``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import any_pb2, message, wrappers_pb2
from tensorboard.compat.proto import meta_graph_pb2, tensor_pb2

from scripts.errors import ConfigError, RemoteError
from scripts.proto_builder import FieldType, add_field, add_map_field, declare

PACKAGE = "tfpipeline.grpcload"
PREDICT_METHOD = "/tensorflow.serving.PredictionService/Predict"
METADATA_METHOD = "/tensorflow.serving.PredictionService/GetModelMetadata"
_F = FieldType


def _declare(proto: Any) -> None:
    spec = proto.message_type.add(name="ModelSpec")
    add_field(spec, "name", 1, _F.TYPE_STRING)
    add_field(spec, "version", 2, _F.TYPE_MESSAGE, type_name=".google.protobuf.Int64Value")
    add_field(spec, "signature_name", 3, _F.TYPE_STRING)
    add_field(spec, "version_label", 4, _F.TYPE_STRING)
    model_spec = f".{PACKAGE}.ModelSpec"

    predict = proto.message_type.add(name="PredictRequest")
    add_field(predict, "model_spec", 1, _F.TYPE_MESSAGE, type_name=model_spec)
    add_map_field(predict, PACKAGE, "inputs", 2, ".tensorboard.TensorProto")
    add_field(predict, "output_filter", 3, _F.TYPE_STRING, repeated=True)

    request = proto.message_type.add(name="GetModelMetadataRequest")
    add_field(request, "model_spec", 1, _F.TYPE_MESSAGE, type_name=model_spec)
    add_field(request, "metadata_field", 2, _F.TYPE_STRING, repeated=True)

    response = proto.message_type.add(name="GetModelMetadataResponse")
    add_field(response, "model_spec", 1, _F.TYPE_MESSAGE, type_name=model_spec)
    add_map_field(response, PACKAGE, "metadata", 2, ".google.protobuf.Any")

    signatures = proto.message_type.add(name="SignatureDefMap")
    add_map_field(signatures, PACKAGE, "signature_def", 1, ".tensorboard.SignatureDef")


@cache
def messages() -> dict[str, Any]:
    return declare(
        "tfpipeline_grpcload.proto",
        PACKAGE,
        [
            tensor_pb2.DESCRIPTOR.name,
            meta_graph_pb2.DESCRIPTOR.name,
            any_pb2.DESCRIPTOR.name,
            wrappers_pb2.DESCRIPTOR.name,
        ],
        _declare,
        (
            "ModelSpec",
            "PredictRequest",
            "GetModelMetadataRequest",
            "GetModelMetadataResponse",
            "SignatureDefMap",
        ),
    )


def grpc_target(endpoint: str) -> str:
    """``grpc://host:port`` or ``host:port`` → ``host:port``."""
    return endpoint.removeprefix("grpc://").rstrip("/")


def fetch_signature(endpoint: str, model: str, signature_name: str, timeout: float = 30) -> Any:
    """The served ``SignatureDef`` (tensorboard's message), from GetModelMetadata."""
    import grpc

    m = messages()
    request = m["GetModelMetadataRequest"]()
    request.model_spec.name = model
    request.metadata_field.append("signature_def")
    target = grpc_target(endpoint)
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(METADATA_METHOD)
        try:
            raw = call(request.SerializeToString(), timeout=timeout)
        except grpc.RpcError as exc:
            detail = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.Call) else exc
            raise RemoteError(
                f"GetModelMetadata for model {model!r} at {target} failed: {detail}",
                cause="the endpoint is not a TF Serving gRPC port, or the model is not loaded",
                fix="pass the gRPC port (8500) of a ready replica as grpc://HOST:PORT",
            ) from exc
    response = m["GetModelMetadataResponse"].FromString(raw)
    packed = response.metadata.get("signature_def")
    signature_map = m["SignatureDefMap"]()
    if packed is None:
        raise RemoteError(f"{target} returned no signature_def metadata for {model!r}")
    try:
        signature_map.ParseFromString(packed.value)
    except message.DecodeError as exc:
        raise RemoteError(f"{target} returned unreadable signature metadata: {exc}") from exc
    if signature_name not in signature_map.signature_def:
        raise ConfigError(
            f"model {model!r} at {target} has no signature {signature_name!r}",
            fix=f"use one of: {', '.join(sorted(signature_map.signature_def))}",
        )
    return signature_map.signature_def[signature_name]


def predict_request(body: dict[str, Any], model: str, signature_def: Any) -> bytes:
    """A REST predict body (row or columnar JSON, b64 included) as PredictRequest bytes.

    The JSON is decoded exactly as the REST API decodes it (scripts/serving/codec.py),
    against the served signature's dtypes and shapes, so a sample request that the REST
    API would reject is rejected here too, before any load is sent.
    """
    from tensorboard.compat.tensorflow_stub import dtypes
    from tensorboard.util import tensor_util

    from scripts.serving.codec import decode_request
    from scripts.serving.errors import ServingError
    from scripts.serving.models import Signature, TensorSpec

    specs = {
        key: TensorSpec(
            key=key,
            name=info.name,
            dtype=dtypes.as_dtype(info.dtype),
            shape=None
            if info.tensor_shape.unknown_rank
            else [int(d.size) for d in info.tensor_shape.dim],
        )
        for key, info in signature_def.inputs.items()
    }
    signature = Signature(
        name=body.get("signature_name", "serving_default"),
        method=signature_def.method_name,
        inputs=specs,
        outputs={},
        function=None,
        proto=signature_def,
    )
    try:
        arrays, _ = decode_request(body, signature)
    except ServingError as exc:
        raise ConfigError(
            f"the sample request does not fit model {model!r}'s signature: {exc}",
            fix="correct sample_request in models/NAME/model.yaml",
        ) from exc
    request = messages()["PredictRequest"]()
    request.model_spec.name = model
    request.model_spec.signature_name = signature.name
    for key, array in arrays.items():
        request.inputs[key].CopyFrom(tensor_util.make_tensor_proto(array, dtype=specs[key].dtype))
    data: bytes = request.SerializeToString()
    return data
