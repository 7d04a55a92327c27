"""Results too large for a pod log go to GCS: the generator uploads, the runner downloads.

In the pod the client authenticates through Workload Identity (the generator's
Kubernetes service account bound to a Google one with ``roles/storage.objectUser`` on
the bucket); ``STORAGE_EMULATOR_HOST`` points both ends at an emulator in tests. Objects
are created only if absent (``if_generation_match=0``): a second writer never replaces
results already read.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from scripts.errors import IntegrityError, RemoteError, UsageError


def _client() -> Any:
    from scripts.gcs_client import storage_client

    return storage_client(os.environ.get("STORAGE_EMULATOR_HOST"))


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri[5:].strip("/"):
        raise UsageError(
            f"results place {uri!r} is not gs://BUCKET/PREFIX",
            fix="pass --results-uri gs://BUCKET/PREFIX",
        )
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.strip("/")


def upload(uri: str, index: int, blob: bytes) -> tuple[str, str]:
    """Store one generator's packed results; (their gs:// URI, sha256)."""
    bucket, prefix = _split(uri)
    name = f"{prefix}/results-{index}.tar.zst"
    _client().bucket(bucket).blob(name).upload_from_string(
        blob, content_type="application/zstd", if_generation_match=0
    )
    return f"gs://{bucket}/{name}", hashlib.sha256(blob).hexdigest()


def download(uri: str, sha256: str, size: int) -> bytes:
    """The packed results at ``uri``, checked against the size and sha256 the log gave."""
    from google.api_core import exceptions as gexc

    bucket, name = _split(uri)
    try:
        blob: bytes = _client().bucket(bucket).blob(name).download_as_bytes()
    except gexc.GoogleAPIError as exc:
        raise RemoteError(
            f"cannot read the generator's results at {uri}: {exc}",
            cause="the runner's identity cannot read the bucket, or the object was removed",
            fix="grant the delivery identity storage.objects.get on the bucket",
        ) from exc
    digest = hashlib.sha256(blob).hexdigest()
    if len(blob) != size or digest != sha256:
        raise IntegrityError(
            f"the results at {uri} do not match what the generator announced "
            f"({len(blob)} bytes, sha256 {digest[:12]}…; expected {size} bytes, {sha256[:12]}…)",
            cause="the object was replaced or damaged",
            fix="rerun the load test",
        )
    return blob


def remove(uri: str) -> None:
    """Delete the run's results objects (best effort: a bucket lifecycle rule is the backstop)."""
    bucket, prefix = _split(uri)
    client = _client()
    for blob in client.list_blobs(bucket, prefix=prefix + "/"):
        blob.delete()
