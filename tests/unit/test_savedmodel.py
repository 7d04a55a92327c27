"""SavedModel inspection and layout normalisation, without TensorFlow."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.artifact.savedmodel import locate_model, read_signatures
from scripts.errors import InvalidModelError
from tests.conftest import CLIResult
from tests.fakes.savedmodel_factory import write_saved_model


def test_signatures_report_names_dtypes_and_shapes(tmp_path: Path) -> None:
    version = write_saved_model(
        tmp_path / "1",
        signatures={
            "serving_default": (
                {"image_bytes": ("string", [-1])},
                {"probabilities": ("float", [-1, 1000])},
            ),
            "predict_images": (
                {"images": ("float", [-1, 224, 224, 3])},
                {"class_id": ("int64", [-1])},
            ),
        },
    )
    sigs = read_signatures(version)
    assert sorted(sigs) == ["predict_images", "serving_default"]
    assert sigs["serving_default"].inputs["image_bytes"].dtype == "string"
    assert sigs["predict_images"].inputs["images"].shape == [-1, 224, 224, 3]
    assert sigs["predict_images"].outputs["class_id"].dtype == "int64"


def test_missing_serve_tag_is_invalid(tmp_path: Path) -> None:
    version = write_saved_model(tmp_path / "1", tags=("train",))
    with pytest.raises(InvalidModelError, match=r"no meta graph tagged 'serve'.*train"):
        read_signatures(version)


def test_garbage_saved_model_pb_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xff\xff not a protobuf")
    with pytest.raises(InvalidModelError, match="not a valid SavedModel"):
        read_signatures(tmp_path)


@pytest.mark.parametrize(
    ("root", "name", "version", "expected"),
    [
        ("digits/3", None, None, ("digits", 3)),  # model dir at the root
        ("3", "digits", None, ("digits", 3)),  # version dir at the root
        ("", "digits", 4, ("digits", 4)),  # bare SavedModel
        ("export", "digits", 5, ("digits", 5)),  # bare SavedModel in one wrapping dir
    ],
)
def test_accepted_archive_roots(
    tmp_path: Path, root: str, name: str | None, version: int | None, expected: tuple[str, int]
) -> None:
    write_saved_model(tmp_path / root if root else tmp_path)
    layout = locate_model(tmp_path, name, version)
    assert (layout.name, layout.version) == expected


def test_layout_conflicting_with_flags_is_an_error(tmp_path: Path) -> None:
    write_saved_model(tmp_path / "digits" / "3")
    with pytest.raises(InvalidModelError, match="says model version 3"):
        locate_model(tmp_path, None, 4)


def test_bare_model_without_name_asks_for_flags(tmp_path: Path) -> None:
    write_saved_model(tmp_path)
    with pytest.raises(InvalidModelError, match="pass --name and --version"):
        locate_model(tmp_path, None, None)


def test_two_models_in_one_archive_are_refused(tmp_path: Path) -> None:
    write_saved_model(tmp_path / "digits" / "1")
    write_saved_model(tmp_path / "digits" / "2")
    with pytest.raises(InvalidModelError, match="2 SavedModels"):
        locate_model(tmp_path, None, None)


def _tar_of(src: Path, archive: Path) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=path.relative_to(src).as_posix(), recursive=False)
    archive.write_bytes(buffer.getvalue())
    return archive


def test_fetch_normalises_a_bare_model_to_serving_layout(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    bare = write_saved_model(tmp_path / "bare")
    archive = _tar_of(bare, tmp_path / "mnist-7.tar")
    result = cli("fetch", archive, "--dest", tmp_path / "dest", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert (data["model_name"], data["version"]) == ("mnist", 7)
    assert (tmp_path / "dest" / "mnist" / "7" / "saved_model.pb").is_file()


def test_fetch_rejects_model_without_requested_signature(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    model = write_saved_model(tmp_path / "src" / "digits" / "1")
    archive = _tar_of(tmp_path / "src", tmp_path / "digits-1.tar")
    assert model.exists()
    result = cli("fetch", archive, "--dest", tmp_path / "dest", "--signature", "classify", "--json")
    assert result.exit_code == 13
    assert "no signature 'classify'" in str(result.json()["error"])
    assert not (tmp_path / "dest").exists()


def test_refetch_is_a_noop_and_a_different_archive_conflicts(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    write_saved_model(tmp_path / "src" / "digits" / "1")
    archive = _tar_of(tmp_path / "src", tmp_path / "a.tar")
    dest = tmp_path / "dest"
    assert cli("fetch", archive, "--dest", dest).exit_code == 0
    again = cli("fetch", archive, "--dest", dest, "--json")
    assert again.exit_code == 0 and again.json()["reused"] is True

    write_saved_model(tmp_path / "src2" / "digits" / "1", weights=b"\x01" * 2048)
    other = _tar_of(tmp_path / "src2", tmp_path / "b.tar")
    conflict = cli("fetch", other, "--dest", dest, "--json")
    assert conflict.exit_code == 17
    assert (
        dest / "digits" / "1" / "variables" / "variables.data-00000-of-00001"
    ).read_bytes() == b"\x00" * 1024
