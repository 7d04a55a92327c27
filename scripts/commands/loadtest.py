"""``loadtest``: a Locust smoke/ramp/soak run against endpoints, canary and baseline together."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scripts import log as logmod
from scripts.commands import CommandOutput
from scripts.config import MODELS_DIR, Settings

if TYPE_CHECKING:
    from scripts.loadtest.job_spec import GeneratorJob
    from scripts.loadtest.options import LoadOptions
    from scripts.loadtest.results import TrackResult
    from scripts.loadtest.runner import LoadTestRequest


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
    add_generator_options(p)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def add_generator_options(p: argparse.ArgumentParser) -> None:
    """Where the load comes from: the generator Job (kustomize/loadtest) or this process."""
    g = p.add_argument_group("load generator (docs/loadtest.md)")
    g.add_argument(
        "--generator",
        choices=("job", "direct"),
        help="job: the generator Job on the target, next to the Services (default with a "
        "target); direct: Locust in this process's network (default for bare endpoints)",
    )
    g.add_argument("--generator-image", help="the generator image, REF@sha256:…")
    g.add_argument(
        "--generator-repository",
        help="build (or reuse) the generator image here (default: beside --image's "
        "repository, as tf-loadgen; the local target builds its own)",
    )
    g.add_argument("--generator-base", help="the generator image's Python base")
    g.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Locust workers besides the master (0: one standalone pod, the smoke size)",
    )
    g.add_argument(
        "--workers-wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long the master waits for all its workers (default: 60)",
    )
    g.add_argument("--generator-cpu", help="each generator pod's CPU (requests = limits)")
    g.add_argument("--generator-memory", help="each generator pod's memory")
    g.add_argument(
        "--generator-node-selector",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="run the generator on these nodes (e.g. cloud.google.com/gke-nodepool=loadgen)",
    )
    g.add_argument(
        "--results-uri",
        help="gs://BUCKET/PREFIX: where results too large for the pod log go",
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
    t = p.add_argument_group("in-cluster (the generator Job; docs/loadtest.md)")
    t.add_argument(
        "--target",
        choices=("k8s", "local"),
        help="run the generator Job there (endpoints are then the addresses the Job sees, "
        "e.g. http://SERVICE.NAMESPACE.svc:8501)",
    )
    t.add_argument("--namespace", default="default", help="the Job's namespace")
    t.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG)")
    t.add_argument("--context", help="kubeconfig context")
    t.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    t.add_argument("--state-dir", type=Path, help="local target: where the Job's pods run")
    t.add_argument(
        "--dry-run",
        action="store_true",
        help="print the objects the Job would be (with --json: as JSON); contact nothing",
    )
    p.set_defaults(handler=run)


def load_options(args: argparse.Namespace) -> LoadOptions:
    """The profile flags (shared by ``loadtest``, ``run`` and ``deliver canary``)."""
    from scripts.config import KUSTOMIZE_DIR
    from scripts.loadtest.job_spec import GeneratorOptions
    from scripts.loadtest.options import LoadOptions
    from scripts.manifests.render import DEFAULT_KUBE_VERSION

    return LoadOptions(
        profile=args.profile,
        users=args.users,
        rate=args.rate,
        duration_s=args.duration,
        warmup_s=args.warmup,
        protocol=args.protocol,
        processes=args.processes,
        generator=args.generator,
        job=GeneratorOptions(
            image=args.generator_image or None,
            repository=args.generator_repository or None,
            base=args.generator_base or None,
            workers=args.workers,
            workers_wait_s=args.workers_wait,
            cpu=args.generator_cpu or None,
            memory=args.generator_memory or None,
            node_selector=dict(args.generator_node_selector),
            results_uri=args.results_uri or None,
            kustomize_dir=getattr(args, "kustomize_dir", None) or KUSTOMIZE_DIR,
            kube_version=getattr(args, "kube_version", None) or DEFAULT_KUBE_VERSION,
        ),
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
    options = load_options(args)
    with logmod.stage("loadtest"):
        request = load_test_request(
            options, spec, tracks, args.out, overlay=args.overlay, model=args.model
        )
        if not options.uses_job(with_target=args.target is not None):
            results = run_load_test(request)
        else:
            plan = _job_plan(args, settings, request, options)
            if args.dry_run:
                from scripts.loadtest.job_spec import objects_yaml

                return CommandOutput(
                    data={"dry_run": True, "job": plan.name, "objects": plan.objects},
                    text=objects_yaml(plan),
                )
            results = _run_job(args, settings, request, plan)
    data: dict[str, object] = {track: r.to_dict() for track, r in results.items()}
    data["out"] = str(args.out)
    return CommandOutput(data=data, text=describe(results) + f"\nresults: {args.out}")


def _job_plan(
    args: argparse.Namespace,
    settings: Settings,
    request: LoadTestRequest,
    options: LoadOptions,
) -> GeneratorJob:
    from scripts.errors import UsageError
    from scripts.image.generator_image import resolve_generator_image
    from scripts.loadtest.in_cluster import plan_job

    target = args.target or "local"
    if args.dry_run and target == "k8s" and not options.job.image:
        raise UsageError(
            "--dry-run with --target k8s needs --generator-image REF@sha256:…",
            cause="a dry run contacts no registry, so it cannot build or look up the image",
            fix="pass the image `python -m scripts generator-image` printed",
        )
    image = resolve_generator_image(
        options.job,
        target=target,
        cache_dir=settings.cache_dir,
        docker_config=settings.docker_config,
    )
    return plan_job(
        request, options.job, image=image, namespace=args.namespace, run_id=settings.run_id or "cli"
    )


def _run_job(
    args: argparse.Namespace, settings: Settings, request: LoadTestRequest, plan: GeneratorJob
) -> dict[str, TrackResult]:
    from scripts.config import DEFAULT_STATE_DIR
    from scripts.deploy.targets import TargetConfig, open_target
    from scripts.loadtest.in_cluster import run_in_cluster

    config = TargetConfig(
        kind=args.target or "local",
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        context=args.context,
        in_cluster=args.in_cluster,
        state_dir=args.state_dir or DEFAULT_STATE_DIR,
    )
    target = open_target(config, settings, overlay=None, model=request.model)
    return run_in_cluster(request, target, plan)
