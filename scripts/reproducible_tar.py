"""Byte-for-byte reproducible tar streams.

Used for release archives (``package``) and image layers (``build``): entries
in sorted order, PAX format, fixed mtime (``SOURCE_DATE_EPOCH`` or 0), uid/gid 0,
empty user and group names, modes normalised to 0755 (directories and
executables) or 0644. Symlinks and special files are refused, so what is
archived is exactly the bytes of regular files. ``add_tree`` can merge in-memory
files (``package``'s warm-up records) into the tree's sorted order without touching
the source directory.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO

from scripts.errors import InvalidModelError


def _walk_sorted(root: Path) -> Iterator[Path]:
    for entry in sorted(root.iterdir(), key=lambda p: p.name.encode("utf-8")):
        yield entry
        if entry.is_dir() and not entry.is_symlink():
            yield from _walk_sorted(entry)


def _sort_key(parts: tuple[str, ...]) -> tuple[bytes, ...]:
    # Depth-first with siblings by name, as _walk_sorted visits them.
    return tuple(part.encode("utf-8") for part in parts)


def _refuse_special(path: Path) -> None:
    if path.is_symlink() or not (path.is_dir() or path.is_file()):
        raise InvalidModelError(
            f"{path} is a symlink or special file",
            cause="a SavedModel holds only regular files and directories",
            fix="replace the link with a copy of the file",
        )


class ReproducibleTar:
    """A streaming tar writer with normalised metadata; each directory is written once."""

    def __init__(self, fileobj: IO[bytes], mtime: int) -> None:
        # Closed by close()/__exit__: this object is the context manager.
        # 1 MiB records and copies: fewer, larger writes into the compressor.
        self._tar = tarfile.open(  # type: ignore[call-overload]  # noqa: SIM115
            fileobj=fileobj,
            mode="w|",
            format=tarfile.PAX_FORMAT,
            bufsize=1 << 20,
            copybufsize=1 << 20,
        )
        self._mtime = mtime
        self._dirs: set[PurePosixPath] = set()
        self.file_bytes = 0

    def _info(
        self, name: str, *, is_dir: bool, size: int = 0, executable: bool = False
    ) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        info.mode = 0o755 if (is_dir or executable) else 0o644
        info.size = size
        info.mtime = self._mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    def add_dir(self, name: PurePosixPath) -> None:
        """Write ``name`` (and any missing parents) as directory entries."""
        for directory in [*reversed(name.parents[:-1]), name]:
            if directory not in self._dirs:
                self._dirs.add(directory)
                self._tar.addfile(self._info(f"{directory}/", is_dir=True))

    def add_file(self, src: Path, target: PurePosixPath) -> None:
        _refuse_special(src)
        if target.parent != PurePosixPath("."):
            self.add_dir(target.parent)
        stat = src.stat()
        info = self._info(
            str(target), is_dir=False, size=stat.st_size, executable=bool(stat.st_mode & 0o111)
        )
        with src.open("rb") as fh:
            self._tar.addfile(info, fh)
        self.file_bytes += stat.st_size

    def add_bytes(self, data: bytes, target: PurePosixPath) -> None:
        """Write ``data`` as the regular file ``target`` (mode 0644)."""
        if target.parent != PurePosixPath("."):
            self.add_dir(target.parent)
        self._tar.addfile(self._info(str(target), is_dir=False, size=len(data)), io.BytesIO(data))
        self.file_bytes += len(data)

    def add_tree(
        self,
        src: Path,
        prefix: PurePosixPath,
        extra: Mapping[PurePosixPath, bytes] | None = None,
    ) -> None:
        """Add the contents of directory ``src`` under ``prefix``.

        ``extra`` maps paths relative to ``src`` to in-memory file contents, written in
        their sorted place among the tree's entries (missing parent directories
        included), as if they were in ``src``. A path that already exists in ``src`` is
        refused (InvalidModelError): nothing in the tree is ever replaced.
        """
        self.add_dir(prefix)
        entries: list[tuple[tuple[bytes, ...], Path | bytes | None]] = []
        for path in _walk_sorted(src):
            _refuse_special(path)
            rel = path.relative_to(src).parts
            entries.append((_sort_key(rel), None if path.is_dir() else path))
        if extra:
            is_dir = {key: source is None for key, source in entries}
            for rel_path, data in extra.items():
                key = _sort_key(rel_path.parts)
                clash = next(
                    (key[:d] for d in range(1, len(key)) if is_dir.get(key[:d]) is False),
                    key if key in is_dir else None,
                )
                if clash is not None:
                    raise InvalidModelError(
                        f"{src.joinpath(*(p.decode() for p in clash))} is in the way of "
                        f"{rel_path}, which the packager adds",
                        cause="the model ships a file where the packager writes one",
                        fix="remove it from the model directory, or turn the generated file off",
                    )
                for depth in range(1, len(key)):  # parents not in the tree become dirs
                    if key[:depth] not in is_dir:
                        is_dir[key[:depth]] = True
                        entries.append((key[:depth], None))
                is_dir[key] = False
                entries.append((key, data))
            entries.sort(key=lambda entry: entry[0])
        for key, source in entries:
            target = prefix.joinpath(*(part.decode("utf-8") for part in key))
            if source is None:
                self.add_dir(target)
            elif isinstance(source, bytes):
                self.add_bytes(source, target)
            else:
                self.add_file(source, target)

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> ReproducibleTar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
