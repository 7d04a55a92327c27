"""``build``: bake a model directory into a TF Serving image and push it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scripts import log as logmod
from scripts.commands import CommandOutput, optional_text
from scripts.config import KUSTOMIZE_DIR, MODELS_DIR, Settings
from scripts.image.defaults import DEFAULT_BASE

if TYPE_CHECKING:
    from scripts.image.bases import ChosenBase
    from scripts.image.build import BuildOptions


def add_build_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``build`` and ``run``."""
    p.add_argument(
        "--base",
        default=None,
        type=optional_text,
        help="serving base: a name from kustomize/bases.yaml, or an image "
        "REGISTRY/REPO[:TAG|@DIGEST], oci:DIR[:TAG] or scratch (default: model.yaml "
        f"base_image, else the overlay's serving-base.yaml, else {DEFAULT_BASE}; "
        "docs/images.md)",
    )
    p.add_argument(
        "--builder",
        choices=("registry", "layout", "docker"),
        default=None,
        help="registry: push over the distribution API (default; layout for oci: images); "
        "layout: write an "
        "OCI layout; docker: use a Docker Engine API",
    )
    p.add_argument("--platform", default="linux/amd64", help="platform to pick from an index")
    p.add_argument(
        "--insecure-registry",
        action="store_true",
        help="plain HTTP to the registries (automatic for loopback)",
    )
    p.add_argument(
        "--compression",
        choices=("gzip", "zstd"),
        default="gzip",
        help="model layer compression (zstd needs containerd >= 1.5)",
    )
    p.add_argument(
        "--serving-config",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="TF Serving config file to bake into /etc/tf-serving/",
    )
    p.add_argument(
        "--archive-sha256",
        type=optional_text,
        help="sha256 of the release archive (image label); read from the fetch record when omitted",
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        help="layer cache (default: $XDG_CACHE_HOME/tf-release-pipeline/layers)",
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "build", parents=[common], help="bake a model into a TF Serving image", description=__doc__
    )
    p.add_argument(
        "--model-dir",
        required=True,
        type=Path,
        help="model base directory in TF Serving layout (fetch's `path`)",
    )
    p.add_argument(
        "--image",
        required=True,
        help="target: REGISTRY/REPO[:TAG] (registry, docker) or oci:DIR[:TAG] (layout)",
    )
    p.add_argument(
        "--overlay",
        help="the overlay the image will serve with: its serving-base.yaml names the base",
    )
    p.add_argument("--kustomize-dir", type=Path, help="kustomize tree (default: ./kustomize)")
    p.add_argument("--dry-run", action="store_true", help="show what would be pushed")
    p.add_argument(
        "--retries", type=int, default=6, help="attempts per registry request (default: 6)"
    )
    add_build_options(p)
    p.set_defaults(handler=run)


def build_options(args: argparse.Namespace, settings: Settings) -> BuildOptions:
    """The build flags (shared by ``build``, ``run`` and ``deliver build``), parsed once."""
    from scripts.image.base import Platform
    from scripts.image.build import BuildOptions
    from scripts.transfer import RetryPolicy

    return BuildOptions(
        builder=args.builder,
        platform=Platform.parse(args.platform),
        insecure=args.insecure_registry,
        dry_run=getattr(args, "dry_run", False),
        compression=args.compression,
        config_files=tuple(args.serving_config),
        cache_dir=args.cache_dir or settings.cache_dir / "layers",
        archive_sha256=args.archive_sha256,
        source_url=settings.repository_url,
        revision=settings.revision,
        created_epoch=settings.source_date_epoch,
        docker_config=settings.docker_config,
        docker_host=settings.docker_host,
        retry=RetryPolicy(attempts=max(1, getattr(args, "retries", 6))),
    )


def chosen_base(args: argparse.Namespace, model: str, *, local_build: bool = False) -> ChosenBase:
    """The base for ``model``: --base, model.yaml, the overlay's, the catalog default."""
    from scripts.image.bases import choose_base
    from scripts.model_spec import load_model_spec

    models_dir = getattr(args, "models_dir", None) or MODELS_DIR
    spec_path = getattr(args, "model_config", None) or models_dir / model / "model.yaml"
    spec = load_model_spec(spec_path) if spec_path.is_file() else None
    return choose_base(
        cli=args.base,
        model_base=spec.base_image if spec else None,
        overlay=getattr(args, "overlay", None),
        kustomize_dir=getattr(args, "kustomize_dir", None) or KUSTOMIZE_DIR,
        local_build=local_build,
    )


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.image.build import build, describe_result

    request = build_options(args, settings).request(
        args.model_dir, args.image, chosen_base(args, args.model_dir.name)
    )
    with logmod.stage("build"):
        result = build(request)
    text, summary = describe_result(result)
    return CommandOutput(
        data=result.to_dict(),
        text=text,
        summary_markdown=summary,
        outputs={"image": result.image, "digest": result.digest},
    )
