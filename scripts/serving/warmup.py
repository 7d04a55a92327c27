"""Model warm-up: replay a version's warm-up records before it becomes AVAILABLE.

As ``tensorflow_model_server --enable_model_warmup`` (the default) does
(servables/tensorflow/saved_model_warmup_util.cc): when a version has
``assets.extra/tf_serving_warmup_requests`` (a TFRecord file of ``PredictionLog``), every
record is run ``num_request_iterations`` times (1) through the predict path, after the
SavedModel loaded and before the version is AVAILABLE, so the readiness probe
(``GET /v1/models/NAME``) means "warm". No file: nothing to do. An unreadable record,
more than 1000 records, a ``session_run_log`` or a request that fails fails the load of
that version (it goes to END with the reason, and is never served). The wall time is
observed in ``:tensorflow:serving:model_warmup_latency{model_path,status}`` (µs).

Each kind of log runs through the same steps as its gRPC call, minus the response and
the serving core's fault injection and batching queue (TF Serving, too, runs warm-up
straight on the loaded session): predict as ``Predict`` (the signature by name,
``tensor_proto.predict_inputs``' checks, ``run_signature``); classify, regress and
multi-inference through :mod:`scripts.serving.inference`, on this thread. A
``predict_streamed_log`` or a record without a request is skipped (as TF Serving
skips them), counted and logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import message
from prometheus_client import CollectorRegistry, Histogram

from scripts import tfrecord
from scripts.log import log
from scripts.model_spec import MAX_WARMUP_RECORDS
from scripts.serving import inference, tensor_proto
from scripts.serving.errors import ServingError
from scripts.serving.models import Servable, Signature, run_signature
from scripts.warmup import WARMUP_FILE

# A replay function: run one request message of its kind against a servable; raises
# ServingError (or any exception) when the request fails.
Replay = Callable[[Servable, Any], None]
# Why a record that is not replayed is skipped.
SKIPPED_BECAUSE = {
    "predict_streamed_log": "TF Serving does not replay streamed predict logs either",
    "empty": "a PredictionLog without a request (TF Serving skips it too)",
}
# TF Serving's buckets for this metric: 10 µs × 1.8^i, 33 of them (~20 minutes).
LATENCY_BUCKETS = [10 * 1.8**i for i in range(33)]


class WarmupError(Exception):
    """The warm-up failed: ``code`` is the canonical code TF Serving would report."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class WarmupReport:
    records: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def replay_predict(servable: Servable, request: Any) -> None:
    """Run one ``PredictRequest`` as the gRPC Predict does (the outputs are dropped)."""
    signature = servable.signature(request.model_spec.signature_name or None)
    run_signature(signature, tensor_proto.predict_inputs(request.inputs, signature))


async def _run_here(
    servable: Servable, signature: Signature, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    # inference's runner, on the loading thread: no queue, no fault injection.
    return run_signature(signature, inputs)


def replay_classify(servable: Servable, request: Any) -> None:
    examples = inference.input_examples(request.input)
    asyncio.run(
        inference.classify(_run_here, servable, request.model_spec.signature_name, examples)
    )


def replay_regress(servable: Servable, request: Any) -> None:
    examples = inference.input_examples(request.input)
    asyncio.run(inference.regress(_run_here, servable, request.model_spec.signature_name, examples))


def replay_multi_inference(servable: Servable, request: Any) -> None:
    tasks = [inference.Task(t.model_spec.signature_name, t.method_name) for t in request.tasks]
    examples = inference.input_examples(request.input)
    asyncio.run(inference.multi_inference(_run_here, servable, tasks, examples))


REPLAYS: dict[str, Replay] = {
    "predict_log": replay_predict,
    "classify_log": replay_classify,
    "regress_log": replay_regress,
    "multi_inference_log": replay_multi_inference,
}


def replay_file(
    servable: Servable,
    path: Path,
    *,
    iterations: int = 1,
    replays: Mapping[str, Replay] | None = None,
) -> WarmupReport:
    """Replay every record of the warm-up file at ``path``; WarmupError on the first failure."""
    from tensorflow_serving.apis import prediction_log_pb2

    handlers = {**REPLAYS, **(replays or {})}
    report = WarmupReport()
    with path.open("rb") as stream:
        records = tfrecord.read_records(stream)
        while True:
            try:
                record = next(records, None)
            except tfrecord.TFRecordError as exc:
                raise WarmupError(
                    "DATA_LOSS",
                    f"{exc} in {path}. Please verify your warmup data is in TFRecord format.",
                ) from exc
            if record is None:
                break
            if report.records >= MAX_WARMUP_RECORDS:
                raise WarmupError(
                    "INVALID_ARGUMENT",
                    f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) "
                    f"at {path}",
                )
            index = report.records
            try:
                prediction_log = prediction_log_pb2.PredictionLog.FromString(record)
            except message.DecodeError as exc:
                raise WarmupError(
                    "INVALID_ARGUMENT",
                    f"Failed to parse warmup record {index} from {path}: {exc}",
                ) from exc
            kind = prediction_log.WhichOneof("log_type") or "empty"
            report.records += 1
            if kind == "session_run_log":
                raise WarmupError(
                    "UNIMPLEMENTED", f"Unsupported log_type for warmup: {kind} (record {index})"
                )
            handler = handlers.get(kind)
            if handler is None:
                report.skipped[kind] = report.skipped.get(kind, 0) + 1
                continue
            request = getattr(prediction_log, kind).request
            for _ in range(iterations):
                try:
                    handler(servable, request)
                except ServingError as exc:
                    raise WarmupError(
                        exc.code, f"warmup record {index} ({kind}) failed: {exc.message}"
                    ) from exc
                except Exception as exc:
                    raise WarmupError(
                        "INTERNAL",
                        f"warmup record {index} ({kind}) failed: {type(exc).__name__}: {exc}",
                    ) from exc
    return report


class Warmup:
    """The manager's warm-up step (``ModelManager(warmup=Warmup(...))``): replays the
    version's warm-up file, logs what it did, and observes the latency metric."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        iterations: int = 1,
        replays: Mapping[str, Replay] | None = None,
    ) -> None:
        self.iterations = iterations
        self.replays = dict(replays or {})
        self.latency = (
            Histogram(
                ":tensorflow:serving:model_warmup_latency",
                "Distribution of wall time (in microseconds) for warming up the model.",
                ["model_path", "status"],
                registry=registry,
                buckets=LATENCY_BUCKETS,
            )
            if registry is not None
            else None
        )

    def __call__(self, servable: Servable) -> None:
        path = servable.path / WARMUP_FILE
        if not path.is_file():
            log.info("no warm-up data file found at %s", path)
            return
        started = time.perf_counter()
        status = "OK"
        try:
            report = replay_file(servable, path, iterations=self.iterations, replays=self.replays)
        except WarmupError as exc:
            status = exc.code
            raise
        finally:
            elapsed = time.perf_counter() - started
            if self.latency is not None:
                self.latency.labels(str(servable.path), status).observe(elapsed * 1e6)
        for kind, count in sorted(report.skipped.items()):
            log.warning(
                "warm-up of %s version %d: skipped %d %s record(s): %s",
                servable.name,
                servable.version,
                count,
                kind,
                SKIPPED_BECAUSE.get(kind, "an unknown log type"),
            )
        log.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
            "Elapsed time (microseconds): %d.",
            path,
            report.records,
            elapsed * 1e6,
        )
