"""gRPC tensors: ``TensorProto`` ↔ numpy, by TensorFlow's own rules.

A ``PredictRequest``'s inputs are checked and decoded as TF Serving does it
(predict_util.cc ``VerifyRequestInputsSize``, saved_model ``GetInputValues``, and
TensorFlow's ``Tensor::FromProto``): the number of inputs must match the signature's,
each signature input must be present, and a tensor that does not parse (unknown dtype,
negative or unknown dimensions, ``tensor_content`` of the wrong size) is
INVALID_ARGUMENT "tensor parsing error: ALIAS". As in TensorFlow, typed value fields
(``float_val``, …) holding fewer values than the shape are filled with the last one
(none: zeros) and extra values are ignored. The decoded tensor must then have the
signature's dtype and shape, which TF Serving learns from the session run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from scripts.serving.codec import check_shape
from scripts.serving.errors import invalid
from scripts.serving.models import Signature

# The typed value field of each dtype (tensorflow/core/framework/tensor.proto).
_VALUE_FIELDS = {
    "float32": "float_val",
    "float64": "double_val",
    "int8": "int_val",
    "int16": "int_val",
    "int32": "int_val",
    "uint8": "int_val",
    "uint16": "int_val",
    "int64": "int64_val",
    "uint32": "uint32_val",
    "uint64": "uint64_val",
    "bool": "bool_val",
    "string": "string_val",
    "float16": "half_val",
    "bfloat16": "half_val",
    "complex64": "scomplex_val",
    "complex128": "dcomplex_val",
}
MAX_DIMS = 254  # TensorShape's limit
# A few values can describe a huge tensor (the last value repeats): refuse what this
# server would not allocate rather than run out of memory.
MAX_TENSOR_BYTES = 1 << 30


def datatype_name(dtype: Any) -> str:
    """``DT_FLOAT`` for tf.float32: TensorFlow's DataType name, as in TF Serving's messages."""
    from tensorflow.core.framework import types_pb2

    return str(types_pb2.DataType.Name(dtype.as_datatype_enum))


def _parse_error(alias: str, why: str) -> Exception:
    return invalid(f"tensor parsing error: {alias} ({why})")


def _dims(proto: Any, alias: str) -> list[int]:
    shape = proto.tensor_shape
    if shape.unknown_rank:
        raise _parse_error(alias, "tensor_shape has unknown_rank set")
    dims = [int(d.size) for d in shape.dim]
    if len(dims) > MAX_DIMS:
        raise _parse_error(alias, f"{len(dims)} dimensions, more than {MAX_DIMS}")
    if any(d < 0 for d in dims):
        raise _parse_error(alias, f"negative dimension in shape {dims}")
    return dims


def tensor_from_proto(proto: Any, alias: str) -> np.ndarray:
    """Decode one TensorProto; INVALID_ARGUMENT where TensorFlow's ``FromProto`` fails."""
    import tensorflow as tf

    dims = _dims(proto, alias)
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError as exc:
        raise _parse_error(alias, f"unknown dtype {proto.dtype}") from exc
    field = _VALUE_FIELDS.get(dtype.name)
    if proto.dtype == 0 or field is None:
        raise _parse_error(alias, f"dtype {dtype.name} is not supported in requests")
    count = math.prod(dims)
    if dtype.name == "string":
        return _string_tensor(proto, alias, dims, count)
    np_dtype = np.dtype(dtype.as_numpy_dtype)
    if count * np_dtype.itemsize > MAX_TENSOR_BYTES:
        raise _parse_error(alias, f"shape {dims} of {dtype.name} needs more than 1 GiB")
    if count == 0:
        return np.zeros(dims, np_dtype)
    if proto.tensor_content:
        content = proto.tensor_content
        if len(content) != count * np_dtype.itemsize:
            raise _parse_error(
                alias,
                f"tensor_content has {len(content)} bytes; shape {dims} of {dtype.name} "
                f"needs {count * np_dtype.itemsize}",
            )
        return np.frombuffer(content, np_dtype).reshape(dims).copy()
    values = _typed_values(proto, field, np_dtype)
    if values.size == 0:
        return np.zeros(dims, np_dtype)
    if values.size < count:  # TensorFlow repeats the last value
        values = np.concatenate([values, np.full(count - values.size, values[-1], np_dtype)])
    return values[:count].reshape(dims)


def _typed_values(proto: Any, field: str, np_dtype: np.dtype[Any]) -> np.ndarray:
    raw = getattr(proto, field)
    if field == "half_val":  # the 16-bit patterns, in int32s
        return np.asarray(raw, np.int64).astype(np.uint16).view(np_dtype)
    if field in ("scomplex_val", "dcomplex_val"):  # (real, imaginary) pairs
        pairs = np.asarray(raw[: len(raw) // 2 * 2], np.float64).reshape(-1, 2)
        return (pairs[:, 0] + 1j * pairs[:, 1]).astype(np_dtype)
    if field == "int_val":  # int8/16, uint8/16 travel as int32: TensorFlow truncates
        return np.asarray(raw, np.int64).astype(np_dtype)
    return np.asarray(raw, np_dtype)


def _string_tensor(proto: Any, alias: str, dims: list[int], count: int) -> np.ndarray:
    if proto.tensor_content and count:
        raise _parse_error(alias, "string tensors must use string_val, not tensor_content")
    values = list(proto.string_val)
    if count > len(values) and count > MAX_TENSOR_BYTES // 8:
        raise _parse_error(alias, f"shape {dims} of string has too many elements")
    if values and len(values) < count:
        values.extend([values[-1]] * (count - len(values)))
    array = np.empty(count, dtype=object)
    array[:] = values[:count] if values else [b""] * count
    return array.reshape(dims)


def predict_inputs(
    request_inputs: Mapping[str, Any], signature: Signature
) -> dict[str, np.ndarray]:
    """A PredictRequest's ``inputs`` map → arrays for ``signature``, checked as TF Serving
    checks them (input count, missing aliases, parsing, then dtype and shape)."""
    sent, wanted = set(request_inputs), set(signature.inputs)
    if len(sent) != len(wanted):  # TF2 signatures have no default inputs
        raise invalid(
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
        )
    arrays: dict[str, np.ndarray] = {}
    for alias in sorted(wanted):
        spec = signature.inputs[alias]
        if alias not in request_inputs:
            raise invalid(
                f"Signature input alias: {alias}(feed name: {spec.name}) not found in request "
                f"and no default value provided. Inputs expected to be in the request "
                f"{{{','.join(sorted(sent))}}}, or default input alias set: "
            )
        proto = request_inputs[alias]
        array = tensor_from_proto(proto, alias)
        if proto.dtype != spec.dtype.as_datatype_enum:
            import tensorflow as tf

            raise invalid(
                f"Expects input {alias} to be {spec.dtype.name} but "
                f"{tf.dtypes.as_dtype(proto.dtype).name} is provided"
            )
        check_shape(array, spec)
        arrays[alias] = array
    return arrays


def tensor_to_proto(array: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.make_tensor_proto(array)
