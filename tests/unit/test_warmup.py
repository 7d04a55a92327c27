"""Warm-up records: TFRecord framing, and what ``package`` puts in the archive (no TensorFlow).

The records are parsed back with TensorFlow's own reader and TF Serving's real
``PredictionLog`` in tests/integration/test_warmup.py; here they are read with this
project's reader and message declarations, in milliseconds.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tensorboard.util import tensor_util

from scripts import tfrecord
from scripts.config import MODELS_DIR
from scripts.warmup import messages
from tests.conftest import CLIResult, run_without_tensorflow, tree_snapshot
from tests.fakes.savedmodel_factory import write_saved_model

MEMBER = "digits/1/assets.extra/tf_serving_warmup_requests"
DIGITS_YAML = MODELS_DIR / "digits" / "model.yaml"


# -- framing -----------------------------------------------------------------------------------
def test_an_empty_record_has_the_documented_bytes() -> None:
    # length 0, masked crc32c of 8 zero bytes, no data, masked crc32c of b"" (crc 0 → the
    # mask delta alone): the bytes TensorFlow writes for an empty record.
    framed = tfrecord.frame(b"")
    assert framed[:8] == b"\0" * 8
    assert framed[12:] == struct.pack("<I", 0xA282EAD8)
    # crc32c("123456789") is the standard check value 0xE3069283; masked by hand:
    crc = 0xE3069283
    assert tfrecord.masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % (
        1 << 32
    )


def test_records_round_trip_through_the_reader() -> None:
    records = [b"", b"a", os.urandom(70_000), b"\x00" * 3]
    assert list(tfrecord.read_records(io.BytesIO(tfrecord.encode(records)))) == records


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (2, "corrupted record length"),  # inside the length
        (9, "corrupted record length"),  # inside the length's crc
        (14, "corrupted record data"),  # inside the data
        (-1, "corrupted record data"),  # inside the data's crc
    ],
)
def test_a_flipped_byte_is_caught_with_its_record_offset(position: int, expected: str) -> None:
    first = tfrecord.frame(b"first record")
    second = bytearray(tfrecord.frame(b"second record"))
    second[position] ^= 0x40
    stream = io.BytesIO(first + bytes(second))
    reader = tfrecord.read_records(stream)
    assert next(reader) == b"first record"
    with pytest.raises(tfrecord.TFRecordError, match=expected) as caught:
        next(reader)
    assert caught.value.offset == len(first)


@pytest.mark.parametrize("cut", [5, 12, 20, 1])
def test_a_truncated_file_is_caught(cut: int) -> None:
    data = tfrecord.encode([b"x" * 10])
    with pytest.raises(tfrecord.TFRecordError, match="truncated"):
        list(tfrecord.read_records(io.BytesIO(data[: len(data) - cut])))


# -- package -----------------------------------------------------------------------------------
def _package(cli: Callable[..., CLIResult], src: Path, out: Path, *args: str | Path) -> CLIResult:
    return cli("package", src, "--name", "digits", "--version", "1", "--out", out, "--json", *args)


def _members(archive: Path) -> dict[str, bytes | None]:
    """Archive member → its bytes (None for a directory), in archive order."""
    with tarfile.open(fileobj=gzip.open(archive), mode="r:") as tar:
        out: dict[str, bytes | None] = {}
        for member in tar:
            handle = tar.extractfile(member) if member.isfile() else None
            out[member.name] = handle.read() if handle else None
        return out


def _model_yaml(tmp_path: Path, **changes: Any) -> Path:
    """models/digits/model.yaml with top-level keys replaced (None: removed)."""
    data = yaml.safe_load(DIGITS_YAML.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _decoded(warmup_file: bytes) -> list[Any]:
    log_class = messages()["PredictionLog"]
    return [log_class.FromString(r) for r in tfrecord.read_records(io.BytesIO(warmup_file))]


def test_package_writes_warmup_records_into_the_archive_only(
    cli: Callable[..., CLIResult], model_dir: Path, tmp_path: Path
) -> None:
    before = {p: (model_dir / p).read_bytes() for p in tree_snapshot(model_dir) if "." in p}
    result = _package(cli, model_dir, tmp_path / "out")  # models/digits/model.yaml by default
    assert result.exit_code == 0, result.stderr
    warmup = result.json()["warmup"]
    assert warmup == {
        "source": "generated",
        "records": 1,
        "path": "assets.extra/tf_serving_warmup_requests",
        "note": "1 × sample_request as PredictionLog records",
    }
    members = _members(tmp_path / "out" / "digits-1.tar.gz")
    names = list(members)
    assert names[:4] == ["digits", "digits/1", "digits/1/assets.extra", MEMBER]
    assert names == sorted(names, key=lambda n: n.split("/"))
    logs = _decoded(members[MEMBER] or b"")
    assert len(logs) == 1
    sample = yaml.safe_load(DIGITS_YAML.read_text())["sample_request"]
    for log in logs:
        request = log.predict_log.request
        assert request.model_spec.name == "digits"
        assert request.model_spec.signature_name == "serving_default"
        pixels = tensor_util.make_ndarray(request.inputs["pixels"])
        assert pixels.dtype.name == "float32"
        assert pixels.tolist() == sample["instances"]
    # The SavedModel directory was read, never written.
    assert not (model_dir / "assets.extra").exists()
    assert {p: (model_dir / p).read_bytes() for p in before} == before


def test_an_archive_with_warmup_records_is_byte_reproducible(
    cli: Callable[..., CLIResult], tmp_path: Path
) -> None:
    first = write_saved_model(tmp_path / "a" / "1", weights=os.urandom(50_000))
    second = tmp_path / "b" / "1"
    (second / "variables").mkdir(parents=True)
    for rel in [
        "saved_model.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
    ]:
        (second / rel).write_bytes((first / rel).read_bytes())
        os.utime(second / rel, (2_000_000, 2_000_000))
    one = _package(cli, first, tmp_path / "o1")
    two = _package(cli, second, tmp_path / "o2")
    three = _package(cli, first, tmp_path / "o3", "--warmup-requests", "3")
    a, b, c = (Path(str(r.json()["path"])).read_bytes() for r in (one, two, three))
    assert a == b
    assert one.json()["sha256"] == two.json()["sha256"]
    assert a != c  # the records are part of the archive's bytes
    assert len(_decoded(_members(Path(str(three.json()["path"])))[MEMBER] or b"")) == 3


def test_a_model_that_ships_its_own_warmup_file_keeps_it(
    cli: Callable[..., CLIResult], model_dir: Path, tmp_path: Path
) -> None:
    own = tfrecord.encode([b"", b""])  # two empty PredictionLogs
    (model_dir / "assets.extra").mkdir()
    (model_dir / "assets.extra" / "tf_serving_warmup_requests").write_bytes(own)
    result = _package(cli, model_dir, tmp_path / "out", "--warmup-requests", "5")
    assert result.exit_code == 0, result.stderr
    warmup = result.json()["warmup"]
    assert (warmup["source"], warmup["records"]) == ("saved_model", 2)
    assert "kept as it is" in warmup["note"]
    assert _members(tmp_path / "out" / "digits-1.tar.gz")[MEMBER] == own
    assert "kept as it is" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (tfrecord.encode([b"ok"])[:-2], "not a valid TFRecord file: truncated"),
        (tfrecord.encode([b"\xff\xff"]), "is not a PredictionLog"),
        (tfrecord.encode([b""] * 1001), "holds 1001 records"),
    ],
)
def test_a_shipped_warmup_file_tf_serving_would_refuse_fails_packaging(
    cli: Callable[..., CLIResult], model_dir: Path, tmp_path: Path, content: bytes, expected: str
) -> None:
    (model_dir / "assets.extra").mkdir()
    (model_dir / "assets.extra" / "tf_serving_warmup_requests").write_bytes(content)
    result = _package(cli, model_dir, tmp_path / "out")
    assert result.exit_code == 13, result.stderr
    assert expected in result.json()["error"]["message"]
    assert not (tmp_path / "out").exists()


def test_assets_extra_as_a_file_is_refused(
    cli: Callable[..., CLIResult], model_dir: Path, tmp_path: Path
) -> None:
    (model_dir / "assets.extra").write_bytes(b"not a directory")
    result = _package(cli, model_dir, tmp_path / "out")
    assert result.exit_code == 13
    assert "assets.extra is in the way" in result.json()["error"]["message"]


@pytest.mark.parametrize(
    ("args", "changes", "note"),
    [
        (["--no-warmup"], {}, "turned off by --no-warmup"),
        ([], {"warmup": {"enabled": False}}, "warmup.enabled: false"),
        ([], {"sample_request": None}, "has no sample_request"),
    ],
)
def test_warmup_can_be_turned_off(
    cli: Callable[..., CLIResult],
    model_dir: Path,
    tmp_path: Path,
    args: list[str],
    changes: dict[str, Any],
    note: str,
) -> None:
    config = _model_yaml(tmp_path, **changes)
    result = _package(cli, model_dir, tmp_path / "out", "--model-config", config, *args)
    assert result.exit_code == 0, result.stderr
    warmup = result.json()["warmup"]
    assert (warmup["source"], warmup["records"], warmup["path"]) == ("none", 0, None)
    assert note in warmup["note"]
    assert not any("assets.extra" in n for n in _members(tmp_path / "out" / "digits-1.tar.gz"))


def test_model_yaml_sets_the_count_and_the_flag_overrides_it(
    cli: Callable[..., CLIResult], model_dir: Path, tmp_path: Path
) -> None:
    config = _model_yaml(tmp_path, warmup={"requests": 4})
    by_yaml = _package(cli, model_dir, tmp_path / "a", "--model-config", config)
    by_flag = _package(
        cli, model_dir, tmp_path / "b", "--model-config", config, "--warmup-requests", "2"
    )
    assert by_yaml.json()["warmup"]["records"] == 4
    assert by_flag.json()["warmup"]["records"] == 2
    assert len(_decoded(_members(tmp_path / "b" / "digits-1.tar.gz")[MEMBER] or b"")) == 2


def test_a_model_without_model_yaml_is_packaged_without_records(
    cli: Callable[..., CLIResult], model_dir: Path, tmp_path: Path
) -> None:
    result = cli(
        "package", model_dir, "--name", "nomodel", "--version", "1", "--out", tmp_path, "--json"
    )
    assert result.exit_code == 0, result.stderr
    warmup = result.json()["warmup"]
    assert warmup["source"] == "none"
    assert "no model.yaml" in warmup["note"] and "models/nomodel/model.yaml" in warmup["note"]


@pytest.mark.parametrize(
    ("warmup", "changes", "expected"),
    [
        ({"requests": 0}, {}, "warmup.requests: Input should be greater than or equal to 1"),
        ({"requests": 1001}, {}, "warmup.requests: Input should be less than or equal to 1000"),
        ({"count": 3}, {}, "warmup.count: Extra inputs are not permitted"),
        ({"enabled": "sometimes"}, {}, "warmup.enabled: Input should be a valid boolean"),
        (
            {"enabled": True},
            {"sample_request": None},
            "warmup is enabled but there is no sample_request",
        ),
    ],
)
def test_bad_warmup_settings_are_config_errors(
    cli: Callable[..., CLIResult],
    model_dir: Path,
    tmp_path: Path,
    warmup: dict[str, Any],
    changes: dict[str, Any],
    expected: str,
) -> None:
    config = _model_yaml(tmp_path, warmup=warmup, **changes)
    result = _package(cli, model_dir, tmp_path / "out", "--model-config", config)
    assert result.exit_code == 3, result.stderr
    assert expected in result.json()["error"]["message"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "1001"])
def test_an_out_of_range_warmup_requests_flag_is_a_usage_error(
    cli: Callable[..., CLIResult], model_dir: Path, tmp_path: Path, value: str
) -> None:
    result = _package(cli, model_dir, tmp_path / "out", "--warmup-requests", value)
    assert result.exit_code == 2
    assert "--warmup-requests" in result.json()["error"]["message"]


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ({"instances": [[[0] * 8] * 7]}, "the sample request does not fit"),
        ({"signature_name": "other", "instances": [[[0] * 8] * 8]}, "names signature 'other'"),
    ],
)
def test_a_sample_request_that_does_not_fit_fails_before_writing(
    cli: Callable[..., CLIResult],
    model_dir: Path,
    tmp_path: Path,
    sample: dict[str, Any],
    expected: str,
) -> None:
    config = _model_yaml(tmp_path, sample_request=sample)
    result = _package(cli, model_dir, tmp_path / "out", "--model-config", config)
    assert result.exit_code == 3, result.stderr
    assert expected in result.json()["error"]["message"]
    assert not (tmp_path / "out").exists()


def test_package_with_warmup_records_does_not_import_tensorflow(
    model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    run_without_tensorflow(
        "package", model_dir, "--name", "digits", "--version", "1", "--out", out, "-q"
    )
    assert MEMBER in _members(out / "digits-1.tar.gz")
