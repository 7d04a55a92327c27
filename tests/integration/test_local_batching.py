"""A model's model.yaml ``batching:`` deployed on the local target, through the real server.

`deploy --target local --model-config M` with an overlay that adds the batching component
to `local` (½ CPU): the replica reads the rendered ConfigMap — model.yaml's fields, the
thread count from the CPU request — and concurrent requests are formed into batches of
at most ``max_batch_size``, padded to ``allowed_batch_sizes``, as its metrics show.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from scripts.config import KUSTOMIZE_DIR, MODELS_DIR
from scripts.serving.protos import parse_text
from tests.conftest import REPO_ROOT, CLIResult, DigitsReleases
from tests.integration.serving_fixtures import digits_images, metric_value

pytestmark = [pytest.mark.integration, pytest.mark.tensorflow]

OVERLAY = "local-batching"
MAX_BATCH = 4
TIMEOUT_US = 100_000  # long enough for concurrent requests to meet in one batch
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
METRICS = "/monitoring/prometheus/metrics"
BATCHING = {
    "max_batch_size": MAX_BATCH,
    "allowed_batch_sizes": [2, MAX_BATCH],
    "batch_timeout_micros": TIMEOUT_US,
    "max_enqueued_batches": 16,
    "pad_variable_length_inputs": True,
    # num_batch_threads: not set, so it follows the overlay's CPU request (500m → 1).
}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, digits_releases: DigitsReleases) -> str:
    """digits v1 baked into a local OCI layout, as `run` does."""
    work = tmp_path_factory.mktemp("batching-image")
    out = subprocess.run(
        [
            sys.executable, "-m", "scripts", "run",
            "--source", str(digits_releases(1)[1]),
            "--workdir", str(work / "pipeline"),
            "--cache-dir", str(work / "cache"),
            "--stop-after", "build",
            "--json", "-q",
        ],
        check=True,
        capture_output=True,
        cwd=REPO_ROOT,
        timeout=300,
    )  # fmt: skip
    stages = json.loads(out.stdout)["stages"]
    return str(next(s for s in stages if s["name"] == "build")["result"]["image"])


@pytest.fixture
def deployed(
    cli: Callable[..., CLIResult],
    image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[dict[str, Any], str]]:
    """(the stable replica's state, its REST URL), deployed from a model.yaml with batching."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    kustomize = tmp_path / "kustomize"
    shutil.copytree(KUSTOMIZE_DIR, kustomize)
    overlay = kustomize / "overlays" / OVERLAY
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../local"],
                "components": ["../../components/batching"],
            }
        )
    )
    spec = yaml.safe_load((MODELS_DIR / "digits" / "model.yaml").read_text())
    model_yaml = tmp_path / "model.yaml"
    model_yaml.write_text(yaml.safe_dump(spec | {"batching": BATCHING}))
    state = tmp_path / "state"
    common = ["--target", "local", "--state-dir", state, "--json"]
    result = cli(
        "deploy", *common, "--overlay", OVERLAY, "--kustomize-dir", kustomize,
        "--model", "digits", "--model-config", model_yaml, "--image", image, "--timeout", "120",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    endpoints = result.json()["endpoints"]
    assert isinstance(endpoints, dict)
    (state_file,) = state.rglob("state.json")
    replica = json.loads(state_file.read_text())["tracks"]["stable"]["replicas"][0]
    try:
        yield replica, endpoints["stable"][0]
    finally:
        assert cli("teardown", *common, "--overlay", OVERLAY).exit_code == 0
        leftovers = subprocess.run(
            ["pgrep", "-f", str(state)], capture_output=True, text=True, check=False
        )
        assert leftovers.stdout.strip() == "", "teardown left processes running"


def _predict(url: str, rows: int) -> requests.Response:
    body = {"instances": digits_images(rows).tolist()}
    return requests.post(f"{url}/v1/models/digits:predict", json=body, timeout=30)


def _batches(url: str) -> tuple[float, float, float]:
    """(batches, examples incl. padding, batches of ≤ MAX_BATCH) processed so far."""
    text = requests.get(url + METRICS, timeout=10).text
    return (
        metric_value(text, f"{BATCH_SIZE}_count", model_name="digits"),
        metric_value(text, f"{BATCH_SIZE}_sum", model_name="digits"),
        metric_value(text, f"{BATCH_SIZE}_bucket", model_name="digits", le=f"{MAX_BATCH}.0"),
    )


def _delta(before: tuple[float, ...], after: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(b - a for a, b in zip(before, after, strict=True))


def test_the_replica_serves_with_the_model_yaml_batching(
    deployed: tuple[dict[str, Any], str],
) -> None:
    replica, url = deployed
    # The effective config the replica got: the file its --batching_parameters_file names.
    cmdline = Path(f"/proc/{replica['pid']}/cmdline").read_text().split("\0")
    assert "--enable_batching=true" in cmdline
    (flag,) = [a for a in cmdline if a.startswith("--batching_parameters_file=")]
    text = Path(flag.split("=", 1)[1]).read_text()
    params = parse_text(text, "BatchingParameters", flag)
    assert params.max_batch_size.value == MAX_BATCH
    assert list(params.allowed_batch_sizes) == [2, MAX_BATCH]
    assert params.batch_timeout_micros.value == TIMEOUT_US
    assert params.max_enqueued_batches.value == 16
    assert params.pad_variable_length_inputs
    assert params.num_batch_threads.value == 1
    assert "num_batch_threads { value: 1 }  # CPU request 500m, rounded up" in text

    # A lone request waits for company, then runs alone, padded to the allowed size 2.
    before = _batches(url)
    started = time.perf_counter()
    assert _predict(url, 1).status_code == 200
    assert time.perf_counter() - started >= TIMEOUT_US / 1e6 * 0.95
    assert _delta(before, _batches(url)) == (1, 2, 1)
    # The server logged the parameters its batching queue runs with.
    log = (Path(replica["run_dir"]) / "server.log").read_text()
    assert (
        f"max_batch_size {MAX_BATCH}, batch_timeout_micros {TIMEOUT_US}, max_enqueued_batches "
        f"16, num_batch_threads 1, allowed_batch_sizes [2, {MAX_BATCH}], "
        "pad_variable_length_inputs true"
    ) in log

    # 3 rows: one batch, padded to 4.
    before = _batches(url)
    response = _predict(url, 3)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3
    assert _delta(before, _batches(url)) == (1, 4, 1)

    # 12 concurrent single-row requests: merged into batches of at most max_batch_size.
    before = _batches(url)
    barrier = threading.Barrier(12)

    def one(_: int) -> int:
        barrier.wait(timeout=30)
        return _predict(url, 1).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        assert list(pool.map(one, range(12))) == [200] * 12
    batches, examples, small = _delta(before, _batches(url))
    assert 3 <= batches < 12, batches  # batched: fewer batches than requests
    assert small == batches  # none larger than max_batch_size
    assert 12 <= examples <= MAX_BATCH * batches

    # More rows than max_batch_size in one request: refused, as TF Serving does.
    too_big = _predict(url, MAX_BATCH + 1)
    assert too_big.status_code == 400 and "batch size" in too_big.json()["error"]
