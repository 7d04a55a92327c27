"""``preflight``: before anything changes, check everything a delivery will need.

The archive exists and its checksum matches; the registry credentials may push to
the image repository; the base image resolves for the platform; the overlay renders;
the cluster answers, the namespace exists and the identity may do every verb the
deploy uses (SelfSubjectAccessReview); the GitHub token may create deployments.
Every miss names its fix. Exit 0 only when every check passes (18 otherwise).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scripts.commands import CommandOutput, image_repository, optional_text
from scripts.config import DEFAULT_STATE_DIR, Settings
from scripts.errors import PreflightError


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "preflight", parents=[common], help="check a delivery's prerequisites", description=__doc__
    )
    p.add_argument("--target", choices=("k8s", "local"), default="k8s")
    p.add_argument(
        "--source", type=optional_text, help="the archive to deliver (see `fetch --help`)"
    )
    p.add_argument(
        "--sha256",
        type=optional_text,
        help="its expected sha256 (default: the release's .sha256 asset)",
    )
    p.add_argument("--overlay", default="production", help="kustomize overlay")
    p.add_argument("--model", help="model name (probes and models.config of the render)")
    p.add_argument(
        "--image", type=image_repository, help="REGISTRY/REPO the image will be pushed to"
    )
    p.add_argument(
        "--base", type=optional_text, help="base image (default: the pinned TF Serving image)"
    )
    p.add_argument("--platform", default="linux/amd64", help="platform the base must have")
    p.add_argument("--environment", help="deploy lock / GitHub environment (default: overlay)")
    p.add_argument("--namespace", help="namespace (default: the overlay's)")
    p.add_argument("--kubeconfig", type=Path)
    p.add_argument("--context")
    p.add_argument("--insecure-registry", action="store_true", help="plain HTTP registries")
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="local target state")
    p.add_argument(
        "--asset-wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for a release asset that is not uploaded yet",
    )
    p.add_argument(
        "--github-repository",
        help="OWNER/REPO whose deployments the token must create (default: GITHUB_REPOSITORY "
        "inside Actions; outside, the check is skipped)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts import log as logmod
    from scripts.preflight import PreflightRequest, preflight

    request = PreflightRequest(
        target=args.target,
        source=args.source,
        expected_sha256=args.sha256,
        overlay=args.overlay,
        model=args.model,
        image_repo=args.image,
        base=args.base,
        platform=args.platform,
        environment=args.environment,
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        context=args.context,
        insecure_registry=args.insecure_registry,
        github_repository=args.github_repository
        or (settings.github.repository if settings.ci.github_actions else None),
        github_ref=settings.github.sha,
        asset_wait_s=args.asset_wait,
    )
    with logmod.stage("preflight"):
        report = preflight(request, settings, args.state_dir)
    lines = [
        f"{'ok  ' if c.ok else 'skip' if c.skipped else 'FAIL'} {c.name}: {c.detail}"
        + (f"\n     fix: {c.fix}" if c.fix and not c.ok else "")
        for c in report.checks
    ]
    return CommandOutput(
        data=report.to_dict(),
        text="\n".join(lines),
        summary_markdown=report.markdown(),
        outputs={"preflight": "pass" if report.ok else "fail"},
        exit_code=0 if report.ok else PreflightError.exit_code,
    )
