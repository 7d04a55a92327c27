"""A small OCI distribution (registry v2) client over requests.

Why our own: the flows we need — cross-repository blob mount, chunked resumable
uploads, Docker v2 *and* OCI manifests kept in their family, registry-to-registry
blob streaming — are not all in one maintained Python library (oras-py has no
mount and forces OCI manifests). The HTTP, retry and auth pieces are libraries
(requests, tenacity, google-auth).

Auth: anonymous, HTTP basic, and the bearer-token challenge
(``WWW-Authenticate: Bearer realm=…,service=…,scope=…``), with credentials from
:class:`scripts.image.auth.CredentialStore`. Transient failures (429, 5xx,
connection resets, timeouts) are retried with backoff; an interrupted chunked
upload resumes from the offset the registry reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urljoin

import requests

from scripts.errors import ArtifactNotFoundError, AuthError, RemoteError
from scripts.image import media_types as mt
from scripts.image.auth import CredentialStore
from scripts.image.reference import ImageRef
from scripts.log import log
from scripts.transfer import USER_AGENT, RetryPolicy, TransientError, call_with_retries

CHUNK_SIZE = 32 << 20
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    media_type: str
    digest: str

    def json(self) -> dict[str, Any]:
        return _json(self.raw)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _error_codes(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return ", ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        return response.text[:200]


class RegistryClient:
    """Talks to one registry host; repository names are passed per call."""

    def __init__(
        self,
        host: str,
        *,
        credentials: CredentialStore,
        insecure: bool = False,
        retry: RetryPolicy | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.host = host
        self.base = f"{'http' if insecure else 'https'}://{host}"
        self.credentials = credentials
        self.retry = retry or RetryPolicy()
        self.chunk_size = chunk_size
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self._auth_header: dict[str, str] = {}  # scope → Authorization value
        self._basic_only = False

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- auth ----------------------------------------------------------------
    def _token(self, challenge: str, scope: str) -> str:
        params = dict(_CHALLENGE_RE.findall(challenge))
        realm = params.get("realm")
        if not realm:
            raise AuthError(f"registry {self.host} sent a bearer challenge without a realm")
        query = {"scope": scope} if scope else {}
        if "service" in params:
            query["service"] = params["service"]
        cred = self.credentials.lookup(self.host)
        auth = (cred.username, cred.password) if cred else None
        try:
            response = self.session.get(
                realm, params=query, auth=auth, timeout=self.retry.timeout_s
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"token server {realm} unreachable: {exc}") from exc
        if response.status_code in _TRANSIENT_STATUS:
            raise TransientError(f"token server {realm} answered {response.status_code}")
        if response.status_code in (401, 403):
            raise self._auth_error(scope, response.status_code, via_token_server=True)
        if response.status_code != 200:
            raise RemoteError(f"token server {realm} answered HTTP {response.status_code}")
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RemoteError(f"token server {realm} returned no token")
        return str(token)

    def _authorize(self, response: requests.Response, scope: str) -> bool:
        """Answer a 401 challenge; return False when there is nothing new to try."""
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "bearer":
            self._auth_header[scope] = f"Bearer {self._token(challenge, scope)}"
            return True
        if scheme == "basic":
            cred = self.credentials.lookup(self.host)
            if cred is None or self._basic_only:
                return False
            self._basic_only = True
            self.session.auth = (cred.username, cred.password)
            return True
        return False

    def _auth_error(self, scope: str, status: int, *, via_token_server: bool = False) -> AuthError:
        cred = self.credentials.lookup(self.host)
        where = "its token server" if via_token_server else "the registry"
        has = f"credentials from {cred.origin}" if cred else "no credentials"
        return AuthError(
            f"{where} refused {scope or 'access'} on {self.host} (HTTP {status}) with {has}",
            cause="no login for this registry, an expired token, or a role without push rights"
            if cred
            else "no credentials found in ~/.docker/config.json",
            fix=f"run `docker login {self.host}` (Artifact Registry: grant "
            "roles/artifactregistry.writer and use Application Default Credentials)",
        )

    # -- requests --------------------------------------------------------------
    def _url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else urljoin(self.base, path_or_url)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: str,
        headers: Mapping[str, str] | None = None,
        data: bytes | BinaryIO | None = None,
        stream: bool = False,
        ok: tuple[int, ...] = (200,),
        what: str = "",
    ) -> requests.Response:
        """One request with auth and retries; raises the project's errors for bad statuses.

        A 404 is returned to the caller when listed in ``ok``.
        """

        def once() -> requests.Response:
            for _ in range(3):  # initial try, then after answering a challenge
                hdrs = dict(headers or {})
                if scope in self._auth_header:
                    hdrs["Authorization"] = self._auth_header[scope]
                if hasattr(data, "seek"):
                    data.seek(0)  # type: ignore[union-attr]
                try:
                    response = self.session.request(
                        method,
                        self._url(path_or_url),
                        headers=hdrs,
                        data=data,
                        stream=stream,
                        timeout=self.retry.timeout_s,
                        allow_redirects=True,
                    )
                except (requests.ConnectionError, requests.Timeout) as exc:
                    raise TransientError(f"{method} {what or path_or_url}: {exc}") from exc
                if response.status_code == 401 and self._authorize(response, scope):
                    response.close()
                    continue
                break
            status = response.status_code
            if status in ok:
                return response
            response.close()
            if status in _TRANSIENT_STATUS:
                raise TransientError(
                    f"{self.host} answered HTTP {status} to {method} {what or path_or_url}",
                    _retry_after(response),
                )
            if status in (401, 403):
                raise self._auth_error(scope, status)
            detail = _error_codes(response)
            if status == 404:
                raise ArtifactNotFoundError(
                    f"{self.host}: {what or path_or_url} not found ({detail})",
                    cause="a wrong repository, tag or digest, or no permission to see it",
                    fix="check the name with `skopeo inspect docker://HOST/REPO:TAG`",
                )
            raise RemoteError(
                f"{self.host} answered HTTP {status} to {method} {what or path_or_url}: {detail}",
                cause="the registry rejected the request",
                fix="see the registry's error code above",
            )

        return call_with_retries(
            self.retry,
            once,
            lambda exc: RemoteError(
                f"registry {self.host} kept failing: {exc}",
                cause="the registry or the network is unhealthy (5xx, 429, resets)",
                fix="retry later; a rerun resumes where this one stopped",
            ),
        )

    # -- manifests -----------------------------------------------------------
    def get_manifest(self, repo: str, reference: str) -> Manifest:
        response = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope=_pull(repo),
            headers={"Accept": mt.ACCEPT},
            what=f"manifest {repo}:{reference}",
        )
        raw = response.content
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in (*mt.MANIFESTS, *mt.INDEXES):
            media_type = str(_json(raw).get("mediaType", media_type))
        digest = sha256_digest(raw)
        header = response.headers.get("Docker-Content-Digest")
        if reference.startswith("sha256:") and digest != reference:
            raise RemoteError(f"{self.host}/{repo}@{reference}: content hashes to {digest}")
        if header and header != digest:
            log.debug("registry digest header %s differs from content %s", header, digest)
        return Manifest(raw=raw, media_type=media_type, digest=digest)

    def manifest_digest(self, repo: str, reference: str) -> str | None:
        """HEAD a manifest; its digest, or None when absent."""
        response = self.request(
            "HEAD",
            f"/v2/{repo}/manifests/{reference}",
            scope=_pull(repo),
            headers={"Accept": mt.ACCEPT},
            ok=(200, 404),
            what=f"manifest {repo}:{reference}",
        )
        response.close()
        if response.status_code == 404:
            return None
        return response.headers.get("Docker-Content-Digest")

    def put_manifest(self, repo: str, reference: str, manifest: Manifest) -> str:
        response = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=_push(repo),
            headers={"Content-Type": manifest.media_type},
            data=manifest.raw,
            ok=(200, 201),
            what=f"manifest {repo}:{reference}",
        )
        response.close()
        digest = response.headers.get("Docker-Content-Digest", manifest.digest)
        if digest != manifest.digest:
            raise RemoteError(
                f"{self.host}/{repo}:{reference} stored digest {digest}, expected "
                f"{manifest.digest}",
                cause="the registry rewrote the manifest",
                fix="use a registry that stores manifests byte for byte",
            )
        return digest

    # -- blobs -----------------------------------------------------------------
    def blob_exists(self, repo: str, digest: str) -> bool:
        response = self.request(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            scope=_pull(repo),
            ok=(200, 404),
            what=f"blob {digest[:19]}",
        )
        response.close()
        return response.status_code == 200

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount within this registry; False when the registry declines."""
        query = urlencode({"mount": digest, "from": from_repo})
        response = self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/?{query}",
            scope=f"repository:{repo}:pull,push repository:{from_repo}:pull",
            ok=(201, 202),
            what=f"mount of {digest[:19]}",
        )
        response.close()
        if response.status_code == 202:
            # Declined (e.g. no pull rights on the source): an upload session was opened instead.
            self._cancel(response, repo)
            return False
        return True

    def check_push(self, repo: str) -> None:
        """Prove we may push to ``repo`` without writing anything: open an upload session
        (the registry authorises it like a push) and cancel it. AuthError when refused."""
        response = self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            scope=_push(repo),
            ok=(202,),
            what=f"a push to {repo}",
        )
        response.close()
        self._cancel(response, repo)

    def _cancel(self, response: requests.Response, repo: str) -> None:
        location = response.headers.get("Location")
        if location:
            self.request(
                "DELETE", location, scope=_push(repo), ok=(204, 404, 200), what="upload cancel"
            ).close()

    def get_blob(self, repo: str, digest: str) -> bytes:
        response = self.request(
            "GET", f"/v2/{repo}/blobs/{digest}", scope=_pull(repo), what=f"blob {digest[:19]}"
        )
        data = response.content
        if sha256_digest(data) != digest:
            raise RemoteError(f"{self.host}/{repo}: blob {digest} has other content")
        return data

    def open_blob(self, repo: str, digest: str) -> requests.Response:
        """A streaming GET of a blob (caller closes); redirects to a CDN are followed."""
        return self.request(
            "GET",
            f"/v2/{repo}/blobs/{digest}",
            scope=_pull(repo),
            stream=True,
            what=f"blob {digest[:19]}",
        )

    def upload_blob(
        self, repo: str, digest: str, size: int, chunks: Callable[[int], Iterator[bytes]]
    ) -> None:
        """Upload in chunks: POST, then PATCH each chunk with Content-Range, then PUT ?digest.

        ``chunks(offset)`` yields the blob's bytes from ``offset``; on a failure
        mid-upload the registry's committed offset is read back and the upload
        resumes from there (or restarts in a new session if the old one is gone).
        """
        scope = _push(repo)
        for session_attempt in range(self.retry.attempts):
            response = self.request(
                "POST",
                f"/v2/{repo}/blobs/uploads/",
                scope=scope,
                ok=(202,),
                what=f"upload of {digest[:19]}",
            )
            response.close()
            location = self._url(response.headers["Location"])
            try:
                location = self._send_chunks(repo, location, size, chunks, digest)
            except (RemoteError, TransientError) as exc:
                if session_attempt + 1 == self.retry.attempts:
                    if isinstance(exc, RemoteError):
                        raise
                    raise RemoteError(
                        f"upload of {digest[:19]} to {self.host}/{repo} kept failing: {exc}",
                        cause="the registry or the network is unhealthy (5xx, 429, resets)",
                        fix="rerun: blobs already pushed are skipped, so the push resumes",
                    ) from exc
                log.warning(
                    "upload of %s to %s failed (%s); starting a new session", digest[:19], repo, exc
                )
                continue
            sep = "&" if "?" in location else "?"
            try:
                done = self.request(
                    "PUT",
                    f"{location}{sep}{urlencode({'digest': digest})}",
                    scope=scope,
                    headers={"Content-Length": "0"},
                    data=b"",
                    ok=(201, 204),
                    what=f"commit of {digest[:19]}",
                )
            except RemoteError as exc:
                # The session holds bytes that hash wrong (a chunk half-written before a
                # cut): throw the session away and upload again.
                if "DIGEST_INVALID" not in str(exc) or session_attempt + 1 == self.retry.attempts:
                    raise
                log.warning("registry saw a damaged upload of %s; starting over", digest[:19])
                continue
            done.close()
            return

    def _send_chunks(
        self,
        repo: str,
        location: str,
        size: int,
        chunks: Callable[[int], Iterator[bytes]],
        digest: str,
    ) -> str:
        offset = 0
        failures = 0
        while offset < size:
            try:
                for chunk in chunks(offset):
                    end = offset + len(chunk) - 1
                    response = self._patch(location, chunk, offset, end, repo)
                    location = self._url(response.headers.get("Location", location))
                    offset = end + 1
                    failures = 0
            except TransientError as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise
                resumed = self._upload_offset(location, repo)
                if resumed is None:
                    raise
                log.warning("resuming upload of %s at byte %d (%s)", digest[:19], resumed, exc)
                offset = resumed
        return location

    def _patch(
        self, location: str, chunk: bytes, start: int, end: int, repo: str
    ) -> requests.Response:
        hdrs = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{end}",
            "Content-Length": str(len(chunk)),
        }
        if _push(repo) in self._auth_header:
            hdrs["Authorization"] = self._auth_header[_push(repo)]
        try:
            response = self.session.patch(
                location, data=chunk, headers=hdrs, timeout=self.retry.timeout_s
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"PATCH at byte {start}: {exc}") from exc
        response.close()
        if response.status_code == 202:
            return response
        if response.status_code == 401 and self._authorize(response, _push(repo)):
            raise TransientError("authorization expired during upload")
        if response.status_code in _TRANSIENT_STATUS or response.status_code == 416:
            raise TransientError(f"PATCH at byte {start}: HTTP {response.status_code}")
        raise RemoteError(
            f"{self.host}: PATCH at byte {start} answered "
            f"{response.status_code}: {_error_codes(response)}"
        )

    def _upload_offset(self, location: str, repo: str) -> int | None:
        """Where the registry's upload session stands (next byte to send), or None if gone."""
        try:
            response = self.request(
                "GET", location, scope=_push(repo), ok=(204, 404), what="upload status"
            )
        except (RemoteError, ArtifactNotFoundError):
            return None
        response.close()
        if response.status_code == 404:
            return None
        rng = response.headers.get("Range", "")
        match = re.fullmatch(r"(?:bytes=)?0-(\d+)", rng)
        if not match or match[1] == "0":
            # "0-0" means 0 or 1 bytes (distribution cannot say which): start a new session.
            return None
        return int(match[1]) + 1


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"


def _push(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _json(raw: bytes) -> dict[str, Any]:
    data = json.loads(raw)
    return data if isinstance(data, dict) else {}


def client_for(
    ref: ImageRef, credentials: CredentialStore, *, insecure: bool, retry: RetryPolicy | None = None
) -> RegistryClient:
    """A client for ``ref``'s registry; loopback registries are plain HTTP, as in Docker."""
    return RegistryClient(
        ref.api_host, credentials=credentials, insecure=insecure or ref.is_loopback, retry=retry
    )


class StreamingUpload:
    """Upload a blob while it is still being written to disk.

    The digest of a new layer is known only once compression ends; for an image
    that does not exist yet, waiting for it would serialise compression and
    upload. This opens the upload session at once and PATCHes each chunk as it
    lands on disk, then commits with the digest at the end. Any failure only
    stops the stream (the session is cancelled): the caller then uploads the
    finished file the normal, resumable way.
    """

    def __init__(self, client: RegistryClient, repo: str) -> None:
        self.client = client
        self.repo = repo
        self.sent = 0
        self.error: BaseException | None = None
        self._location: str | None = None
        self._path: Path | None = None
        self._available = 0
        self._done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def progress(self, path: Path, size: int) -> None:
        """Called by the layer writer: ``size`` bytes of ``path`` are on disk."""
        with self._cond:
            self._path = path
            self._available = size
            self._cond.notify()

    def _next(self) -> tuple[Path | None, int] | None:
        chunk = self.client.chunk_size
        with self._cond:
            while not self._done and self._available - self.sent < chunk:
                self._cond.wait()
            if self._available <= self.sent:
                return None
            return self._path, min(chunk, self._available - self.sent)

    def _run(self) -> None:
        try:
            response = self.client.request(
                "POST",
                f"/v2/{self.repo}/blobs/uploads/",
                scope=_push(self.repo),
                ok=(202,),
                what="streaming upload",
            )
            response.close()
            self._location = self.client._url(response.headers["Location"])
            handle = None
            try:
                while (step := self._next()) is not None:
                    path, size = step
                    if handle is None:
                        if path is None:
                            raise RuntimeError("progress reported no file")
                        handle = path.open("rb")
                    data = os.pread(handle.fileno(), size, self.sent)
                    reply = self.client._patch(
                        self._location, data, self.sent, self.sent + len(data) - 1, self.repo
                    )
                    self._location = self.client._url(reply.headers.get("Location", self._location))
                    self.sent += len(data)
            finally:
                if handle is not None:
                    handle.close()
        except BaseException as exc:  # noqa: BLE001 - reported through finish()
            self.error = exc
            with self._cond:
                self._done = True

    def finish(self, digest: str, size: int) -> bool:
        """Wait for the stream and commit it; True when the blob is now in the registry."""
        with self._cond:
            self._available = size
            self._done = True
            self._cond.notify()
        self._thread.join()
        if self.error is not None or self.sent != size or self._location is None:
            log.info(
                "streaming upload stopped (%s); uploading the finished layer instead",
                self.error or f"{self.sent} of {size} bytes",
            )
            self._cancel()
            return False
        if self.client.blob_exists(self.repo, digest):
            self._cancel()  # someone pushed the same layer meanwhile: nothing to commit
            return False
        sep = "&" if "?" in self._location else "?"
        try:
            self.client.request(
                "PUT",
                f"{self._location}{sep}{urlencode({'digest': digest})}",
                scope=_push(self.repo),
                headers={"Content-Length": "0"},
                data=b"",
                ok=(201, 204),
                what=f"commit of {digest[:19]}",
            ).close()
        except (RemoteError, AuthError, ArtifactNotFoundError) as exc:
            log.info("streamed layer was not accepted (%s); uploading it again", exc)
            return False
        return True

    def _cancel(self) -> None:
        if self._location is None:
            return
        try:
            self.client.request(
                "DELETE",
                self._location,
                scope=_push(self.repo),
                ok=(204, 404, 200),
                what="upload cancel",
            ).close()
        except (RemoteError, AuthError, ArtifactNotFoundError) as exc:
            log.debug("could not cancel an upload session: %s", exc)
