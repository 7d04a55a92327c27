"""Locust user for TF Serving's gRPC API: ``PredictionService/Predict``, open loop.

The request is the PredictRequest the runner built from the sample request against the
served signature (scripts/loadtest/grpc_payload.py), sent as bytes on TF Serving's
method path: this process never imports TensorFlow. Pacing, settings and samples:
scripts/loadtest/openloop.py. Each call is reported to Locust as a ``grpc`` request,
so its JSON and HTML reports carry it like the REST user's.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, task

from scripts.loadtest.grpc_payload import PREDICT_METHOD, grpc_target
from scripts.loadtest.openloop import PAYLOAD, TRACKS, USERS, OpenLoop

grpc_gevent.init_gevent()  # before any channel: gRPC's I/O must yield to gevent
CALL_TIMEOUT_S = 30.0


class _GrpcUser(OpenLoop, User):
    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.channels: dict[str, grpc.Channel] = {}
        self.calls: dict[str, Any] = {}
        for endpoint in TRACKS[self.track]:
            channel = grpc.insecure_channel(grpc_target(endpoint))
            self.channels[endpoint] = channel
            self.calls[endpoint] = channel.unary_unary(PREDICT_METHOD)
        self.start_schedule()

    def on_stop(self) -> None:
        for channel in self.channels.values():
            channel.close()

    @task
    def fire(self) -> None:
        self.tick()

    def send(self, endpoint: str) -> tuple[bool, int]:
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        status = grpc.StatusCode.OK
        try:
            length = len(self.calls[endpoint](PAYLOAD, timeout=CALL_TIMEOUT_S))
        except grpc.RpcError as exc:
            status = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            exception = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=f"{self.track} predict",
            response_time=(time.perf_counter() - started) * 1e3,
            response_length=length,
            exception=exception,
            context={},
        )
        return exception is None, int(status.value[0])


class CanaryUser(_GrpcUser):
    track = "canary"
    fixed_count = USERS if "canary" in TRACKS else 0


class BaselineUser(_GrpcUser):
    track = "baseline"
    fixed_count = USERS if "baseline" in TRACKS else 0
