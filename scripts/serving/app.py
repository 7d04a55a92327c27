"""The serving core (shared by REST and gRPC) and the REST API (Starlette on uvicorn).

REST, as TF Serving documents it (``/v1/models/{name}[/versions/{v}|/labels/{l}]``):
``GET`` status, ``GET …/metadata``, ``POST …:predict``, ``…:classify``, ``…:regress``.
Errors are ``{"error": "..."}`` with the HTTP status of the canonical code. The gRPC
services are in :mod:`scripts.serving.grpc_api`.
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

from scripts.serving import codec, inference, model_config
from scripts.serving.batching import Batcher, BatchingOptions
from scripts.serving.errors import ServingError, invalid, not_found
from scripts.serving.models import ModelManager, Servable, Signature, VersionState

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

    def resolve(self, name: str, version: int | None, label: str | None) -> Servable:
        """The servable a request names (latest, a version, or a label)."""
        if not name:
            raise invalid("ModelSpec has no name specified.")
        return self.manager.resolve(name, version, label)

    def model_status(self, name: str, version: int | None, label: str | None) -> list[VersionState]:
        """GetModelStatus: the versions' states, newest first (get_model_status_impl.cc).

        A label narrows the answer to its version, as this server's REST status always
        did (TF Serving ignores the label there and lists every version)."""
        if not name:
            raise invalid("Missing model name in request.")
        entry = self.manager.entry(name)
        if label is not None:
            if label not in entry.labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = entry.labels[label]
        states = self.manager.states(name, version)
        if not states:  # configured, but no version seen yet
            raise not_found(f"Could not find any versions of model {name}")
        return states

    async def reload(self, config: Any) -> None:
        """HandleReloadConfigRequest: serve a new model list; wait for new models to load."""
        entries = model_config.reload_entries(config, self.manager)
        added = await asyncio.to_thread(self.manager.reload, entries)
        failed = []
        for name in added:
            entry = self.manager.entries.get(name)
            if entry is not None and not entry.servables:
                why = "".join(f" due to error: {s.error}" for s in entry.states.values() if s.error)
                failed.append(f"{{Latest({name}){why}}}")
        if failed:  # TF Serving's ServerCore::WaitUntilModelsAvailable answers UNKNOWN
            raise ServingError(
                "UNKNOWN",
                f"{len(failed)} model(s) did not become available: {{{', '.join(failed)}, }}",
            )

    async def predict(
        self,
        servable: Servable,
        signature: Signature,
        inputs: dict[str, np.ndarray],
        output_filter: list[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Run ``signature`` (batched when batching is on); only the ``output_filter``
        outputs when one is given (predict_util.cc rules: known aliases, no duplicates)."""
        wanted = _output_aliases(signature, output_filter or [])
        await self._inject()
        if self.batching is None:
            call = self.manager.run(signature, inputs)
        else:
            _check_batchable(inputs)
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
            outputs = await asyncio.wait_for(call, self.timeout_s)
        except TimeoutError as exc:
            raise ServingError("DEADLINE_EXCEEDED", "Deadline Exceeded") from exc
        return outputs if wanted is None else {k: outputs[k] for k in wanted}

    async def classify(
        self, servable: Servable, signature_name: str, examples: list[bytes]
    ) -> inference.Classifications:
        return await inference.classify(self.predict, servable, signature_name, examples)

    async def regress(
        self, servable: Servable, signature_name: str, examples: list[bytes]
    ) -> list[float]:
        return await inference.regress(self.predict, servable, signature_name, examples)

    async def multi_inference(
        self, servable: Servable, tasks: list[inference.Task], examples: list[bytes]
    ) -> list[inference.TaskResult]:
        return await inference.multi_inference(self.predict, servable, tasks, examples)


def _check_batchable(inputs: dict[str, np.ndarray]) -> None:
    """What TF Serving's batching session refuses (batching_util.h ComputeTensorBatchSize)."""
    if not inputs:
        raise invalid("Batching Run() must have at least one input tensor")
    if any(array.ndim == 0 for array in inputs.values()):
        raise invalid("Batching Run() input tensors must have at least one dimension")
    if len({array.shape[0] for array in inputs.values()}) > 1:
        raise invalid("Batching Run() input tensors must have equal 0th-dimension size")


def _output_aliases(signature: Signature, output_filter: list[str]) -> list[str] | None:
    """The outputs a PredictRequest's ``output_filter`` names (None: all of them)."""
    if not output_filter:
        return None
    seen: list[str] = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid(
                f"output tensor alias not found in signature: {alias} Outputs expected to be "
                f"in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise invalid(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen


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
                states = core.model_status(name, version, label)
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
                body = codec.parse_body(await read_body(request))
                servable = core.manager.resolve(name, version, label)
                signature_name = body.get("signature_name") or ""
                if not isinstance(signature_name, str):
                    raise invalid("'signature_name' must be a string")
                examples, context = codec.decode_examples(body, match["verb"])
                serialized = inference.serialize_examples(examples, context)
                if match["verb"] == "classify":
                    result = await core.classify(servable, signature_name, serialized)
                    return Response(codec.classification_json(result.rows), media_type=JSON)
                values = await core.regress(servable, signature_name, serialized)
                return Response(codec.regression_json(values), media_type=JSON)
            raise _malformed(request)
        except ServingError as exc:
            status = exc.code
            return _error(exc)
        except Exception:
            status = "INTERNAL"  # a bug: count it as an error, not as OK
            raise
        finally:
            if match["verb"] is not None:
                core.metrics.requests.labels(name, status, "REST").inc()
                core.metrics.latency.labels(name, match["verb"], "REST").observe(
                    (time.perf_counter() - started) * 1e6
                )

    async def metrics(request: Request) -> Response:
        return Response(
            render_metrics(core.metrics.registry), media_type="text/plain; version=0.0.4"
        )

    routes = [Route("/v1/models/{rest:path}", models, methods=["GET", "POST"])]
    if metrics_path:
        routes.append(Route(metrics_path, metrics, methods=["GET"]))

    async def no_route(request: Request, exc: Exception) -> Response:
        return _error(_malformed(request))

    app = Starlette(routes=routes, exception_handlers={404: no_route, 405: no_route})
    app.router.redirect_slashes = False  # TF Serving answers /v1/models itself, no redirect
    return app
