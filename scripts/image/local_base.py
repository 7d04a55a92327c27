"""Local bases: an empty image whose config sets the server's environment.

The local target serves with this checkout's TF-Serving-compatible server, so a
"base" here cannot change the binary; what it can change is what a real base's
config changes too: the environment the server starts with (TensorFlow's oneDNN
switch, thread pools). Each catalog base with ``env:`` is written once as an OCI
layout image with no layers; the build composes the model layer on it, and the
local target gives the container the image's ``Env`` as a container runtime does.
The bytes are deterministic, so the same env always gives the same base digest.
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts.image import media_types as mt
from scripts.image.bases import ChosenBase
from scripts.image.oci_layout import OCILayout
from scripts.image.registry import sha256_digest


def _canonical(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def write_local_base(name: str, env: dict[str, str], layout_dir: Path) -> str:
    """Write (or find) the local base ``name`` in ``layout_dir``; return ``oci:DIR:NAME``."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": [f"{k}={v}" for k, v in sorted(env.items())]},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created_by": f"tf-release-pipeline local base {name}", "empty_layer": True}],
    }
    config_raw = _canonical(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {
            "mediaType": mt.config_type("oci"),
            "digest": sha256_digest(config_raw),
            "size": len(config_raw),
        },
        "layers": [],
        "annotations": {"org.opencontainers.image.title": f"local base {name}"},
    }
    manifest_raw = _canonical(manifest)
    digest = sha256_digest(manifest_raw)
    layout = OCILayout(layout_dir)
    layout.init()
    if layout.tag_digest(name) != digest:
        config_digest = str(manifest["config"]["digest"])  # type: ignore[index]
        if not layout.has_blob(config_digest):
            layout.write_blob(config_digest, [config_raw])
        layout.add_manifest(manifest_raw, mt.OCI_MANIFEST, digest, [name])
    return f"oci:{layout_dir}:{name}"


def base_reference(chosen: ChosenBase, layout_dir: Path) -> str:
    """What the build resolves for ``chosen``: local bases are written first."""
    if chosen.env is not None and chosen.name is not None:
        return write_local_base(chosen.name, chosen.env, layout_dir)
    return chosen.reference
