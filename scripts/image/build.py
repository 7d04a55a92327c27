"""The build stage: model directory + base image → a pushed, digest-pinned image.

Builders (chosen by name from a table): ``registry`` speaks the distribution API
directly (the default: no daemon, base never pulled), ``layout`` writes an OCI
image layout (the embedded default for local runs), ``docker`` goes through a
Docker Engine API (the source pipeline's way, for users who have a daemon).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.errors import UsageError
from scripts.image.auth import CredentialStore
from scripts.image.base import BaseImage, Platform, resolve_base
from scripts.image.bases import ChosenBase
from scripts.image.compose import ImageMeta, compose
from scripts.image.layer import plan_layer, prune_cache, write_layer
from scripts.image.publish import LayoutPublisher, Publisher, RegistryPublisher
from scripts.image.reference import SCRATCH, ImageRef, LayoutRef, is_layout
from scripts.image.registry import RegistryClient, client_for
from scripts.log import log
from scripts.transfer import RetryPolicy


@dataclass(frozen=True)
class BuildRequest:
    model_dir: Path
    base: str
    image: str
    builder: str = "registry"
    platform: Platform = field(default_factory=lambda: Platform("linux", "amd64"))
    insecure: bool = False
    dry_run: bool = False
    compression: str = "gzip"
    config_files: tuple[Path, ...] = ()
    cache_dir: Path = Path(".cache/layers")
    archive_sha256: str | None = None
    source_url: str | None = None
    revision: str | None = None
    created_epoch: int = 0
    docker_config: Path | None = None
    docker_host: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # The catalog base's name, CPU features and families (ChosenBase.image_labels).
    base_labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class BuildOptions:
    """How to build, for any model: the command line's build flags, parsed once.

    ``request()`` completes them with what the pipeline learns on the way (the model
    directory, the image to push and the base).
    """

    builder: str | None = None  # None: layout for oci: images, registry otherwise
    platform: Platform = field(default_factory=lambda: Platform("linux", "amd64"))
    insecure: bool = False
    dry_run: bool = False
    compression: str = "gzip"
    config_files: tuple[Path, ...] = ()
    cache_dir: Path = Path(".cache/layers")
    archive_sha256: str | None = None
    source_url: str | None = None
    revision: str | None = None
    created_epoch: int = 0
    docker_config: Path | None = None
    docker_host: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def request(
        self,
        model_dir: Path,
        image: str,
        base: str | ChosenBase,
        *,
        archive_sha256: str | None = None,
    ) -> BuildRequest:
        """``base``: a reference, or a catalog choice (its labels go on the image; a
        local base is written to the layer cache's sibling ``bases`` layout first)."""
        if isinstance(base, ChosenBase):
            from scripts.image.local_base import base_reference

            labels = tuple(sorted(base.image_labels().items()))
            base = base_reference(base, self.cache_dir.parent / "bases")
        else:
            labels = ()
        return BuildRequest(
            model_dir=model_dir,
            base=base,
            base_labels=labels,
            image=image,
            builder=self.builder or ("layout" if is_layout(image) else "registry"),
            platform=self.platform,
            insecure=self.insecure,
            dry_run=self.dry_run,
            compression=self.compression,
            config_files=self.config_files,
            cache_dir=self.cache_dir,
            archive_sha256=self.archive_sha256 or archive_sha256,
            source_url=self.source_url,
            revision=self.revision,
            created_epoch=self.created_epoch,
            docker_config=self.docker_config,
            docker_host=self.docker_host,
            retry=self.retry,
        )


@dataclass(frozen=True)
class BuildResult:
    image: str
    digest: str
    tags: list[str]
    pushed_bytes: int
    reused: bool
    builder: str
    base: str
    model_name: str
    version: int
    layer_digest: str
    media_type: str
    dry_run: bool
    actions: list[dict[str, Any]]

    def to_dict(self) -> dict[str, object]:
        return {
            "image": self.image,
            "digest": self.digest,
            "tags": self.tags,
            "pushed_bytes": self.pushed_bytes,
            "reused": self.reused,
            "builder": self.builder,
            "base": self.base,
            "model_name": self.model_name,
            "version": self.version,
            "layer_digest": self.layer_digest,
            "media_type": self.media_type,
            "dry_run": self.dry_run,
            "actions": self.actions,
        }


def tags_for(version: int, content_digest: str, requested: str | None) -> list[str]:
    """The model version, a content tag, and the requested tag (never `latest` alone)."""
    tags = [f"v{version}", f"v{version}-{content_digest.removeprefix('sha256:')[:12]}"]
    if requested and requested not in tags:
        tags.append(requested)
    return tags


def archive_sha_from_fetch_record(model_dir: Path, name: str, version: int) -> str | None:
    """``fetch`` records the archive's sha256 beside the model; use it when not given."""
    record = model_dir.parent / ".fetched" / f"{name}-{version}.json"
    try:
        value = json.loads(record.read_text()).get("sha256")
    except (OSError, ValueError):
        return None
    return str(value) if value else None


def _registry_target(
    request: BuildRequest, creds: CredentialStore
) -> tuple[Publisher, RegistryClient, str | None]:
    target = ImageRef.parse(request.image)
    if target.digest:
        raise UsageError(
            f"--image {request.image} names a digest",
            fix="name a repository (and optionally a tag); the digest is computed",
        )
    client = client_for(target, creds, insecure=request.insecure, retry=request.retry)
    return RegistryPublisher(client, target), client, target.tag


def _layout_target(request: BuildRequest) -> tuple[Publisher, None, str | None]:
    if not is_layout(request.image):
        raise UsageError(
            f"--builder layout needs --image oci:DIR[:TAG], not {request.image!r}",
            fix="e.g. --image oci:.pipeline/images:digits",
        )
    target = LayoutRef.parse(request.image)
    return LayoutPublisher(target), None, target.tag


def _base_client(
    request: BuildRequest, creds: CredentialStore, target_client: RegistryClient | None
) -> RegistryClient | None:
    if request.base == SCRATCH or is_layout(request.base):
        return None
    ref = ImageRef.parse(request.base)
    if target_client is not None and ref.api_host == target_client.host:
        return target_client  # one client (and one token cache) when the base is local
    return client_for(ref, creds, insecure=request.insecure, retry=request.retry)


def build(request: BuildRequest) -> BuildResult:
    """Run the build stage; see the module docstring for the builders."""
    if request.builder == "docker":
        from scripts.image.docker_build import docker_build

        return docker_build(request)
    factories: dict[str, Callable[[], tuple[Publisher, RegistryClient | None, str | None]]] = {
        "registry": lambda: _registry_target(request, creds),
        "layout": lambda: _layout_target(request),
    }
    if request.builder not in factories:
        raise UsageError(
            f"unknown builder {request.builder!r}", fix="use --builder registry, layout or docker"
        )
    creds = CredentialStore(request.docker_config)
    publisher, target_client, requested_tag = factories[request.builder]()
    base_client = _base_client(request, creds, target_client)
    try:
        base: BaseImage = resolve_base(request.base, request.platform, base_client)
        log.info("base %s (%s manifest, %d layers)", base.display, base.family, len(base.layers))
        plan = plan_layer(
            request.model_dir,
            config_files=list(request.config_files),
            compression=request.compression,
            mtime=request.created_epoch,
            cache_dir=request.cache_dir,
        )
        name, version = plan.name, plan.version
        stream = None
        if plan.cached is None and not request.dry_run and isinstance(publisher, RegistryPublisher):
            stream = publisher.stream_new_layer(version)
        layer = write_layer(plan, stream.progress if stream else None)
        if (
            stream is not None
            and isinstance(publisher, RegistryPublisher)
            and stream.finish(layer.digest, layer.size)
        ):
            publisher.prepushed[layer.digest] = layer.size
        meta = ImageMeta(
            model_name=name,
            version=version,
            archive_sha256=request.archive_sha256
            or archive_sha_from_fetch_record(request.model_dir, name, version),
            source=request.source_url,
            revision=request.revision,
            created_epoch=request.created_epoch,
            base_labels=request.base_labels,
        )
        image = compose(base, layer, meta)
        tags = tags_for(version, layer.digest, requested_tag)
        report = publisher.publish(base, layer, image, tags, request.dry_run)
        prune_cache(request.cache_dir)
    finally:
        for client in {c for c in (target_client, base_client) if c is not None}:
            client.close()
    return BuildResult(
        image=publisher.image_name(image.manifest.digest),
        digest=image.manifest.digest,
        tags=tags,
        pushed_bytes=report.pushed_bytes,
        reused=report.reused,
        builder=request.builder,
        base=base.display,
        model_name=name,
        version=version,
        layer_digest=layer.digest,
        media_type=image.manifest.media_type,
        dry_run=request.dry_run,
        actions=report.actions,
    )


def describe_result(result: BuildResult) -> tuple[str, str]:
    """The result for people: a text for the terminal, Markdown for the step summary."""
    verb = "would push" if result.dry_run else "pushed"
    text = (
        f"{result.image}\n  tags: {', '.join(result.tags)}\n  {verb} {result.pushed_bytes} "
        f"bytes" + ("  [image already existed: nothing pushed]" if result.reused else "")
    )
    summary = (
        f"### Image `{result.model_name}` v{result.version}\n\n"
        f"| | |\n|---|---|\n| image | `{result.image}` |\n"
        f"| tags | {', '.join(f'`{t}`' for t in result.tags)} |\n"
        f"| base | `{result.base}` |\n| {verb} | {result.pushed_bytes} bytes |\n"
        f"| reused | {result.reused} |\n"
    )
    return text, summary
