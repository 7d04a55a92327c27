"""TF Serving config messages that tensorflow-serving-api does not ship.

``BatchingParameters`` (servables/tensorflow/session_bundle_config.proto) and
``MonitoringConfig`` (config/monitoring_config.proto) are declared here with
TF Serving's field numbers, so their text-proto files parse with ``text_format``
exactly as ``tensorflow_model_server`` parses them. ``ModelServerConfig`` comes
from tensorflow-serving-api itself.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import text_format, wrappers_pb2

from scripts.errors import ConfigError
from scripts.proto_builder import FieldType, add_field, declare

_F = FieldType


def _declare_config(proto: Any) -> None:
    batching = proto.message_type.add(name="BatchingParameters")
    int64 = ".google.protobuf.Int64Value"
    add_field(batching, "max_batch_size", 1, _F.TYPE_MESSAGE, type_name=int64)
    add_field(batching, "batch_timeout_micros", 2, _F.TYPE_MESSAGE, type_name=int64)
    add_field(batching, "max_enqueued_batches", 3, _F.TYPE_MESSAGE, type_name=int64)
    add_field(batching, "num_batch_threads", 4, _F.TYPE_MESSAGE, type_name=int64)
    add_field(
        batching,
        "thread_pool_name",
        5,
        _F.TYPE_MESSAGE,
        type_name=".google.protobuf.StringValue",
    )
    add_field(batching, "allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True)
    add_field(batching, "pad_variable_length_inputs", 7, _F.TYPE_BOOL)
    prometheus = proto.message_type.add(name="PrometheusConfig")
    add_field(prometheus, "enable", 1, _F.TYPE_BOOL)
    add_field(prometheus, "path", 2, _F.TYPE_STRING)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    add_field(
        monitoring,
        "prometheus_config",
        1,
        _F.TYPE_MESSAGE,
        type_name=".tfpipeline.serving.PrometheusConfig",
    )


@cache
def _classes() -> dict[str, Any]:
    return declare(
        "tfpipeline_serving_config.proto",
        "tfpipeline.serving",
        [wrappers_pb2.DESCRIPTOR.name],
        _declare_config,
        ("BatchingParameters", "MonitoringConfig"),
    )


def parse_text_proto(path: Path, message_name: str) -> Any:
    """Parse a TF Serving text-proto config file; ConfigError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config file {path} does not exist",
            fix="check the flag's path (and the ConfigMap mount)",
        ) from exc
    return parse_text(text, message_name, str(path))


def parse_text(text: str, message_name: str, where: str) -> Any:
    """Parse TF Serving text-proto config ``text`` (from ``where``, named in errors).

    Imports no TensorFlow: ``render`` reads an overlay's ``batching.config`` with it.
    """
    if message_name == "ModelServerConfig":
        from tensorflow_serving.config import model_server_config_pb2

        message = model_server_config_pb2.ModelServerConfig()
    else:
        message = _classes()[message_name]()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(
            f"{where} is not a valid {message_name} text proto: {exc}",
            cause="a typo or a field this message does not have",
            fix="compare with kustomize/base and kustomize/components",
        ) from exc
    return message
