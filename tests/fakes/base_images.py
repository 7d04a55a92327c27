"""Small stand-ins for the tensorflow/serving base image (no registry can be pulled here).

They are built as OCI layouts by hand (plain tarfile + JSON) and pushed with
skopeo — a tool independent of ours — as Docker v2, OCI, and a multi-arch index.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

ENTRYPOINT = b'#!/bin/sh\nexec tensorflow_model_server --model_name=${MODEL_NAME} "$@"\n'
BASE_FILES = {
    "etc/os-release": b'NAME="stand-in for tensorflow/serving"\n',
    "usr/bin/tf_serving_entrypoint.sh": ENTRYPOINT,
    "usr/bin/tensorflow_model_server": b"#!/bin/sh\necho stub\n",
}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.startswith("usr/bin") else 0o644
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), _digest(tar_bytes)


def _put(root: Path, data: bytes) -> dict[str, Any]:
    digest = _digest(data)
    path = root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def _image(root: Path, arch: str, extra: bytes = b"") -> dict[str, Any]:
    layer, diff_id = _layer({**BASE_FILES, f"etc/arch-{arch}": arch.encode() + extra})
    config = {
        "architecture": arch,
        "os": "linux",
        "created": "2025-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "MODEL_BASE_PATH=/models", "MODEL_NAME=model"],
            "Entrypoint": ["/usr/bin/tf_serving_entrypoint.sh"],
            "Labels": {"maintainer": "stand-in"},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "2025-01-01T00:00:00Z", "created_by": "stand-in base"}],
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_put(root, json.dumps(config).encode()),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_put(root, layer)}
        ],
    }
    raw = json.dumps(manifest).encode()
    return {
        "mediaType": manifest["mediaType"],
        **_put(root, raw),
        "platform": {"architecture": arch, "os": "linux"},
    }


def write_base_layout(root: Path) -> Path:
    """An OCI layout with tags ``single`` (amd64) and ``multi`` (amd64 + arm64 index)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    amd64 = _image(root, "amd64")
    arm64 = _image(root, "arm64")
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [amd64, arm64],
    }
    index_desc = {"mediaType": index["mediaType"], **_put(root, json.dumps(index).encode())}
    single = {k: v for k, v in amd64.items() if k != "platform"}
    top = {
        "schemaVersion": 2,
        "manifests": [
            {**single, "annotations": {"org.opencontainers.image.ref.name": "single"}},
            {**index_desc, "annotations": {"org.opencontainers.image.ref.name": "multi"}},
        ],
    }
    (root / "index.json").write_text(json.dumps(top))
    return root


def skopeo_copy(src: str, dest: str, *extra: str) -> None:
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            *extra,
            src,
            dest,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def push_bases(
    layout: Path, registry: str, repo: str = "serving-base", creds: str | None = None
) -> dict[str, str]:
    """Push the stand-in base as Docker v2 (``docker``), OCI (``oci``) and index (``multi``)."""
    auth = ["--dest-creds", creds] if creds else []
    skopeo_copy(
        f"oci:{layout}:single", f"docker://{registry}/{repo}:docker", "--format", "v2s2", *auth
    )
    skopeo_copy(f"oci:{layout}:single", f"docker://{registry}/{repo}:oci", "--format", "oci", *auth)
    skopeo_copy(f"oci:{layout}:multi", f"docker://{registry}/{repo}:multi", "--all", *auth)
    return {kind: f"{registry}/{repo}:{kind}" for kind in ("docker", "oci", "multi")}
