"""The fetch stage: source → verified archive → safe extraction → validated TF Serving layout.

Everything happens in a staging directory inside ``dest``; only a complete,
validated version directory is renamed into ``dest/NAME/VERSION``. A failed
fetch leaves ``dest`` as it found it (and removes it if it created it).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from scripts.artifact.extract import ExtractLimits, safe_extract
from scripts.artifact.savedmodel import (
    SignatureInfo,
    locate_model,
    read_signatures,
    require_signature,
    signatures_markdown,
)
from scripts.artifact.sources import Downloaded, FetchContext, parse_source
from scripts.atomic import move_dir_into_place, remove_if_empty, staging_dir, write_text_atomic
from scripts.errors import ConflictError, IntegrityError, UsageError
from scripts.log import log

_ARCHIVE_NAME = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9_.-]*?)-v?(?P<version>[0-9]+)\.(?:tar\.gz|tgz|tar|tar\.zst)$"
)
RECORD_DIR = ".fetched"


@dataclass(frozen=True)
class FetchRequest:
    source: str
    dest: Path
    expected_sha256: str | None = None
    name: str | None = None
    version: int | None = None
    signature: str = "serving_default"
    limits: ExtractLimits = field(default_factory=ExtractLimits)


@dataclass(frozen=True)
class FetchResult:
    model_name: str
    version: int
    path: Path
    version_path: Path
    sha256: str
    size: int
    source: str
    signatures: dict[str, SignatureInfo]
    reused: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "path": str(self.path),
            "version_path": str(self.version_path),
            "sha256": self.sha256,
            "size": self.size,
            "source": self.source,
            "signatures": {k: v.to_dict() for k, v in self.signatures.items()},
            "reused": self.reused,
        }


def result_from_record(data: dict[str, object]) -> FetchResult:
    """A FetchResult saved with ``to_dict`` (a run record), signatures read again from disk."""
    version_path = Path(str(data["version_path"]))
    return FetchResult(
        model_name=str(data["model_name"]),
        version=int(str(data["version"])),
        path=Path(str(data["path"])),
        version_path=version_path,
        sha256=str(data["sha256"]),
        size=int(str(data["size"])),
        source=str(data["source"]),
        signatures=read_signatures(version_path),
        reused=True,
    )


def normalise_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    hex_part = value.lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", hex_part):
        raise UsageError(
            f"--sha256 {value!r} is not a sha256 digest",
            cause="expected 64 hexadecimal characters (optionally prefixed 'sha256:')",
            fix="copy the value from the .sha256 file published with the archive",
        )
    return hex_part


def _verify(downloaded: Downloaded, expected: str | None, source: str) -> None:
    if downloaded.remote_sha256 and downloaded.remote_sha256 != downloaded.sha256:
        raise IntegrityError(
            f"{source}: the bytes received hash to sha256:{downloaded.sha256} but the server "
            f"advertises sha256:{downloaded.remote_sha256}",
            cause="corruption in transit, or the asset was replaced during the download",
            fix="retry the fetch; if it persists, re-upload the asset",
        )
    if expected and expected != downloaded.sha256:
        raise IntegrityError(
            f"{source}: sha256 is {downloaded.sha256}, expected {expected}",
            cause="a different or tampered archive, or a stale --sha256 value",
            fix="check which release the checksum belongs to; never skip this check",
        )


def _record_path(dest: Path, name: str, version: int) -> Path:
    return dest / RECORD_DIR / f"{name}-{version}.json"


def _read_record(dest: Path, name: str, version: int) -> dict[str, object] | None:
    path = _record_path(dest, name, version)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _guess_from_filename(filename: str) -> tuple[str | None, int | None]:
    match = _ARCHIVE_NAME.match(filename)
    if not match:
        return None, None
    return match["name"], int(match["version"])


def _install(
    request: FetchRequest, downloaded: Downloaded, staging: Path, ctx_source: str
) -> FetchResult:
    tree = staging / "tree"
    tree.mkdir()
    report = safe_extract(downloaded.path, tree, request.limits)
    log.info("extracted %d files (%d bytes)", report.files, report.total_bytes)
    guess_name, guess_version = _guess_from_filename(downloaded.filename)
    layout = locate_model(
        tree,
        request.name,
        request.version,
        fallback_name=guess_name,
        fallback_version=guess_version,
    )
    signatures = read_signatures(layout.version_dir)
    require_signature(signatures, request.signature, layout.version_dir)

    model_dir = request.dest / layout.name
    final = model_dir / str(layout.version)
    record = _read_record(request.dest, layout.name, layout.version)
    if final.exists():
        if record and record.get("sha256") == downloaded.sha256:
            log.info("%s already holds this archive; nothing to do", final)
            return _result(
                request,
                name=layout.name,
                version=layout.version,
                downloaded=downloaded,
                signatures=signatures,
                source=ctx_source,
                reused=True,
            )
        raise ConflictError(
            f"{final} already exists with different content",
            cause="another archive was fetched for the same model version",
            fix="publish a new version number, or remove the directory first",
        )
    move_dir_into_place(layout.version_dir, final)
    write_text_atomic(
        _record_path(request.dest, layout.name, layout.version),
        json.dumps({"sha256": downloaded.sha256, "source": ctx_source}, indent=2) + "\n",
    )
    return _result(
        request,
        name=layout.name,
        version=layout.version,
        downloaded=downloaded,
        signatures=signatures,
        source=ctx_source,
        reused=False,
    )


def _result(
    request: FetchRequest,
    *,
    name: str,
    version: int,
    downloaded: Downloaded,
    signatures: dict[str, SignatureInfo],
    source: str,
    reused: bool,
) -> FetchResult:
    return FetchResult(
        model_name=name,
        version=version,
        path=request.dest / name,
        version_path=request.dest / name / str(version),
        sha256=downloaded.sha256,
        size=downloaded.size,
        source=source,
        signatures=signatures,
        reused=reused,
    )


def fetch(request: FetchRequest, ctx: FetchContext) -> FetchResult:
    """Run the fetch stage. Raises the project's errors; leaves no partial files."""
    expected = normalise_sha256(request.expected_sha256)
    source = parse_source(request.source)
    described = source.describe()
    # The topmost directory this fetch creates; removed again if the fetch fails.
    created = next(
        (p for p in reversed([request.dest, *request.dest.parents]) if not p.exists()), None
    )
    request.dest.mkdir(parents=True, exist_ok=True)
    try:
        with staging_dir(request.dest, "fetch") as staging:
            downloaded = source.fetch(staging, ctx)
            _verify(downloaded, expected, described)
            log.info(
                "verified %s: sha256 %s, %d bytes", described, downloaded.sha256, downloaded.size
            )
            return _install(request, downloaded, staging, described)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        else:
            remove_if_empty(request.dest / RECORD_DIR)
        raise


def describe_result(result: FetchResult) -> tuple[str, str]:
    """The result for people: a text for the terminal, Markdown for the step summary."""
    text = (
        f"{result.model_name} v{result.version} → {result.path}\n"
        f"  sha256 {result.sha256} ({result.size} bytes)"
        + ("  [already present]" if result.reused else "")
        + "\n  signatures: "
        + ", ".join(sorted(result.signatures))
    )
    summary = (
        f"### Fetched `{result.model_name}` v{result.version}\n\n"
        f"From `{result.source}` — sha256 `{result.sha256}`, {result.size} bytes\n\n"
        + signatures_markdown(result.signatures)
    )
    return text, summary
