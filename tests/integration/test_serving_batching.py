"""Dynamic batching of ``python -m scripts serve --enable_batching`` (TF Serving's semantics).

Two servers: digits with ``max_batch_size 32, batch_timeout_micros 50000,
allowed_batch_sizes 8/16/32`` (batches form, the timeout is honoured, results come back to
the right request, padding is discarded), and a ~50 ms model with a one-batch queue of
one example (a full queue is rejected with 503).
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.integration.serving_fixtures import (
    MONITORING_CONFIG,
    ExportedModels,
    Server,
    assert_error,
    batching_config,
    digits_images,
    loads,
    metric_value,
    predict,
    running_server,
)

pytestmark = [pytest.mark.tensorflow, pytest.mark.integration]

Reference = Callable[[np.ndarray, int], dict[str, np.ndarray]]
BATCH_SIZE = ":tensorflow:serving:batching_session:processed_batch_size"
MAX_BATCH = 32
# Long enough that "a full batch does not wait" has a wide margin on a loaded machine:
# a 32-row digits batch runs in a few ms, so it must finish far below 0.7 x this.
TIMEOUT_S = 0.25
QUEUE_FULL = "The batch scheduling queue to which this task was submitted is full"


@pytest.fixture(scope="module")
def server(digits_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("batching")
    params = batching_config(
        work / "batching.config",
        max_batch_size=MAX_BATCH,
        batch_timeout_micros=int(TIMEOUT_S * 1e6),
        max_enqueued_batches=64,
        num_batch_threads=2,
        allowed_batch_sizes=[8, 16, MAX_BATCH],
    )
    with running_server(
        [
            "--model_name=digits",
            f"--model_base_path={digits_export}",
            "--enable_batching=true",
            f"--batching_parameters_file={params}",
            f"--monitoring_config_file={MONITORING_CONFIG}",
        ],
        log_dir=work,
    ) as running:
        yield running


def fire(server: Server, bodies: list[dict[str, Any]], model: str | None = None) -> list[Any]:
    """Send every body at the same moment, one thread each; responses in body order."""
    barrier = threading.Barrier(len(bodies))

    def one(body: dict[str, Any]) -> requests.Response:
        barrier.wait(timeout=30)
        return predict(server, body, model=model)

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(one, bodies))


def batch_stats(server: Server) -> tuple[float, float]:
    text = server.metrics()
    return (
        metric_value(text, f"{BATCH_SIZE}_count", model_name="digits"),
        metric_value(text, f"{BATCH_SIZE}_sum", model_name="digits"),
    )


def assert_rows(body: Any, expected: dict[str, np.ndarray], rows: slice) -> None:
    predictions = body["predictions"]
    assert len(predictions) == rows.stop - rows.start
    np.testing.assert_array_equal([p["class_id"] for p in predictions], expected["class_id"][rows])
    np.testing.assert_allclose(
        [p["probabilities"] for p in predictions],
        expected["probabilities"][rows],
        rtol=1e-5,
        atol=1e-5,
    )


def test_concurrent_requests_are_batched(server: Server, digits_reference: Reference) -> None:
    images = digits_images(32)
    count_before, sum_before = batch_stats(server)
    responses = fire(server, [{"instances": [image]} for image in images.tolist()])
    assert [r.status_code for r in responses] == [200] * len(images)
    count_after, sum_after = batch_stats(server)
    batches = count_after - count_before
    assert 1 <= batches < len(images), f"{batches} batches for {len(images)} requests"
    assert sum_after - sum_before >= len(images)  # every example ran (padding included)
    expected = digits_reference(images, 2)
    for index, response in enumerate(responses):
        assert_rows(loads(response), expected, slice(index, index + 1))


def test_results_come_back_to_their_requests(server: Server, digits_reference: Reference) -> None:
    # Requests of 1, 2 and 3 rows, each of distinct digits, merged into shared batches.
    sizes = [1, 2, 3] * 8
    images = digits_images(sum(sizes))
    spans = list(itertools.pairwise(int(s) for s in np.cumsum([0, *sizes])))
    bodies = [{"instances": images[start:stop].tolist()} for start, stop in spans]
    count_before, _ = batch_stats(server)
    responses = fire(server, bodies)
    assert batch_stats(server)[0] - count_before < len(bodies)
    expected = digits_reference(images, 2)
    assert len(set(expected["class_id"].tolist())) == 10  # the digits really differ
    for (start, stop), response in zip(spans, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_rows(loads(response), expected, slice(start, stop))


def _timed(server: Server, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = predict(server, body)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed


def test_a_lone_request_waits_for_the_batch_timeout_only(server: Server) -> None:
    images = digits_images(MAX_BATCH)
    single = [_timed(server, {"instances": images[:1].tolist()}) for _ in range(5)]
    # Not full: it waits batch_timeout_micros for company, then runs, without further delay.
    assert min(single) >= TIMEOUT_S * 0.98, single
    assert statistics.median(single) <= TIMEOUT_S * 2, single
    # A full batch (max_batch_size rows) does not wait.
    full = [_timed(server, {"instances": images.tolist()}) for _ in range(5)]
    assert statistics.median(full) < TIMEOUT_S * 0.7, full


def test_allowed_batch_sizes_pad_and_discard_the_padding(
    server: Server, digits_reference: Reference
) -> None:
    images = digits_images(3)
    before = server.metrics()
    response = predict(server, {"instances": images.tolist()})
    assert response.status_code == 200, response.text
    after = server.metrics()

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, model_name="digits", **labels) - metric_value(
            before, name, model_name="digits", **labels
        )

    # One batch of 3 examples, padded to the next allowed size, 8.
    assert delta(f"{BATCH_SIZE}_count") == 1
    assert delta(f"{BATCH_SIZE}_sum") == 8
    assert delta(f"{BATCH_SIZE}_bucket", le="4.0") == 0
    assert delta(f"{BATCH_SIZE}_bucket", le="8.0") == 1
    # The response has the 3 real rows, correct, and nothing of the padding.
    assert_rows(loads(response), digits_reference(images, 2), slice(0, 3))


def test_a_request_larger_than_max_batch_size_is_rejected(server: Server) -> None:
    images = np.concatenate([digits_images(MAX_BATCH), digits_images(1)])
    assert_error(predict(server, {"instances": images.tolist()}), 400, "batch size")


# -- a full queue ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_server(
    exported_models: ExportedModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("batching-full")
    params = batching_config(
        work / "batching.config",
        max_batch_size=1,
        batch_timeout_micros=0,
        max_enqueued_batches=1,
        num_batch_threads=1,
    )
    with running_server(
        [
            "--model_name=slow",
            f"--model_base_path={exported_models.base('slow')}",
            "--enable_batching",
            f"--batching_parameters_file={params}",
            f"--monitoring_config_file={MONITORING_CONFIG}",
        ],
        model_name="slow",
        log_dir=work,
    ) as running:
        yield running


def test_a_full_queue_is_rejected_with_503(slow_server: Server) -> None:
    before = slow_server.metrics()
    responses = fire(slow_server, [{"instances": [float(i)]} for i in range(16)])
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    rejected = [r for r in responses if r.status_code == 503]
    served = [r for r in responses if r.status_code == 200]
    assert rejected, "16 concurrent ~50 ms requests never overflowed a one-example queue"
    assert served, "nothing was served"
    for response in rejected:
        assert_error(response, 503, QUEUE_FULL)
    for response in served:  # each served request got its own value back
        index = responses.index(response)
        assert loads(response) == {"predictions": [float(index)]}
    after = slow_server.metrics()
    unavailable = metric_value(
        after, ":tensorflow:serving:request_count", model_name="slow", status="UNAVAILABLE"
    ) - metric_value(
        before, ":tensorflow:serving:request_count", model_name="slow", status="UNAVAILABLE"
    )
    assert unavailable == len(rejected)
    # The queue drains: a lone request is served again.
    assert loads(predict(slow_server, {"instances": [7.0]})) == {"predictions": [7.0]}
