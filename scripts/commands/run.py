"""``run``: the whole pipeline for one release, stage by stage, with a run record.

Stages so far: fetch → validate → build → render. Later stages (deploy, load
test, gate, promote/rollback) join here as they are built.

Embedded defaults for a local run: without ``--image`` the image is written as
an OCI layout under WORKDIR/images on an empty base (the local runtime serves
the model layer; it needs no TF Serving binary). Production runs pass
``--image REGISTRY/REPO`` and get the pinned TF Serving base.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scripts.commands import CommandOutput
from scripts.commands.build import add_build_options, build_request
from scripts.commands.build import describe as describe_build
from scripts.commands.fetch import add_fetch_options, describe, request_and_context
from scripts.config import MODELS_DIR, Settings
from scripts.image.defaults import DEFAULT_BASE
from scripts.image.reference import SCRATCH
from scripts.log import log
from scripts.run_record import RunRecord

if TYPE_CHECKING:
    from scripts.model_spec import ModelSpec


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
    p.add_argument(
        "--image",
        help="image to build: REGISTRY/REPO[:TAG] or oci:DIR[:TAG] "
        "(default: oci:WORKDIR/images, a local OCI layout)",
    )
    p.add_argument(
        "--overlay", default="local", help="kustomize overlay to render (default: local)"
    )
    p.add_argument(
        "--kube-version",
        default="1.33.0",
        help="Kubernetes version whose schemas validate the manifests",
    )
    add_fetch_options(p)
    add_build_options(p)
    p.set_defaults(handler=run)


def _image_and_base(
    args: argparse.Namespace, spec: ModelSpec | None, model_name: str
) -> tuple[str, str]:
    if args.image:
        return args.image, args.base or (spec.base_image if spec else None) or DEFAULT_BASE
    image = f"oci:{args.workdir / 'images'}:{model_name}"
    base = args.base or (spec.base_image if spec else None)
    if base is None:
        log.info(
            "local image: the model layer on an empty base (production builds use %s)", DEFAULT_BASE
        )
        base = SCRATCH
    return image, base


def _spec_for(args: argparse.Namespace, model_name: str) -> ModelSpec | None:
    from scripts.model_spec import load_model_spec

    if args.model_config:
        return load_model_spec(args.model_config)
    default = MODELS_DIR / model_name / "model.yaml"
    if default.is_file():
        return load_model_spec(default)
    log.warning("no %s: the sample request is not checked", default)
    return None


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.artifact.fetch import fetch
    from scripts.artifact.validate import validate
    from scripts.image.build import build
    from scripts.manifests.render import RenderRequest, render
    from scripts.manifests.render import write as write_manifests

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

    with record.stage("build") as stage:
        image, base = _image_and_base(args, spec, fetched.model_name)
        built = build(build_request(args, settings, fetched.path, image, base))
        stage.result = built.to_dict()

    with record.stage("render") as stage:
        rendered = render(
            RenderRequest(
                overlay=args.overlay,
                image=built.image,
                model=fetched.model_name,
                kube_version=args.kube_version,
            )
        )
        manifests = workdir / "manifests" / f"{args.overlay}.yaml"
        write_manifests(rendered, manifests)
        stage.result = rendered.to_dict() | {"path": str(manifests)}

    record.finish()
    text, summary = describe(fetched)
    build_text, build_summary = describe_build(built)
    text += f"\n  validated: {validated.version_dir}" + (
        " (sample request fits)" if validated.sample_checked else ""
    )
    text += "\nimage: " + build_text
    summary += "\n\n" + build_summary
    text += f"\nmanifests: {manifests} ({len(rendered.objects)} objects, valid)"
    text += f"\nrun record: {record.path}"
    return CommandOutput(
        data=record.to_dict(),
        text=text,
        summary_markdown=summary,
        outputs={
            "model_dir": str(fetched.path),
            "run_record": str(record.path),
            "image": built.image,
        },
    )
