"""Media types of the two manifest families, and how one maps onto the other."""

from __future__ import annotations

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

MANIFESTS = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEXES = (DOCKER_LIST, OCI_INDEX)
ACCEPT = ", ".join((*MANIFESTS, *INDEXES))

DOCKER_TO_OCI = {
    DOCKER_MANIFEST: OCI_MANIFEST,
    DOCKER_CONFIG: OCI_CONFIG,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
}


def family(manifest_media_type: str) -> str:
    """'docker' or 'oci'."""
    return "docker" if manifest_media_type == DOCKER_MANIFEST else "oci"


def layer_type(family_name: str, compression: str) -> str:
    if compression == "zstd":
        return OCI_LAYER_ZSTD
    return DOCKER_LAYER_GZIP if family_name == "docker" else OCI_LAYER_GZIP


def config_type(family_name: str) -> str:
    return DOCKER_CONFIG if family_name == "docker" else OCI_CONFIG


def manifest_type(family_name: str) -> str:
    return DOCKER_MANIFEST if family_name == "docker" else OCI_MANIFEST
