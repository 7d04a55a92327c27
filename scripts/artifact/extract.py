"""Safe extraction of model archives (tar, tar.gz, tar.zst).

Each member is checked before a byte of it is written. Rejected: absolute
paths, ``..`` components, symlinks and hardlinks, device and FIFO entries,
duplicate names, members over the per-file limit, archives over the total
limit or whose expansion ratio betrays a decompression bomb. Files are written
with fixed modes (0644/0755 for dirs); owners and times from the archive are
ignored. The caller extracts into a staging directory and moves it into place.

Written on top of :mod:`tarfile` rather than ``extractall(filter="data")``:
the data filter allows in-tree links and duplicates, and has no size limits.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, cast

from isal import igzip
from zstandard import ZstdDecompressor, ZstdError

from scripts.errors import UnsafeArchiveError

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
# Below this many bytes out, the ratio check is meaningless (tiny files compress well).
_RATIO_FLOOR_BYTES = 8 << 20


@dataclass(frozen=True)
class ExtractLimits:
    max_file_bytes: int = 8 << 30
    max_total_bytes: int = 32 << 30
    max_members: int = 100_000
    max_expansion_ratio: float = 200.0


@dataclass(frozen=True)
class ExtractReport:
    files: int
    dirs: int
    total_bytes: int
    compressed_bytes: int


def _reject(archive: Path, member: str, rule: str, fix: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"unsafe archive {archive.name}: member {member!r} {rule}",
        cause="the archive was not made by `python -m scripts package`, or was tampered with",
        fix=fix,
    )


def _corrupt(archive: Path, exc: BaseException) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"archive {archive.name} is corrupt or truncated: {exc}",
        cause="an interrupted upload or download, or not a tar/tar.gz/tar.zst file",
        fix="re-upload or re-download the archive and check its sha256",
    )


def _safe_relpath(archive: Path, name: str) -> PurePosixPath:
    if "\x00" in name or "\\" in name:
        raise _reject(
            archive,
            name,
            "has a NUL or backslash in its name",
            "rebuild the archive with plain POSIX names",
        )
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _reject(
            archive,
            name,
            "has an absolute path",
            "rebuild the archive with paths relative to its root",
        )
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise _reject(
            archive,
            name,
            "escapes the destination with '..'",
            "rebuild the archive without '..' in member names",
        )
    if not parts:
        raise _reject(archive, name, "has an empty name", "rebuild the archive")
    return PurePosixPath(*parts)


class _CountingReader(io.RawIOBase):
    """Counts compressed bytes read, for the expansion-ratio check."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.count += n
        return n


def _open_decompressed(raw: io.BufferedReader[Any]) -> IO[bytes]:
    head = raw.peek(4)[:4]
    if head.startswith(_GZIP_MAGIC):
        return cast(IO[bytes], igzip.IGzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]
    if head == _ZSTD_MAGIC:
        return ZstdDecompressor().stream_reader(raw)
    return raw


def safe_extract(
    archive: Path,
    out: Path,
    limits: ExtractLimits | None = None,
    *,
    include: Callable[[PurePosixPath], bool] | None = None,
    allow_links: bool = False,
) -> ExtractReport:
    """Extract ``archive`` into the existing empty directory ``out`` under ``limits``.

    ``include`` selects members by path (the rest are skipped, still checked);
    ``allow_links`` skips links instead of rejecting them (image base layers hold
    many; a model archive must not).

    Raises UnsafeArchiveError naming the offending member, or describing the
    corruption (truncated gzip, bad tar header).
    """
    limits = limits or ExtractLimits()
    compressed_size = archive.stat().st_size
    seen: set[PurePosixPath] = set()
    files = dirs = 0
    total = 0
    with archive.open("rb") as raw_file:
        counter = _CountingReader(raw_file)
        buffered = io.BufferedReader(counter, buffer_size=_CHUNK)
        try:
            stream = _open_decompressed(buffered)
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    rel = _safe_relpath(archive, member.name)
                    if include is not None and not include(rel):
                        continue
                    if allow_links and (member.issym() or member.islnk()):
                        continue
                    if rel in seen:
                        raise _reject(
                            archive,
                            member.name,
                            "appears twice",
                            "rebuild the archive with each path once",
                        )
                    seen.add(rel)
                    if len(seen) > limits.max_members:
                        raise _reject(
                            archive,
                            member.name,
                            f"exceeds the limit of {limits.max_members} members",
                            "split the archive or raise --max-members",
                        )
                    if member.issym() or member.islnk():
                        raise _reject(
                            archive,
                            member.name,
                            f"is a {'symlink' if member.issym() else 'hardlink'} "
                            f"(to {member.linkname!r})",
                            "replace links with real files in the SavedModel",
                        )
                    if member.ischr() or member.isblk() or member.isfifo():
                        raise _reject(
                            archive,
                            member.name,
                            "is a device or FIFO entry",
                            "a SavedModel holds only files and directories",
                        )
                    target = out.joinpath(*rel.parts)
                    if member.isdir():
                        target.mkdir(mode=0o755, parents=True, exist_ok=True)
                        dirs += 1
                        continue
                    if not member.isreg():
                        raise _reject(
                            archive,
                            member.name,
                            f"has unsupported tar type {member.type!r}",
                            "a SavedModel holds only files and directories",
                        )
                    if member.size > limits.max_file_bytes:
                        raise _reject(
                            archive,
                            member.name,
                            f"is {member.size} bytes, over the per-file limit of "
                            f"{limits.max_file_bytes}",
                            "raise --max-file-bytes if this model is really that big",
                        )
                    if total + member.size > limits.max_total_bytes:
                        raise _reject(
                            archive,
                            member.name,
                            f"takes the archive over the total limit of "
                            f"{limits.max_total_bytes} bytes",
                            "raise --max-total-bytes if this model is really that big",
                        )
                    source = tar.extractfile(member)
                    if source is None:  # pragma: no cover - isreg() guarantees a file
                        raise _reject(archive, member.name, "cannot be read", "rebuild it")
                    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    mode = 0o755 if member.mode & 0o111 else 0o644
                    with target.open("xb") as dest:
                        while chunk := source.read(_CHUNK):
                            dest.write(chunk)
                            total += len(chunk)
                            if (
                                total > _RATIO_FLOOR_BYTES
                                and total > limits.max_expansion_ratio * max(counter.count, 1)
                            ):
                                raise _reject(
                                    archive,
                                    member.name,
                                    f"expands past {limits.max_expansion_ratio:.0f}x the "
                                    "compressed size (decompression bomb?)",
                                    "do not extract this archive; raise "
                                    "--max-expansion-ratio only if you trust it",
                                )
                    target.chmod(mode)
                    files += 1
        except UnsafeArchiveError:
            raise
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            raise _reject(
                archive,
                str(exc.filename),
                "collides with another member",
                "rebuild the archive with each path once",
            ) from exc
        except OSError as exc:
            if exc.errno is not None:  # a real I/O failure (disk full...), not bad data
                raise
            raise _corrupt(archive, exc) from exc
        except (tarfile.TarError, EOFError, zlib.error, ZstdError, ValueError) as exc:
            raise _corrupt(archive, exc) from exc
    if files == 0 and include is None:
        raise UnsafeArchiveError(
            f"archive {archive.name} contains no files",
            cause="an empty or wrongly built archive",
            fix="build it with `python -m scripts package`",
        )
    return ExtractReport(
        files=files, dirs=dirs, total_bytes=total, compressed_bytes=compressed_size
    )
