"""Release packaging: deterministic archives that fetch reads back."""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CLIResult
from tests.fakes.savedmodel_factory import write_saved_model


def _package(cli: Callable[..., CLIResult], src: Path, out: Path) -> dict[str, object]:
    result = cli("package", src, "--name", "digits", "--version", "1", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    return result.json()


def test_same_input_gives_byte_identical_archives(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    first = write_saved_model(tmp_path / "a" / "1", weights=os.urandom(300_000))
    # A copy made in another order, with other mtimes and modes, must archive identically.
    second = tmp_path / "b" / "1"
    (second / "variables").mkdir(parents=True)
    for rel in [
        "variables/variables.data-00000-of-00001",
        "variables/variables.index",
        "saved_model.pb",
    ]:
        (second / rel).write_bytes((first / rel).read_bytes())
        os.utime(second / rel, (1_000_000, 1_000_000))
    (second / "saved_model.pb").chmod(0o600)

    one = _package(cli, first, tmp_path / "out1")
    two = _package(cli, second, tmp_path / "out2")

    a = Path(str(one["path"])).read_bytes()
    b = Path(str(two["path"])).read_bytes()
    assert a == b
    assert one["sha256"] == hashlib.sha256(a).hexdigest() == two["sha256"]
    assert one["size"] == len(a)
    sha_file = Path(str(one["sha256_file"])).read_text()
    assert sha_file == f"{one['sha256']}  digits-1.tar.gz\n"


def test_archive_metadata_is_normalised(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    src = write_saved_model(tmp_path / "m" / "1")
    out = _package(cli, src, tmp_path / "out")
    raw = Path(str(out["path"])).read_bytes()
    assert raw[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"
    assert not raw[3] & 0x08, "gzip header must not carry a file name"
    with tarfile.open(fileobj=gzip.open(Path(str(out["path"]))), mode="r:") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names[0:2] == ["digits", "digits/1"]
    assert "digits/1/saved_model.pb" in names
    assert names == sorted(names, key=lambda n: n.split("/"))
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
        assert m.mode in (0o644, 0o755)


def test_package_then_fetch_round_trips(
    cli: Callable[..., CLIResult], packaged: dict[str, object], tmp_path: Path
) -> None:
    result = cli(
        "fetch",
        str(packaged["path"]),
        "--dest",
        tmp_path / "dest",
        "--sha256",
        str(packaged["sha256"]),
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["model_name"] == "digits"
    assert data["version"] == 1
    assert data["path"] == str(tmp_path / "dest" / "digits")
    assert (tmp_path / "dest" / "digits" / "1" / "saved_model.pb").is_file()
    sigs = data["signatures"]
    assert isinstance(sigs, dict)
    assert sigs["serving_default"]["inputs"]["pixels"] == {
        "name": "serving_default_pixels:0",
        "dtype": "float",
        "shape": [-1, 8, 8],
    }


def test_missing_signature_is_refused_before_writing(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    src = write_saved_model(tmp_path / "m" / "1", signatures={"predict": ({}, {})})
    result = cli(
        "package", src, "--name", "digits", "--version", "1", "--out", tmp_path / "out", "--json"
    )
    assert result.exit_code == 13
    assert "serving_default" in str(result.json()["error"])
    assert not (tmp_path / "out").exists()


def test_symlink_in_model_is_refused(cli: Callable[..., CLIResult], tmp_path: Path) -> None:
    src = write_saved_model(tmp_path / "m" / "1")
    (src / "assets").mkdir()
    (src / "assets" / "vocab.txt").symlink_to("/etc/hostname")
    result = cli("package", src, "--name", "digits", "--version", "1", "--out", tmp_path / "o")
    assert result.exit_code == 13
    assert "symlink" in result.stderr
    assert list((tmp_path / "o").glob("*.tar.gz")) == []


def test_bad_name_and_version_are_usage_errors(
    cli: Callable[..., CLIResult], model_dir: Path, tmp_path: Path
) -> None:
    bad_name = cli("package", model_dir, "--name", "Digits!", "--version", "1", "--out", tmp_path)
    assert bad_name.exit_code == 2
    bad_version = cli("package", model_dir, "--name", "d", "--version", "0", "--out", tmp_path)
    assert bad_version.exit_code == 2
