"""TF Serving's REST formats. Predict: JSON ↔ numpy, row (``instances``) and columnar
(``inputs``). Classify and regress: ``examples`` (and ``context``) → tf.Example, results
→ ``{"results": ...}`` (util/json_tensor.cc).

Binary values travel as ``{"b64": "..."}``; outputs whose name ends in
``_bytes`` come back that way. Errors are INVALID_ARGUMENT with TF-Serving-like
messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np
import orjson

from scripts.serving.errors import invalid
from scripts.serving.models import Signature, TensorSpec


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # JSON may carry NaN/Infinity, which orjson rejects
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise invalid(f"JSON Parse error: {exc}") from exc
        except RecursionError as exc:  # nesting deeper than the interpreter's stack
            raise invalid("JSON Parse error: the document is nested too deeply") from exc
    if not isinstance(body, dict):
        raise invalid("JSON Value: is not an object")
    return body


# numpy arrays have at most 64 dimensions; deeper JSON cannot be a tensor.
MAX_NESTING = 64


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    return "Object" if isinstance(value, dict) else type(value).__name__


def _type_error(value: Any, spec: TensorSpec) -> Exception:
    text = json.dumps(value)
    return invalid(
        f"JSON Value: {text[:80]} Type: {_json_type(value)} is not of expected type: "
        f"{spec.dtype.name} (input {spec.key})"
    )


def _decode_leaf(value: Any, spec: TensorSpec) -> Any:
    """One scalar of the request, checked against the input's dtype as TF Serving does.

    Numbers only for numeric inputs (no null, true or "1.5"), integers only for integer
    inputs, true/false only for bool inputs, strings or ``{"b64": ...}`` only for strings.
    """
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            if not spec.is_string:
                raise _type_error(value, spec)
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise invalid(f"Unable to base64 decode input {spec.key}") from exc
        raise invalid(
            f"JSON object: {json.dumps(value)[:80]} for input {spec.key} is not a valid value"
        )
    dtype, number = spec.dtype, not isinstance(value, bool)
    if dtype.is_bool:
        valid = isinstance(value, bool)
    elif dtype.is_integer:
        valid = number and isinstance(value, int)
    elif dtype.is_floating or dtype.is_complex:
        valid = number and isinstance(value, int | float)
    else:  # strings are checked with the whole array
        valid = True
    if not valid:
        raise _type_error(value, spec)
    return value


def _walk(value: Any, spec: TensorSpec, depth: int = 0) -> Any:
    if isinstance(value, list):
        if depth >= MAX_NESTING:
            raise invalid(f"input {spec.key} is nested more than {MAX_NESTING} levels deep")
        return [_walk(v, spec, depth + 1) for v in value]
    return _decode_leaf(value, spec)


def _to_array(value: Any, spec: TensorSpec) -> np.ndarray:
    """Convert one input's (batched) JSON value to an array of the signature's dtype."""
    data = _walk(value, spec)
    if spec.is_string:
        array = np.array(data, dtype=object)
        flat = array.reshape(-1) if array.ndim else [array.item()]
        for leaf in flat:
            if not isinstance(leaf, bytes | str):
                raise invalid(
                    f"JSON Value: {json.dumps(leaf)} Type: {type(leaf).__name__} is "
                    f"not of expected type: string (input {spec.key})"
                )
        return (
            np.vectorize(lambda s: s.encode() if isinstance(s, str) else s, otypes=[object])(array)
            if array.size
            else array
        )
    try:
        array = np.asarray(data, dtype=spec.dtype.as_numpy_dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid(
            f"JSON Value for input {spec.key} is not of expected type: {spec.dtype.name} ({exc})"
        ) from exc
    if array.dtype == object:  # ragged lists
        raise invalid(f"Input {spec.key} has ragged dimensions")
    return array


def check_tensor(array: np.ndarray, spec: TensorSpec) -> None:
    """A tensor that arrived as a TensorProto (gRPC): its dtype and shape must match the
    signature's, as TF Serving requires (no silent casts, no reshaping by the model)."""
    if spec.is_string:
        same_dtype = array.dtype.kind in ("O", "S", "U")
    else:
        same_dtype = array.dtype == np.dtype(spec.dtype.as_numpy_dtype)
    if not same_dtype:
        raise invalid(
            f"Expects input {spec.key} to be {spec.dtype.name} but {array.dtype.name} is provided"
        )
    check_shape(array, spec)


def check_shape(array: np.ndarray, spec: TensorSpec) -> None:
    if spec.shape is None:
        return
    if array.ndim != len(spec.shape):
        raise invalid(
            f"input {spec.key}: expected rank {len(spec.shape)} (shape "
            f"{spec.shape}), got rank {array.ndim} (shape {list(array.shape)})"
        )
    for index, (have, want) in enumerate(zip(array.shape, spec.shape, strict=True)):
        if want >= 0 and have != want:
            raise invalid(f"input {spec.key}: dimension {index} is {have}, expected {want}")


def decode_request(
    body: dict[str, Any], signature: Signature
) -> tuple[dict[str, np.ndarray], bool]:
    """Return (inputs, row_format)."""
    specs = signature.inputs
    if ("instances" in body) == ("inputs" in body):
        raise invalid(
            "Missing 'inputs' or 'instances' key"
            if "instances" not in body
            else "Request contains both 'instances' and 'inputs'"
        )
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise invalid("'instances' must be a non-empty list")
        columns: dict[str, list[Any]] = {k: [] for k in specs}
        for instance in instances:
            keyed = isinstance(instance, dict) and set(instance) != {"b64"}
            if len(specs) == 1 and not keyed:
                columns[next(iter(specs))].append(instance)
            elif keyed:
                missing = set(specs) - set(instance)
                extra = set(instance) - set(specs)
                if missing or extra:
                    raise invalid(
                        f"instance keys {sorted(instance)} do not match the "
                        f"signature's inputs {sorted(specs)}"
                    )
                for k, v in instance.items():
                    columns[k].append(v)
            else:
                raise invalid(
                    "Expecting object with input names as keys for each instance "
                    f"(the signature has {len(specs)} inputs)"
                )
        arrays = {k: _to_array(v, specs[k]) for k, v in columns.items()}
        row = True
    else:
        columnar = body["inputs"]
        if isinstance(columnar, dict) and set(columnar) != {"b64"}:
            missing = set(specs) - set(columnar)
            extra = set(columnar) - set(specs)
            if missing or extra:
                raise invalid(
                    f"'inputs' keys {sorted(columnar)} do not match the "
                    f"signature's inputs {sorted(specs)}"
                )
            arrays = {k: _to_array(v, specs[k]) for k, v in columnar.items()}
        elif len(specs) == 1:
            key = next(iter(specs))
            arrays = {key: _to_array(columnar, specs[key])}
        else:
            raise invalid("'inputs' must be an object keyed by input name")
        row = False
    for key, array in arrays.items():
        check_shape(array, specs[key])
    if row:
        sizes = {a.shape[0] if a.ndim else 1 for a in arrays.values()}
        if len(sizes) > 1:
            raise invalid("all inputs must have the same batch size (dimension 0)")
    return arrays, row


def _finite(value: Any) -> bool:
    return not (isinstance(value, float) and (math.isnan(value) or math.isinf(value)))


def _jsonable(array: np.ndarray, name: str) -> Any:
    if array.dtype == object or array.dtype.kind in ("S", "O"):

        def convert(item: Any) -> Any:
            data = item if isinstance(item, bytes) else bytes(item)
            if name.endswith("_bytes"):
                return {"b64": base64.b64encode(data).decode()}
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                return {"b64": base64.b64encode(data).decode()}

        return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else []
    return array.tolist()


def encode_response(outputs: dict[str, np.ndarray], row: bool) -> bytes:
    converted = {k: _jsonable(v, k) for k, v in outputs.items()}
    if row:
        if len(converted) == 1:
            body: dict[str, Any] = {"predictions": next(iter(converted.values()))}
        else:
            batch = len(next(iter(converted.values())))
            body = {"predictions": [{k: v[i] for k, v in converted.items()} for i in range(batch)]}
    else:
        body = {"outputs": next(iter(converted.values())) if len(converted) == 1 else converted}
    has_nonfinite = any(a.dtype.kind == "f" and not np.isfinite(a).all() for a in outputs.values())
    if has_nonfinite:  # TF Serving writes NaN/Infinity literals; orjson would write null
        return json.dumps(body, allow_nan=True).encode()
    return orjson.dumps(body)


# -- classify and regress -----------------------------------------------------------------
INT64_MAX = 2**63 - 1
_FEATURE_KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def _feature_kind_error(name: str, feature: Any) -> Exception:
    kind = _FEATURE_KINDS.get(feature.WhichOneof("kind") or "", "UNKNOWN")
    return invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add_feature_value(value: Any, name: str, feature: Any) -> None:
    """One JSON value into a tf.train.Feature, as TF Serving's ``AddValueToFeature``: the
    first value fixes the list's kind (an int, then 2.5, is an error)."""
    kind = feature.WhichOneof("kind")
    item: int | float | bytes
    if isinstance(value, bool):
        wanted, item = "int64_list", int(value)
    elif isinstance(value, int):
        if value > INT64_MAX:
            raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        wanted, item = ("int64_list", value) if value >= -INT64_MAX - 1 else ("float_list", value)
    elif isinstance(value, float):
        wanted, item = "float_list", value
    elif isinstance(value, str):
        wanted, item = "bytes_list", value.encode()
    elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            wanted, item = "bytes_list", base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid("Unable to base64 decode") from exc
    else:
        raise invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(value)}")
    if kind not in (None, wanted):
        raise _feature_kind_error(name, feature)
    getattr(feature, wanted).value.append(item)


def _example(value: Any, example: Any) -> Any:
    if not isinstance(value, dict):
        raise invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_feature_value(item, name, feature)
    return example


def decode_examples(body: dict[str, Any], verb: str) -> tuple[list[Any], Any]:
    """A ``:classify`` / ``:regress`` body → (tf.Example list, context Example or None)."""
    from tensorflow.core.example import example_pb2

    context = None
    if "context" in body:
        context = _example(body["context"], example_pb2.Example())
    if "examples" not in body:
        raise invalid(f"When method is {verb}, key 'examples' is expected and was not found")
    values = body["examples"]
    if not isinstance(values, list):
        raise invalid("Expecting 'examples' value to be an list/array")
    if not values:
        raise invalid("'examples' value is an empty array")
    return [_example(value, example_pb2.Example()) for value in values], context


def _dumps(body: dict[str, Any], values: list[float]) -> bytes:
    if all(math.isfinite(v) for v in values):
        return orjson.dumps(body)
    return json.dumps(body, allow_nan=True).encode()  # TF Serving writes NaN/Infinity


def classification_json(rows: list[list[tuple[bytes, float]]]) -> bytes:
    """``{"results": [[[label, score], ...] per example]}``."""
    body = {
        "results": [
            [[label.decode("utf-8", errors="replace"), score] for label, score in row]
            for row in rows
        ]
    }
    return _dumps(body, [score for row in rows for _, score in row])


def regression_json(values: list[float]) -> bytes:
    """``{"results": [value per example]}``."""
    return _dumps({"results": values}, values)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def tensor_info_json(spec: TensorSpec) -> dict[str, Any]:
    shape: dict[str, Any] = {"dim": [], "unknown_rank": spec.shape is None}
    if spec.shape is not None:
        shape["dim"] = [{"size": str(d), "name": ""} for d in spec.shape]
    return {
        "dtype": "DT_"
        + spec.dtype.name.upper().replace("FLOAT32", "FLOAT").replace("FLOAT64", "DOUBLE"),
        "tensor_shape": shape,
        "name": spec.name,
    }


__all__ = ["_finite"]
