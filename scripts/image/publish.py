"""Publishers: put a composed image somewhere — a registry or an OCI layout.

Both follow the same order, so no tag ever points at an image with missing
blobs: check every blob, copy or mount what is missing, upload the model layer
and the config, and only then write the manifest (registry) or index.json
(layout). Everything already present is skipped, so a rerun of an interrupted
push completes, and rebuilding an existing image pushes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from scripts.image.base import BaseImage, LayoutBlobSource, RegistryBlobSource
from scripts.image.compose import ComposedImage
from scripts.image.layer import LayerBlob
from scripts.image.oci_layout import OCILayout
from scripts.image.reference import ImageRef, LayoutRef
from scripts.image.registry import CHUNK_SIZE, RegistryClient, StreamingUpload
from scripts.log import log


@dataclass
class PushReport:
    pushed_bytes: int = 0
    actions: list[dict[str, Any]] = field(default_factory=list)

    def record(self, action: str, what: str, size: int = 0) -> None:
        self.actions.append({"action": action, "what": what, "bytes": size})
        if action in ("upload", "copy"):
            self.pushed_bytes += size

    @property
    def reused(self) -> bool:
        return all(a["action"] in ("present", "tag-present") for a in self.actions)


class Publisher(Protocol):
    def publish(
        self,
        base: BaseImage,
        layer: LayerBlob,
        image: ComposedImage,
        tags: list[str],
        dry_run: bool,
    ) -> PushReport: ...

    def image_name(self, digest: str) -> str: ...


def _blob_chunks(base: BaseImage, digest: str) -> Callable[[int], Iterator[bytes]]:
    source = base.source
    if source is None:  # pragma: no cover - scratch has no layers
        raise AssertionError("scratch base has no blobs")
    return lambda offset: source.open(digest, offset, CHUNK_SIZE)


class RegistryPublisher:
    def __init__(self, client: RegistryClient, target: ImageRef) -> None:
        self.client = client
        self.target = target
        self.prepushed: dict[str, int] = {}  # blobs a streaming upload already committed

    def stream_new_layer(self, version: int) -> StreamingUpload | None:
        """Stream the layer while it is compressed, when the image is new (no version tag)."""
        if self.client.manifest_digest(self.target.repository, f"v{version}") is not None:
            return None  # probably a rebuild: compute the digest first, then HEAD it
        return StreamingUpload(self.client, self.target.repository)

    def image_name(self, digest: str) -> str:
        return str(self.target.with_digest(digest))

    def _base_layer(
        self, base: BaseImage, descriptor: dict[str, Any], report: PushReport, dry_run: bool
    ) -> None:
        digest, size = descriptor["digest"], int(descriptor["size"])
        repo = self.target.repository
        if self.client.blob_exists(repo, digest):
            report.record("present", digest)
            return
        source = base.source
        same_registry = (
            isinstance(source, RegistryBlobSource) and source.client.host == self.client.host
        )
        if same_registry and isinstance(source, RegistryBlobSource):
            if dry_run:
                report.record("would-mount", digest)
                return
            if self.client.mount_blob(repo, digest, source.repository):
                report.record("mount", digest)
                return
        if dry_run:
            report.record("would-copy", digest, size)
            return
        log.info(
            "copying base layer %s (%d bytes) from %s",
            digest[:19],
            size,
            source.describe() if source else "?",
        )
        self.client.upload_blob(repo, digest, size, _blob_chunks(base, digest))
        report.record("copy", digest, size)

    def publish(
        self,
        base: BaseImage,
        layer: LayerBlob,
        image: ComposedImage,
        tags: list[str],
        dry_run: bool,
    ) -> PushReport:
        report = PushReport()
        repo = self.target.repository
        for descriptor in base.layers:
            self._base_layer(base, descriptor, report, dry_run)
        if layer.digest in self.prepushed:
            report.record("upload", layer.digest, self.prepushed[layer.digest])
        elif self.client.blob_exists(repo, layer.digest):
            report.record("present", layer.digest)
        elif dry_run:
            report.record("would-upload", layer.digest, layer.size)
        else:
            self.client.upload_blob(
                repo,
                layer.digest,
                layer.size,
                lambda offset: layer.chunks(offset, self.client.chunk_size),
            )
            report.record("upload", layer.digest, layer.size)
        if self.client.blob_exists(repo, image.config_digest):
            report.record("present", image.config_digest)
        elif dry_run:
            report.record("would-upload", image.config_digest, len(image.config))
        else:
            self.client.upload_blob(
                repo,
                image.config_digest,
                len(image.config),
                lambda offset: iter([image.config[offset:]]),
            )
            report.record("upload", image.config_digest, len(image.config))
        # Manifests last: only now can a tag point at a complete image.
        for tag in tags:
            if self.client.manifest_digest(repo, tag) == image.manifest.digest:
                report.record("tag-present", tag)
            elif dry_run:
                report.record("would-tag", tag)
            else:
                self.client.put_manifest(repo, tag, image.manifest)
                report.record("tag", tag)
        return report


class LayoutPublisher:
    def __init__(self, target: LayoutRef) -> None:
        self.target = target
        self.layout = OCILayout(target.path)

    def image_name(self, digest: str) -> str:
        return f"oci:{self.target.path}@{digest}"

    def publish(
        self,
        base: BaseImage,
        layer: LayerBlob,
        image: ComposedImage,
        tags: list[str],
        dry_run: bool,
    ) -> PushReport:
        report = PushReport()
        if not dry_run:
            self.layout.init()
        blobs: list[tuple[str, int, Callable[[], Iterator[bytes]]]] = []
        for descriptor in base.layers:
            digest = descriptor["digest"]
            source = base.source
            if isinstance(source, LayoutBlobSource) and source.layout.root == self.layout.root:
                report.record("present", digest)
                continue
            blobs.append(
                (digest, int(descriptor["size"]), functools.partial(_blob_chunks(base, digest), 0))
            )
        blobs.append((layer.digest, layer.size, lambda: layer.chunks(0, CHUNK_SIZE)))
        blobs.append((image.config_digest, len(image.config), lambda: iter([image.config])))
        for digest, size, chunks in blobs:
            if self.layout.has_blob(digest, size):
                report.record("present", digest)
            elif dry_run:
                report.record("would-upload", digest, size)
            else:
                self.layout.write_blob(digest, chunks())
                report.record("upload", digest, size)
        current = {
            tag: self.layout.tag_digest(tag) if self.layout.exists() else None for tag in tags
        }
        missing = [t for t, d in current.items() if d != image.manifest.digest]
        for tag in tags:
            if tag not in missing:
                report.record("tag-present", tag)
            elif dry_run:
                report.record("would-tag", tag)
            else:
                report.record("tag", tag)
        if missing and not dry_run:
            # index.json last: the image becomes visible only when all its blobs exist.
            self.layout.add_manifest(
                image.manifest.raw, image.manifest.media_type, image.manifest.digest, missing
            )
        return report
