"""Compose the new image: the base's config and manifest plus the model layer.

Deterministic: the same base manifest, the same layer and the same metadata
give the same config bytes and so the same image digest. Nothing here reads
the clock: ``created`` comes from ``SOURCE_DATE_EPOCH`` (0 by default).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scripts.image import media_types as mt
from scripts.image.base import BaseImage
from scripts.image.layer import LayerBlob
from scripts.image.registry import Manifest, sha256_digest

LABEL_PREFIX = "org.opencontainers.image"
ARCHIVE_LABEL = "dev.tf-release-pipeline.model.archive-sha256"
MODEL_LABEL = "dev.tf-release-pipeline.model.name"


@dataclass(frozen=True)
class ImageMeta:
    model_name: str
    version: int
    archive_sha256: str | None
    source: str | None
    revision: str | None
    created_epoch: int
    base_labels: tuple[tuple[str, str], ...] = ()  # the serving base's (scripts/image/bases.py)

    @property
    def created(self) -> str:
        return datetime.fromtimestamp(self.created_epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def labels(self, base: BaseImage | None = None) -> dict[str, str]:
        labels = {
            f"{LABEL_PREFIX}.version": str(self.version),
            f"{LABEL_PREFIX}.created": self.created,
            f"{LABEL_PREFIX}.title": self.model_name,
            MODEL_LABEL: self.model_name,
        }
        if self.source:
            labels[f"{LABEL_PREFIX}.source"] = self.source
        if self.revision:
            labels[f"{LABEL_PREFIX}.revision"] = self.revision
        if self.archive_sha256:
            labels[ARCHIVE_LABEL] = self.archive_sha256
        if base is not None and base.manifest_digest:
            labels[f"{LABEL_PREFIX}.base.digest"] = base.manifest_digest
            labels[f"{LABEL_PREFIX}.base.name"] = base.display.split("@", 1)[0]
        labels.update(self.base_labels)
        return labels


@dataclass(frozen=True)
class ComposedImage:
    config: bytes
    config_digest: str
    manifest: Manifest
    family: str
    layers: list[dict[str, Any]]  # all layer descriptors, base first


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def compose(base: BaseImage, layer: LayerBlob, meta: ImageMeta) -> ComposedImage:
    """Append the model ``layer`` to ``base`` and return the new config and manifest."""
    return compose_layer(
        base,
        layer,
        env={"MODEL_NAME": meta.model_name},
        labels=meta.labels(base),
        created=meta.created,
        created_by=f"tf-release-pipeline build: /models/{meta.model_name}/{meta.version}",
        comment=f"model {meta.model_name} version {meta.version}",
    )


def compose_layer(
    base: BaseImage,
    layer: LayerBlob,
    *,
    env: dict[str, str],
    labels: dict[str, str],
    created: str,
    created_by: str,
    comment: str,
) -> ComposedImage:
    """Append one layer to ``base``, set ``env`` (replacing the base's values of those
    names) and ``labels``; deterministic for the same inputs."""
    # zstd layers exist only in the OCI family; Docker v2 types map 1:1 onto OCI ones.
    family = "oci" if layer.compression == "zstd" else base.family
    config = copy.deepcopy(base.config)
    container = config.setdefault("config", {})
    kept = [e for e in container.get("Env") or [] if e.split("=", 1)[0] not in env]
    container["Env"] = kept + [f"{k}={v}" for k, v in env.items()]
    merged = dict(container.get("Labels") or {})
    merged.update(labels)
    container["Labels"] = merged
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), layer.diff_id]
    history = list(config.get("history") or [])
    history.append({"created": created, "created_by": created_by, "comment": comment})
    config["history"] = history
    config["created"] = created
    config_raw = _canonical(config)
    config_digest = sha256_digest(config_raw)

    def convert(descriptor: dict[str, Any]) -> dict[str, Any]:
        out = dict(descriptor)
        if family == "oci":
            out["mediaType"] = mt.DOCKER_TO_OCI.get(out.get("mediaType", ""), out["mediaType"])
        return out

    layers = [convert(d) for d in base.layers]
    layers.append(
        {
            "mediaType": mt.layer_type(family, layer.compression),
            "size": layer.size,
            "digest": layer.digest,
        }
    )
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.manifest_type(family),
        "config": {
            "mediaType": mt.config_type(family),
            "size": len(config_raw),
            "digest": config_digest,
        },
        "layers": layers,
    }
    if family == "oci":
        annotations = dict(base.manifest.get("annotations") or {})
        annotations.update(labels)
        manifest["annotations"] = annotations
    manifest_raw = _canonical(manifest)
    return ComposedImage(
        config=config_raw,
        config_digest=config_digest,
        manifest=Manifest(
            raw=manifest_raw,
            media_type=mt.manifest_type(family),
            digest=sha256_digest(manifest_raw),
        ),
        family=family,
        layers=layers,
    )
