"""``bench``: which overlay serves a model best for the money, measured.

Each overlay is deployed under its own name (never beside the model's stable or
canary), its capacity under the SLO found by an open-loop search (warm-up,
geometric ramp, bisection to 5 %, the capacity point repeated), its CPU throttling
read at every step, and its cost per million requests at that capacity computed
from a versioned price table. The report (``bench.json``, ``report.md`` with Mermaid
charts, PNG charts) goes to ``--out``. ``bench --compare OLD.json NEW.json`` says
what changed between two runs. See docs/bench.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.commands import CommandOutput
from scripts.commands.build import add_build_options, build_options
from scripts.commands.fetch import add_fetch_options, request_and_context
from scripts.commands.loadtest import add_generator_options, load_options
from scripts.config import DEFAULT_STATE_DIR, KUSTOMIZE_DIR, MODELS_DIR, Settings
from scripts.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from scripts.bench.api import BenchRequest
    from scripts.bench.results import BenchResult, Slo


def _overlay_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected A,B,C (one overlay at least)")
    return names


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "bench",
        parents=[common],
        help="capacity under the SLO and cost per 1M requests, per overlay",
        description=__doc__,
    )
    p.add_argument("--model", help="model name (models/NAME/model.yaml: SLOs, sample request)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--source", help="model archive to fetch and build first (see fetch)")
    what.add_argument("--image", help="image already built, REPO@sha256:… or oci:DIR@sha256:…")
    p.add_argument("--overlays", type=_overlay_list, help="overlays to compare: A,B,C")
    p.add_argument(
        "--bases",
        type=_overlay_list,
        help="serving bases to compare on each overlay: A,B (names of kustomize/bases.yaml; "
        "needs --source: the model is built once per base)",
    )
    p.add_argument("--target", choices=("k8s", "local"), default="local")
    p.add_argument("--slo", type=Path, help="SLO file (p99_ms, error_ratio, min_achieved)")
    p.add_argument("--slo-p99-ms", type=float, help="override: the SLO's p99 in ms")
    p.add_argument(
        "--prices", type=Path, help="price overrides (format of scripts/bench/prices.yaml)"
    )
    p.add_argument("--region", default="us-central1", help="price table region")
    p.add_argument(
        "--machine-family",
        help="price overlays as this family (default: their node selector's, else E2 on "
        "k8s, local here)",
    )
    p.add_argument("--target-rps", type=float, help="size replicas for this load (30 %% headroom)")
    p.add_argument("--quick", action="store_true", help="smoke mode: one repeat, short steps")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="report directory")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"), help="diff two runs")
    p.add_argument("--start-rps", type=float, help="the ramp's first rate (default 10; quick 20)")
    p.add_argument("--max-rps", type=float, default=20_000.0, help="the search's ceiling")
    p.add_argument(
        "--placement",
        choices=("auto", "side-by-side", "sequential"),
        default="auto",
        help="deploy all overlays at once, or one after another (auto: what fits)",
    )
    p.add_argument("--kustomize-dir", type=Path, help="kustomize tree (default: ./kustomize)")
    p.add_argument("--models-dir", type=Path, help="models tree (default: ./models)")
    p.add_argument("--repository", help="REGISTRY/REPO to build --source into (default: layout)")
    p.add_argument("--namespace", help="k8s: the bench namespace (default: tf-bench)")
    p.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    p.add_argument("--timeout", type=float, default=600.0, help="rollout timeout, seconds")
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="local target state")
    p.add_argument(
        "--unsafe-fault-injection",
        default="",
        metavar="SPEC",
        help="local target, REHEARSAL: faults for every bench replica, e.g. service_ms=20",
    )
    p.add_argument(
        "--protocol", choices=("rest", "grpc"), default="rest", help="what the load speaks"
    )
    p.add_argument("--processes", type=int, default=1, help="Locust processes (direct)")
    add_generator_options(p)
    add_fetch_options(p)
    add_build_options(p)
    p.set_defaults(handler=run)


def _slo(args: argparse.Namespace) -> Slo | None:
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    from scripts.bench.results import Slo
    from scripts.model_spec import validation_problems

    class _SloFile(BaseModel):
        model_config = ConfigDict(extra="forbid")
        p99_ms: float = Field(gt=0)
        error_ratio: float = Field(default=0.01, ge=0, le=1)
        min_achieved: float = Field(default=0.95, gt=0, le=1)

    slo: Slo | None = None
    if args.slo:
        import yaml

        try:
            raw = yaml.safe_load(args.slo.read_text(encoding="utf-8"))
            slo = Slo(**_SloFile.model_validate(raw).model_dump())
        except OSError as exc:
            raise ConfigError(f"cannot read --slo {args.slo}: {exc}") from exc
        except (yaml.YAMLError, ValidationError) as exc:
            problems = validation_problems(exc) if isinstance(exc, ValidationError) else str(exc)
            raise ConfigError(
                f"--slo {args.slo} is not an SLO file: {problems}",
                fix="write p99_ms: 40, error_ratio: 0.01, min_achieved: 0.95",
            ) from exc
    if args.slo_p99_ms is not None:
        if args.slo_p99_ms <= 0:
            raise UsageError("--slo-p99-ms must be positive", fix="e.g. --slo-p99-ms 40")
        base = slo or _model_slo(args)
        slo = Slo(
            p99_ms=args.slo_p99_ms, error_ratio=base.error_ratio, min_achieved=base.min_achieved
        )
    return slo


def _model_slo(args: argparse.Namespace) -> Slo:
    from scripts.bench.orchestrate import model_slo
    from scripts.model_spec import model_spec_for

    return model_slo(model_spec_for(args.model, args.models_dir or MODELS_DIR))


def resolve_image(
    args: argparse.Namespace,
    settings: Settings,
    base: str | None = None,
    workdir: Path | None = None,
) -> str:
    """--image as given, or --source fetched, validated and built (an OCI layout by default)
    on ``base`` (default: --base, model.yaml's, the catalog's)."""
    if args.image:
        return str(args.image)
    from scripts.deploy.targets import TargetConfig
    from scripts.loadtest.options import LoadOptions
    from scripts.pipeline import PipelineRequest, PipelineRun

    workdir = workdir or args.out / "pipeline"
    fetch, context = request_and_context(args, settings, args.source, workdir / "models")
    request = PipelineRequest(
        workdir=workdir,
        fetch=fetch,
        fetch_context=context,
        build=build_options(args, settings),
        target=TargetConfig(kind=args.target),
        load=LoadOptions(),
        model=args.model,
        image_repo=args.repository,
        base=base or args.base,
        kustomize_dir=args.kustomize_dir or KUSTOMIZE_DIR,
        stop_after="build",
    )
    return PipelineRun(request, settings).artifact().image


def resolve_base_images(
    args: argparse.Namespace, settings: Settings
) -> tuple[tuple[str, str], ...]:
    """`--bases A,B`: the model built once per base (each in its own work directory)."""
    from scripts.image.bases import check_base_names, load_catalog

    if not args.bases:
        return ()
    if args.image or not args.source:
        raise UsageError(
            "--bases needs --source: each base is its own build of the model",
            fix="pass --source URI (not --image) with --bases A,B",
        )
    if args.base:
        raise UsageError("--base and --bases exclude each other", fix="drop --base")
    check_base_names(load_catalog(args.kustomize_dir or KUSTOMIZE_DIR), list(args.bases))
    return tuple(
        (name, resolve_image(args, settings, name, args.out / "pipeline" / name))
        for name in args.bases
    )


def bench_request(
    args: argparse.Namespace, image: str | None, bases: tuple[tuple[str, str], ...] = ()
) -> BenchRequest:
    from scripts.bench.api import BenchRequest
    from scripts.deploy.targets import TargetConfig

    return BenchRequest(
        model=args.model,
        overlays=list(args.overlays),
        out=args.out,
        target=TargetConfig(
            kind=args.target,
            namespace=args.namespace,
            kubeconfig=args.kubeconfig,
            context=args.context,
            in_cluster=args.in_cluster,
            timeout_s=args.timeout,
            poll_s=args.poll_interval,
            state_dir=args.state_dir,
            fault_injection=args.unsafe_fault_injection,
            insecure_registry=args.insecure_registry,
        ),
        source=args.source,
        image=image,
        base=args.base,
        bases=bases,
        slo=_slo(args),
        prices=args.prices,
        region=args.region,
        quick=args.quick,
        target_rps=args.target_rps,
        kustomize_dir=args.kustomize_dir or KUSTOMIZE_DIR,
        models_dir=args.models_dir or MODELS_DIR,
        protocol=args.protocol,
        generator=args.generator,
        job=load_options(_with_defaults(args)).job,
        processes=args.processes,
        start_rps=args.start_rps,
        max_rps=args.max_rps,
        machine_family=args.machine_family,
        placement=args.placement,
    )


def _with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """load_options reads the profile flags, which bench has no use for."""
    values = dict(vars(args))
    for name in ("profile", "users", "rate", "duration", "warmup"):
        values.setdefault(name, None)
    return argparse.Namespace(**values)


def describe(result: BenchResult) -> str:
    lines = [result.summary, f"SLO: {result.slo.describe()}"]
    for o in result.overlays:
        if o.error:
            lines.append(f"  {o.name}: {o.error}")
            continue
        capacity = f"{o.capacity_rps:.4g} req/s" if o.capacity_rps else "none"
        cost = f"${o.cost.per_million:.4f}/1M" if o.cost and o.cost.per_million is not None else "-"
        spread = f"±{o.spread:.0%}" if o.spread is not None else ""
        lines.append(f"  {o.name}: capacity {capacity} {spread}, {cost} ({o.stopped})")
    lines.append(f"winner: {result.winner or 'none'} — {result.winner_note}")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    if args.compare:
        return _compare(args.compare[0], args.compare[1])
    if not args.model or not args.overlays:
        raise UsageError(
            "bench needs --model and --overlays (or --compare OLD NEW)",
            fix="python -m scripts bench --model digits --image REF --overlays A,B",
        )
    if not args.image and not args.source:
        raise UsageError("bench needs --image or --source", fix="pass --image REPO@sha256:…")
    from scripts import log as logmod
    from scripts.bench.api import run_bench
    from scripts.bench.report import markdown
    from scripts.signals import interrupt_on_terminate

    with interrupt_on_terminate():  # CI's cancel: the teardown runs, and is not cut short
        with logmod.stage("build" if args.source else "image"):
            bases = resolve_base_images(args, settings)
            image = None if bases else resolve_image(args, settings)
        request = bench_request(args, image, bases)
        with logmod.stage("bench"):
            result = run_bench(request, settings=settings)
    return CommandOutput(
        data=result.to_dict(),
        text=describe(result) + f"\nreport: {args.out}/report.md",
        summary_markdown=markdown(result),
        outputs={"report": str(args.out), "winner": result.winner or ""},
    )


def _compare(old: Path, new: Path) -> CommandOutput:
    from scripts.bench.compare import compare

    data = []
    for path in (old, new):
        try:
            data.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"cannot read {path}: {exc}", fix="pass two bench.json files from `bench --out`"
            ) from exc
    text = compare(data[0], data[1])
    return CommandOutput(data={"old": str(old), "new": str(new), "changes": text}, text=text)
