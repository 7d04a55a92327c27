"""TF Serving's command-line flags (light: parsed before anything heavy is imported)."""

from __future__ import annotations

import argparse


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def add_serving_flags(p: argparse.ArgumentParser) -> None:
    """TF Serving's flags (those the overlays use), plus three clearly named extensions."""
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0: no gRPC)")
    p.add_argument("--rest_api_port", type=int, default=0, help="REST port (0: no REST)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000)
    p.add_argument("--rest_api_num_threads", type=int, default=0, help="accepted, unused")
    p.add_argument("--model_name", default="default")
    p.add_argument("--model_base_path", default="")
    p.add_argument("--model_config_file", default="")
    p.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=int,
        default=0,
        help="accepted; the config is read at start",
    )
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)
    p.add_argument("--tensorflow_session_parallelism", type=int, default=0)
    p.add_argument("--enable_batching", type=_bool, nargs="?", const=True, default=False)
    p.add_argument("--batching_parameters_file", default="")
    p.add_argument("--monitoring_config_file", default="")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
    p.add_argument(
        "--enable_model_warmup",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        help="replay each version's assets.extra/tf_serving_warmup_requests before it is "
        "AVAILABLE (default true)",
    )
    # Extensions (not TF Serving flags):
    p.add_argument(
        "--bind_address",
        default="0.0.0.0",  # noqa: S104 - TF Serving's default
        help="address to listen on (TF Serving listens on all; tests use 127.0.0.1)",
    )
    p.add_argument("--rest_api_max_body_bytes", type=int, default=64 << 20)
    p.add_argument(
        "--unsafe_fault_injection",
        default="",
        help="REHEARSAL ONLY: latency_ms=50,latency_sigma=0.3,error_ratio=0.02,"
        "seed=1 — the render policy refuses it in manifests",
    )
