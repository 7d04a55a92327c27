"""The hostile-archive corpus: one archive per rejection rule, each fetched for real.

Every case must: exit with the unsafe-archive code (12), name the offending
member, write nothing outside --dest, and leave --dest exactly as it was.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.artifact.extract import ExtractLimits, safe_extract
from scripts.errors import UnsafeArchiveError
from tests.conftest import CLIResult, tree_snapshot
from tests.fakes.savedmodel_factory import write_saved_model

Member = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes = b"x") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def _valid_members(tmp: Path) -> list[Member]:
    model = write_saved_model(tmp / "m" / "digits" / "1")
    members: list[Member] = []
    for path in sorted(model.rglob("*")):
        if path.is_file():
            members.append(
                _file(f"digits/1/{path.relative_to(model).as_posix()}", path.read_bytes())
            )
    return members


def _write_tar(path: Path, members: list[Member], *, compress: bool = True) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buffer.getvalue()
    path.write_bytes(gzip.compress(raw, mtime=0) if compress else raw)
    return path


# name → (members to add after a valid model, text the error must contain)
HOSTILE: dict[str, tuple[Callable[[], list[Member]], str]] = {
    "absolute-path": (lambda: [_file("/tmp/evil-absolute")], "'/tmp/evil-absolute'"),
    "dotdot": (lambda: [_file("digits/1/../../../evil-dotdot")], "evil-dotdot"),
    "symlink": (
        lambda: [_special("digits/1/link", tarfile.SYMTYPE, "/etc/passwd")],
        "digits/1/link",
    ),
    "hardlink": (
        lambda: [_special("digits/1/hard", tarfile.LNKTYPE, "digits/1/saved_model.pb")],
        "digits/1/hard",
    ),
    "char-device": (lambda: [_special("digits/1/tty", tarfile.CHRTYPE)], "digits/1/tty"),
    "block-device": (lambda: [_special("digits/1/sda", tarfile.BLKTYPE)], "digits/1/sda"),
    "fifo": (lambda: [_special("digits/1/pipe", tarfile.FIFOTYPE)], "digits/1/pipe"),
    "duplicate": (
        lambda: [_file("digits/1/saved_model.pb", b"second copy")],
        "digits/1/saved_model.pb",
    ),
    "backslash": (lambda: [_file("digits\\..\\..\\evil")], "evil"),
}


@pytest.fixture
def fetch_into(cli: Callable[..., CLIResult], tmp_path: Path) -> Callable[..., CLIResult]:
    def run(archive: Path, *extra: str) -> CLIResult:
        return cli("fetch", archive, "--dest", tmp_path / "outside" / "dest", "--json", *extra)

    return run


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_member_is_rejected_and_nothing_is_written(
    case: str, tmp_path: Path, fetch_into: Callable[..., CLIResult]
) -> None:
    extra, expected_text = HOSTILE[case]
    archive = _write_tar(tmp_path / "digits-1.tar.gz", _valid_members(tmp_path) + extra())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched")
    before = tree_snapshot(outside)

    result = fetch_into(archive)

    assert result.exit_code == 12, result.stderr
    error = result.json()["error"]
    assert isinstance(error, dict)
    assert error["kind"] == "unsafe-archive"
    assert expected_text in str(error["message"])
    assert tree_snapshot(outside) == before
    assert not Path("/tmp/evil-absolute").exists()
    assert not any(p.name.startswith("evil") for p in tmp_path.rglob("*"))


def test_failed_fetch_leaves_an_existing_dest_as_it_was(
    tmp_path: Path, fetch_into: Callable[..., CLIResult]
) -> None:
    dest = tmp_path / "outside" / "dest"
    (dest / "other" / "3").mkdir(parents=True)
    (dest / "other" / "3" / "saved_model.pb").write_bytes(b"keep")
    before = tree_snapshot(dest)
    archive = _write_tar(
        tmp_path / "digits-1.tar.gz",
        [*_valid_members(tmp_path), _special("digits/1/l", tarfile.SYMTYPE, "x")],
    )
    assert fetch_into(archive).exit_code == 12
    assert tree_snapshot(dest) == before


def test_truncated_gzip_is_reported_as_corrupt(
    tmp_path: Path, fetch_into: Callable[..., CLIResult]
) -> None:
    good = _write_tar(tmp_path / "good.tar.gz", _valid_members(tmp_path))
    truncated = tmp_path / "digits-1.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    result = fetch_into(truncated)
    assert result.exit_code == 12
    assert "corrupt or truncated" in str(result.json()["error"])
    assert not (tmp_path / "outside").exists()


def test_random_bytes_are_not_an_archive(
    tmp_path: Path, fetch_into: Callable[..., CLIResult]
) -> None:
    junk = tmp_path / "digits-1.tar.gz"
    junk.write_bytes(bytes(range(256)) * 40)
    result = fetch_into(junk)
    assert result.exit_code == 12
    assert not (tmp_path / "outside").exists()


def test_decompression_bomb_is_stopped_by_the_expansion_ratio(
    tmp_path: Path, fetch_into: Callable[..., CLIResult]
) -> None:
    bomb = _write_tar(
        tmp_path / "digits-1.tar.gz",
        [*_valid_members(tmp_path), _file("digits/1/zeros.bin", b"\0" * (24 << 20))],
    )
    assert bomb.stat().st_size < 200_000  # ~1000x expansion
    result = fetch_into(bomb)
    assert result.exit_code == 12
    message = str(result.json()["error"])
    assert "digits/1/zeros.bin" in message and "decompression bomb" in message
    assert not (tmp_path / "outside").exists()


def test_per_file_limit_names_the_member(
    tmp_path: Path, fetch_into: Callable[..., CLIResult]
) -> None:
    archive = _write_tar(
        tmp_path / "digits-1.tar.gz",
        [*_valid_members(tmp_path), _file("digits/1/big.bin", b"1" * 5000)],
    )
    result = fetch_into(archive, "--max-file-bytes", "4096")
    assert result.exit_code == 12
    assert "digits/1/big.bin" in str(result.json()["error"])


def test_total_limit_names_the_member_that_crosses_it(tmp_path: Path) -> None:
    archive = _write_tar(tmp_path / "a.tar.gz", [_file("a", b"1" * 3000), _file("b", b"2" * 3000)])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchiveError, match=r"'b'.*total limit"):
        safe_extract(archive, out, ExtractLimits(max_total_bytes=5000))


def test_member_count_limit(tmp_path: Path) -> None:
    archive = _write_tar(tmp_path / "a.tar.gz", [_file(f"f{i}") for i in range(5)])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchiveError, match=r"'f3'.*members"):
        safe_extract(archive, out, ExtractLimits(max_members=3))


def test_plain_tar_and_modes_are_normalised(tmp_path: Path) -> None:
    info, data = _file("digits/1/run.sh", b"#!/bin/sh\n")
    info.mode = 0o4777  # setuid + world-writable must not survive
    archive = _write_tar(
        tmp_path / "a.tar", [(info, data), _file("digits/1/data", b"d")], compress=False
    )
    out = tmp_path / "out"
    out.mkdir()
    report = safe_extract(archive, out)
    assert report.files == 2
    assert (out / "digits/1/run.sh").stat().st_mode & 0o7777 == 0o755
    assert (out / "digits/1/data").stat().st_mode & 0o7777 == 0o644


def test_empty_archive_is_rejected(tmp_path: Path) -> None:
    archive = _write_tar(tmp_path / "a.tar.gz", [])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchiveError, match="no files"):
        safe_extract(archive, out)
