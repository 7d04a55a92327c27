"""Atomic files and staging directories: nothing is ever left half-written.

A file is written under a temporary name in its final directory, flushed, and
renamed over the final name only when complete (``os.replace`` is atomic on
one filesystem). A staging directory is removed whatever happens inside it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; it becomes ``final`` if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.chmod(0o644)
        tmp.replace(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[BinaryIO]:
    """Yield a binary file that appears at ``final`` only if the block succeeds."""
    with atomic_path(final) as tmp, tmp.open("wb") as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def write_text_atomic(final: Path, text: str) -> None:
    with atomic_file(final) as fh:
        fh.write(text.encode("utf-8"))


@contextlib.contextmanager
def staging_dir(parent: Path, label: str) -> Iterator[Path]:
    """A private working directory inside ``parent``, always removed afterwards."""
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / f".{label}-{secrets.token_hex(4)}.tmp"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def move_dir_into_place(src: Path, final: Path) -> None:
    """Rename a finished directory to its final name (same filesystem, atomic)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    src.rename(final)


def remove_if_empty(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()
