"""``loadtest``: a Locust smoke/ramp/soak run against endpoints, canary and baseline together."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scripts import log as logmod
from scripts.commands import CommandOutput
from scripts.config import MODELS_DIR, Settings

if TYPE_CHECKING:
    from scripts.loadtest.options import LoadOptions
    from scripts.loadtest.results import TrackResult


def add_profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="smoke", help="load profile in model.yaml (default: smoke)")
    p.add_argument("--users", type=int, help="override: users per track")
    p.add_argument("--rate", type=float, help="override: target requests/s per track")
    p.add_argument("--duration", type=float, help="override: measured seconds")
    p.add_argument("--warmup", type=float, help="override: warm-up seconds (not measured)")
    p.add_argument(
        "--protocol",
        choices=("rest", "grpc"),
        default="rest",
        help="rest: row JSON to :predict (endpoints http://HOST:8501); grpc: "
        "PredictionService/Predict (endpoints HOST:8500)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Locust worker processes, for loads one process cannot generate",
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "loadtest", parents=[common], help="run the Locust load test", description=__doc__
    )
    p.add_argument(
        "--endpoint",
        action="append",
        required=True,
        help="candidate endpoint: REST base URL, or HOST:PORT with --protocol grpc "
        "(repeat to spread over replicas)",
    )
    p.add_argument(
        "--baseline-endpoint",
        action="append",
        default=[],
        help="stable (baseline) endpoint, loaded at the same time",
    )
    p.add_argument("--model", required=True, help="model name (models/NAME/model.yaml)")
    p.add_argument("--out", required=True, type=Path, help="results directory")
    p.add_argument("--model-config", type=Path, help="model.yaml (default: models/NAME)")
    p.add_argument(
        "--overlay",
        help="apply kustomize/overlays/NAME/loadtest.yaml's profile overrides (if it has one)",
    )
    add_profile_options(p)
    p.set_defaults(handler=run)


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The profile flags (shared by ``loadtest``, ``run`` and ``deliver canary``)."""
    from scripts.loadtest.options import LoadOptions

    return LoadOptions(
        profile=args.profile,
        users=args.users,
        rate=args.rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        protocol=args.protocol,
        processes=args.processes,
    )


def describe(results: dict[str, TrackResult]) -> str:
    lines = []
    for track, r in results.items():
        p = r.latency_ms
        lines.append(
            f"{track}: {r.samples} samples, {r.achieved_rate:.1f}/{r.target_rate:g} "
            f"req/s, p50 {p.get('p50', float('nan')):.1f} / p95 "
            f"{p.get('p95', float('nan')):.1f} / p99 {p.get('p99', float('nan')):.1f} "
            f"ms, errors {r.error_ratio:.2%}"
            + (f", SATURATED ({'; '.join(r.saturation_reasons)})" if r.saturated else "")
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.loadtest.options import load_test_request
    from scripts.loadtest.runner import run_load_test
    from scripts.model_spec import load_model_spec

    spec = load_model_spec(args.model_config or MODELS_DIR / args.model / "model.yaml")
    tracks = {"canary": args.endpoint}
    if args.baseline_endpoint:
        tracks["baseline"] = args.baseline_endpoint
    with logmod.stage("loadtest"):
        request = load_test_request(
            load_options(args), spec, tracks, args.out, overlay=args.overlay, model=args.model
        )
        results = run_load_test(request)
    data: dict[str, object] = {track: r.to_dict() for track, r in results.items()}
    data["out"] = str(args.out)
    return CommandOutput(data=data, text=describe(results) + f"\nresults: {args.out}")
