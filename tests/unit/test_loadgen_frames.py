"""Results on a pod log: every way they can be damaged is found, never a partial pass."""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from scripts.errors import IntegrityError
from scripts.loadtest import frames

_random = random.Random(12)
SAMPLES = "t,track,endpoint,latency_ms,service_ms,ok,status,lag_ms\n" + "".join(
    f"{1764583200 + i / 40:.4f},canary,http://x,{_random.lognormvariate(1.2, 0.4):.3f},"
    f"{_random.uniform(0.5, 3):.3f},1,200,{_random.expovariate(10):.3f}\n"
    for i in range(3000)
)


def framed(files: dict[str, bytes] | None = None, *, samples: int | None = None) -> str:
    files = files or {"samples-0-1.csv": SAMPLES.encode(), "generator.json": b"{}"}
    blob = frames.pack(files)
    count = frames.sample_rows(files) if samples is None else samples
    lines = frames.encode(blob, index=0, samples=count, meta={"role": "standalone"})
    return "\n".join(lines) + "\n"


def cri(text: str) -> str:
    return "".join(
        f"2026-12-01T10:00:00.000000000Z stdout F {line}\n" for line in text.splitlines()
    )


def test_a_frame_round_trips_through_a_cri_log_with_other_lines_in_it() -> None:
    log = "2026-12-01T10:00:00Z stderr F a warning\n" + cri(framed())
    lines = log.splitlines()
    lines.insert(3, "2026-12-01T10:00:00.1Z stderr F interleaved noise")
    frame = frames.decode("\n".join(lines), source="pod")
    assert frame is not None
    assert frame.files["samples-0-1.csv"].decode() == SAMPLES
    assert frame.meta == {"role": "standalone"}


def test_partial_cri_lines_are_joined_as_the_kubelet_does() -> None:
    text = framed()
    out = []
    for line in text.splitlines():
        half = len(line) // 2
        out.append(f"2026-12-01T10:00:00Z stdout P {line[:half]}")
        out.append(f"2026-12-01T10:00:00Z stdout F {line[half:]}")
    frame = frames.decode("\n".join(out), source="pod")
    assert frame is not None and frames.sample_rows(frame.files) == 3000


def test_samples_compress_well_and_the_size_estimate_is_an_upper_bound() -> None:
    blob = frames.pack({"samples-0-1.csv": SAMPLES.encode()})
    assert len(blob) < len(SAMPLES) / 4
    assert frames.encoded_size(len(blob)) >= len(framed({"samples-0-1.csv": SAMPLES.encode()}))


def test_no_results_at_all_is_none() -> None:
    assert frames.decode("just a log\nwith lines\n", source="pod") is None


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda t: t[: len(t) // 2], "truncated"),
        (lambda t: t.replace("TFRP-R 1 ", "TFRP-R 2 ", 1), "line 1 is missing"),
        (lambda t: "\n".join(x for x in t.splitlines() if not x.startswith("TFRP-R 1 ")),
         "line 1 is missing"),
        (lambda t: t.replace("TFRP-R 0 K", "TFRP-R 0 L", 1), "checksum"),
        (lambda t: t.replace("TFRP-R 0 K", "TFRP-R 0 *", 1), "not valid base64"),
        (lambda t: t.replace('"v": 1', '"v": 9', 1), "version 9"),
    ],
    ids=["cut", "renumbered", "line-dropped", "bit-flip", "garbage", "other-version"],
)  # fmt: skip
def test_every_damage_is_an_integrity_error(damage: object, message: str) -> None:
    text = framed()
    assert text.count("TFRP-R ") >= 3
    with pytest.raises(IntegrityError, match=message):
        frames.decode(damage(text), source="pod")  # type: ignore[operator]


def test_a_sample_count_that_does_not_match_is_an_error() -> None:
    with pytest.raises(IntegrityError, match="3000 sample rows, the generator counted 2999"):
        frames.decode(framed(samples=2999), source="pod")


def test_entries_that_could_escape_the_results_directory_are_refused() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../escape.csv")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    import zstandard

    blob = zstandard.ZstdCompressor().compress(buffer.getvalue())
    text = "\n".join(frames.encode(blob, index=0, samples=0, meta={}))
    with pytest.raises(IntegrityError, match="unexpected entry"):
        frames.decode(text, source="pod")


def test_markers_other_than_results_are_read_back() -> None:
    log = cri('TFRP-ERROR {"reason": "workers never came", "exit_code": 4}\n')
    assert frames.messages(log, frames.ERROR) == [{"reason": "workers never came", "exit_code": 4}]
