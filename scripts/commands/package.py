"""``package``: a SavedModel version directory → NAME-VERSION.tar.gz (+ .sha256).

The archive carries TF Serving warm-up records made from model.yaml's sample_request
(models/NAME/model.yaml unless --model-config says otherwise; its ``warmup`` block,
then --warmup-requests / --no-warmup). A SavedModel that ships
assets.extra/tf_serving_warmup_requests keeps its own.
"""

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
    p.add_argument(
        "--model-config",
        type=Path,
        metavar="MODEL_YAML",
        help="model.yaml with the sample request and warmup settings "
        "(default: models/NAME/model.yaml, if it exists)",
    )
    p.add_argument(
        "--warmup-requests",
        type=int,
        metavar="N",
        help="warm-up records to write (1-1000; default: model.yaml's warmup.requests, or 1)",
    )
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="write no warm-up records (a SavedModel's own file is still kept)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.artifact.savedmodel import signatures_markdown
    from scripts.config import MODELS_DIR
    from scripts.log import log
    from scripts.model_spec import load_model_spec
    from scripts.package import package
    from scripts.warmup import WarmupPlan

    spec_path: Path = args.model_config or MODELS_DIR / args.name / "model.yaml"
    spec = None
    if args.model_config or spec_path.is_file():  # a named file must exist
        spec = load_model_spec(spec_path)
        if spec.name != args.name:
            log.warning("%s is for model %r, packaging %r", spec_path, spec.name, args.name)
    plan = WarmupPlan.resolve(
        spec, spec_path, requests=args.warmup_requests, disabled=args.no_warmup
    )
    result = package(
        args.version_dir,
        args.name,
        args.version,
        args.out,
        signature=args.signature,
        mtime=settings.source_date_epoch,
        warmup=plan,
    )
    log.info("warm-up records: %s", result.warmup.note)
    data = result.to_dict()
    text = (
        f"{result.path}\n  sha256 {result.sha256}\n  {result.size} bytes "
        f"({result.uncompressed_bytes} uncompressed)\n  warm-up: {result.warmup.note}"
    )
    summary = (
        f"### Packaged `{result.model_name}` v{result.version}\n\n"
        f"`{result.path.name}` — sha256 `{result.sha256}`, {result.size} bytes\n\n"
        f"Warm-up records: {result.warmup.note}\n\n" + signatures_markdown(result.signatures)
    )
    return CommandOutput(
        data=data,
        text=text,
        summary_markdown=summary,
        outputs={"archive": str(result.path), "sha256": result.sha256},
    )
