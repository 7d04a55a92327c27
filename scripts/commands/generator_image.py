"""``generator-image``: build and push the in-cluster load generator's image (or reuse it).

The tag is computed from the load-test code and its pinned requirements
(``loadgen-<fingerprint>``): the image is pushed once and reused (``reused: true``)
until that code changes. Prints ``REF@sha256:…`` for ``--generator-image``.
"""

from __future__ import annotations

import argparse

from scripts import log as logmod
from scripts.commands import CommandOutput, optional_text
from scripts.config import Settings


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    from scripts.image.generator_image import DEFAULT_BASE

    p = sub.add_parser(
        "generator-image",
        parents=[common],
        help="build (or reuse) the load generator's image",
        description=__doc__,
    )
    p.add_argument(
        "--repository", required=True, help="REGISTRY/REPO (e.g. …-docker.pkg.dev/P/R/tf-loadgen)"
    )
    p.add_argument(
        "--base",
        type=optional_text,
        help=f"Python base; empty means the default ({DEFAULT_BASE}; mirror it into your "
        "registry to avoid Docker Hub's pull limits)",
    )
    p.add_argument("--insecure", action="store_true", help="plain HTTP to the registries")
    p.add_argument("--dry-run", action="store_true", help="build, but push nothing")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.image.generator_image import (
        DEFAULT_BASE,
        GeneratorImageRequest,
        build_generator_image,
    )

    with logmod.stage("generator-image"):
        built = build_generator_image(
            GeneratorImageRequest(
                repository=args.repository,
                base=args.base or DEFAULT_BASE,
                insecure=args.insecure,
                dry_run=args.dry_run,
                docker_config=settings.docker_config,
                cache_dir=settings.cache_dir / "loadgen-build",
            )
        )
    state = "reused" if built.reused else "built and pushed" if not args.dry_run else "built"
    return CommandOutput(
        data=built.to_dict(),
        text=f"{built.image} ({state})",
        outputs={"image": built.image, "reused": str(built.reused).lower()},
    )
