"""``github``: the GitHub side of the workflows.

``github resolve`` reads the event that started the workflow (``$GITHUB_EVENT_NAME``,
``$GITHUB_EVENT_PATH``) and prints what ``deliver.yml`` should deliver: a published
release's model, version, archive and checksum (the tag convention is
``NAME-vVERSION``; assets ``NAME-VERSION.tar.gz`` and ``.sha256``), or a manual
deploy's inputs (an earlier version's digest when it was delivered before).
"""

from __future__ import annotations

import argparse

from scripts.commands import CommandOutput
from scripts.config import Settings
from scripts.errors import UsageError


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
    p.set_defaults(handler=_no_action)


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
