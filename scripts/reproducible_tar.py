"""Byte-for-byte reproducible tar streams of a directory tree.

Used for release archives (``package``) and image layers (``build``): entries
sorted by path, PAX format, fixed mtime (``SOURCE_DATE_EPOCH`` or 0), uid/gid 0,
empty user and group names, modes normalised to 0755 (directories and
executables) or 0644. Symlinks and special files are refused, so what is
archived is exactly the bytes of regular files.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from scripts.errors import InvalidModelError


def _walk_sorted(root: Path) -> Iterator[Path]:
    entries = sorted(root.iterdir(), key=lambda p: p.name.encode("utf-8"))
    for entry in entries:
        yield entry
        if entry.is_dir() and not entry.is_symlink():
            yield from _walk_sorted(entry)


def _info(name: str, *, is_dir: bool, size: int, executable: bool, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    info.mode = 0o755 if (is_dir or executable) else 0o644
    info.size = 0 if is_dir else size
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def add_tree(tar: tarfile.TarFile, src: Path, prefix: PurePosixPath, mtime: int) -> int:
    """Add ``src`` under ``prefix`` (its parent directories included); return file bytes."""
    total = 0
    parents = [*list(reversed(prefix.parents))[1:], prefix]  # skip the "." root
    for parent in parents:
        tar.addfile(_info(f"{parent}/", is_dir=True, size=0, executable=False, mtime=mtime))
    for path in _walk_sorted(src):
        rel = path.relative_to(src).as_posix()
        name = f"{prefix}/{rel}"
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            raise InvalidModelError(
                f"{path} is a symlink or special file",
                cause="a SavedModel holds only regular files and directories",
                fix="replace the link with a copy of the file",
            )
        if path.is_dir():
            tar.addfile(_info(f"{name}/", is_dir=True, size=0, executable=False, mtime=mtime))
            continue
        stat = path.stat()
        info = _info(
            name,
            is_dir=False,
            size=stat.st_size,
            executable=bool(stat.st_mode & 0o111),
            mtime=mtime,
        )
        with path.open("rb") as fh:
            tar.addfile(info, fh)
        total += stat.st_size
    return total


def open_writer(fileobj: IO[bytes]) -> tarfile.TarFile:
    return tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT)
