"""Does an image exist where it is said to be? For a rerun that reuses a build, and for
a delivery of a digest that was built before (a deliberate rollback).

``REPO@sha256:…`` is asked of its registry (a HEAD of the manifest);
``oci:DIR@sha256:…`` is looked up in the layout.
"""

from __future__ import annotations

from pathlib import Path

from scripts.errors import UsageError
from scripts.image.auth import CredentialStore
from scripts.image.oci_layout import OCILayout
from scripts.image.reference import ImageRef, is_layout
from scripts.image.registry import client_for


def image_exists(image: str, docker_config: Path | None, *, insecure: bool = False) -> bool:
    """True when the digest-pinned ``image`` is present (registry or OCI layout)."""
    if "@sha256:" not in image:
        raise UsageError(
            f"{image!r} is not pinned by digest",
            fix="name the image as REPO@sha256:… (or oci:DIR@sha256:…)",
        )
    if is_layout(image):
        layout_dir, _, digest = image.removeprefix("oci:").partition("@")
        return OCILayout(Path(layout_dir)).has_blob(digest)
    ref = ImageRef.parse(image)
    with client_for(ref, CredentialStore(docker_config), insecure=insecure) as client:
        return client.manifest_digest(ref.repository, ref.reference) is not None
