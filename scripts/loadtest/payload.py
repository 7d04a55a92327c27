"""The body every load-test request sends.

From ``sample_request`` in ``models/NAME/model.yaml`` when there is one; otherwise
made from the signature the canary serves (REST ``GET …/metadata`` or gRPC
``GetModelMetadata``): one instance of zeros, ``false`` or empty strings, unknown
dimensions taken as 1. For gRPC the JSON body becomes a PredictRequest against the
served signature's dtypes (scripts/loadtest/grpc_payload.py).
"""

from __future__ import annotations

import json
from typing import Any

from scripts.errors import ConfigError, RemoteError
from scripts.log import log

# One served input: (dtype as "DT_FLOAT", shape with -1 for unknown dims, or None).
InputInfo = tuple[str, list[int] | None]


def _rest_inputs(endpoint: str, model: str, signature_name: str) -> dict[str, InputInfo]:
    import requests

    url = f"{endpoint.rstrip('/')}/v1/models/{model}/metadata"
    try:
        response = requests.get(url, timeout=30)
        response.raise_for_status()
        signatures = response.json()["metadata"]["signature_def"]["signature_def"]
    except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
        raise RemoteError(
            f"cannot read the served signature from {url}: {exc}",
            cause="the endpoint is not TF Serving's REST port, or the model is not loaded",
            fix="add sample_request to models/NAME/model.yaml, or pass a ready endpoint",
        ) from exc
    if signature_name not in signatures:
        raise ConfigError(
            f"model {model!r} at {endpoint} has no signature {signature_name!r}",
            fix=f"use one of: {', '.join(sorted(signatures))}",
        )
    inputs: dict[str, InputInfo] = {}
    for key, info in signatures[signature_name]["inputs"].items():
        shape = info.get("tensor_shape", {})
        dims = None if shape.get("unknown_rank") else [int(d["size"]) for d in shape.get("dim", [])]
        inputs[key] = (info["dtype"], dims)
    return inputs


def _grpc_inputs(signature_def: Any) -> dict[str, InputInfo]:
    from tensorboard.compat.proto import types_pb2

    return {
        key: (
            types_pb2.DataType.Name(info.dtype),
            None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim],
        )
        for key, info in signature_def.inputs.items()
    }


def _zero(dtype: str) -> Any:
    if dtype == "DT_STRING":
        return ""
    if dtype == "DT_BOOL":
        return False
    return 0.0 if dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16") else 0


def synthesize(inputs: dict[str, InputInfo], signature_name: str) -> dict[str, Any]:
    """One row-format instance of the signature: zeros, unknown dimensions as 1."""

    def value(dtype: str, dims: list[int]) -> Any:
        if not dims:
            return _zero(dtype)
        return [value(dtype, dims[1:]) for _ in range(dims[0] if dims[0] > 0 else 1)]

    row = {key: value(dtype, (shape or [-1])[1:]) for key, (dtype, shape) in inputs.items()}
    instance = next(iter(row.values())) if len(row) == 1 else row
    return {"signature_name": signature_name, "instances": [instance]}


def payload_bytes(
    sample: dict[str, Any] | None,
    *,
    protocol: str,
    endpoint: str,
    model: str,
    signature_name: str,
) -> tuple[bytes, dict[str, Any]]:
    """(what each request sends, the JSON body it came from)."""
    body = sample
    if protocol == "rest":
        if body is None:
            body = synthesize(_rest_inputs(endpoint, model, signature_name), signature_name)
            log.warning(
                "model %s has no sample_request: sending a zero-valued instance made from "
                "the served signature (a model that parses its inputs, e.g. JPEG bytes, "
                "needs a real sample_request in model.yaml)",
                model,
            )
        return json.dumps(body).encode(), body
    from scripts.loadtest.grpc_payload import fetch_signature, predict_request

    if body is not None:
        signature_name = str(body.get("signature_name", signature_name))
    signature = fetch_signature(endpoint, model, signature_name)
    if body is None:
        body = synthesize(_grpc_inputs(signature), signature_name)
        log.warning(
            "model %s has no sample_request: sending a zero-valued instance made from the "
            "served signature",
            model,
        )
    return predict_request(body, model, signature), body
