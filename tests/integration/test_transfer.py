"""HTTP downloads against a real loopback server: retries, resume, redirects, failures."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from scripts import errors
from scripts.transfer import RetryPolicy, download, new_session
from tests.conftest import CLIResult

pytestmark = pytest.mark.integration
FAST = RetryPolicy(attempts=4, initial_backoff_s=0.05, max_backoff_s=0.2, timeout_s=10)
PAYLOAD = bytes(range(256)) * 8192  # 2 MiB


class Flaky:
    """Serves PAYLOAD, failing in scripted ways first; honours Range when asked to."""

    def __init__(self, script: list[str], *, ranges: bool = True) -> None:
        self.script = list(script)
        self.ranges = ranges
        self.seen_ranges: list[str | None] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self.lock:
            step = self.script.pop(0) if self.script else "ok"
            self.seen_ranges.append(request.headers.get("Range"))
        if step == "503":
            return Response("busy", status=503, headers={"Retry-After": "0"})
        if step == "429":
            return Response("slow down", status=429)
        start = 0
        status = 200
        headers = {"Accept-Ranges": "bytes"} if self.ranges else {}
        rng = request.headers.get("Range")
        if self.ranges and rng and (m := re.fullmatch(r"bytes=(\d+)-", rng)):
            start = int(m[1])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}"
        body = PAYLOAD[start:]
        headers["Content-Length"] = str(len(body))
        if step == "cut":

            def cut() -> Iterator[bytes]:
                # Past the client's 1 MiB read size, so part of the body is kept and resumed.
                for offset in range(0, len(body) * 3 // 4, 1 << 16):
                    yield body[offset : offset + (1 << 16)]
                raise ConnectionResetError("cut mid-stream")

            return Response(
                cut(), status=status, headers=headers, content_type="application/octet-stream"
            )
        return Response(
            body, status=status, headers=headers, content_type="application/octet-stream"
        )


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with new_session() as s:
        yield s


def _serve(httpserver: HTTPServer, handler: Callable[[Request], Response]) -> str:
    httpserver.expect_request("/model.tar.gz").respond_with_handler(handler)
    return httpserver.url_for("/model.tar.gz")


def test_5xx_and_429_are_retried(
    session: requests.Session, httpserver: HTTPServer, tmp_path: Path
) -> None:
    url = _serve(httpserver, Flaky(["503", "429"]))
    result = download(session, url, tmp_path / "m", what="model", policy=FAST)
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert (tmp_path / "m").read_bytes() == PAYLOAD


def test_mid_stream_reset_resumes_with_range(
    session: requests.Session, httpserver: HTTPServer, tmp_path: Path
) -> None:
    flaky = Flaky(["cut"])
    url = _serve(httpserver, flaky)
    result = download(session, url, tmp_path / "m", what="model", policy=FAST)
    assert result.size == len(PAYLOAD)
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert flaky.seen_ranges[0] is None
    assert flaky.seen_ranges[1] == f"bytes={1 << 20}-"


def test_mid_stream_reset_without_range_support_restarts(
    session: requests.Session, httpserver: HTTPServer, tmp_path: Path
) -> None:
    url = _serve(httpserver, Flaky(["cut"], ranges=False))
    result = download(session, url, tmp_path / "m", what="model", policy=FAST)
    assert (tmp_path / "m").read_bytes() == PAYLOAD
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()


def test_persistent_failure_gives_up_and_leaves_no_partial_file(
    session: requests.Session, httpserver: HTTPServer, tmp_path: Path
) -> None:
    url = _serve(httpserver, Flaky(["cut"] * 10))
    with pytest.raises(errors.RemoteError, match=r"giving up.*4 attempts"):
        download(session, url, tmp_path / "m", what="model", policy=FAST)
    assert list(tmp_path.iterdir()) == []


def test_404_and_401_map_to_project_errors(
    session: requests.Session, httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/gone").respond_with_data("no", status=404)
    httpserver.expect_request("/secret").respond_with_data("no", status=401)
    with pytest.raises(errors.ArtifactNotFoundError):
        download(session, httpserver.url_for("/gone"), tmp_path / "a", what="x", policy=FAST)
    with pytest.raises(errors.AuthError):
        download(session, httpserver.url_for("/secret"), tmp_path / "b", what="x", policy=FAST)
    assert list(tmp_path.iterdir()) == []


def test_authorization_is_dropped_on_cross_host_redirect(
    session: requests.Session, tmp_path: Path
) -> None:
    origin = HTTPServer(host="127.0.0.1", port=0)
    other = HTTPServer(host="localhost", port=0)
    seen: list[str | None] = []

    def record(request: Request) -> Response:
        seen.append(request.headers.get("Authorization"))
        return Response(PAYLOAD)

    origin.start()
    other.start()
    try:
        other.expect_request("/blob").respond_with_handler(record)
        origin.expect_request("/same").respond_with_handler(record)
        origin.expect_request("/start").respond_with_data(
            "", status=302, headers={"Location": other.url_for("/blob")}
        )
        origin.expect_request("/local").respond_with_data(
            "", status=302, headers={"Location": "/same"}
        )
        download(
            session,
            origin.url_for("/start"),
            tmp_path / "a",
            what="x",
            headers={"Authorization": "Bearer t0k"},
            policy=FAST,
        )
        download(
            session,
            origin.url_for("/local"),
            tmp_path / "b",
            what="x",
            headers={"Authorization": "Bearer t0k"},
            policy=FAST,
        )
    finally:
        origin.stop()
        other.stop()
    assert seen == [None, "Bearer t0k"]


def test_https_source_through_the_cli_on_loopback_http(
    cli: Callable[..., CLIResult],
    httpserver: HTTPServer,
    packaged: dict[str, object],
    tmp_path: Path,
) -> None:
    data = Path(str(packaged["path"])).read_bytes()
    httpserver.expect_request("/releases/digits-1.tar.gz").respond_with_data(data)
    result = cli(
        "fetch",
        httpserver.url_for("/releases/digits-1.tar.gz"),
        "--dest",
        tmp_path / "d",
        "--sha256",
        f"sha256:{packaged['sha256']}",
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    assert result.json()["model_name"] == "digits"


def test_connection_refused_is_retried_then_reported(
    session: requests.Session, tmp_path: Path
) -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}/x.tar.gz"
    with pytest.raises(errors.RemoteError, match="giving up"):
        download(session, url, tmp_path / "x", what="x", policy=FAST)
