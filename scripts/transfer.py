"""HTTP downloads that survive a bad network day.

* Retries 429, 5xx, timeouts and connection resets with exponential backoff and
  jitter (tenacity), honouring ``Retry-After``.
* Streams in 1 MiB chunks, hashing as it goes; resumes with ``Range`` after a
  mid-stream reset when the server supports it, restarts cleanly otherwise.
* Follows redirects itself so that credentials are sent only to the host they
  belong to (GitHub answers asset downloads with a 302 to another host).
* Writes through :func:`scripts.atomic.atomic_file`: a partial download never
  appears under its final name.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tqdm import tqdm

from scripts.atomic import atomic_file
from scripts.errors import ArtifactNotFoundError, AuthError, RemoteError
from scripts.log import log

T = TypeVar("T")
CHUNK_SIZE = 1 << 20
USER_AGENT = "tf-release-pipeline/0.1 (+https://github.com/)"
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up on a remote service."""

    attempts: int = 6
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 20.0
    timeout_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.initial_backoff_s * (2 ** (attempt - 1))))


class TransientError(Exception):
    """A failure worth retrying; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    size: int
    final_url: str


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = exc.retry_after if isinstance(exc, TransientError) else None
        delay = policy.backoff(state.attempt_number)
        if hinted is not None:
            delay = min(max(delay, hinted), policy.max_backoff_s * 3)
        log.warning("transient failure (%s); retrying in %.1f s", exc, delay)
        return delay

    return wait


def retrying(policy: RetryPolicy) -> Retrying:
    """A tenacity loop that retries :class:`TransientError` under ``policy``."""
    return Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        retry=retry_if_exception_type(TransientError),
        reraise=True,
    )


def call_with_retries(
    policy: RetryPolicy, once: Callable[[], T], give_up: Callable[[TransientError], Exception]
) -> T:
    """Run ``once`` under ``policy``; when transient failures outlast it, raise ``give_up(exc)``."""
    try:
        for attempt in retrying(policy):
            with attempt:
                return once()
    except TransientError as exc:
        raise give_up(exc) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def raise_for_status(response: requests.Response, what: str) -> None:
    """Map an HTTP status to the project's errors (transient ones are retried)."""
    status = response.status_code
    if status < 400:
        return
    host = urlsplit(response.url).netloc
    if status in _RETRY_STATUSES:
        raise TransientError(
            f"{host} answered HTTP {status} for {what}",
            _retry_after_seconds(response.headers.get("Retry-After")),
        )
    if status in (401, 403):
        raise AuthError(
            f"{host} refused access to {what} (HTTP {status})",
            cause="missing, expired or insufficient credentials",
            fix="check the token or credentials for this host and that it may read the object",
        )
    if status == 404:
        raise ArtifactNotFoundError(
            f"{what} was not found at {host} (HTTP 404)",
            cause="a wrong name or URL, or a private object requested without credentials",
            fix="check the source URI; for private objects provide credentials",
        )
    raise RemoteError(
        f"{host} answered HTTP {status} for {what}: {response.text[:200]}",
        cause="the server rejected the request",
        fix="check the source URI",
    )


def _open_stream(
    session: requests.Session,
    url: str,
    headers: Mapping[str, str],
    policy: RetryPolicy,
    what: str,
) -> requests.Response:
    """GET with manual redirects; credentials never leave the host they were meant for."""
    origin = urlsplit(url).netloc
    current = url
    hdrs = dict(headers)
    for _ in range(_MAX_REDIRECTS + 1):
        try:
            response = session.get(
                current, headers=hdrs, stream=True, allow_redirects=False, timeout=policy.timeout_s
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"connection to {urlsplit(current).netloc} failed: {exc}") from exc
        if response.status_code in _REDIRECT_STATUSES and "Location" in response.headers:
            response.close()
            current = urljoin(current, response.headers["Location"])
            if urlsplit(current).netloc != origin:
                # Never forward our token to the redirect target (e.g. a signed CDN URL).
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "authorization"}
            continue
        try:
            raise_for_status(response, what)
        except BaseException:
            response.close()
            raise
        return response
    raise RemoteError(
        f"too many redirects while downloading {what}",
        cause="a redirect loop at the server",
        fix="check the URL",
    )


class _Progress:
    def __init__(self, enabled: bool, total: int | None, label: str) -> None:
        self._bar: tqdm[Any] | None = None
        if enabled:
            self._bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False)

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def reset(self) -> None:
        if self._bar is not None:
            self._bar.reset()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def download(
    session: requests.Session,
    url: str,
    dest: Path,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    policy: RetryPolicy | None = None,
    progress: bool = False,
) -> DownloadResult:
    """Download ``url`` to ``dest`` atomically and return its sha256 and size.

    Raises ArtifactNotFoundError (404), AuthError (401/403), RemoteError (other
    4xx, or transient failures outlasting the retry policy).
    """
    policy = policy or RetryPolicy()
    base_headers = dict(headers or {})
    hasher = hashlib.sha256()
    received = 0
    final_url = url
    bar = _Progress(progress, None, dest.name)
    started = time.monotonic()

    def attempt_once(fh: BinaryIO) -> None:
        nonlocal hasher, received, final_url
        hdrs = dict(base_headers)
        if received:
            hdrs["Range"] = f"bytes={received}-"
        response = _open_stream(session, url, hdrs, policy, what)
        with response:
            final_url = response.url
            if received and response.status_code != 206:
                # The server ignored Range: start again from byte 0.
                log.info("server does not support resume; restarting %s", what)
                fh.seek(0)
                fh.truncate()
                hasher = hashlib.sha256()
                received = 0
                bar.reset()
            if bar._bar is not None and bar._bar.total is None:
                length = response.headers.get("Content-Length")
                if length and length.isdigit():
                    bar._bar.total = received + int(length)
            try:
                for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
                    fh.write(chunk)
                    hasher.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransientError(f"download of {what} interrupted at {received} bytes") from exc
            except requests.exceptions.ChunkedEncodingError as exc:
                raise TransientError(f"download of {what} interrupted at {received} bytes") from exc
            expected = response.headers.get("Content-Length")
            if (
                response.status_code == 200
                and expected
                and expected.isdigit()
                and received != int(expected)
            ):
                raise TransientError(
                    f"download of {what} ended early: {received} of {expected} bytes"
                )

    try:
        with atomic_file(dest) as fh:
            try:
                for attempt in retrying(policy):
                    with attempt:
                        attempt_once(fh)
            except TransientError as exc:
                raise RemoteError(
                    f"giving up on {what} after {policy.attempts} attempts: {exc}",
                    cause="the server or the network kept failing (5xx, 429 or resets)",
                    fix="retry later; if it persists check the service's status",
                ) from exc
    finally:
        bar.close()
    elapsed = max(time.monotonic() - started, 1e-6)
    log.info(
        "downloaded %s: %d bytes in %.1f s (%.1f MB/s)",
        what,
        received,
        elapsed,
        received / elapsed / 1e6,
    )
    return DownloadResult(path=dest, sha256=hasher.hexdigest(), size=received, final_url=final_url)
