"""Google Cloud Storage source, through google-cloud-storage.

Credentials come from Application Default Credentials; with an emulator
(``STORAGE_EMULATOR_HOST``, resolved into Settings) the client is anonymous.
The library verifies the object's crc32c while streaming, and retries
transient errors with its own policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import SplitResult, unquote

from scripts.artifact.sources import Downloaded, FetchContext
from scripts.atomic import atomic_file
from scripts.errors import ArtifactNotFoundError, AuthError, IntegrityError, RemoteError, UsageError
from scripts.hashing import HashingWriter
from scripts.log import log


@dataclass(frozen=True)
class GCSObjectSource:
    bucket: str
    name: str

    @classmethod
    def from_uri(cls, uri: SplitResult, raw: str) -> GCSObjectSource:
        name = unquote(uri.path).lstrip("/")
        if not uri.netloc or not name:
            raise UsageError(
                f"malformed GCS URI {raw!r}",
                cause="a gs:// URI needs a bucket and an object name",
                fix="use gs://BUCKET/path/to/model.tar.gz",
            )
        return cls(bucket=uri.netloc, name=name)

    def describe(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def _client(self, ctx: FetchContext) -> Any:
        from google.auth.exceptions import DefaultCredentialsError

        from scripts.gcs_client import storage_client

        try:
            return storage_client(ctx.settings.storage_emulator_host)
        except DefaultCredentialsError as exc:
            raise AuthError(
                f"no Google credentials to read {self.describe()}",
                cause="Application Default Credentials are not configured",
                fix="run `gcloud auth application-default login`, or in Actions use "
                "google-github-actions/auth with Workload Identity Federation",
            ) from exc

    def fetch(self, workdir: Path, ctx: FetchContext) -> Downloaded:
        from google.api_core import exceptions as gexc
        from google.cloud.storage.exceptions import DataCorruption

        client = self._client(ctx)
        blob = client.bucket(self.bucket).blob(self.name)
        blob.chunk_size = 8 << 20  # stream in 8 MiB pieces, never the whole object in memory
        filename = PurePosixPath(self.name).name
        dest = workdir / filename
        try:
            with atomic_file(dest) as fh:
                writer = HashingWriter(fh)
                blob.download_to_file(writer, checksum="crc32c", timeout=ctx.retry.timeout_s)
        except gexc.NotFound as exc:
            raise ArtifactNotFoundError(
                f"{self.describe()} does not exist",
                cause="a wrong bucket or object name, or the upload has not finished",
                fix="check with `gcloud storage ls gs://"
                f"{self.bucket}/{PurePosixPath(self.name).parent}/`",
            ) from exc
        except (gexc.Unauthorized, gexc.Forbidden) as exc:
            raise AuthError(
                f"access to {self.describe()} was refused: {exc.message}",
                cause="the credentials lack storage.objects.get on this bucket",
                fix="grant roles/storage.objectViewer to the pipeline's service account",
            ) from exc
        except DataCorruption as exc:
            raise IntegrityError(
                f"{self.describe()} failed its crc32c check while downloading",
                cause="corruption in transit or in storage",
                fix="retry; if it persists, re-upload the object",
            ) from exc
        except gexc.GoogleAPICallError as exc:
            raise RemoteError(
                f"GCS failed while downloading {self.describe()}: {exc}",
                cause="a service error that outlasted the client's retries",
                fix="retry later",
            ) from exc
        log.info("downloaded %s (%d bytes)", self.describe(), writer.size)
        return Downloaded(
            path=dest, sha256=writer.sha256.hexdigest(), size=writer.size, filename=filename
        )
