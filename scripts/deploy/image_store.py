"""Materialise what an image holds for serving: ``/models`` and ``/etc/tf-serving``.

The local target serves exactly what is in the built image: the image is read
from its OCI layout (``oci.local/…`` references carry the layout path in an
annotation) or pulled layer by layer from its registry, and only the model and
serving-config paths are extracted (safely: no links, no escapes). Results are
cached per manifest digest; a cache entry appears only when complete.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from scripts.artifact.extract import ExtractLimits, safe_extract
from scripts.atomic import move_dir_into_place, staging_dir
from scripts.errors import ArtifactNotFoundError
from scripts.image import media_types as mt
from scripts.image.auth import CredentialStore
from scripts.image.oci_layout import OCILayout
from scripts.image.reference import ImageRef
from scripts.image.registry import client_for
from scripts.log import log

SERVED_PREFIXES = ("models", "etc/tf-serving")
IMAGE_ENV_FILE = ".image-env.json"  # the image config's Env, as a container runtime gives it
# The host's, not the image's: the local runtime runs this machine's programs.
HOST_ENV = frozenset({"PATH", "HOME", "HOSTNAME"})


def _wanted(path: PurePosixPath) -> bool:
    return any(path.parts[: len(p.split("/"))] == tuple(p.split("/")) for p in SERVED_PREFIXES)


def _env_of(config: bytes) -> dict[str, str]:
    entries = json.loads(config).get("config", {}).get("Env") or []
    pairs = (str(e).partition("=") for e in entries)
    return {name: value for name, _, value in pairs if name not in HOST_ENV}


def _layers_from_layout(layout_dir: Path, digest: str) -> tuple[list[Path], dict[str, str]]:
    layout = OCILayout(layout_dir)
    manifest = json.loads(layout.read_blob(digest))
    env = _env_of(layout.read_blob(manifest["config"]["digest"]))
    return [layout.blob_path(layer["digest"]) for layer in manifest["layers"]], env


def _layers_from_registry(
    image: str, workdir: Path, credentials: CredentialStore, insecure: bool
) -> tuple[list[Path], dict[str, str]]:
    ref = ImageRef.parse(image)
    paths: list[Path] = []
    with client_for(ref, credentials, insecure=insecure) as client:
        manifest = client.get_manifest(ref.repository, ref.reference).json()
        if manifest.get("mediaType") in mt.INDEXES:
            raise ArtifactNotFoundError(f"{image} is an index; deploy a platform image digest")
        env = _env_of(client.get_blob(ref.repository, manifest["config"]["digest"]))
        for index, layer in enumerate(manifest["layers"]):
            path = workdir / f"layer-{index}"
            with (
                client.open_blob(ref.repository, layer["digest"]) as response,
                path.open("wb") as fh,
            ):
                for chunk in response.iter_content(1 << 20):
                    fh.write(chunk)
            paths.append(path)
    return paths, env


def image_env(root: Path) -> dict[str, str]:
    """The Env of a materialised image (empty for entries cached before it was kept)."""
    path = root / IMAGE_ENV_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in data.items()}


def materialise(
    image: str,
    annotations: dict[str, Any],
    cache_dir: Path,
    *,
    credentials: CredentialStore,
    insecure: bool = False,
) -> Path:
    """Return a directory holding the image's ``models/`` and ``etc/tf-serving/``."""
    digest = image.rsplit("@", 1)[-1]
    final = cache_dir / digest.replace(":", "-")
    if (final / ".complete").is_file():
        return final
    cache_dir.mkdir(parents=True, exist_ok=True)
    layout = annotations.get("tf-release-pipeline.dev/oci-layout")
    with staging_dir(cache_dir, "image") as staging:
        root = staging / "rootfs"
        root.mkdir()
        if layout:
            layers, env = _layers_from_layout(Path(str(layout)), digest)
        else:
            layers, env = _layers_from_registry(image, staging, credentials, insecure)
        (root / IMAGE_ENV_FILE).write_text(json.dumps(env, sort_keys=True))
        # Applied in order: a later layer's file replaces an earlier one's.
        for index, layer in enumerate(layers):
            out = staging / f"extract-{index}"
            out.mkdir()
            safe_extract(
                layer,
                out,
                ExtractLimits(max_expansion_ratio=10_000),
                include=_wanted,
                allow_links=True,
            )
            for path in sorted(out.rglob("*")):
                target = root / path.relative_to(out)
                if path.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    path.replace(target)
        if not (root / "models").is_dir():
            raise ArtifactNotFoundError(
                f"image {image} holds no /models directory",
                cause="not an image built by `python -m scripts build`",
                fix="build the model image first, and deploy its digest",
            )
        (root / ".complete").write_text(image + "\n")
        move_dir_into_place(root, final)
    log.info("image %s materialised in %s", image, final)
    return final
