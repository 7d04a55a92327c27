"""``fetch``: download, verify, safely extract and validate a model archive."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scripts import log as logmod
from scripts.artifact.extract import ExtractLimits
from scripts.commands import CommandOutput, optional_text
from scripts.config import Settings

if TYPE_CHECKING:
    from scripts.artifact.fetch import FetchRequest
    from scripts.artifact.sources import FetchContext


def add_fetch_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``fetch`` and ``run``."""
    p.add_argument(
        "--sha256",
        type=optional_text,
        help="expected sha256 of the archive (hex, or sha256:hex)",
    )
    p.add_argument("--name", help="model name, when the archive layout does not say it")
    p.add_argument(
        "--model-version",
        dest="model_version",
        type=int,
        help="model version, when the archive layout does not say it",
    )
    p.add_argument(
        "--signature",
        default="serving_default",
        help="signature the model must have (default: serving_default)",
    )
    p.add_argument(
        "--asset-wait",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to wait for a release asset that is not uploaded yet (default: 300)",
    )
    p.add_argument(
        "--rate-limit-wait",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="longest GitHub rate-limit reset to wait for (default: 120)",
    )
    p.add_argument("--retries", type=int, default=6, help="attempts per request (default: 6)")
    p.add_argument("--max-file-bytes", type=int, default=ExtractLimits.max_file_bytes)
    p.add_argument("--max-total-bytes", type=int, default=ExtractLimits.max_total_bytes)
    p.add_argument("--max-expansion-ratio", type=float, default=ExtractLimits.max_expansion_ratio)


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "fetch", parents=[common], help="fetch and verify a model archive", description=__doc__
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="github://OWNER/REPO/releases/TAG_OR_ID/ASSET, gs://BUCKET/OBJECT, "
        "https://URL or a file path",
    )
    p.add_argument("--dest", required=True, type=Path, help="destination directory")
    add_fetch_options(p)
    p.set_defaults(handler=run)


def request_and_context(
    args: argparse.Namespace, settings: Settings, source: str, dest: Path
) -> tuple[FetchRequest, FetchContext]:
    from scripts.artifact.fetch import FetchRequest
    from scripts.artifact.sources import FetchContext
    from scripts.transfer import RetryPolicy

    request = FetchRequest(
        source=source,
        dest=dest,
        expected_sha256=args.sha256,
        name=args.name,
        version=args.model_version,
        signature=args.signature,
        limits=ExtractLimits(
            max_file_bytes=args.max_file_bytes,
            max_total_bytes=args.max_total_bytes,
            max_expansion_ratio=args.max_expansion_ratio,
        ),
    )
    ctx = FetchContext(
        settings=settings,
        retry=RetryPolicy(attempts=max(1, args.retries)),
        asset_wait_s=args.asset_wait,
        rate_limit_max_wait_s=args.rate_limit_wait,
        progress=logmod.progress_enabled(args.quiet),
    )
    return request, ctx


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.artifact.fetch import describe_result, fetch

    request, ctx = request_and_context(args, settings, args.source, args.dest)
    with logmod.stage("fetch"):
        result = fetch(request, ctx)
    text, summary = describe_result(result)
    return CommandOutput(
        data=result.to_dict(),
        text=text,
        summary_markdown=summary,
        outputs={
            "model_dir": str(result.path),
            "sha256": result.sha256,
            "model_name": result.model_name,
            "model_version": str(result.version),
        },
    )
