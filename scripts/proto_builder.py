"""Declare protobuf messages from their field numbers at run time: no protoc, no generated code.

Used where the official Python package for a message would drag in TensorFlow
(tensorflow-serving-api's ``apis`` modules import all of it, ~4 s and ~1 GB) or does
not ship the message at all. Only field numbers and types reach the wire, so a
message declared here under our own package name reads and writes exactly the same
bytes as the original. Hand-written because protobuf offers nothing above
``descriptor_pb2`` for this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FieldType = descriptor_pb2.FieldDescriptorProto


def add_field(
    msg: Any, name: str, number: int, kind: int, *, type_name: str = "", repeated: bool = False
) -> None:
    """Add a field to a ``DescriptorProto``; ``type_name`` (".pkg.Msg") for message fields."""
    added = msg.field.add(
        name=name,
        number=number,
        type=kind,
        label=FieldType.LABEL_REPEATED if repeated else FieldType.LABEL_OPTIONAL,
    )
    if type_name:  # only message fields name a type
        added.type_name = type_name


def add_map_field(msg: Any, package: str, name: str, number: int, value_type_name: str) -> None:
    """``map<string, Message> name = number;`` as protoc spells it: a nested entry type."""
    entry_name = "".join(part.capitalize() for part in name.split("_")) + "Entry"
    entry = msg.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    add_field(entry, "key", 1, FieldType.TYPE_STRING)
    add_field(entry, "value", 2, FieldType.TYPE_MESSAGE, type_name=value_type_name)
    add_field(
        msg,
        name,
        number,
        FieldType.TYPE_MESSAGE,
        type_name=f".{package}.{msg.name}.{entry_name}",
        repeated=True,
    )


def declare(
    file_name: str,
    package: str,
    dependencies: Iterable[str],
    body: Callable[[descriptor_pb2.FileDescriptorProto], None],
    names: Iterable[str],
) -> dict[str, Any]:
    """Add a proto file to the default pool once (``body`` fills it in); return its classes."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(file_name)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name=file_name, package=package, syntax="proto3", dependency=list(dependencies)
        )
        body(proto)
        pool.Add(proto)
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{n}"))
        for n in names
    }
