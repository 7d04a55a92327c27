"""``run``: the whole pipeline for one release, stage by stage, with a run record.

Stages so far: fetch → validate. Later stages (build, render, deploy, load
test, gate, promote/rollback) join here as they are built.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scripts.artifact.fetch import fetch
from scripts.artifact.validate import validate
from scripts.commands import CommandOutput
from scripts.commands.fetch import add_fetch_options, describe, request_and_context
from scripts.config import MODELS_DIR, ModelSpec, Settings, load_model_spec
from scripts.log import log
from scripts.run_record import RunRecord


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "run", parents=[common], help="run the pipeline for one release", description=__doc__
    )
    p.add_argument("--source", required=True, help="artifact source (see `fetch --help`)")
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(".pipeline"),
        help="working directory for models and the run record (default: .pipeline)",
    )
    p.add_argument(
        "--model-config",
        type=Path,
        metavar="MODEL_YAML",
        help="model.yaml (default: models/NAME/model.yaml when it exists)",
    )
    add_fetch_options(p)
    p.set_defaults(handler=run)


def _spec_for(args: argparse.Namespace, model_name: str) -> ModelSpec | None:
    if args.model_config:
        return load_model_spec(args.model_config)
    default = MODELS_DIR / model_name / "model.yaml"
    if default.is_file():
        return load_model_spec(default)
    log.warning("no %s: the sample request is not checked", default)
    return None


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    workdir: Path = args.workdir
    record = RunRecord(path=workdir / "run.json", source=args.source)
    request, ctx = request_and_context(args, settings, args.source, workdir / "models")

    with record.stage("fetch") as stage:
        fetched = fetch(request, ctx)
        stage.result = fetched.to_dict()

    with record.stage("validate") as stage:
        spec = _spec_for(args, fetched.model_name)
        validated = validate(fetched.version_path, args.signature, spec)
        stage.result = validated.to_dict()

    record.finish()
    text, summary = describe(fetched)
    text += f"\n  validated: {validated.version_dir}" + (
        " (sample request fits)" if validated.sample_checked else ""
    )
    text += f"\nrun record: {record.path}"
    return CommandOutput(
        data=record.to_dict(),
        text=text,
        summary_markdown=summary,
        outputs={"model_dir": str(fetched.path), "run_record": str(record.path)},
    )
