"""Local file source: hash the file where it is; nothing is copied."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, unquote

from scripts.artifact.sources import Downloaded, FetchContext
from scripts.errors import ArtifactNotFoundError, UsageError
from scripts.hashing import sha256_file


@dataclass(frozen=True)
class LocalFileSource:
    path: Path

    @classmethod
    def from_uri(cls, uri: SplitResult, raw: str) -> LocalFileSource:
        if uri.scheme == "file":
            if uri.netloc not in ("", "localhost"):
                raise UsageError(
                    f"file URI {raw!r} names a remote host {uri.netloc!r}",
                    cause="file:// URIs must be local",
                    fix="use file:///absolute/path or a plain path",
                )
            return cls(Path(unquote(uri.path)))
        return cls(Path(raw))

    def describe(self) -> str:
        return str(self.path)

    def fetch(self, workdir: Path, ctx: FetchContext) -> Downloaded:
        if not self.path.is_file():
            raise ArtifactNotFoundError(
                f"local archive {self.path} does not exist or is not a file",
                cause="a typo in the path, or the archive was not built yet",
                fix="check the path (run `python -m scripts package` to build one)",
            )
        sha, size = sha256_file(self.path)
        return Downloaded(path=self.path, sha256=sha, size=size, filename=self.path.name)
