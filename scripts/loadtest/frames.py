"""Results of an in-cluster generator, carried on its pod log: framed, compressed, checked.

A pod's log is the one channel every cluster gives a Job without extra permissions or
storage, but it is text, it rotates (the kubelet's ``containerLogMaxSize``, 10 MiB by
default; ``kubectl logs`` returns the newest file only), and other lines can land in it.
So the generator writes its result files as:

    TFRP-RESULTS-BEGIN {"v": 1, "index": 0, "samples": 2000, "lines": 3, "bytes": …, "sha256": …}
    TFRP-R 0 <base64 of a zstd-compressed tar, 4,096 characters per line>
    TFRP-R 1 …
    TFRP-RESULTS-END {"sha256": …}

and the reader checks every property it can: both markers, contiguous line numbers,
the line count, the size and sha256 of the compressed bytes, the tar, and the number of
sample rows against the header's count. Anything missing or different is an
:class:`~scripts.errors.IntegrityError` naming what: never a partial pass.

When the encoded results would not fit the log budget, the generator writes instead
``TFRP-RESULTS-TOO-LARGE {...}`` (and fails), or, when it was given a ``gs://`` place,
uploads the same bytes there and writes ``TFRP-RESULTS-AT {"uri": …, "sha256": …}``.
A generator that could not produce results writes ``TFRP-ERROR {"reason": …}``.

zstd (the ``zstandard`` wheel) compresses sample CSVs about 6× at level 3 in a few
milliseconds per MiB; base64 costs a third on top.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from scripts.errors import IntegrityError

BEGIN = "TFRP-RESULTS-BEGIN"
LINE = "TFRP-R"
END = "TFRP-RESULTS-END"
TOO_LARGE = "TFRP-RESULTS-TOO-LARGE"
AT = "TFRP-RESULTS-AT"
ERROR = "TFRP-ERROR"
VERSION = 1
LINE_CHARS = 4096
# The kubelet rotates a container's log at 10 MiB (containerLogMaxSize) and serves the
# newest file only. CRI adds ~36 bytes of prefix per line; Locust's own output goes to
# a file, not to the log. 8 MiB of frame leaves room for both.
DEFAULT_LOG_BUDGET = 8 * 1024 * 1024
SAMPLE_PREFIX = "samples-"


@dataclass(frozen=True)
class Frame:
    """One generator's decoded results."""

    index: int
    files: dict[str, bytes]
    meta: dict[str, Any] = field(default_factory=dict)


def pack(files: dict[str, bytes]) -> bytes:
    """A deterministic tar of ``files``, zstd-compressed."""
    import zstandard

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return zstandard.ZstdCompressor(level=3).compress(buffer.getvalue())


def unpack(blob: bytes, limit: int = 2 * 1024**3) -> dict[str, bytes]:
    import zstandard

    try:
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=limit)
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar.getmembers():
                name = member.name
                if not member.isfile() or "/" in name or name.startswith("."):
                    raise IntegrityError(f"unexpected entry {name!r} in the generator's results")
                handle = tar.extractfile(member)
                files[name] = handle.read() if handle else b""
    except (zstandard.ZstdError, tarfile.TarError, EOFError) as exc:
        raise IntegrityError(
            f"the generator's results do not decompress: {exc}",
            cause="the log was cut or altered on its way back",
            fix="rerun; if it repeats, see the generator pod's log",
        ) from exc
    return files


def sample_rows(files: dict[str, bytes]) -> int:
    """Data rows (header excluded) in the per-request sample files."""
    return sum(
        max(data.count(b"\n") - 1, 0)
        for name, data in files.items()
        if name.startswith(SAMPLE_PREFIX)
    )


def encode(blob: bytes, *, index: int, samples: int, meta: dict[str, Any]) -> list[str]:
    """The lines that carry ``blob`` (see the module docstring)."""
    text = base64.b64encode(blob).decode()
    chunks = [text[i : i + LINE_CHARS] for i in range(0, len(text), LINE_CHARS)] or [""]
    digest = hashlib.sha256(blob).hexdigest()
    header = {
        "v": VERSION,
        "index": index,
        "samples": samples,
        "lines": len(chunks),
        "bytes": len(blob),
        "sha256": digest,
        "meta": meta,
    }
    return [
        f"{BEGIN} {json.dumps(header, sort_keys=True)}",
        *(f"{LINE} {n} {chunk}" for n, chunk in enumerate(chunks)),
        f"{END} {json.dumps({'sha256': digest})}",
    ]


def encoded_size(blob_size: int) -> int:
    """Characters ``encode`` will write for a blob of this size (for the log budget)."""
    b64 = (blob_size + 2) // 3 * 4
    lines = max(1, -(-b64 // LINE_CHARS))
    return b64 + lines * 16 + 512


def _marker(line: str, name: str) -> dict[str, Any] | None:
    """The JSON after ``name`` when ``line`` is that marker (CRI prefixes are stripped)."""
    at = line.find(name + " ")
    if at < 0:
        return None
    try:
        value = json.loads(line[at + len(name) + 1 :])
    except ValueError as exc:
        raise IntegrityError(
            f"a damaged {name} line in the generator's log: {exc}",
            cause="the log was cut or altered on its way back",
            fix="rerun; if it repeats, see the generator pod's log",
        ) from exc
    return value if isinstance(value, dict) else None


def strip_cri(lines: Iterable[str]) -> Iterator[str]:
    """Log lines as written: drop the CRI prefix (``TIME stdout F ``) when present, and
    join partial lines (``P``) the way the kubelet's reader does."""
    pending = ""
    for line in lines:
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[1] in ("stdout", "stderr") and parts[2] in ("F", "P"):
            if parts[2] == "P":
                pending += parts[3]
                continue
            yield pending + parts[3]
            pending = ""
        else:
            yield line
    if pending:
        yield pending


def messages(log_text: str, name: str) -> list[dict[str, Any]]:
    """Every ``name`` marker's JSON in a log (``TFRP-ERROR``, ``TFRP-RESULTS-TOO-LARGE``)."""
    found = []
    for line in strip_cri(log_text.splitlines()):
        value = _marker(line, name)
        if value is not None:
            found.append(value)
    return found


def decode(log_text: str, *, source: str) -> Frame | None:
    """The last complete frame in a log; None when the log holds no BEGIN marker at all.

    ``source`` names where the log came from, for the errors."""
    lines = list(strip_cri(log_text.splitlines()))
    begin_at = max((i for i, line in enumerate(lines) if f"{BEGIN} " in line), default=None)
    if begin_at is None:
        return None
    header = _marker(lines[begin_at], BEGIN) or {}
    damaged = {
        "cause": "the log was cut (rotation, a pod that died while writing) or altered",
        "fix": "rerun; if it repeats, lower the load or write results to GCS (--results-uri)",
    }
    if header.get("v") != VERSION:
        raise IntegrityError(
            f"{source}: results framed as version {header.get('v')!r}, expected {VERSION}",
            cause="the generator image and this pipeline come from different commits",
            fix="rebuild the generator image from this commit (python -m scripts generator-image)",
        )
    expected = int(header.get("lines", -1))
    chunks: list[str] = []
    end: dict[str, Any] | None = None
    for line in lines[begin_at + 1 :]:
        if f"{END} " in line:
            end = _marker(line, END)
            break
        at = line.find(f"{LINE} ")
        if at < 0:
            continue  # another line interleaved in the log: not ours
        try:
            number, chunk = line[at + len(LINE) + 1 :].split(" ", 1)
        except ValueError:
            number, chunk = line[at + len(LINE) + 1 :], ""
        if number != str(len(chunks)):
            raise IntegrityError(
                f"{source}: results line {len(chunks)} is missing (found {number!r})", **damaged
            )
        chunks.append(chunk)
    if end is None:
        raise IntegrityError(
            f"{source}: the results are truncated after {len(chunks)} of {expected} lines "
            f"(no {END} marker)",
            **damaged,
        )
    if len(chunks) != expected:
        raise IntegrityError(
            f"{source}: {len(chunks)} results lines, the header announced {expected}", **damaged
        )
    try:
        blob = base64.b64decode("".join(chunks), validate=True)
    except ValueError as exc:
        raise IntegrityError(
            f"{source}: the results are not valid base64: {exc}", **damaged
        ) from exc
    digest = hashlib.sha256(blob).hexdigest()
    if (
        len(blob) != header.get("bytes")
        or digest != header.get("sha256")
        or digest != end.get("sha256")
    ):
        raise IntegrityError(
            f"{source}: the results' checksum does not match (sha256 {digest[:12]}…, "
            f"{len(blob)} bytes; announced {str(header.get('sha256'))[:12]}…, "
            f"{header.get('bytes')} bytes)",
            **damaged,
        )
    files = unpack(blob)
    return checked_frame(files, header, source)


def checked_frame(files: dict[str, bytes], header: dict[str, Any], source: str) -> Frame:
    """The frame, once its sample count agrees with the header's."""
    rows = sample_rows(files)
    if rows != header.get("samples"):
        raise IntegrityError(
            f"{source}: {rows} sample rows, the generator counted {header.get('samples')}",
            cause="samples were lost between the generator and this runner",
            fix="rerun; if it repeats, see the generator pod's log",
        )
    return Frame(index=int(header.get("index", 0)), files=files, meta=dict(header.get("meta", {})))
