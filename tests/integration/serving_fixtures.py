"""Helpers and fixtures for the ``python -m scripts serve`` integration tests.

* ``exported_models`` (session): the digits model exported by ``models/digits/export.py`` as
  versions 1 and 2 (different seeds, so their predictions differ), and a few tiny SavedModels
  built with ``tf.saved_model.save`` (a two-input/two-output model with extra signatures, a
  string model with a ``*_bytes`` output, a deliberately slow model). Each is exported once
  per test session, in subprocesses running in parallel.
* ``digits_export`` (module): the digits base directory (``.../digits`` holding 1/ and 2/).
* ``running_server(args)``: starts the server on 127.0.0.1 with free ports, waits until the
  model is AVAILABLE, yields a :class:`Server` and always stops the process (SIGTERM, then
  SIGKILL), checking that it exited cleanly.
* ``digits_reference``: the same SavedModels run in this process with plain TensorFlow, the
  ground truth to compare served predictions with.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import REPO_ROOT, free_port

DIGITS_EXPORT = REPO_ROOT / "models" / "digits" / "export.py"
DIGITS_EPOCHS = "8"  # accurate enough (> 0.9 on the holdout), and quick
EXPORT_TIMEOUT_S = 300
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
MONITORING_CONFIG = REPO_ROOT / "kustomize" / "base" / "monitoring.config"
METRICS_PATH = "/monitoring/prometheus/metrics"
SLOW_LOOP_ITERATIONS = 20000  # ~50 ms per call on the 2-core build machine

# load_digits().images[0] (a handwritten 0), the sample request of models/digits/model.yaml.
SAMPLE_DIGIT: list[list[float]] = [
    [0, 0, 5, 13, 9, 1, 0, 0],
    [0, 0, 13, 15, 10, 15, 5, 0],
    [0, 3, 15, 2, 0, 11, 8, 0],
    [0, 4, 12, 0, 0, 8, 8, 0],
    [0, 5, 8, 0, 0, 9, 8, 0],
    [0, 4, 11, 0, 1, 12, 7, 0],
    [0, 2, 14, 5, 10, 12, 0, 0],
    [0, 0, 6, 13, 10, 0, 0, 0],
]


# -- models --------------------------------------------------------------------------------
def build_tiny_models(root: Path) -> None:
    """Write ``root/{pair,text,slow}/1`` (runs in a subprocess: it imports TensorFlow).

    * pair: ``serving_default`` (a, b: float [?,3]) -> sum [?,3], dot [?];
      ``scale`` (x: float [?]) -> y = 2x (one output); ``log`` (x) -> y = log(x) (NaN, -inf).
    * text: ``serving_default`` (text: string [?]) -> echo_bytes (the same bytes), length int32.
    * slow: ``serving_default`` (x: float [?]) -> y = x, after a ~50 ms busy loop.
    """
    import tensorflow as tf

    vector = tf.TensorSpec([None, 3], tf.float32)
    scalar = tf.TensorSpec([None], tf.float32)

    class Pair(tf.Module):
        @tf.function(input_signature=[vector, vector])
        def pair(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"sum": a + b, "dot": tf.reduce_sum(a * b, axis=-1)}

        @tf.function(input_signature=[scalar])
        def scale(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": 2.0 * x}

        @tf.function(input_signature=[scalar])
        def log(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"y": tf.math.log(x)}

    class Text(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def text(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"echo_bytes": tf.identity(text), "length": tf.strings.length(text)}

    class Slow(tf.Module):
        @tf.function(input_signature=[scalar])
        def slow(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            def body(i: tf.Tensor, acc: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                return i + 1, acc + tf.sin(acc)

            _, acc = tf.while_loop(
                lambda i, _acc: i < SLOW_LOOP_ITERATIONS,
                body,
                [tf.constant(0), tf.constant(0.5)],
            )
            return {"y": x + 0.0 * acc}

    pair = Pair()
    tf.saved_model.save(
        pair,
        str(root / "pair" / "1"),
        signatures={"serving_default": pair.pair, "scale": pair.scale, "log": pair.log},
    )
    text = Text()
    tf.saved_model.save(text, str(root / "text" / "1"), signatures={"serving_default": text.text})
    slow = Slow()
    tf.saved_model.save(slow, str(root / "slow" / "1"), signatures={"serving_default": slow.slow})


@dataclass(frozen=True)
class ExportedModels:
    root: Path

    @property
    def digits(self) -> Path:
        return self.root / "digits"

    def base(self, name: str) -> Path:
        return self.root / name


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = str(REPO_ROOT)
    return env


def export_models(root: Path) -> ExportedModels:
    """Export digits v1 (seed 0) and v2 (seed 1) and the tiny models, in parallel."""
    commands = [
        [
            sys.executable,
            str(DIGITS_EXPORT),
            "--out",
            str(root),
            "--version",
            str(version),
            "--seed",
            str(version - 1),
            "--epochs",
            DIGITS_EPOCHS,
        ]
        for version in (1, 2)
    ]
    commands.append(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; "
            "from tests.integration.serving_fixtures import build_tiny_models; "
            "build_tiny_models(Path(sys.argv[1]))",
            str(root),
        ]
    )
    procs = [
        subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=_subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in commands
    ]
    failures = []
    for cmd, proc in zip(commands, procs, strict=True):
        try:
            _, err = proc.communicate(timeout=EXPORT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            failures.append(f"{cmd[1:3]} exited {proc.returncode}:\n{err[-3000:]}")
    assert not failures, "\n".join(failures)
    models = ExportedModels(root)
    for version in ("1", "2"):
        assert (models.digits / version / "saved_model.pb").is_file()
    return models


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory: pytest.TempPathFactory) -> ExportedModels:
    """All test models, exported once per session (the exports are the slow part)."""
    return export_models(tmp_path_factory.mktemp("serving-models"))


@pytest.fixture(scope="module")
def digits_export(exported_models: ExportedModels) -> Path:
    """The digits base path (versions 1 and 2), for one test module."""
    return exported_models.digits


def digits_images(count: int) -> np.ndarray:
    """``count`` distinct handwritten digits, float32 [count, 8, 8], raw 0..16 pixels."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:count].astype(np.float32)
    assert len(images) == count
    return np.asarray(images)


@pytest.fixture(scope="session")
def digits_reference(
    exported_models: ExportedModels,
) -> Callable[[np.ndarray, int], dict[str, np.ndarray]]:
    """Run the exported digits model here (plain TensorFlow): reference predictions."""
    import tensorflow as tf

    loaded: dict[int, Any] = {}

    def predict(images: np.ndarray, version: int) -> dict[str, np.ndarray]:
        if version not in loaded:
            loaded[version] = tf.saved_model.load(str(exported_models.digits / str(version)))
        fn = loaded[version].signatures["serving_default"]
        outputs = fn(pixels=tf.constant(images, dtype=tf.float32))
        return {k: v.numpy() for k, v in outputs.items()}

    return predict


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def batching_config(path: Path, **values: int | Sequence[int]) -> Path:
    """A BatchingParameters text proto; sequences become repeated fields."""
    lines = []
    for key, value in values.items():
        if isinstance(value, int):
            lines.append(f"{key} {{ value: {value} }}")
        else:
            lines.extend(f"{key}: {v}" for v in value)
    return write_text(path, "\n".join(lines) + "\n")


# -- the server ------------------------------------------------------------------------------
@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    rest_url: str
    grpc_target: str
    rest_port: int
    model_name: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def url(self, path: str) -> str:
        return self.rest_url + path

    def model_url(self, suffix: str = "", model: str | None = None) -> str:
        return f"{self.rest_url}/v1/models/{model or self.model_name}{suffix}"

    def metrics(self) -> str:
        response = requests.get(self.url(METRICS_PATH), timeout=10)
        assert response.status_code == 200, response.text
        return response.text

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text(encoding="utf-8")
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None, status
        return int(match[1])


def _available(response: requests.Response) -> bool:
    if response.status_code != 200:
        return False
    states = response.json().get("model_version_status", [])
    return any(s.get("state") == "AVAILABLE" for s in states)


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, bool]:
    """SIGTERM, then SIGKILL; return (exit code, whether SIGTERM was enough)."""
    if proc.poll() is not None:
        return proc.returncode, True
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT_S), True
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=STOP_TIMEOUT_S), False


@contextlib.contextmanager
def running_server(
    args: Sequence[str | Path],
    *,
    model_name: str = "digits",
    ready_timeout_s: float = READY_TIMEOUT_S,
    log_dir: Path | None = None,
) -> Iterator[Server]:
    """Run ``python -m scripts serve ARGS`` on 127.0.0.1 until the block ends.

    Waits (up to ``ready_timeout_s``) for ``GET /v1/models/MODEL_NAME`` to report a version
    AVAILABLE. The process is always stopped (SIGTERM, then SIGKILL) and, if the block itself
    succeeded, must have exited with status 0 on SIGTERM without having logged a traceback
    (an exception no handler turned into a TF Serving error).
    """
    with contextlib.ExitStack() as stack:
        if log_dir is None:
            log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve-")))
        rest_port, grpc_port = free_port(), free_port()
        while grpc_port == rest_port:
            grpc_port = free_port()
        log_path = log_dir / f"serve-{rest_port}.log"
        command = [
            sys.executable,
            "-m",
            "scripts",
            "serve",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--bind_address=127.0.0.1",
            *(str(a) for a in args),
        ]
        log_file = stack.enter_context(log_path.open("wb"))
        proc = subprocess.Popen(
            command, cwd=REPO_ROOT, env=_subprocess_env(), stdout=log_file, stderr=log_file
        )
        server = Server(
            proc=proc,
            rest_url=f"http://127.0.0.1:{rest_port}",
            grpc_target=f"127.0.0.1:{grpc_port}",
            rest_port=rest_port,
            model_name=model_name,
            log_path=log_path,
        )
        body_ok = False
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if proc.poll() is not None:
                    pytest.fail(
                        f"server exited with {proc.returncode} before ready:\n{server.log()}"
                    )
                with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                    if _available(requests.get(server.model_url(), timeout=2)):
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"server not AVAILABLE after {ready_timeout_s} s:\n{server.log()}")
                time.sleep(0.1)
            yield server
            body_ok = True
        finally:
            code, graceful = _stop(proc)
        if body_ok:
            assert graceful, f"server ignored SIGTERM for {STOP_TIMEOUT_S} s:\n{server.log()}"
            assert code == 0, f"server exited with {code} on SIGTERM:\n{server.log()[-4000:]}"
            log = server.log()
            assert "Traceback" not in log, f"unhandled exception in the server:\n{log[-6000:]}"


# -- requests and responses --------------------------------------------------------------
def predict(
    server: Server,
    body: dict[str, Any] | bytes | str,
    *,
    model: str | None = None,
    suffix: str = "",
    timeout: float = 30,
) -> requests.Response:
    """POST ``…:predict``; a dict is sent as JSON (NaN allowed), bytes/str as they are."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    return requests.post(
        server.model_url(f"{suffix}:predict", model),
        data=data,
        headers={"Content-Type": "application/json"},
        timeout=timeout,
    )


def loads(response: requests.Response) -> Any:
    """Parse a response body the way TF Serving writes it (NaN/Infinity allowed)."""
    return json.loads(response.text)


def assert_error(response: requests.Response, status: int, *fragments: str) -> str:
    """The response is TF Serving's ``{"error": "..."}`` with ``status``; return the message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = loads(response)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str) and message.strip(), body
    for fragment in fragments:
        assert fragment.lower() in message.lower(), (fragment, message)
    return message


_SAMPLE = re.compile(r"^(?P<name>[^\s{]+)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called exactly ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, f"not a Prometheus sample line: {line!r}"
        if match["name"] != name:
            continue
        have = dict(_LABEL.findall(match["labels"] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            value = float(match["value"])
            assert not math.isnan(value), line
            total += value
    return total


def metric_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = _SAMPLE.match(line)
            assert match is not None, f"not a Prometheus sample line: {line!r}"
            names.add(match["name"])
    return names
