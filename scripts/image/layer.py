"""The model layer: ``/models/NAME/VERSION/…`` (+ optional TF Serving config files).

One streaming pass: reproducible tar → sha256 (the diff_id) → compression
(isal gzip, mtime 0; or zstd) → sha256 (the blob digest) → a spool file on disk.
Nothing holds the layer in memory.

Built layers are cached by a fingerprint of the inputs' paths, sizes, modes,
inodes and mtimes (as git's index does), so rebuilding an unchanged model
costs a few ``stat`` calls instead of re-compressing hundreds of MB.
"""

from __future__ import annotations

import functools
import hashlib
import json
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import zstandard
from isal import isal_zlib

from scripts.atomic import atomic_path, write_text_atomic
from scripts.errors import InvalidModelError, UsageError
from scripts.log import log
from scripts.reproducible_tar import ReproducibleTar

CACHE_FORMAT = 2
GZIP_LEVEL = 2  # isal's default: weights barely compress (~0.9 at any level); 2 is fastest
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


class _LayerWriter:
    """What tarfile writes into: a three-stage pipeline over 1 MiB pieces.

    This thread compresses; one worker hashes the uncompressed stream (the
    diff_id), another hashes the compressed stream and writes it to disk, then
    reports how many bytes are on disk (a streaming upload follows that). hashlib
    and file writes release the GIL, so the three overlap on two cores; the
    compressor runs on one thread, so its output never depends on scheduling.
    """

    def __init__(
        self, out: BinaryIO, compression: str, progress: Callable[[int], None] | None
    ) -> None:
        self._out = out
        self._progress = progress
        if compression == "gzip":
            # gzip wrapper (wbits 31) with zlib's fixed header: mtime 0, no file name.
            self._compress: Any = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)
        elif compression == "zstd":
            self._compress = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
        else:
            raise UsageError(f"unknown compression {compression!r}", fix="use gzip or zstd")
        self.diff = hashlib.sha256()
        self.blob = hashlib.sha256()
        self.raw_size = 0
        self.size = 0
        self._diff_q: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
        self._blob_q: queue.Queue[bytes | None] = queue.Queue(maxsize=32)
        self._errors: list[BaseException] = []
        self._workers = [
            threading.Thread(target=self._run, args=(self._diff_q, self._hash_raw), daemon=True),
            threading.Thread(target=self._run, args=(self._blob_q, self._store), daemon=True),
        ]
        for worker in self._workers:
            worker.start()

    def _run(self, q: queue.Queue[bytes | None], handle: Callable[[bytes], None]) -> None:
        while (item := q.get()) is not None:
            if not self._errors:
                try:
                    handle(item)
                except BaseException as exc:  # noqa: BLE001 - re-raised in close()
                    self._errors.append(exc)

    def _hash_raw(self, data: bytes) -> None:
        self.diff.update(data)

    def _store(self, data: bytes) -> None:
        self.blob.update(data)
        self._out.write(data)
        self.size += len(data)
        if self._progress is not None:
            self._out.flush()
            self._progress(self.size)

    def write(self, data: bytes) -> int:
        data = bytes(data)
        self.raw_size += len(data)
        self._diff_q.put(data)
        if out := self._compress.compress(data):
            self._blob_q.put(out)
        return len(data)

    def flush(self) -> None:  # tarfile may call it; the compressor is flushed in close()
        pass

    def close(self) -> None:
        self._blob_q.put(self._compress.flush())
        self._diff_q.put(None)
        self._blob_q.put(None)
        for worker in self._workers:
            worker.join()
        if self._errors:
            raise self._errors[0]


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


def _write_layer(
    sources: list[tuple[PurePosixPath, Path]],
    out: BinaryIO,
    compression: str,
    mtime: int,
    progress: Callable[[int], None] | None,
) -> _LayerWriter:
    writer = _LayerWriter(out, compression, progress)
    try:
        with ReproducibleTar(writer, mtime) as tar:  # type: ignore[arg-type]
            for target, src in sources:
                if src.is_dir():
                    tar.add_tree(src, target)
                else:
                    tar.add_file(src, target)
    finally:
        writer.close()
    return writer


@dataclass(frozen=True)
class LayerPlan:
    """What the layer will hold, and whether the cache already has it."""

    name: str
    version: int
    sources: list[tuple[PurePosixPath, Path]]
    compression: str
    mtime: int
    blob_path: Path
    meta_path: Path
    cached: LayerBlob | None


def plan_layer(
    model_dir: Path, *, config_files: list[Path], compression: str, mtime: int, cache_dir: Path
) -> LayerPlan:
    """Validate the inputs and look the layer up in the cache (a few ``stat`` calls)."""
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
    cached = None
    if meta_path.is_file() and blob_path.is_file():
        meta = json.loads(meta_path.read_text())
        if blob_path.stat().st_size == meta["size"]:
            log.info("model layer unchanged (cache %s)", meta_path.name[:12])
            cached = LayerBlob(path=blob_path, **{k: v for k, v in meta.items() if k != "path"})
    return LayerPlan(name, version, sources, compression, mtime, blob_path, meta_path, cached)


def write_layer(plan: LayerPlan, progress: Callable[[Path, int], None] | None = None) -> LayerBlob:
    """Write the layer into the cache; ``progress(path, bytes_on_disk)`` follows the spool."""
    if plan.cached is not None:
        return plan.cached
    plan.blob_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(plan.blob_path) as tmp, tmp.open("wb") as fh:
        report = functools.partial(progress, tmp) if progress is not None else None
        writer = _write_layer(plan.sources, fh, plan.compression, plan.mtime, report)
    layer = LayerBlob(
        path=plan.blob_path,
        digest=f"sha256:{writer.blob.hexdigest()}",
        size=writer.size,
        diff_id=f"sha256:{writer.diff.hexdigest()}",
        compression=plan.compression,
        uncompressed_size=writer.raw_size,
    )
    meta = {k: v for k, v in asdict(layer).items() if k != "path"}
    write_text_atomic(plan.meta_path, json.dumps(meta))
    log.info(
        "model layer %s: %d bytes (%d uncompressed)",
        layer.digest[:19],
        layer.size,
        layer.uncompressed_size,
    )
    return layer


def prune_cache(cache_dir: Path, keep: int = 8) -> None:
    """Keep the most recently used layers; the cache is an optimisation, never required."""
    metas = sorted(cache_dir.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for meta in metas[keep:]:
        for path in (meta, meta.with_suffix(".blob")):
            path.unlink(missing_ok=True)
