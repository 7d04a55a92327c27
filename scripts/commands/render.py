"""``render``: an overlay with the image pinned by digest → validated manifests."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scripts import log as logmod
from scripts.commands import CommandOutput
from scripts.config import Settings

if TYPE_CHECKING:
    from scripts.manifests.render import RenderRequest
    from scripts.model_spec import ModelSpec

DEFAULT_KUBE_VERSION = "1.33.0"


def add_render_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``render``, ``deploy`` and ``run``."""
    p.add_argument("--overlay", required=True, help="kustomize/overlays/NAME")
    p.add_argument("--model", help="model name (probes, models.config); default: `model`")
    p.add_argument(
        "--model-config",
        type=Path,
        metavar="MODEL_YAML",
        help="model.yaml whose `batching:` applies when the overlay batches "
        "(default: models/MODEL/model.yaml when it exists)",
    )
    p.add_argument(
        "--kube-version",
        default=DEFAULT_KUBE_VERSION,
        help=f"Kubernetes version whose schemas validate the output "
        f"(default: {DEFAULT_KUBE_VERSION})",
    )
    p.add_argument("--kustomize-dir", type=Path, help="kustomize tree (default: ./kustomize)")
    p.add_argument(
        "--base",
        help="the serving base the image was built on (a name of kustomize/bases.yaml or "
        "an image reference; default: model.yaml base_image, else the overlay's "
        "serving-base.yaml, else the catalog's default): render pins pods to the CPUs it "
        "needs",
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser(
        "render", parents=[common], help="render and validate an overlay", description=__doc__
    )
    add_render_options(p)
    p.add_argument("--image", required=True, help="REPO@sha256:... (or oci:DIR@sha256:...)")
    p.add_argument("--out", required=True, type=Path, help="file to write the manifests to")
    p.set_defaults(handler=run)


def model_spec(args: argparse.Namespace) -> ModelSpec | None:
    """``--model-config``, else ``models/MODEL/model.yaml`` when it exists, parsed once."""
    from scripts.config import MODELS_DIR
    from scripts.errors import UsageError
    from scripts.model_spec import load_model_spec

    path: Path | None = args.model_config
    if path is None:
        default = MODELS_DIR / args.model / "model.yaml" if args.model else None
        if default is None or not default.is_file():
            return None
        path = default
    spec = load_model_spec(path)
    if args.model and spec.name != args.model:
        raise UsageError(
            f"--model {args.model} but {path} describes model {spec.name!r}",
            fix="pass the model.yaml of the model you render (or drop --model)",
        )
    return spec


def render_request(args: argparse.Namespace, image: str) -> RenderRequest:
    from scripts.config import KUSTOMIZE_DIR
    from scripts.image.bases import choose_base
    from scripts.manifests.render import RenderRequest

    spec = model_spec(args)
    kustomize_dir = args.kustomize_dir or KUSTOMIZE_DIR
    base = choose_base(
        cli=args.base,
        model_base=spec.base_image if spec else None,
        overlay=args.overlay,
        kustomize_dir=kustomize_dir,
        local_build=image.startswith("oci:"),
        require_built=False,
    )
    return RenderRequest(
        overlay=args.overlay,
        image=image,
        model=args.model or (spec.name if spec else None),
        kube_version=args.kube_version,
        kustomize_dir=kustomize_dir,
        batching=spec.batching if spec else None,
        base=base,
    )


def run(args: argparse.Namespace, settings: Settings) -> CommandOutput:
    from scripts.manifests.render import render, write

    request = render_request(args, args.image)
    with logmod.stage("render"):
        rendered = render(request)
        write(rendered, args.out)
    data = rendered.to_dict() | {"path": str(args.out)}
    lines = [
        f"{o['kind']}/{o['name']}" + (f" ({o['track']})" if o["track"] else "")
        for o in rendered.summary()
    ]
    text = f"{args.out}: {len(lines)} objects, valid\n  " + "\n  ".join(lines)
    summary = (
        f"### Rendered `{rendered.overlay}` for `{rendered.model}`\n\n"
        f"Image `{rendered.image}`\n\n| kind | name | track |\n|---|---|---|\n"
        + "\n".join(f"| {o['kind']} | {o['name']} | {o['track']} |" for o in rendered.summary())
    )
    return CommandOutput(
        data=data, text=text, summary_markdown=summary, outputs={"manifests": str(args.out)}
    )
