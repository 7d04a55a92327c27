"""``python -m scripts serve``: TF Serving's flags, REST on uvicorn, gRPC on grpc.aio.

Like ``tensorflow_model_server``, it loads every model (and replays its warm-up
records, ``--enable_model_warmup``) before it opens its ports, so a readiness probe
fails until the model is servable and warm, then polls the base paths for new
versions. The same container args run here and on GKE.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

from scripts.errors import ConfigError, UsageError
from scripts.log import log
from scripts.serving.app import FaultInjection, ServingCore, build_rest_app
from scripts.serving.batching import BatchingOptions
from scripts.serving.grpc_api import add_grpc_services
from scripts.serving.model_config import model_entries
from scripts.serving.models import ModelEntry, ModelManager
from scripts.serving.protos import parse_text_proto
from scripts.serving.warmup import Warmup


def _entries(args: argparse.Namespace) -> list[ModelEntry]:
    if args.model_config_file:
        config = parse_text_proto(Path(args.model_config_file), "ModelServerConfig")
        entries = model_entries(config)
        if not entries:
            raise ConfigError(f"{args.model_config_file} configures no model")
        return entries
    if not args.model_base_path:
        raise UsageError(
            "neither --model_config_file nor --model_base_path was given",
            fix="pass --model_name=NAME --model_base_path=/models/NAME",
        )
    return [ModelEntry(name=args.model_name, base_path=Path(args.model_base_path))]


def _configure_threads(args: argparse.Namespace) -> None:
    import tensorflow as tf

    if args.tensorflow_intra_op_parallelism > 0:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism > 0:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)


async def _serve(args: argparse.Namespace, core: ServingCore, metrics_path: str | None) -> None:
    import grpc
    import uvicorn

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[Any]] = []
    grpc_server = None
    if args.port:
        grpc_server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", args.rest_api_max_body_bytes),
                ("grpc.max_send_message_length", args.rest_api_max_body_bytes),
            ]
        )
        add_grpc_services(grpc_server, core)
        grpc_server.add_insecure_port(f"{args.bind_address}:{args.port}")
        await grpc_server.start()
        log.info("gRPC on %s:%d", args.bind_address, args.port)
    rest = None
    if args.rest_api_port:
        app = build_rest_app(
            core,
            metrics_path=metrics_path,
            max_body_bytes=args.rest_api_max_body_bytes,
            body_timeout_s=args.rest_api_timeout_in_ms / 1000,
        )
        config = uvicorn.Config(
            app,
            host=args.bind_address,
            port=args.rest_api_port,
            loop="none",
            http="httptools",
            log_level="warning",
            access_log=False,
            timeout_keep_alive=30,
            lifespan="off",
            server_header=False,
        )
        rest = uvicorn.Server(config)
        # Signals are handled here (one graceful stop for REST and gRPC), not by uvicorn.
        rest.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        tasks.append(asyncio.create_task(rest.serve()))
        log.info("REST on %s:%d", args.bind_address, args.rest_api_port)
    await stop.wait()
    log.info("shutting down")
    if rest is not None:
        rest.should_exit = True
    if grpc_server is not None:
        await grpc_server.stop(grace=5)
    await asyncio.gather(*tasks, return_exceptions=True)


FAULT_INJECTION_ENV = "TFRP_UNSAFE_FAULT_INJECTION"


def serve(args: argparse.Namespace) -> None:
    """Load the models, then serve until SIGTERM/SIGINT."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The flag, else the environment: a test base image can carry a known service time
    # (`bench --bases` compares two bases whose capacities are then known exactly).
    text = args.unsafe_fault_injection or os.environ.get(FAULT_INJECTION_ENV, "")
    try:
        faults = FaultInjection.parse(text)
    except ValueError as exc:
        raise UsageError(
            f"--unsafe_fault_injection: {exc}",
            fix="keys: latency_ms, latency_sigma, error_ratio, seed",
        ) from exc
    if faults.active:
        log.warning("FAULT INJECTION IS ON: %s — for rehearsing the gate only", faults)
    batching = None
    if args.enable_batching:
        params = (
            parse_text_proto(Path(args.batching_parameters_file), "BatchingParameters")
            if args.batching_parameters_file
            else None
        )
        try:
            batching = (
                BatchingOptions.from_proto(params) if params is not None else BatchingOptions()
            )
        except ValueError as exc:
            raise ConfigError(f"{args.batching_parameters_file}: {exc}") from exc
    metrics_path = None
    if args.monitoring_config_file:
        monitoring = parse_text_proto(Path(args.monitoring_config_file), "MonitoringConfig")
        if monitoring.prometheus_config.enable:
            metrics_path = monitoring.prometheus_config.path or "/monitoring/prometheus/metrics"
    _configure_threads(args)
    entries = _entries(args)
    workers = (
        batching.num_batch_threads
        if batching
        else max(2, args.tensorflow_inter_op_parallelism or 2)
    )
    manager = ModelManager(entries, poll_s=args.file_system_poll_wait_seconds, workers=workers)
    # The core (and its metrics registry) before the first load: warm-up is observed there.
    core = ServingCore(manager, batching, faults, timeout_s=args.rest_api_timeout_in_ms / 1000)
    if args.enable_model_warmup:
        manager.warmup = Warmup(core.metrics.registry)
    manager.refresh()
    for entry in entries:
        if not entry.servables:
            states = "; ".join(f"v{s.version}: {s.error}" for s in entry.states.values())
            raise ConfigError(
                f"model {entry.name} has no servable version under {entry.base_path}"
                + (f" ({states})" if states else ""),
                cause="no NAME/VERSION/saved_model.pb there, or every version failed to load",
                fix="check --model_base_path / models.config and the image contents",
            )
    manager.start_polling()
    try:
        import uvloop

        uvloop.run(_serve(args, core, metrics_path))
    finally:
        manager.stop()
