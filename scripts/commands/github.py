"""``github``: the GitHub side of the workflows.

``github resolve`` reads the event that started the workflow (``$GITHUB_EVENT_NAME``,
``$GITHUB_EVENT_PATH``) and prints what ``deliver.yml`` should deliver: a published
release's model, version, archive and checksum (the tag convention is
``NAME-vVERSION``; assets ``NAME-VERSION.tar.gz`` and ``.sha256``), or a manual
deploy's inputs (an earlier version's digest when it was delivered before).

``github bench-start``, ``bench-run`` and ``bench-finish`` are the three jobs of the
``/bench`` pull-request command (bench.yml; scripts/github/bench_pr.py): start reads
the ``issue_comment`` event and decides (``run=true|false`` and the ``plan``), run
benchmarks the plan and reports, finish closes what run could not.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.commands import CommandOutput, optional_text, truth
from scripts.config import DEFAULT_STATE_DIR, KUSTOMIZE_DIR, MODELS_DIR, Settings
from scripts.errors import UsageError

if TYPE_CHECKING:
    from scripts.bench.api import BenchRequest
    from scripts.github.bench_pr import BenchPlan

DEFAULT_BENCH_NAMESPACE = "tf-bench"


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "github", parents=[common], help="GitHub events and records", description=__doc__
    )
    actions = p.add_subparsers(dest="github_command", metavar="ACTION", parser_class=type(p))
    resolve = actions.add_parser(
        "resolve", parents=[common], help="the delivery the workflow's event asks for"
    )
    resolve.add_argument(
        "--environment",
        default="",
        help="where full releases go (default: production; the repository variable "
        "RELEASE_ENVIRONMENT in release.yml)",
    )
    resolve.add_argument(
        "--prerelease-environment",
        default="staging",
        help="where pre-releases go (default: staging)",
    )
    resolve.add_argument(
        "--overlay",
        default="",
        help="overlay for releases (default: the one named like the environment)",
    )
    resolve.add_argument(
        "--asset-wait",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for release assets uploaded after the event (default: 300)",
    )
    resolve.set_defaults(handler=run_resolve)
    _register_bench(actions, common)
    p.set_defaults(handler=_no_action)


def _register_bench(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    start = actions.add_parser(
        "bench-start",
        parents=[common],
        help="/bench: read the comment, check who and what, queue the benchmark",
    )
    start.add_argument(
        "--allow-forks",
        type=truth,
        default=False,
        metavar="true|false",
        help="benchmark pull requests from forks (default: false; bench.yml passes the "
        "repository variable BENCH_ALLOW_FORKS)",
    )
    start.add_argument(
        "--default-model",
        type=optional_text,
        metavar="NAME",
        help="the model when the command names none (default: the only model under "
        "models/; bench.yml passes the repository variable BENCH_MODEL)",
    )
    start.add_argument(
        "--environment",
        type=optional_text,
        metavar="ENV",
        help="whose last successful delivery is benchmarked (default: production)",
    )
    start.set_defaults(handler=run_bench_start)

    plan_help = "bench-start's `plan` output (JSON)"
    bench = actions.add_parser(
        "bench-run",
        parents=[common],
        help="/bench: run the planned benchmark, report on the pull request",
    )
    bench.add_argument("--plan", required=True, help=plan_help)
    bench.add_argument("--target", choices=("k8s", "local"), default="k8s")
    bench.add_argument(
        "--namespace",
        type=optional_text,
        help=f"the bench namespace (default: {DEFAULT_BENCH_NAMESPACE}; never the stable one's)",
    )
    bench.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG)")
    bench.add_argument("--context", type=optional_text, help="kubeconfig context")
    bench.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="local target state"
    )
    bench.add_argument(
        "--kustomize-dir",
        type=Path,
        default=KUSTOMIZE_DIR,
        help="the pull request's kustomize tree (its checkout at the head commit)",
    )
    bench.add_argument(
        "--models-dir",
        type=Path,
        default=MODELS_DIR,
        help="the pull request's models tree (its checkout at the head commit)",
    )
    bench.add_argument("--out", type=Path, default=Path("bench-out"), help="report directory")
    bench.add_argument("--prices", type=optional_text, help="price overrides (bench --prices)")
    bench.add_argument(
        "--image-repository",
        type=optional_text,
        metavar="REGISTRY/PATH",
        help="where a release archive is built to (REGISTRY/PATH/MODEL; default: a local "
        "OCI layout)",
    )
    bench.add_argument(
        "--base",
        type=optional_text,
        metavar="IMAGE",
        help="the TF Serving base a release archive is built on (bench --base)",
    )
    bench.add_argument(
        "--max-rps",
        type=optional_text,
        metavar="RATE",
        help="the search's ceiling in req/s (bench --max-rps; the repository variable "
        "BENCH_MAX_RPS keeps a shared cluster from being flooded; empty: bench's default)",
    )
    bench.add_argument(
        "--generator-base",
        type=optional_text,
        metavar="IMAGE",
        help="the generator image's Python base (bench --generator-base; a mirror avoids "
        "Docker Hub's limits)",
    )
    bench.add_argument(
        "--progress-interval",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="edit the comment at most this often (and when an overlay ends; default: 15)",
    )
    bench.set_defaults(handler=run_bench_run)

    finish = actions.add_parser(
        "bench-finish",
        parents=[common],
        help="/bench: mark a benchmark that did not report as failed or cancelled",
    )
    finish.add_argument("--plan", required=True, help=plan_help)
    finish.add_argument(
        "--bench-result",
        default="",
        metavar="RESULT",
        help="the bench job's result: success, failure, cancelled or skipped",
    )
    finish.set_defaults(handler=run_bench_finish)


def _no_action(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    raise UsageError("github needs an action", fix="python -m scripts github resolve --help")


def run_resolve(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts import log as logmod
    from scripts.github.client import GitHubApi
    from scripts.github.events import load_event
    from scripts.github.resolve import ResolveOptions, resolve

    event = load_event(settings.github)
    repository = event.repository.full_name
    options = ResolveOptions(
        environment=args.environment or "production",
        prerelease_environment=args.prerelease_environment or "staging",
        overlay=args.overlay or None,
        asset_wait_s=args.asset_wait,
    )
    with logmod.stage("resolve"), GitHubApi(settings, repository) as api:
        plan = resolve(api, settings, event, options)
    what = plan.image or plan.source
    text = (
        f"{plan.model} v{plan.version} → {plan.environment} (overlay {plan.overlay})\n"
        f"  {'image' if plan.image else 'archive'}: {what}"
        + (f"\n  sha256: {plan.sha256}" if plan.sha256 else "")
        + ("\n  dry run" if plan.dry_run else "")
    )
    summary = (
        f"### Delivery of `{plan.model}` v{plan.version} to `{plan.environment}`\n\n"
        f"| | |\n|---|---|\n| overlay | `{plan.overlay}` |\n"
        f"| {'image (delivered before)' if plan.image else 'archive'} | `{what}` |\n"
        f"| protocol | {plan.protocol} |\n| gate | {plan.gate_mode} |\n"
        f"| dry run | {plan.dry_run} |\n"
    )
    return CommandOutput(
        data=dict(plan.outputs()), text=text, summary_markdown=summary, outputs=plan.outputs()
    )


# -- /bench --------------------------------------------------------------------------------
def run_bench_start(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts import log as logmod
    from scripts.github.bench_command import NAME
    from scripts.github.bench_pr import StartPolicy, start
    from scripts.github.client import GitHubApi
    from scripts.github.events import CommentEvent, load_event

    event = load_event(settings.github)
    if not isinstance(event, CommentEvent):
        raise UsageError(
            "github bench-start handles issue_comment events only",
            cause=f"the workflow runs it on {settings.github.event_name}",
            fix="call it from bench.yml (on: issue_comment)",
        )
    if args.default_model and not NAME.fullmatch(args.default_model):
        raise UsageError(
            f"--default-model {args.default_model!r} is not a model name",
            fix="set the repository variable BENCH_MODEL to a directory under models/",
        )
    policy = StartPolicy(
        allow_forks=args.allow_forks,
        default_model=args.default_model,
        environment=args.environment or "production",
    )
    with logmod.stage("bench-start"), GitHubApi(settings, event.repository.full_name) as api:
        outcome = start(api, event, settings.github, policy)
    plan = outcome.plan
    if plan is None:
        text = f"{outcome.status}: {outcome.reason}"
        summary = f"### `/bench`: {outcome.status}\n\n{outcome.reason}\n"
    else:
        what = plan.image or plan.source
        text = (
            f"queued: {plan.command} on #{plan.pr} at {plan.head_sha}\n"
            f"  image: {what} ({plan.origin})"
        )
        summary = (
            f"### `/bench` queued on #{plan.pr}\n\n`{plan.command}` at `{plan.head_sha}`, "
            f"requested by {plan.requested_by}\n\nImage: `{what}` ({plan.origin})\n"
        )
    data: dict[str, object] = {"run": outcome.run, "status": outcome.status}
    data["reason"] = outcome.reason
    data["plan"] = None if plan is None else plan.to_json()
    return CommandOutput(data=data, text=text, summary_markdown=summary, outputs=outcome.outputs())


def _bench_request(args: argparse.Namespace, settings: Settings, plan: BenchPlan) -> BenchRequest:
    """The engine's request for the plan, through `bench`'s own parser (same defaults and
    checks as `python -m scripts bench`); a release archive is built first. The pull
    request's trees are checked first (no symbolic links)."""
    from scripts.cli import build_parser
    from scripts.commands.bench import bench_request, resolve_base_images, resolve_image
    from scripts.github.bench_pr import refuse_links

    for tree in (args.kustomize_dir, args.models_dir / plan.model):
        refuse_links(tree)

    argv = ["bench", "--model", plan.model, "--overlays", ",".join(plan.overlays)]
    argv += ["--image", plan.image] if plan.image else ["--source", plan.source]
    if plan.sha256:
        argv += ["--sha256", plan.sha256]
    argv += ["--target", args.target, "--out", str(args.out), "--state-dir", str(args.state_dir)]
    argv += ["--kustomize-dir", str(args.kustomize_dir), "--models-dir", str(args.models_dir)]
    argv += ["--namespace", args.namespace or DEFAULT_BENCH_NAMESPACE]
    if plan.quick:
        argv.append("--quick")
    if plan.p99_ms is not None:
        argv += ["--slo-p99-ms", f"{plan.p99_ms:g}"]
    if args.kubeconfig:
        argv += ["--kubeconfig", str(args.kubeconfig)]
    if args.context:
        argv += ["--context", args.context]
    if args.prices:
        argv += ["--prices", args.prices]
    if args.image_repository and plan.source:
        argv += ["--repository", f"{args.image_repository.rstrip('/')}/{plan.model}"]
    if plan.bases:
        argv += ["--bases", ",".join(plan.bases)]
    elif args.base and plan.source:
        argv += ["--base", args.base]
    if args.max_rps:
        argv += ["--max-rps", args.max_rps]
    if args.generator_base:
        argv += ["--generator-base", args.generator_base]
    bench_args = build_parser().parse_args(argv)
    bases = resolve_base_images(bench_args, settings)
    return bench_request(bench_args, None if bases else resolve_image(bench_args, settings), bases)


def _repository(settings: Settings) -> str:
    repository = settings.github.repository
    if not repository:
        raise UsageError(
            "no repository: GITHUB_REPOSITORY is not set",
            fix="run it in bench.yml (GitHub sets the variable)",
        )
    return repository


def run_bench_run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts import log as logmod
    from scripts.bench.api import run_bench
    from scripts.bench.report import markdown, summary_line
    from scripts.github import bench_pr
    from scripts.github.client import GitHubApi
    from scripts.signals import interrupt_on_terminate

    plan = bench_pr.BenchPlan.from_json(args.plan)
    repository = _repository(settings)
    with (
        interrupt_on_terminate(),
        logmod.stage("bench"),
        GitHubApi(settings, repository) as api,
    ):
        outcome = bench_pr.run(
            api,
            plan,
            prepare=lambda: _bench_request(args, settings, plan),
            run_bench=lambda request, progress: run_bench(request, progress, settings),
            markdown=lambda result, url, limit: markdown(result, artifact_url=url, limit=limit),
            summary_line=summary_line,
            out=args.out,
            interval_s=args.progress_interval,
        )
    return CommandOutput(
        data={
            "conclusion": outcome.conclusion,
            "title": outcome.title,
            "sticky_id": outcome.sticky_id,
            "check_run_id": outcome.check_run_id,
            **outcome.data,
        },
        text=f"{outcome.title}\nresults: comment {outcome.sticky_id} on #{plan.pr}",
        summary_markdown=outcome.report,
        outputs={"conclusion": outcome.conclusion, "finished": "true"},
    )


def run_bench_finish(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts import log as logmod
    from scripts.github import bench_pr
    from scripts.github.client import GitHubApi

    plan = bench_pr.BenchPlan.from_json(args.plan)
    repository = _repository(settings)
    with logmod.stage("bench-finish"), GitHubApi(settings, repository) as api:
        outcome = bench_pr.finish(api, plan, args.bench_result)
    return CommandOutput(
        data={"action": outcome.action, "conclusion": outcome.conclusion},
        text=f"{outcome.action} ({outcome.conclusion})",
        outputs={"action": outcome.action},
    )
