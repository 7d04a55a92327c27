"""Plain URL source (https; http only to loopback, e.g. a local mirror or a test)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, unquote

from scripts.artifact.sources import Downloaded, FetchContext
from scripts.errors import UsageError
from scripts.transfer import download, new_session


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class WebURLSource:
    url: str
    filename: str

    @classmethod
    def from_uri(cls, uri: SplitResult, raw: str) -> WebURLSource:
        if uri.scheme == "http" and not _is_loopback(uri.hostname or ""):
            raise UsageError(
                f"refusing plain-http source {raw!r}",
                cause="http:// is unauthenticated and can be tampered with in transit",
                fix="use https:// (http:// is accepted only for loopback addresses)",
            )
        name = PurePosixPath(unquote(uri.path)).name or "artifact"
        return cls(url=raw, filename=name)

    def describe(self) -> str:
        return self.url.split("?", 1)[0]  # query strings may hold signed tokens

    def fetch(self, workdir: Path, ctx: FetchContext) -> Downloaded:
        with new_session() as session:
            result = download(
                session,
                self.url,
                workdir / self.filename,
                what=self.describe(),
                policy=ctx.retry,
                progress=ctx.progress,
            )
        return Downloaded(
            path=result.path, sha256=result.sha256, size=result.size, filename=self.filename
        )
