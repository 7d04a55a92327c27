"""Robustness of ``python -m scripts serve``: bad input, memory, version hot-swap, faults.

* A corpus of bad requests, each answered with a TF-Serving-style ``{"error": ...}`` and its
  status, after which the same process still serves a good request.
* RSS after 2000 good requests compared with after a 300-request warm-up.
* Version hot-swap without a restart: a version 2 renamed into the base path is loaded and
  served; a broken version 3 is reported (END, with its error) while version 2 keeps serving.
* ``--unsafe_fault_injection``: ``error_ratio=1`` fails every predict with 500, ``latency_ms``
  delays every predict.
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.integration.serving_fixtures import (
    MONITORING_CONFIG,
    SAMPLE_DIGIT,
    ExportedModels,
    Server,
    assert_error,
    digits_images,
    loads,
    metric_value,
    predict,
    running_server,
    write_text,
)

pytestmark = [pytest.mark.tensorflow, pytest.mark.integration]

Reference = Callable[[np.ndarray, int], dict[str, np.ndarray]]
REST_TIMEOUT_MS = 1000
REQUEST_COUNT = ":tensorflow:serving:request_count"
GOOD = {"instances": [SAMPLE_DIGIT]}


@pytest.fixture(scope="module")
def server(
    exported_models: ExportedModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("robust")
    config = write_text(
        work / "models.config",
        f"""
model_config_list {{
  config {{ name: "digits" base_path: "{exported_models.digits}" model_platform: "tensorflow" }}
  config {{ name: "text" base_path: "{exported_models.base("text")}" model_platform: "tensorflow" }}
}}
""",
    )
    with running_server(
        [
            f"--model_config_file={config}",
            f"--rest_api_timeout_in_ms={REST_TIMEOUT_MS}",
            f"--monitoring_config_file={MONITORING_CONFIG}",
        ],
        log_dir=work,
    ) as running:
        yield running


def assert_serves(server: Server) -> None:
    assert server.alive(), server.log()[-3000:]
    response = predict(server, GOOD)
    assert response.status_code == 200, response.text
    assert loads(response)["predictions"][0]["class_id"] == 0


# -- a corpus of bad requests -----------------------------------------------------------
@dataclass(frozen=True)
class Bad:
    method: str
    path: str  # below the REST root
    body: bytes | None
    status: int
    fragment: str = ""


def _image(value: Any) -> list[list[Any]]:
    rows = [list(map(float, row)) for row in SAMPLE_DIGIT]
    rows[3][3] = value
    return rows


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


PREDICT = "/v1/models/digits:predict"
TEXT = "/v1/models/text:predict"
DEEP = 100_000

CORPUS: dict[str, Bad] = {
    "truncated-json": Bad("POST", PREDICT, b'{"instances": [[1, 2', 400, "json"),
    "not-json": Bad("POST", PREDICT, b"instances=1", 400, "json"),
    "empty-body": Bad("POST", PREDICT, b"", 400, "json"),
    "invalid-utf8": Bad("POST", PREDICT, b'\xff\xfe{"instances": 1}', 400, "json"),
    "json-array": Bad("POST", PREDICT, b"[]", 400),
    "json-null": Bad("POST", PREDICT, b"null", 400),
    "json-string": Bad("POST", PREDICT, b'"instances"', 400),
    "instances-a-string": Bad("POST", PREDICT, _json({"instances": "abc"}), 400, "instances"),
    "instances-an-object": Bad("POST", PREDICT, _json({"instances": {"pixels": 1}}), 400),
    "inputs-null": Bad("POST", PREDICT, _json({"inputs": None}), 400),
    "null-pixel": Bad("POST", PREDICT, _json({"instances": [_image(None)]}), 400, "pixels"),
    "bool-pixel": Bad("POST", PREDICT, _json({"instances": [_image(True)]}), 400, "pixels"),
    "string-pixel": Bad("POST", PREDICT, _json({"instances": [_image("1.5")]}), 400, "pixels"),
    "object-pixel": Bad("POST", PREDICT, _json({"instances": [_image({"x": 1})]}), 400),
    "list-pixel": Bad("POST", PREDICT, _json({"instances": [_image([1, 2])]}), 400),
    "signature-not-a-string": Bad(
        "POST", PREDICT, _json({"signature_name": 5, "instances": [SAMPLE_DIGIT]}), 400
    ),
    "deeply-nested-list": Bad(
        "POST", PREDICT, b'{"instances": ' + b"[" * DEEP + b"]" * DEEP + b"}", 400
    ),
    "deeply-nested-object": Bad("POST", PREDICT, b'{"a": ' * DEEP + b"1" + b"}" * DEEP, 400),
    "nested-below-parser-limit": Bad(
        "POST", PREDICT, b'{"instances": ' + b"[" * 900 + b"1" + b"]" * 900 + b"}", 400
    ),
    "b64-garbage": Bad("POST", TEXT, _json({"instances": [{"b64": "%%%not base64%%%"}]}), 400),
    "b64-not-a-string": Bad("POST", TEXT, _json({"instances": [{"b64": 12}]}), 400),
    "b64-with-extra-key": Bad("POST", TEXT, _json({"instances": [{"b64": "AA==", "x": 1}]}), 400),
    "b64-for-a-float-input": Bad("POST", PREDICT, _json({"instances": [{"b64": "AAAAAA=="}]}), 400),
    "put-status": Bad("PUT", "/v1/models/digits", b"{}", 400, "malformed"),
    "delete-status": Bad("DELETE", "/v1/models/digits", None, 400, "malformed"),
    "get-predict": Bad("GET", PREDICT, None, 400, "malformed"),
    "patch-predict": Bad("PATCH", PREDICT, _json(GOOD), 400, "malformed"),
    "post-metadata": Bad("POST", "/v1/models/digits/metadata", b"{}", 400, "malformed"),
    "unknown-verb": Bad("POST", "/v1/models/digits:explain", _json(GOOD), 400, "malformed"),
    "unknown-subpath": Bad("GET", "/v1/models/digits/foo", None, 400, "malformed"),
    "version-not-a-number": Bad("GET", "/v1/models/digits/versions/abc", None, 400),
    "no-model-name": Bad("GET", "/v1/models", None, 400),
    "v2-path": Bad("GET", "/v2/models/digits", None, 404),
    "root-path": Bad("GET", "/", None, 404),
    "long-model-name": Bad("GET", "/v1/models/" + "m" * 4000, None, 404),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_bad_request_gets_a_tf_serving_error(server: Server, name: str) -> None:
    bad = CORPUS[name]
    response = requests.request(
        bad.method,
        server.url(bad.path),
        data=bad.body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert_error(response, bad.status, bad.fragment)


def _raw_response(sock: socket.socket, deadline: float) -> tuple[int, bytes]:
    """Read one HTTP/1.1 response (status, body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length")
    )
    while len(body) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-response"
        body += chunk
    return status, body


def test_slow_client_trickling_the_body_times_out(server: Server) -> None:
    head = (
        b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
    )
    started = time.monotonic()
    deadline = started + 10
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as sock:
        sock.sendall(head)
        while True:  # a byte every 0.2 s: the 4000-byte body would take 800 s
            sock.settimeout(0.2)
            try:
                first = sock.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                assert time.monotonic() < deadline, "no answer to a trickling client"
                sock.sendall(b" ")
                continue
            assert first, "the server closed the connection without an answer"
            break
        status, body = _raw_response(sock, deadline)
    elapsed = time.monotonic() - started
    assert status == 504, (status, body)
    error = json.loads(body)
    assert set(error) == {"error"} and error["error"], error
    assert REST_TIMEOUT_MS / 1000 * 0.9 <= elapsed <= REST_TIMEOUT_MS / 1000 + 2.0, elapsed


def test_client_disconnecting_mid_body(server: Server) -> None:
    head = (
        b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    before = server.metrics()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as sock:
            sock.sendall(head + b'{"instances": [[')

    def count(text: str, status: str) -> float:
        return metric_value(text, REQUEST_COUNT, model_name="digits", status=status)

    # Counted as cancelled by the client, not as served, and not as a server failure.
    wait_for(
        "5 cancelled requests",
        lambda: count(server.metrics(), "CANCELLED") - count(before, "CANCELLED") == 5,
        timeout_s=10,
    )
    after = server.metrics()
    assert count(after, "OK") == count(before, "OK")
    assert count(after, "INTERNAL") == count(before, "INTERNAL") == 0
    assert_serves(server)


def test_still_healthy_after_the_corpus(server: Server) -> None:
    assert_serves(server)
    status = requests.get(server.model_url(), timeout=10)
    assert status.status_code == 200
    assert [s["state"] for s in loads(status)["model_version_status"]] == ["AVAILABLE"]


# -- memory --------------------------------------------------------------------------------
WARMUP_REQUESTS = 300
MEASURED_REQUESTS = 2000
RSS_GROWTH_LIMIT_KIB = 16 * 1024  # measured here: < 1 MiB


def test_rss_does_not_grow_with_requests(server: Server) -> None:
    images = digits_images(4).tolist()
    bodies = [_json({"instances": images[: 1 + i % 4]}) for i in range(4)]
    with requests.Session() as session:
        url = server.model_url(":predict")

        def run(count: int) -> None:
            for i in range(count):
                response = session.post(url, data=bodies[i % 4], timeout=30)
                assert response.status_code == 200, response.text

        run(WARMUP_REQUESTS)
        warm = server.rss_kib()
        run(MEASURED_REQUESTS)
        after = server.rss_kib()
    growth = after - warm
    assert growth < RSS_GROWTH_LIMIT_KIB, f"RSS grew {growth} KiB ({warm} -> {after} KiB)"
    assert server.alive()


# -- version hot-swap ---------------------------------------------------------------------
def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _states(server: Server) -> dict[str, dict[str, Any]]:
    response = requests.get(server.model_url(), timeout=10)
    assert response.status_code == 200, response.text
    return {s["version"]: s for s in loads(response)["model_version_status"]}


def _publish(source: Path | None, base: Path, version: int) -> None:
    """Put a version directory in place the way exporters do: a temp name, then rename."""
    incoming = base / f".incoming-{version}"
    if source is None:  # a broken version: a saved_model.pb that is not a SavedModel
        incoming.mkdir()
        (incoming / "saved_model.pb").write_bytes(b"\x00garbage, not a SavedModel proto\xff" * 8)
        (incoming / "variables").mkdir()
    else:
        shutil.copytree(source, incoming)
    incoming.rename(base / str(version))  # atomic: the poller never sees a partial one


def _served_probabilities(server: Server, images: np.ndarray) -> np.ndarray:
    response = predict(server, {"instances": images.tolist()})
    assert response.status_code == 200, response.text
    return np.array([p["probabilities"] for p in loads(response)["predictions"]])


def _metadata_version(server: Server) -> str:
    response = requests.get(server.model_url("/metadata"), timeout=10)
    assert response.status_code == 200, response.text
    version = loads(response)["model_spec"]["version"]
    assert isinstance(version, str)
    return version


def test_version_hot_swap(
    exported_models: ExportedModels,
    digits_reference: Reference,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    work = tmp_path_factory.mktemp("hot-swap")
    base = work / "digits"
    base.mkdir()
    _publish(exported_models.digits / "1", base, 1)
    images = digits_images(6)
    v1, v2 = digits_reference(images, 1), digits_reference(images, 2)
    assert not np.allclose(v1["probabilities"], v2["probabilities"], atol=1e-4)
    with running_server(
        [
            "--model_name=digits",
            f"--model_base_path={base}",
            "--file_system_poll_wait_seconds=0.2",
        ],
        log_dir=work,
    ) as server:
        pid = server.pid
        assert _metadata_version(server) == "1"
        np.testing.assert_allclose(
            _served_probabilities(server, images), v1["probabilities"], rtol=1e-5, atol=1e-6
        )

        _publish(exported_models.digits / "2", base, 2)
        wait_for(
            "version 2 AVAILABLE",
            lambda: _states(server).get("2", {}).get("state") == "AVAILABLE",
        )
        assert _metadata_version(server) == "2"
        np.testing.assert_allclose(
            _served_probabilities(server, images), v2["probabilities"], rtol=1e-5, atol=1e-6
        )
        wait_for("version 1 unloaded", lambda: _states(server)["1"]["state"] == "END")

        _publish(None, base, 3)
        wait_for("version 3 reported", lambda: _states(server).get("3", {}).get("state") == "END")
        states = _states(server)
        broken = states["3"]["status"]
        assert broken["error_code"] != "OK" and broken["error_message"], states["3"]
        assert states["2"]["state"] == "AVAILABLE", states
        # Version 2 keeps serving, also after a few more polls.
        time.sleep(1.0)
        assert _states(server)["2"]["state"] == "AVAILABLE"
        assert _metadata_version(server) == "2"
        np.testing.assert_allclose(
            _served_probabilities(server, images), v2["probabilities"], rtol=1e-5, atol=1e-6
        )
        assert server.alive() and server.pid == pid  # never restarted


# -- fault injection ----------------------------------------------------------------------
def test_error_ratio_1_fails_every_predict(digits_export: Path, tmp_path: Path) -> None:
    with running_server(
        [
            "--model_name=digits",
            f"--model_base_path={digits_export}",
            "--unsafe_fault_injection=error_ratio=1,seed=1",
        ],
        log_dir=tmp_path,
    ) as server:
        for _ in range(5):
            assert_error(predict(server, GOOD), 500, "injected fault")
        # Only predictions fail: the model is AVAILABLE and its metadata is served.
        assert requests.get(server.model_url("/metadata"), timeout=10).status_code == 200
        assert server.alive()


def test_latency_ms_delays_every_predict(
    server: Server, digits_export: Path, tmp_path: Path
) -> None:
    latency_s = 0.25

    def timings(target: Server) -> list[float]:
        result = []
        for _ in range(5):
            started = time.perf_counter()
            response = predict(target, GOOD)
            result.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
        return result

    baseline = timings(server)
    assert statistics.median(baseline) < latency_s / 2, baseline
    with running_server(
        [
            "--model_name=digits",
            f"--model_base_path={digits_export}",
            f"--unsafe_fault_injection=latency_ms={latency_s * 1000:.0f},seed=1",
        ],
        log_dir=tmp_path,
    ) as slow:
        delayed = timings(slow)
    assert min(delayed) >= latency_s, delayed
    assert statistics.median(delayed) < latency_s + 0.5, delayed
