"""Synthetic SavedModels: real ``saved_model.pb`` protobufs, built without TensorFlow.

They parse exactly as TensorFlow's do (same messages), so the fetch, package
and validate paths can be tested in milliseconds. Real exported models are
covered by tests/integration/test_models.py and the end-to-end tests.
"""

from __future__ import annotations

from pathlib import Path

from tensorboard.compat.proto import meta_graph_pb2, types_pb2

from scripts.artifact.savedmodel import _saved_model_class

DTYPES = {"float": types_pb2.DT_FLOAT, "int64": types_pb2.DT_INT64, "string": types_pb2.DT_STRING}


def _tensor(name: str, dtype: str, shape: list[int]) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=name, dtype=DTYPES[dtype])
    for size in shape:
        info.tensor_shape.dim.add(size=size)
    return info


def write_saved_model(
    version_dir: Path,
    *,
    signatures: dict[str, tuple[dict[str, tuple[str, list[int]]], dict[str, tuple[str, list[int]]]]]
    | None = None,
    tags: tuple[str, ...] = ("serve",),
    weights: bytes = b"\x00" * 1024,
) -> Path:
    """Write ``version_dir/saved_model.pb`` (+ ``variables/``) and return ``version_dir``.

    ``signatures`` maps a signature name to (inputs, outputs), each mapping a
    key to (dtype, shape). The default is a digits-like ``serving_default``.
    """
    if signatures is None:
        signatures = {
            "serving_default": (
                {"pixels": ("float", [-1, 8, 8])},
                {"probabilities": ("float", [-1, 10]), "class_id": ("int64", [-1])},
            )
        }
    saved = _saved_model_class()(saved_model_schema_version=1)
    graph = saved.meta_graphs.add()
    graph.meta_info_def.tags.extend(tags)
    for sig_name, (inputs, outputs) in signatures.items():
        sig = graph.signature_def[sig_name]
        sig.method_name = "tensorflow/serving/predict"
        for key, (dtype, shape) in inputs.items():
            sig.inputs[key].CopyFrom(_tensor(f"{sig_name}_{key}:0", dtype, shape))
        for key, (dtype, shape) in outputs.items():
            sig.outputs[key].CopyFrom(_tensor(f"PartitionedCall:{key}", dtype, shape))
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "saved_model.pb").write_bytes(saved.SerializeToString())
    variables = version_dir / "variables"
    variables.mkdir(exist_ok=True)
    (variables / "variables.index").write_bytes(b"index")
    (variables / "variables.data-00000-of-00001").write_bytes(weights)
    return version_dir
