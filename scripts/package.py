"""The package stage: a SavedModel version directory → a deterministic release archive.

``DIR/NAME-VERSION.tar.gz`` holds ``NAME/VERSION/…`` (TF Serving layout) and
``DIR/NAME-VERSION.tar.gz.sha256`` its checksum in ``sha256sum`` format. The
same input gives a byte-identical archive: see :mod:`scripts.reproducible_tar`;
gzip is written by ISA-L (isal) with mtime 0 and no file name in its header.

The archive also carries TF Serving's warm-up records,
``NAME/VERSION/assets.extra/tf_serving_warmup_requests``, made from model.yaml's
``sample_request`` (:mod:`scripts.warmup`) and added to the tar stream only: the
SavedModel directory is read, never written. A model that ships the file keeps its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, cast

from isal import igzip

from scripts.artifact.savedmodel import (
    SignatureInfo,
    read_signature_defs,
    require_signature,
    signature_infos,
)
from scripts.atomic import atomic_file, write_text_atomic
from scripts.errors import InvalidModelError, UsageError
from scripts.hashing import HashingWriter
from scripts.reproducible_tar import ReproducibleTar
from scripts.warmup import WARMUP_FILE, WarmupPlan, WarmupResult, prepare

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
    warmup: WarmupResult

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
            "warmup": self.warmup.to_dict(),
        }


def package(
    version_dir: Path,
    name: str,
    version: int,
    out_dir: Path,
    *,
    signature: str = "serving_default",
    mtime: int = 0,
    warmup: WarmupPlan | None = None,
) -> PackageResult:
    """Validate ``version_dir`` as a SavedModel and write the release archive atomically.

    ``warmup`` says which warm-up records to add (None: none). Raises UsageError for a
    bad name or version, InvalidModelError for a directory that is not a servable
    SavedModel (or ships a corrupt warm-up file), ConfigError for a sample request
    that does not fit the signature; nothing is written then.
    """
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
    signature_defs = read_signature_defs(version_dir)
    signatures = signature_infos(signature_defs)
    require_signature(signatures, signature, version_dir)
    warmup_file, warmup_result = prepare(
        version_dir, name, signature_defs, warmup or WarmupPlan(None, 0, "not asked for")
    )
    extra = {WARMUP_FILE: warmup_file} if warmup_file is not None else None
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
            tar.add_tree(version_dir, PurePosixPath(name, str(version)), extra)
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
        warmup=warmup_result,
    )
