"""``package``: a SavedModel version directory → NAME-VERSION.tar.gz (+ .sha256)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scripts.commands import CommandOutput
from scripts.config import Settings


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "package",
        parents=[common],
        help="package a SavedModel version directory as a release archive",
        description=__doc__,
    )
    p.add_argument("version_dir", type=Path, metavar="SAVED_MODEL_VERSION_DIR")
    p.add_argument("--name", required=True, help="model name (e.g. digits)")
    p.add_argument("--version", required=True, type=int, help="model version (integer >= 1)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--signature",
        default="serving_default",
        help="signature that must exist (default: serving_default)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.artifact.savedmodel import signatures_markdown
    from scripts.package import package

    result = package(
        args.version_dir,
        args.name,
        args.version,
        args.out,
        signature=args.signature,
        mtime=settings.source_date_epoch,
    )
    data = result.to_dict()
    text = (
        f"{result.path}\n  sha256 {result.sha256}\n  {result.size} bytes "
        f"({result.uncompressed_bytes} uncompressed)"
    )
    summary = (
        f"### Packaged `{result.model_name}` v{result.version}\n\n"
        f"`{result.path.name}` — sha256 `{result.sha256}`, {result.size} bytes\n\n"
        + signatures_markdown(result.signatures)
    )
    return CommandOutput(
        data=data,
        text=text,
        summary_markdown=summary,
        outputs={"archive": str(result.path), "sha256": result.sha256},
    )
