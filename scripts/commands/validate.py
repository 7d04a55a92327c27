"""``validate``: check a SavedModel directory without running it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.commands import CommandOutput
from scripts.config import Settings

if TYPE_CHECKING:
    from scripts.model_spec import ModelSpec


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "validate",
        parents=[common],
        help="check a SavedModel's tag, signature and sample request",
        description=__doc__,
    )
    p.add_argument(
        "model_dir",
        type=Path,
        metavar="MODEL_DIR",
        help="model base dir (NAME/, highest version is used) or a version dir",
    )
    p.add_argument("--signature", default="serving_default")
    p.add_argument(
        "--model-config",
        type=Path,
        metavar="MODEL_YAML",
        help="model.yaml whose sample request must fit the signature",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.artifact.savedmodel import signatures_markdown
    from scripts.artifact.validate import validate
    from scripts.model_spec import load_model_spec

    spec: ModelSpec | None = load_model_spec(args.model_config) if args.model_config else None
    result = validate(args.model_dir, args.signature, spec)
    text = (
        f"{result.version_dir}: OK (signature {result.signature}"
        + (", sample request fits" if result.sample_checked else "")
        + ")"
    )
    summary = f"### Validated `{result.version_dir}`\n\n" + signatures_markdown(result.signatures)
    return CommandOutput(data=result.to_dict(), text=text, summary_markdown=summary)
