"""OCI image layout directories (``oci-layout``, ``index.json``, ``blobs/sha256/…``).

Blobs are content-addressed and written atomically; ``index.json`` is replaced
atomically last, so a reader (skopeo, umoci, the local target) never sees a
manifest whose blobs are missing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scripts.atomic import atomic_file, write_text_atomic
from scripts.errors import ArtifactNotFoundError, IntegrityError
from scripts.image import media_types as mt

REF_NAME = "org.opencontainers.image.ref.name"


class OCILayout:
    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self) -> bool:
        return (self.root / "oci-layout").is_file()

    def init(self) -> None:
        if not self.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.root / "oci-layout", '{"imageLayoutVersion": "1.0.0"}')
        if not (self.root / "index.json").is_file():
            self._write_index({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []})

    def blob_path(self, digest: str) -> Path:
        algo, _, hex_digest = digest.partition(":")
        return self.root / "blobs" / algo / hex_digest

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        path = self.blob_path(digest)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def write_blob(self, digest: str, chunks: Iterable[bytes]) -> int:
        """Write a blob atomically, verifying its digest; return its size."""
        hasher = hashlib.sha256()
        size = 0
        path = self.blob_path(digest)
        with atomic_file(path) as fh:
            for chunk in chunks:
                hasher.update(chunk)
                size += len(chunk)
                fh.write(chunk)
            if f"sha256:{hasher.hexdigest()}" != digest:
                raise IntegrityError(
                    f"blob {digest} received with digest sha256:{hasher.hexdigest()}",
                    cause="corruption while copying",
                    fix="rerun the build",
                )
        return size

    def read_blob(self, digest: str) -> bytes:
        path = self.blob_path(digest)
        if not path.is_file():
            raise ArtifactNotFoundError(
                f"{self.root} has no blob {digest}",
                cause="an incomplete layout",
                fix="rebuild the image",
            )
        return path.read_bytes()

    def index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "index.json").read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ArtifactNotFoundError(
                f"{self.root} is not an OCI image layout (no index.json)",
                cause="a wrong path, or the image was never built there",
                fix="build with --builder layout, or check the oci: path",
            ) from exc
        return data if isinstance(data, dict) else {}

    def _write_index(self, index: dict[str, Any]) -> None:
        write_text_atomic(self.root / "index.json", json.dumps(index, indent=2) + "\n")

    def find(self, tag: str | None) -> dict[str, Any]:
        """The index entry for ``tag`` (or the only entry when no tag is given)."""
        manifests = self.index().get("manifests", [])
        if tag is None:
            if len(manifests) == 1:
                entry: dict[str, Any] = manifests[0]
                return entry
            raise ArtifactNotFoundError(
                f"{self.root} holds {len(manifests)} images; name one with oci:DIR:TAG",
                fix="add :TAG (see index.json for the org.opencontainers.image.ref.name values)",
            )
        for entry in manifests:
            if entry.get("annotations", {}).get(REF_NAME) == tag or entry.get("digest") == tag:
                return dict(entry)
        raise ArtifactNotFoundError(
            f"{self.root} has no image tagged {tag!r}", fix="list the tags in index.json"
        )

    def tag_digest(self, tag: str) -> str | None:
        for entry in self.index().get("manifests", []):
            if entry.get("annotations", {}).get(REF_NAME) == tag:
                return str(entry["digest"])
        return None

    def add_manifest(self, raw: bytes, media_type: str, digest: str, tags: list[str]) -> None:
        """Store a manifest and point ``tags`` at it (replacing older entries of those tags)."""
        if not self.has_blob(digest):
            self.write_blob(digest, [raw])
        index = self.index()
        kept = [
            m
            for m in index.get("manifests", [])
            if m.get("annotations", {}).get(REF_NAME) not in tags
        ]
        for tag in tags:
            kept.append(
                {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": len(raw),
                    "annotations": {REF_NAME: tag},
                }
            )
        index["manifests"] = kept
        self._write_index(index)
