"""The package stage: a SavedModel version directory → a deterministic release archive.

``DIR/NAME-VERSION.tar.gz`` holds ``NAME/VERSION/…`` (TF Serving layout) and
``DIR/NAME-VERSION.tar.gz.sha256`` its checksum in ``sha256sum`` format. The
same input gives a byte-identical archive: see :mod:`scripts.reproducible_tar`;
gzip is written by ISA-L (isal) with mtime 0 and no file name in its header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, cast

from isal import igzip

from scripts.artifact.savedmodel import SignatureInfo, read_signatures, require_signature
from scripts.atomic import atomic_file, write_text_atomic
from scripts.errors import InvalidModelError, UsageError
from scripts.hashing import HashingWriter
from scripts.reproducible_tar import ReproducibleTar

_NAME_RE = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
GZIP_LEVEL = 2  # isal's default; weights barely compress, so higher levels only cost time


@dataclass(frozen=True)
class PackageResult:
    path: Path
    sha256: str
    size: int
    model_name: str
    version: int
    uncompressed_bytes: int
    signatures: dict[str, SignatureInfo]

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "sha256_file": str(self.path) + ".sha256",
            "sha256": self.sha256,
            "size": self.size,
            "model_name": self.model_name,
            "version": self.version,
            "uncompressed_bytes": self.uncompressed_bytes,
            "signatures": {k: v.to_dict() for k, v in self.signatures.items()},
        }


def package(
    version_dir: Path,
    name: str,
    version: int,
    out_dir: Path,
    *,
    signature: str = "serving_default",
    mtime: int = 0,
) -> PackageResult:
    """Validate ``version_dir`` as a SavedModel and write the release archive atomically."""
    if not re.match(_NAME_RE, name):
        raise UsageError(
            f"model name {name!r} is not valid",
            cause="names become file names, image repositories and Kubernetes labels",
            fix="use lowercase letters, digits, '-', '_' and '.'",
        )
    if version < 1:
        raise UsageError(
            f"version {version} is not a positive integer",
            cause="TF Serving version directories are positive integers",
            fix="pass --version 1 or higher",
        )
    if not version_dir.is_dir():
        raise InvalidModelError(
            f"{version_dir} is not a directory",
            cause="a wrong path",
            fix="pass the SavedModel version directory (the one holding saved_model.pb)",
        )
    signatures = read_signatures(version_dir)
    require_signature(signatures, signature, version_dir)
    archive = out_dir / f"{name}-{version}.tar.gz"
    with atomic_file(archive) as fh:
        sink = HashingWriter(fh)
        gz = cast(
            IO[bytes],
            igzip.IGzipFile(  # type: ignore[no-untyped-call]
                filename="", mode="wb", fileobj=sink, compresslevel=GZIP_LEVEL, mtime=0
            ),
        )
        with gz, ReproducibleTar(gz, mtime) as tar:
            tar.add_tree(version_dir, PurePosixPath(name, str(version)))
        uncompressed = tar.file_bytes
    digest = sink.sha256.hexdigest()
    write_text_atomic(Path(f"{archive}.sha256"), f"{digest}  {archive.name}\n")
    return PackageResult(
        path=archive,
        sha256=digest,
        size=sink.size,
        model_name=name,
        version=version,
        uncompressed_bytes=uncompressed,
        signatures=signatures,
    )
