"""``deploy``, ``promote``, ``rollback``, ``status``, ``teardown``: one target interface.

``--target k8s`` talks to a cluster through the official client (kubeconfig or
in-cluster), with server-side apply under the field manager ``tf-release-pipeline``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scripts import log as logmod
from scripts.commands import CommandOutput
from scripts.commands.render import add_render_options, render_request
from scripts.config import DEFAULT_STATE_DIR, Settings
from scripts.errors import UsageError

if TYPE_CHECKING:
    from scripts.deploy.target import DeployOptions, DeployResult, DeployTarget
    from scripts.deploy.targets import TargetConfig
    from scripts.manifests.render import Rendered


def add_target_options(
    p: argparse.ArgumentParser, *, target_default: str = "k8s", with_insecure: bool = True
) -> None:
    """Where to deploy, and how to wait: shared by the deploy commands and ``run``."""
    p.add_argument("--target", choices=("k8s", "local"), default=target_default)
    p.add_argument(
        "--namespace", help="namespace (default: the overlay's `namespace:`, else `default`)"
    )
    p.add_argument("--environment", help="lock name suffix (default: the overlay name)")
    p.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG)")
    p.add_argument("--context", help="kubeconfig context")
    p.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for the rollout (default: yes)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="rollout timeout in seconds")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="local target: where replicas' state and logs live",
    )
    p.add_argument(
        "--unsafe-fault-injection",
        default="",
        metavar="SPEC",
        help="local target, canary only, REHEARSAL: e.g. latency_ms=40,"
        "error_ratio=0.02 (never part of a manifest)",
    )
    if with_insecure:
        p.add_argument(
            "--insecure-registry",
            action="store_true",
            help="local target: plain HTTP to the image's registry",
        )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often to check the rollout (default: 1)",
    )


def _target_options(p: argparse.ArgumentParser, *, needs_manifests: bool) -> None:
    add_target_options(p)
    p.add_argument("--dry-run", action="store_true", help="show what would change")
    if needs_manifests:
        add_render_options(p)
        p.add_argument("--image", required=True, help="REPO@sha256:... to deploy")
    else:
        p.add_argument("--overlay", help="overlay (names the lock; default: `default`)")
        p.add_argument(
            "--model",
            help="the model to act on (default: the only one in the namespace)",
        )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    deploy = sub.add_parser(
        "deploy", parents=[common], help="deploy an image (as a canary)", description=__doc__
    )
    _target_options(deploy, needs_manifests=True)
    deploy.add_argument(
        "--canary",
        action="store_true",
        help="run the image as a canary beside the stable Deployment",
    )
    deploy.add_argument(
        "--fresh-baseline",
        action="store_true",
        help="with --canary: also start a fresh copy of the stable image (track baseline, "
        "the canary's size) for a load test to compare with; rollback and promote remove it",
    )
    deploy.set_defaults(handler=run_deploy)
    promote = sub.add_parser(
        "promote", parents=[common], help="move the stable track to the canary's image"
    )
    _target_options(promote, needs_manifests=True)
    promote.set_defaults(handler=run_promote)
    for name, handler, text in (
        ("rollback", run_rollback, "remove the canary, or restore the previous stable image"),
        ("status", run_status, "show the stable and canary tracks"),
        ("teardown", run_teardown, "remove everything deployed for the model"),
    ):
        p = sub.add_parser(name, parents=[common], help=text)
        _target_options(p, needs_manifests=False)
        p.set_defaults(handler=handler)


def _options(args: argparse.Namespace) -> DeployOptions:
    from scripts.deploy.target import DeployOptions

    return DeployOptions(
        wait=args.wait,
        timeout_s=args.timeout,
        dry_run=args.dry_run,
        fresh_baseline=getattr(args, "fresh_baseline", False),
    )


def target_config(args: argparse.Namespace) -> TargetConfig:
    """The target flags (shared by the deploy commands, ``run`` and ``deliver``)."""
    from scripts.deploy.targets import TargetConfig

    return TargetConfig(
        kind=args.target,
        namespace=args.namespace,
        environment=args.environment,
        kubeconfig=args.kubeconfig,
        context=args.context,
        in_cluster=args.in_cluster,
        timeout_s=args.timeout,
        poll_s=args.poll_interval,
        state_dir=args.state_dir,
        fault_injection=args.unsafe_fault_injection,
        insecure_registry=getattr(args, "insecure_registry", False),
    )


def make_target(
    args: argparse.Namespace, settings: Settings, rendered: Rendered | None
) -> DeployTarget:
    from scripts.deploy.targets import open_target

    return open_target(
        target_config(args),
        settings,
        overlay=args.overlay,
        model=rendered.model if rendered is not None else args.model,
        rendered_namespace=rendered.namespace if rendered is not None else None,
    )


def _render(args: argparse.Namespace) -> Rendered:
    from scripts.manifests.render import render

    with logmod.stage("render"):
        return render(render_request(args, args.image))


def _output(result: DeployResult) -> CommandOutput:
    lines = [
        f"{result.action} on {result.target} ({result.namespace})"
        + (" [dry run]" if result.dry_run else "")
    ]
    if result.image:
        lines.append(f"  image: {result.image}")
    if result.previous_image:
        lines.append(f"  previous: {result.previous_image}")
    if result.rollout:
        lines.append(f"  rollout: {result.rollout}")
    for track, urls in result.endpoints.items():
        if urls:
            lines.append(f"  {track}: {', '.join(urls)}")
    for name in result.applied:
        lines.append(f"  applied {name}")
    for name in result.deleted:
        lines.append(f"  deleted {name}")
    if result.diff:
        lines.append(result.diff)
    summary = (
        f"### {result.action} ({result.target}, `{result.namespace}`)\n\n"
        f"- image: `{result.image}`\n- rollout: {result.rollout}\n"
    )
    return CommandOutput(
        data=result.to_dict(),
        text="\n".join(lines),
        summary_markdown=summary,
        outputs={"action": result.action},
    )


def run_deploy(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    if args.fresh_baseline and not args.canary:
        raise UsageError(
            "--fresh-baseline goes with --canary (a baseline is the canary's comparison)",
            fix="deploy --canary --fresh-baseline",
        )
    rendered = _render(args)
    target = make_target(args, settings, rendered)
    with logmod.stage(f"deploy ({'canary' if args.canary else 'stable'})"):
        return _output(target.deploy(rendered, canary=args.canary, options=_options(args)))


def run_promote(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    rendered = _render(args)
    target = make_target(args, settings, rendered)
    with logmod.stage("promote"):
        return _output(target.promote(rendered, _options(args)))


def run_rollback(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    target = make_target(args, settings, None)
    with logmod.stage("rollback"):
        return _output(target.rollback(_options(args)))


def run_teardown(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    target = make_target(args, settings, None)
    with logmod.stage("teardown"):
        return _output(target.teardown(_options(args)))


def run_status(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    status = make_target(args, settings, None).status()
    lines = [f"{status.model} on {status.target} ({status.namespace})"]
    for label, track in (("stable", status.stable), ("canary", status.canary)):
        if track.exists:
            lines.append(
                f"  {label}: {track.image} {track.ready}/{track.replicas} ready — {track.rollout}"
            )
        else:
            lines.append(f"  {label}: none")
    if status.lock_holder:
        lines.append(f"  deploy in progress: {status.lock_holder}")
    return CommandOutput(data=status.to_dict(), text="\n".join(lines))
