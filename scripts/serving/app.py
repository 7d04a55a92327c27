"""The REST API (Starlette on uvicorn) and the gRPC PredictionService, sharing one core.

REST, as TF Serving documents it (``/v1/models/{name}[/versions/{v}|/labels/{l}]``):
``GET`` status, ``GET …/metadata``, ``POST …:predict``. Errors are
``{"error": "..."}`` with the HTTP status of the canonical code. gRPC:
``tensorflow.serving.PredictionService/Predict`` and ``GetModelMetadata``.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from scripts.serving import codec
from scripts.serving.batching import Batcher, BatchingOptions
from scripts.serving.errors import ServingError, invalid
from scripts.serving.models import ModelManager, Servable, Signature

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>predict|classify|regress)|/(?P<metadata>metadata))?$"
)
JSON = "application/json"


@dataclass(frozen=True)
class FaultInjection:
    """``--unsafe_fault_injection``: rehearse the gate with a slow or failing server."""

    latency_ms: float = 0.0
    latency_sigma: float = 0.0  # lognormal spread around latency_ms (0 = fixed)
    error_ratio: float = 0.0
    # A serialised service time: requests queue for one virtual server that takes
    # service_ms each, so a replica's capacity is exactly 1000 / service_ms req/s
    # (capacity-search rehearsals and tests).
    service_ms: float = 0.0
    seed: int | None = None

    @classmethod
    def parse(cls, text: str) -> FaultInjection:
        values: dict[str, float] = {}
        for part in filter(None, text.split(",")):
            key, _, raw = part.partition("=")
            if key not in ("latency_ms", "latency_sigma", "error_ratio", "service_ms", "seed"):
                raise ValueError(f"unknown fault-injection key {key!r}")
            values[key] = float(raw)
        seed = values.pop("seed", None)
        return cls(
            latency_ms=values.get("latency_ms", 0.0),
            latency_sigma=values.get("latency_sigma", 0.0),
            error_ratio=values.get("error_ratio", 0.0),
            service_ms=values.get("service_ms", 0.0),
            seed=int(seed) if seed is not None else None,
        )

    @property
    def active(self) -> bool:
        return self.latency_ms > 0 or self.error_ratio > 0 or self.service_ms > 0


class Metrics:
    """TF Serving's metric names, where they exist, on a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            ":tensorflow:serving:request_count",
            "Requests by model, status",
            ["model_name", "status", "entrypoint"],
            registry=self.registry,
        )
        self.latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Request latency in microseconds",
            ["model_name", "API", "entrypoint"],
            registry=self.registry,
            buckets=[100 * 1.8**i for i in range(25)],
        )
        self.batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Batch sizes",
            ["model_name"],
            registry=self.registry,
            buckets=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
        )


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if value.is_integer() else repr(value)


def render_metrics(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format as TF Serving writes it.

    A counter's samples carry the counter's own name (``:tensorflow:serving:request_count``,
    which dashboards and the KEDA trigger query), not prometheus_client's ``…_total``; the
    ``…_created`` samples, which TF Serving does not have, are left out.
    """
    lines: list[str] = []
    for metric in registry.collect():
        lines.append(f"# HELP {metric.name} {metric.documentation}")
        lines.append(f"# TYPE {metric.name} {metric.type}")
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            name = sample.name
            if metric.type == "counter" and name == f"{metric.name}_total":
                name = metric.name
            labels = ",".join(
                f'{key}="{_label_value(value)}"' for key, value in sorted(sample.labels.items())
            )
            lines.append(
                f"{name}{{{labels}}} {_number(sample.value)}"
                if labels
                else f"{name} {_number(sample.value)}"
            )
    return ("\n".join(lines) + "\n").encode()


class ServingCore:
    def __init__(
        self,
        manager: ModelManager,
        batching: BatchingOptions | None,
        faults: FaultInjection,
        timeout_s: float,
    ) -> None:
        self.manager = manager
        self.batching = batching
        self.faults = faults
        self.timeout_s = timeout_s
        self.metrics = Metrics()
        self._batchers: dict[tuple[str, int, str], Batcher] = {}
        self._rng = random.Random(faults.seed)  # noqa: S311 - simulation, not security
        self._server_free_at = 0.0  # the virtual server of ``service_ms``

    async def _inject(self) -> None:
        if not self.faults.active:
            return
        if self.faults.service_ms > 0:
            # No lock: the REST and gRPC servers run separate event loops; a request
            # books the next free slot of the virtual server and waits until it ends.
            now = time.monotonic()
            start = max(now, self._server_free_at)
            self._server_free_at = start + self.faults.service_ms / 1000
            await asyncio.sleep(self._server_free_at - now)
        if self.faults.latency_ms > 0:
            delay = self.faults.latency_ms
            if self.faults.latency_sigma > 0:
                delay = self._rng.lognormvariate(np.log(delay), self.faults.latency_sigma)
            await asyncio.sleep(delay / 1000)
        if self._rng.random() < self.faults.error_ratio:
            raise ServingError("INTERNAL", "injected fault (--unsafe_fault_injection)")

    async def predict(
        self, servable: Servable, signature: Signature, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        await self._inject()
        if self.batching is None:
            call = self.manager.run(signature, inputs)
        else:
            key = (servable.name, servable.version, signature.name)
            batcher = self._batchers.get(key)
            if batcher is None:
                batcher = self._batchers[key] = Batcher(
                    self.manager,
                    signature,
                    self.batching,
                    on_batch=self.metrics.batch_size.labels(servable.name).observe,
                )
            call = batcher.submit(inputs)
        try:
            return await asyncio.wait_for(call, self.timeout_s)
        except TimeoutError as exc:
            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from exc


def _malformed(request: Request) -> ServingError:
    """TF Serving's answer to a path or method it has no API for.

    Under ``/v1/`` its REST handler answers INVALID_ARGUMENT (400) "Malformed request";
    other paths have no handler at all (404).
    """
    message = f"Malformed request: {request.method} {request.url.path}"
    if request.url.path.lower().startswith("/v1/"):
        return invalid(message)
    return ServingError("NOT_FOUND", message)


def _error(exc: ServingError) -> Response:
    return Response(codec.error_body(exc.message), status_code=exc.http_status, media_type=JSON)


def _metadata_json(servable: Servable) -> dict[str, Any]:
    return {
        "model_spec": {
            "name": servable.name,
            "signature_name": "",
            "version": str(servable.version),
        },
        "metadata": {
            "signature_def": {
                "signature_def": {
                    name: {
                        "inputs": {k: codec.tensor_info_json(s) for k, s in sig.inputs.items()},
                        "outputs": {k: codec.tensor_info_json(s) for k, s in sig.outputs.items()},
                        "method_name": sig.method,
                    }
                    for name, sig in servable.signatures.items()
                }
            }
        },
    }


def build_rest_app(
    core: ServingCore, *, metrics_path: str | None, max_body_bytes: int, body_timeout_s: float
) -> Starlette:
    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise ServingError(
                "RESOURCE_EXHAUSTED",
                f"request body of {declared} bytes exceeds the limit of {max_body_bytes}",
                http_status=413,
            )
        chunks, size = [], 0

        async def collect() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_body_bytes:
                    raise ServingError(
                        "RESOURCE_EXHAUSTED",
                        f"request body exceeds the limit of {max_body_bytes}",
                        http_status=413,
                    )
                chunks.append(chunk)

        try:
            await asyncio.wait_for(collect(), body_timeout_s)
        except TimeoutError as exc:
            raise ServingError("DEADLINE_EXCEEDED", "timed out reading the request body") from exc
        except ClientDisconnect as exc:  # nobody to answer; counted, not a server error
            raise ServingError("CANCELLED", "the client closed the request") from exc
        return b"".join(chunks)

    async def models(request: Request) -> Response:
        match = _PATH.match(request.url.path)
        if match is None:
            return _error(_malformed(request))
        name = match["name"]
        version = int(match["version"]) if match["version"] else None
        label = match["label"]
        started = time.perf_counter()
        status = "OK"
        try:
            if request.method == "GET" and match["verb"] is None:
                if match["metadata"]:
                    servable = core.manager.resolve(name, version, label)
                    return Response(orjson.dumps(_metadata_json(servable)), media_type=JSON)
                if label is not None:
                    version = core.manager.resolve(name, None, label).version
                states = core.manager.states(name, version)
                return Response(
                    orjson.dumps({"model_version_status": [s.to_json() for s in states]}),
                    media_type=JSON,
                )
            if request.method == "POST" and match["verb"] == "predict":
                body = codec.parse_body(await read_body(request))
                servable = core.manager.resolve(name, version, label)
                signature_name = body.get("signature_name") or "serving_default"
                if not isinstance(signature_name, str):
                    raise invalid("'signature_name' must be a string")
                signature = servable.signature(signature_name)
                inputs, row = codec.decode_request(body, signature)
                outputs = await core.predict(servable, signature, inputs)
                return Response(codec.encode_response(outputs, row), media_type=JSON)
            if request.method == "POST" and match["verb"] in ("classify", "regress"):
                raise ServingError(
                    "UNIMPLEMENTED", f"{match['verb']} is not supported by this server"
                )
            raise _malformed(request)
        except ServingError as exc:
            status = exc.code
            return _error(exc)
        except Exception:
            status = "INTERNAL"  # a bug: count it as an error, not as OK
            raise
        finally:
            if match["verb"] == "predict":
                core.metrics.requests.labels(name, status, "REST").inc()
                core.metrics.latency.labels(name, "predict", "REST").observe(
                    (time.perf_counter() - started) * 1e6
                )

    async def metrics(request: Request) -> Response:
        return Response(
            render_metrics(core.metrics.registry), media_type="text/plain; version=0.0.4"
        )

    routes = [Route("/v1/models/{rest:path}", models, methods=["GET", "POST"])]
    if metrics_path:
        routes.append(Route(metrics_path, metrics, methods=["GET"]))

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(_malformed(request))

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.router.redirect_slashes = False  # TF Serving answers /v1/models itself, no redirect
    return app


def build_grpc_servicer(core: ServingCore) -> Any:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    def resolve(spec: Any) -> Servable:
        version = spec.version.value if spec.HasField("version") else None
        label = spec.version_label or None
        return core.manager.resolve(spec.name, version, label)

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
        async def Predict(self, request: Any, context: Any) -> Any:
            started = time.perf_counter()
            status = "OK"
            try:
                servable = resolve(request.model_spec)
                signature = servable.signature(request.model_spec.signature_name or None)
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                for key, array in inputs.items():
                    if key in signature.inputs:
                        codec.check_tensor(array, signature.inputs[key])
                outputs = await core.predict(servable, signature, inputs)
                response = predict_pb2.PredictResponse()
                response.model_spec.name = servable.name
                response.model_spec.version.value = servable.version
                response.model_spec.signature_name = signature.name
                for key, array in outputs.items():
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(array))
                return response
            except ServingError as exc:
                status = exc.code
                await context.abort(exc.grpc_code, exc.message)
            except Exception:
                status = "INTERNAL"  # a bug: count it as an error, not as OK
                raise
            finally:
                core.metrics.requests.labels(request.model_spec.name, status, "GRPC").inc()
                core.metrics.latency.labels(request.model_spec.name, "predict", "GRPC").observe(
                    (time.perf_counter() - started) * 1e6
                )

        async def GetModelMetadata(self, request: Any, context: Any) -> Any:
            try:
                if list(request.metadata_field) != ["signature_def"]:
                    raise invalid("Metadata field signature_def must be requested")
                servable = resolve(request.model_spec)
                signature_map = get_model_metadata_pb2.SignatureDefMap()
                for name, sig in servable.signatures.items():
                    signature_map.signature_def[name].CopyFrom(sig.proto)
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                response.model_spec.name = servable.name
                response.model_spec.version.value = servable.version
                response.metadata["signature_def"].Pack(signature_map)
                return response
            except ServingError as exc:
                await context.abort(exc.grpc_code, exc.message)

    del grpc
    return PredictionService()
