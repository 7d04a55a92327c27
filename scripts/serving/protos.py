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

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from scripts.errors import ConfigError

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    msg: Any, name: str, number: int, kind: int, *, type_name: str = "", repeated: bool = False
) -> None:
    added = msg.field.add(
        name=name,
        number=number,
        type=kind,
        label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
    )
    if type_name:  # only message fields name a type
        added.type_name = type_name


@cache
def _classes() -> dict[str, Any]:
    pool = descriptor_pool.Default()
    name = "tfpipeline_serving_config.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name=name,
            package="tfpipeline.serving",
            syntax="proto3",
            dependency=[wrappers_pb2.DESCRIPTOR.name],
        )
        batching = proto.message_type.add(name="BatchingParameters")
        int64 = ".google.protobuf.Int64Value"
        _field(batching, "max_batch_size", 1, _F.TYPE_MESSAGE, type_name=int64)
        _field(batching, "batch_timeout_micros", 2, _F.TYPE_MESSAGE, type_name=int64)
        _field(batching, "max_enqueued_batches", 3, _F.TYPE_MESSAGE, type_name=int64)
        _field(batching, "num_batch_threads", 4, _F.TYPE_MESSAGE, type_name=int64)
        _field(
            batching,
            "thread_pool_name",
            5,
            _F.TYPE_MESSAGE,
            type_name=".google.protobuf.StringValue",
        )
        _field(batching, "allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True)
        _field(batching, "pad_variable_length_inputs", 7, _F.TYPE_BOOL)
        prometheus = proto.message_type.add(name="PrometheusConfig")
        _field(prometheus, "enable", 1, _F.TYPE_BOOL)
        _field(prometheus, "path", 2, _F.TYPE_STRING)
        monitoring = proto.message_type.add(name="MonitoringConfig")
        _field(
            monitoring,
            "prometheus_config",
            1,
            _F.TYPE_MESSAGE,
            type_name=".tfpipeline.serving.PrometheusConfig",
        )
        pool.Add(proto)
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tfpipeline.serving.{n}"))
        for n in ("BatchingParameters", "MonitoringConfig")
    }


def parse_text_proto(path: Path, message_name: str) -> Any:
    """Parse a TF Serving text-proto config file; ConfigError naming the file and line."""
    if message_name == "ModelServerConfig":
        from tensorflow_serving.config import model_server_config_pb2

        message = model_server_config_pb2.ModelServerConfig()
    else:
        message = _classes()[message_name]()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), message)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"config file {path} does not exist",
            fix="check the flag's path (and the ConfigMap mount)",
        ) from exc
    except text_format.ParseError as exc:
        raise ConfigError(
            f"{path} is not a valid {message_name} text proto: {exc}",
            cause="a typo or a field this message does not have",
            fix="compare with kustomize/base and kustomize/components",
        ) from exc
    return message
