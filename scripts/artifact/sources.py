"""The artifact-source interface and the table of backends, keyed by URI scheme.

Supported sources::

    github://OWNER/REPO/releases/TAG_OR_ID/ASSET   a GitHub release asset
    gs://BUCKET/OBJECT                             a Google Cloud Storage object
    https://HOST/PATH (http:// on loopback only)   a plain URL
    /path/to/file, ./file, file:///path            a local file
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

from scripts.config import Settings
from scripts.errors import UsageError
from scripts.transfer import RetryPolicy


@dataclass(frozen=True)
class FetchContext:
    """What a source needs besides its URI; built once by the fetch stage."""

    settings: Settings
    retry: RetryPolicy
    asset_wait_s: float
    rate_limit_max_wait_s: float
    progress: bool


@dataclass(frozen=True)
class Downloaded:
    """An archive on local disk, with what the remote claimed about it."""

    path: Path
    sha256: str
    size: int
    filename: str
    remote_sha256: str | None = None


class ArtifactSource(Protocol):
    """One place a model archive can come from."""

    def describe(self) -> str:
        """A human-readable name for logs and errors (never contains secrets)."""
        ...

    def fetch(self, workdir: Path, ctx: FetchContext) -> Downloaded:
        """Bring the archive into ``workdir`` (or point at it, for local files)."""
        ...


class SourceFactory(Protocol):
    def __call__(self, uri: SplitResult, raw: str) -> ArtifactSource: ...


def _table() -> dict[str, SourceFactory]:
    # Imported here so that each backend's dependencies load only when used.
    from scripts.artifact.gcs_object import GCSObjectSource
    from scripts.artifact.github_release import GitHubReleaseSource
    from scripts.artifact.local_file import LocalFileSource
    from scripts.artifact.web_url import WebURLSource

    return {
        "github": GitHubReleaseSource.from_uri,
        "gs": GCSObjectSource.from_uri,
        "https": WebURLSource.from_uri,
        "http": WebURLSource.from_uri,
        "file": LocalFileSource.from_uri,
        "": LocalFileSource.from_uri,
    }


def parse_source(raw: str) -> ArtifactSource:
    """Pick the backend for ``raw`` by its scheme; UsageError for unknown schemes."""
    uri = urlsplit(raw)
    scheme = uri.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    table = _table()
    factory = table.get(scheme)
    if factory is None:
        known = ", ".join(f"{s}://" for s in sorted(table) if s)
        raise UsageError(
            f"unsupported artifact source {raw!r}",
            cause=f"the scheme {scheme!r} is not one of {known} or a local path",
            fix="use github://OWNER/REPO/releases/TAG/ASSET, gs://BUCKET/OBJECT, https://… "
            "or a file path",
        )
    return factory(uri, raw)
