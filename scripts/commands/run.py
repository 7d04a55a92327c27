"""``run``: the whole pipeline for one release, stage by stage, with a run record.

fetch → validate → build → render → deploy canary → load test (canary, and the
stable track as baseline when there is one) → gate → promote on pass, roll back
on fail / inconclusive / error → report.

Embedded defaults for one machine with no cloud: without ``--image`` the image is
an OCI layout under WORKDIR/images (on an empty base: the local runtime serves the
model layer); ``--target local`` runs the rendered ``local`` overlay as processes.
Production runs pass ``--image REGISTRY/REPO --target k8s --overlay production``.

A rerun of the same request reuses what is still valid from the run record (the
fetched model, the pushed image, a canary already running the candidate, a
verdict reached on it); a release that is already stable is a no-op.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.commands import CommandOutput, truth
from scripts.commands.build import add_build_options, build_options
from scripts.commands.deploy import add_target_options, target_config
from scripts.commands.fetch import add_fetch_options, request_and_context
from scripts.commands.loadtest import add_profile_options, load_options
from scripts.commands.render import DEFAULT_KUBE_VERSION
from scripts.config import KUSTOMIZE_DIR, Settings

if TYPE_CHECKING:
    from scripts.pipeline import PipelineRequest, PipelineResult

GATE_MODES = ("baseline", "slo-only")  # scripts.pipeline.GATE_MODES, without importing it


def add_delivery_options(p: argparse.ArgumentParser) -> None:
    """Where the release goes and how it is judged: ``run`` and ``deliver``'s phases."""
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(".pipeline"),
        help="working directory for models, reports and the run record",
    )
    p.add_argument(
        "--model-config",
        type=Path,
        metavar="MODEL_YAML",
        help="model.yaml (default: models/NAME/model.yaml when it exists)",
    )
    p.add_argument("--overlay", default="local", help="kustomize overlay (default: local)")
    p.add_argument(
        "--kube-version",
        default=DEFAULT_KUBE_VERSION,
        help="Kubernetes version whose schemas validate the manifests",
    )
    p.add_argument("--kustomize-dir", type=Path, help="kustomize tree (default: ./kustomize)")
    p.add_argument("--slo", type=Path, help="gate file (default: the model.yaml's slos)")
    p.add_argument(
        "--gate-mode",
        choices=GATE_MODES,
        default="baseline",
        help="baseline: SLOs and the stable track as baseline (default); slo-only: SLOs alone",
    )
    p.add_argument(
        "--canary-endpoint",
        action="append",
        default=[],
        help="load-test the canary here instead of the target's own address (repeat per "
        "replica; e.g. an internal load balancer when the runner is outside the cluster)",
    )
    p.add_argument(
        "--baseline-endpoint",
        action="append",
        default=[],
        help="the same for the stable (baseline) track",
    )
    p.add_argument(
        "--turn-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when another delivery's canary is under test, wait this long for it to end "
        "before refusing (default: 0, refuse at once)",
    )
    p.add_argument(
        "--dry-run",
        nargs="?",
        const=True,
        default=False,
        type=truth,
        metavar="true|false",
        help="build without pushing, render, and show the canary deploy's diff; nothing "
        'changes, no load test (a value, for workflows: --dry-run "$DRY_RUN")',
    )
    add_build_options(p)
    add_target_options(p, target_default="local", with_insecure=False)
    add_profile_options(p)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "run", parents=[common], help="run the pipeline for one release", description=__doc__
    )
    p.add_argument("--source", required=True, help="artifact source (see `fetch --help`)")
    p.add_argument(
        "--image",
        help="image to build: REGISTRY/REPO[:TAG] or oci:DIR[:TAG] "
        "(default: oci:WORKDIR/images, a local OCI layout)",
    )
    p.add_argument(
        "--stop-after",
        choices=("validate", "build", "render", "deploy"),
        help="stop after this stage (no load test, gate or promotion)",
    )
    add_fetch_options(p)
    add_delivery_options(p)
    p.set_defaults(handler=run)


def pipeline_request(
    args: argparse.Namespace,
    settings: Settings,
    *,
    source: str | None,
    image_repo: str | None,
    known_image: str | None = None,
    model: str | None = None,
    version: int | None = None,
    archive_sha256: str | None = None,
    stop_after: str | None = None,
) -> PipelineRequest:
    """The flags of ``run`` (or of a ``deliver`` phase) as one typed request."""
    from scripts.pipeline import GateOptions, PipelineRequest

    workdir: Path = args.workdir
    fetch_request, fetch_context = (
        request_and_context(args, settings, source, workdir / "models") if source else (None, None)
    )
    return PipelineRequest(
        workdir=workdir,
        fetch=fetch_request,
        fetch_context=fetch_context,
        build=build_options(args, settings),  # --dry-run: nothing is pushed
        target=target_config(args),
        load=load_options(args),
        gate=GateOptions(
            mode=args.gate_mode,
            rules_file=args.slo,
            canary_endpoints=tuple(args.canary_endpoint),
            baseline_endpoints=tuple(args.baseline_endpoint),
        ),
        image=known_image,
        model=model,
        version=version,
        archive_sha256=archive_sha256,
        model_config=args.model_config,
        image_repo=image_repo,
        base=args.base,
        overlay=args.overlay,
        kube_version=args.kube_version,
        kustomize_dir=args.kustomize_dir or KUSTOMIZE_DIR,
        dry_run=args.dry_run,
        stop_after=stop_after,
        turn_wait_s=args.turn_wait,
    )


def output(result: PipelineResult) -> CommandOutput:
    return CommandOutput(
        data=result.to_dict(),
        text=result.text,
        summary_markdown=result.summary,
        outputs=result.outputs,
        exit_code=result.exit_code,
    )


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.pipeline import run_pipeline

    request = pipeline_request(
        args,
        settings,
        source=args.source,
        image_repo=args.image,
        model=args.name,
        version=args.model_version,
        stop_after=args.stop_after,
    )
    return output(run_pipeline(request, settings))
