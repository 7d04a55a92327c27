"""Resolving the base image: a registry reference (tag or digest), an OCI layout
(``oci:DIR[:TAG]``) or ``scratch``; an index is resolved to the wanted platform.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from scripts.errors import ArtifactNotFoundError, InvalidModelError, UsageError
from scripts.image import media_types as mt
from scripts.image.oci_layout import OCILayout
from scripts.image.reference import SCRATCH, ImageRef, LayoutRef, is_layout
from scripts.image.registry import Manifest, RegistryClient, sha256_digest


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(
                f"--platform {text!r} is not OS/ARCH[/VARIANT]", fix="e.g. --platform linux/amd64"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, entry: dict[str, Any]) -> bool:
        plat = entry.get("platform") or {}
        if plat.get("os") != self.os or plat.get("architecture") != self.architecture:
            return False
        return self.variant is None or plat.get("variant") in (None, self.variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


class BlobSource(Protocol):
    """Where the base image's blobs can be read from."""

    def describe(self) -> str: ...

    def open(self, digest: str, offset: int, chunk_size: int) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class RegistryBlobSource:
    client: RegistryClient
    repository: str

    def describe(self) -> str:
        return f"{self.client.host}/{self.repository}"

    def open(self, digest: str, offset: int, chunk_size: int) -> Iterator[bytes]:
        # Streamed registry-to-registry: never more than one chunk in memory.
        with self.client.open_blob(self.repository, digest) as response:
            skipped = 0
            buffer = b""
            for received in response.iter_content(chunk_size=1 << 20):
                piece = received
                if skipped < offset:  # resuming: drop what the target already has
                    take = min(len(piece), offset - skipped)
                    skipped += take
                    piece = piece[take:]
                    if not piece:
                        continue
                buffer += piece
                if len(buffer) >= chunk_size:
                    yield buffer
                    buffer = b""
            if buffer:
                yield buffer


@dataclass(frozen=True)
class LayoutBlobSource:
    layout: OCILayout

    def describe(self) -> str:
        return f"oci:{self.layout.root}"

    def open(self, digest: str, offset: int, chunk_size: int) -> Iterator[bytes]:
        with self.layout.blob_path(digest).open("rb") as fh:
            fh.seek(offset)
            while chunk := fh.read(chunk_size):
                yield chunk


@dataclass(frozen=True)
class BaseImage:
    display: str
    family: str  # docker | oci
    manifest: dict[str, Any]
    manifest_digest: str | None  # None for scratch
    config: dict[str, Any]
    source: BlobSource | None  # None for scratch
    registry_ref: ImageRef | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def config_descriptor(self) -> dict[str, Any]:
        descriptor: dict[str, Any] = self.manifest["config"]
        return descriptor


def _pick_platform(index: dict[str, Any], platform: Platform, where: str) -> str:
    entries = index.get("manifests", [])
    for entry in entries:
        if platform.matches(entry):
            return str(entry["digest"])
    have = (
        ", ".join(
            "/".join(
                str(p)
                for p in (
                    e.get("platform", {}).get("os"),
                    e.get("platform", {}).get("architecture"),
                    e.get("platform", {}).get("variant"),
                )
                if p
            )
            for e in entries
        )
        or "none"
    )
    raise ArtifactNotFoundError(
        f"base image {where} has no {platform} variant (it has: {have})",
        cause="a multi-arch base built without this platform",
        fix=f"pick a base that provides {platform}, or pass --platform with one of: {have}",
    )


def _check_manifest(manifest: dict[str, Any], media_type: str, where: str) -> None:
    if media_type not in mt.MANIFESTS:
        raise InvalidModelError(
            f"base image {where} has an unsupported manifest type {media_type!r}",
            cause="schema 1 or an artifact, not a container image",
            fix="use a Docker v2 or OCI image as the base",
        )
    if "config" not in manifest or "layers" not in manifest:
        raise InvalidModelError(f"base image {where}: manifest lacks config or layers")


def _from_registry(text: str, platform: Platform, client: RegistryClient) -> BaseImage:
    ref = ImageRef.parse(text)
    top = client.get_manifest(ref.repository, ref.reference)
    manifest: Manifest = top
    if top.media_type in mt.INDEXES:
        digest = _pick_platform(top.json(), platform, str(ref))
        manifest = client.get_manifest(ref.repository, digest)
    body = manifest.json()
    _check_manifest(body, manifest.media_type, str(ref))
    config = json.loads(client.get_blob(ref.repository, body["config"]["digest"]))
    return BaseImage(
        display=str(ref.with_digest(manifest.digest)),
        family=mt.family(manifest.media_type),
        manifest=body,
        manifest_digest=manifest.digest,
        config=config,
        source=RegistryBlobSource(client, ref.repository),
        registry_ref=ref,
        layers=list(body["layers"]),
    )


def _from_layout(text: str, platform: Platform) -> BaseImage:
    ref = LayoutRef.parse(text)
    layout = OCILayout(ref.path)
    entry = layout.find(ref.tag)
    raw = layout.read_blob(entry["digest"])
    media_type = entry.get("mediaType") or json.loads(raw).get("mediaType", mt.OCI_MANIFEST)
    if media_type in mt.INDEXES:
        digest = _pick_platform(json.loads(raw), platform, str(ref))
        raw = layout.read_blob(digest)
        media_type = json.loads(raw).get("mediaType", mt.OCI_MANIFEST)
    body = json.loads(raw)
    _check_manifest(body, media_type, str(ref))
    config = json.loads(layout.read_blob(body["config"]["digest"]))
    return BaseImage(
        display=f"{ref}@{sha256_digest(raw)}",
        family=mt.family(media_type),
        manifest=body,
        manifest_digest=sha256_digest(raw),
        config=config,
        source=LayoutBlobSource(layout),
        layers=list(body["layers"]),
    )


def _scratch(platform: Platform) -> BaseImage:
    config: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }
    if platform.variant:
        config["variant"] = platform.variant
    return BaseImage(
        display=SCRATCH,
        family="oci",
        manifest={"layers": []},
        manifest_digest=None,
        config=config,
        source=None,
        layers=[],
    )


def resolve_base(
    text: str, platform: Platform, registry_client: RegistryClient | None
) -> BaseImage:
    """Resolve ``text`` (registry ref, ``oci:DIR[:TAG]`` or ``scratch``) for ``platform``."""
    if text == SCRATCH:
        return _scratch(platform)
    if is_layout(text):
        return _from_layout(text, platform)
    if registry_client is None:  # pragma: no cover - the caller always passes one
        raise UsageError("a registry base needs a registry client")
    return _from_registry(text, platform, registry_client)
