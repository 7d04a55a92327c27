"""Image references: ``[REGISTRY/]REPO[:TAG][@sha256:DIGEST]``, ``oci:DIR[:TAG]`` and ``scratch``.

Follows Docker's normalisation: a first component with a dot, a colon or equal
to ``localhost`` is a registry; otherwise the registry is Docker Hub, whose
API lives at ``registry-1.docker.io`` and whose one-word repositories live
under ``library/``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from scripts.errors import UsageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def _bad(ref: str, why: str) -> UsageError:
    return UsageError(
        f"invalid image reference {ref!r}: {why}",
        cause="a typo, or upper-case letters in the repository",
        fix="use REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST], e.g. "
        "europe-docker.pkg.dev/proj/models/digits:1",
    )


@dataclass(frozen=True)
class ImageRef:
    registry: str  # as written, e.g. docker.io, 127.0.0.1:5000
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        rest = ref.strip()
        digest = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST_RE.match(digest):
                raise _bad(ref, f"digest {digest!r} is not sha256:<64 hex>")
        tag = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise _bad(ref, f"tag {tag!r} is not valid")
        parts = rest.split("/", 1)
        if len(parts) == 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
            registry, repository = parts
        else:
            registry, repository = DOCKER_HUB, rest
        if registry in (DOCKER_HUB, "index.docker.io") and "/" not in repository:
            repository = f"library/{repository}"
        if not repository or not _REPO_RE.match(repository):
            raise _bad(ref, f"repository {repository!r} is not valid")
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry in (DOCKER_HUB, "index.docker.io") else self.registry

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, None, digest)

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def is_loopback(self) -> bool:
        host = self.registry.rsplit(":", 1)[0].strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True)
class LayoutRef:
    """``oci:DIR[:TAG]`` — an OCI image layout directory (skopeo's transport syntax)."""

    path: Path
    tag: str | None = None

    @classmethod
    def parse(cls, ref: str) -> LayoutRef:
        body = ref.removeprefix("oci:")
        path, _, tag = body.partition(":")
        if not path:
            raise _bad(ref, "an oci: reference needs a directory")
        if tag and not _TAG_RE.match(tag):
            raise _bad(ref, f"tag {tag!r} is not valid")
        return cls(Path(path), tag or None)

    def __str__(self) -> str:
        return f"oci:{self.path}" + (f":{self.tag}" if self.tag else "")


SCRATCH = "scratch"


def is_layout(ref: str) -> bool:
    return ref.startswith("oci:")
