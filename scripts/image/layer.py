"""The model layer: ``/models/NAME/VERSION/…`` (+ optional TF Serving config files).

One streaming pass: reproducible tar → sha256 (the diff_id) → compression
(isal gzip, mtime 0; or zstd) → sha256 (the blob digest) → a spool file on disk.
Nothing holds the layer in memory.

Built layers are cached by a fingerprint of the inputs' paths, sizes, modes,
inodes and mtimes (as git's index does), so rebuilding an unchanged model
costs a few ``stat`` calls instead of re-compressing hundreds of MB.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, cast

import zstandard
from isal import igzip

from scripts.atomic import atomic_file, write_text_atomic
from scripts.errors import InvalidModelError, UsageError
from scripts.hashing import HashingWriter
from scripts.log import log
from scripts.reproducible_tar import ReproducibleTar

CACHE_FORMAT = 2
GZIP_LEVEL = 1  # weights barely compress (~0.9); level 1 is as small and fastest
ZSTD_LEVEL = 3
CONFIG_DIR = PurePosixPath("etc/tf-serving")


@dataclass(frozen=True)
class LayerBlob:
    path: Path
    digest: str  # sha256:… of the compressed blob
    size: int
    diff_id: str  # sha256:… of the uncompressed tar
    compression: str  # gzip | zstd
    uncompressed_size: int

    def chunks(self, offset: int, chunk_size: int) -> Iterator[bytes]:
        with self.path.open("rb") as fh:
            fh.seek(offset)
            while chunk := fh.read(chunk_size):
                yield chunk


class _TarSink:
    """What tarfile writes into: hash the uncompressed stream, pass it to the compressor."""

    def __init__(self, compressor: Any) -> None:
        self._compressor = compressor
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self._compressor.write(data)
        return len(data)

    def flush(self) -> None:  # tarfile may call it; compression flushes on close
        pass


def model_version_dir(model_dir: Path) -> tuple[str, int, Path]:
    """The model name and the highest version in a TF Serving base directory."""
    if not model_dir.is_dir():
        raise InvalidModelError(
            f"model directory {model_dir} does not exist",
            cause="a wrong --model-dir",
            fix="pass the `path` that `fetch` reported (DEST/NAME)",
        )
    versions = sorted(
        (int(p.name), p)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()
    )
    if not versions:
        hint = (
            " (it holds saved_model.pb itself: pass its parent, named after the model, "
            "with the SavedModel in a version subdirectory)"
            if (model_dir / "saved_model.pb").is_file()
            else ""
        )
        raise InvalidModelError(
            f"{model_dir} has no version directory with a saved_model.pb{hint}",
            cause="not TF Serving layout NAME/VERSION/saved_model.pb",
            fix="pass the `path` that `fetch` reported, e.g. .pipeline/models/digits",
        )
    version, path = versions[-1]
    return model_dir.name, version, path


def _fingerprint(sources: list[tuple[PurePosixPath, Path]], compression: str, mtime: int) -> str:
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{compression}|{mtime}".encode())
    for prefix, src in sources:
        paths = [src] if src.is_file() else sorted(src.rglob("*"))
        for path in paths:
            st = path.lstat()
            rel = prefix if path == src else prefix / path.relative_to(src).as_posix()
            digest.update(
                f"{rel}|{st.st_mode}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|"
                f"{st.st_ino}\n".encode()
            )
    return digest.hexdigest()


def _open_compressor(compression: str, sink: HashingWriter) -> IO[bytes]:
    if compression == "gzip":
        return cast(
            IO[bytes],
            igzip.IGzipFile(  # type: ignore[no-untyped-call]
                filename="", mode="wb", fileobj=sink, compresslevel=GZIP_LEVEL, mtime=0
            ),
        )
    if compression == "zstd":
        # Single-threaded: the output must not depend on scheduling (reproducible digests).
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(
            cast(IO[bytes], sink), closefd=False
        )
    raise UsageError(f"unknown compression {compression!r}", fix="use gzip or zstd")


def _write_layer(
    sources: list[tuple[PurePosixPath, Path]], out: BinaryIO, compression: str, mtime: int
) -> tuple[HashingWriter, _TarSink]:
    blob = HashingWriter(out)
    compressor = _open_compressor(compression, blob)
    tar_sink = _TarSink(compressor)
    with ReproducibleTar(tar_sink, mtime) as tar:  # type: ignore[arg-type]
        for target, src in sources:
            if src.is_dir():
                tar.add_tree(src, target)
            else:
                tar.add_file(src, target)
    compressor.close()
    return blob, tar_sink


def build_layer(
    model_dir: Path,
    *,
    config_files: list[Path],
    compression: str,
    mtime: int,
    cache_dir: Path,
) -> tuple[str, int, LayerBlob]:
    """Build (or reuse) the model layer; return (model name, version, blob)."""
    name, version, version_dir = model_version_dir(model_dir)
    sources: list[tuple[PurePosixPath, Path]] = [
        (PurePosixPath("models", name, str(version)), version_dir)
    ]
    for config in sorted(config_files, key=lambda p: p.name):
        if not config.is_file():
            raise UsageError(
                f"serving config file {config} does not exist",
                fix="pass existing models.config/batching/monitoring files",
            )
        sources.append((CONFIG_DIR / config.name, config))
    key = _fingerprint(sources, compression, mtime)
    meta_path = cache_dir / f"{key}.json"
    blob_path = cache_dir / f"{key}.blob"
    if meta_path.is_file() and blob_path.is_file():
        meta = json.loads(meta_path.read_text())
        if blob_path.stat().st_size == meta["size"]:
            log.info("model layer unchanged (cache %s)", meta_path.name[:12])
            return (
                name,
                version,
                LayerBlob(path=blob_path, **{k: v for k, v in meta.items() if k != "path"}),
            )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(blob_path) as fh:
        blob, tar_sink = _write_layer(sources, fh, compression, mtime)
    layer = LayerBlob(
        path=blob_path,
        digest=f"sha256:{blob.sha256.hexdigest()}",
        size=blob.size,
        diff_id=f"sha256:{tar_sink.sha256.hexdigest()}",
        compression=compression,
        uncompressed_size=tar_sink.size,
    )
    meta = {k: v for k, v in asdict(layer).items() if k != "path"}
    write_text_atomic(meta_path, json.dumps(meta))
    log.info(
        "model layer %s: %d bytes (%d uncompressed)",
        layer.digest[:19],
        layer.size,
        layer.uncompressed_size,
    )
    return name, version, layer


def prune_cache(cache_dir: Path, keep: int = 8) -> None:
    """Keep the most recently used layers; the cache is an optimisation, never required."""
    metas = sorted(cache_dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for meta in metas[keep:]:
        for path in (meta, meta.with_suffix(".blob")):
            path.unlink(missing_ok=True)
