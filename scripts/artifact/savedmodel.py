"""Inspect a SavedModel without TensorFlow, and normalise archives to TF Serving layout.

``saved_model.pb`` is a ``tensorflow.SavedModel`` protobuf:
``{int64 saved_model_schema_version = 1; repeated MetaGraphDef meta_graphs = 2;}``.
TensorBoard ships TensorFlow's ``MetaGraphDef`` (and its dependencies) as
``tensorboard.compat.proto`` without importing TensorFlow, but not the two-field
``SavedModel`` wrapper, so that one message is declared here from a descriptor
(the deploy path must not import TensorFlow, which costs seconds and ~1 GB).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf import message
from tensorboard.compat.proto import meta_graph_pb2, types_pb2

from scripts.errors import InvalidModelError
from scripts.proto_builder import FieldType, add_field, declare

SERVE_TAG = "serve"
_VERSION_RE = re.compile(r"^[0-9]+$")


def _declare_saved_model(proto: Any) -> None:
    msg = proto.message_type.add(name="SavedModel")
    add_field(msg, "saved_model_schema_version", 1, FieldType.TYPE_INT64)
    add_field(
        msg,
        "meta_graphs",
        2,
        FieldType.TYPE_MESSAGE,
        type_name=f".{meta_graph_pb2.MetaGraphDef.DESCRIPTOR.full_name}",
        repeated=True,
    )


@cache
def _saved_model_class() -> Any:
    return declare(
        "tfpipeline_saved_model.proto",
        "tfpipeline",
        [meta_graph_pb2.DESCRIPTOR.name],
        _declare_saved_model,
        ("SavedModel",),
    )["SavedModel"]


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: list[int] | None  # None: unknown rank; -1: unknown dimension

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "dtype": self.dtype, "shape": self.shape}


@dataclass(frozen=True)
class SignatureInfo:
    name: str
    method: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]

    def to_dict(self) -> dict[str, object]:
        return {
            "method_name": self.method,
            "inputs": {k: v.to_dict() for k, v in sorted(self.inputs.items())},
            "outputs": {k: v.to_dict() for k, v in sorted(self.outputs.items())},
        }


def _tensor(info: Any) -> TensorInfo:
    dtype = types_pb2.DataType.Name(info.dtype) if info.dtype else "DT_INVALID"
    shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
    return TensorInfo(name=info.name, dtype=dtype.removeprefix("DT_").lower(), shape=shape)


def read_signature_defs(version_dir: Path, tag: str = SERVE_TAG) -> dict[str, Any]:
    """Parse ``version_dir/saved_model.pb``; the ``tag`` graph's ``SignatureDef`` protos
    (tensorboard's copy of TensorFlow's message), internal ones (``__…``) left out.

    Raises InvalidModelError when the file is missing or unparseable, or no meta
    graph carries ``tag``.
    """
    pb = version_dir / "saved_model.pb"
    if not pb.is_file():
        raise InvalidModelError(
            f"{version_dir} holds no saved_model.pb",
            cause="not a SavedModel directory (a Keras .keras/.h5 file, or a wrong path)",
            fix="export with tf.saved_model.save() or model.export()",
        )
    saved = _saved_model_class()()
    try:
        saved.ParseFromString(pb.read_bytes())
    except message.DecodeError as exc:
        raise InvalidModelError(
            f"{pb} is not a valid SavedModel protobuf: {exc}",
            cause="a truncated or corrupted file",
            fix="re-export the model",
        ) from exc
    tags_seen: list[list[str]] = []
    for graph in saved.meta_graphs:
        tags = list(graph.meta_info_def.tags)
        tags_seen.append(tags)
        if tag in tags:
            return {
                key: sig
                for key, sig in sorted(graph.signature_def.items())
                if not key.startswith("__")  # __saved_model_init_op: internal, not servable
            }
    raise InvalidModelError(
        f"{pb} has no meta graph tagged {tag!r} (tag sets found: {tags_seen or 'none'})",
        cause="the model was saved for training only, or with custom tags",
        fix="export with tf.saved_model.save(), which adds the 'serve' tag",
    )


def signature_infos(signature_defs: dict[str, Any]) -> dict[str, SignatureInfo]:
    """``read_signature_defs``' protos as plain ``SignatureInfo``s."""
    return {
        key: SignatureInfo(
            name=key,
            method=sig.method_name,
            inputs={k: _tensor(v) for k, v in sig.inputs.items()},
            outputs={k: _tensor(v) for k, v in sig.outputs.items()},
        )
        for key, sig in signature_defs.items()
    }


def read_signatures(version_dir: Path, tag: str = SERVE_TAG) -> dict[str, SignatureInfo]:
    """The signatures of ``version_dir``'s ``tag`` graph (see ``read_signature_defs``)."""
    return signature_infos(read_signature_defs(version_dir, tag))


def require_signature(
    signatures: dict[str, SignatureInfo], wanted: str, where: Path
) -> SignatureInfo:
    if wanted in signatures:
        return signatures[wanted]
    have = ", ".join(sorted(signatures)) or "none"
    raise InvalidModelError(
        f"{where} has no signature {wanted!r} (signatures: {have})",
        cause="the export did not name the serving function as expected",
        fix=f"export with signatures={{'{wanted}': fn}} or pass --signature with one of: {have}",
    )


@dataclass(frozen=True)
class ModelLayout:
    """Where the SavedModel sits in an extracted tree, as TF Serving wants it."""

    name: str
    version: int
    version_dir: Path


def _is_version(name: str) -> bool:
    return bool(_VERSION_RE.match(name)) and int(name) > 0


def locate_model(
    tree: Path,
    name: str | None,
    version: int | None,
    *,
    fallback_name: str | None = None,
    fallback_version: int | None = None,
) -> ModelLayout:
    """Find the SavedModel in an extracted archive and say its name and version.

    Accepted archive roots: the model directory (``NAME/VERSION/saved_model.pb``),
    the version directory (``VERSION/saved_model.pb``), or a bare SavedModel
    (``saved_model.pb`` at the root, optionally under one wrapping directory).
    ``name``/``version`` (explicit flags) fill in what the layout does not say;
    where the layout says it, a conflicting value is an error. The fallbacks
    (guessed from the archive's file name) only fill gaps.
    """
    found = sorted(p.parent for p in tree.rglob("saved_model.pb"))
    if not found:
        raise InvalidModelError(
            "the archive contains no saved_model.pb",
            cause="it holds a different model format, or nothing",
            fix="package a SavedModel directory with `python -m scripts package`",
        )
    if len(found) > 1:
        listed = ", ".join(str(p.relative_to(tree)) for p in found[:5])
        raise InvalidModelError(
            f"the archive holds {len(found)} SavedModels ({listed})",
            cause="several versions or models packed together",
            fix="publish one model version per archive",
        )
    version_dir = found[0]
    rel = version_dir.relative_to(tree).parts
    layout_version: int | None = None
    layout_name: str | None = None
    if rel and _is_version(rel[-1]):
        layout_version = int(rel[-1])
        if len(rel) >= 2:
            layout_name = rel[-2]
    elif len(rel) > 1:
        raise InvalidModelError(
            f"unexpected layout: saved_model.pb under {'/'.join(rel)}",
            cause="too many wrapping directories",
            fix="use NAME/VERSION/saved_model.pb, VERSION/saved_model.pb or a bare SavedModel",
        )
    for label, said, given in (("name", layout_name, name), ("version", layout_version, version)):
        if said is not None and given is not None and str(said) != str(given):
            raise InvalidModelError(
                f"the archive says model {label} {said!r} but {given!r} was requested",
                cause="the wrong archive, or a wrong --name/--version",
                fix=f"drop --{label} or fix the archive",
            )
    final_name = layout_name or name or fallback_name
    final_version = next(
        (v for v in (layout_version, version, fallback_version) if v is not None), None
    )
    if final_name is None or final_version is None:
        missing = " and ".join(
            lbl for lbl, v in (("--name", final_name), ("--version", final_version)) if v is None
        )
        raise InvalidModelError(
            f"cannot tell the model's {missing.replace('--', '')} from the archive layout",
            cause="a bare SavedModel archive without NAME-VERSION in its file name",
            fix=f"pass {missing}",
        )
    if not re.match(r"^[a-z0-9][a-z0-9_.-]{0,62}$", final_name):
        raise InvalidModelError(
            f"model name {final_name!r} is not a valid name",
            cause="names become image repositories and Kubernetes labels",
            fix="use lowercase letters, digits, '-', '_' and '.' (max 63 characters)",
        )
    return ModelLayout(name=final_name, version=final_version, version_dir=version_dir)


def _shape_text(shape: list[int] | None) -> str:
    if shape is None:
        return "unknown rank"
    return "[" + ", ".join("?" if d < 0 else str(d) for d in shape) + "]"


def signatures_markdown(signatures: dict[str, SignatureInfo]) -> str:
    """A Markdown table of every signature's inputs and outputs."""
    rows = ["| signature | kind | key | tensor | dtype | shape |", "|---|---|---|---|---|---|"]
    for sig_name, sig in sorted(signatures.items()):
        for kind, tensors in (("input", sig.inputs), ("output", sig.outputs)):
            for key, t in sorted(tensors.items()):
                rows.append(
                    f"| `{sig_name}` | {kind} | `{key}` | `{t.name}` | {t.dtype} | "
                    f"{_shape_text(t.shape)} |"
                )
    return "\n".join(rows)
