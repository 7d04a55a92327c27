"""The local server's batching options and batch forming, without TensorFlow.

``BatchingOptions.from_proto`` takes TF Serving's defaults and refuses what TF Serving
refuses at load time; ``merge_inputs`` pads as TF Serving's BatchingSession does
(``allowed_batch_sizes`` with the last request's first row; ``pad_variable_length_inputs``
with each tensor's own first element). The Batcher runs against a fake model manager
that records the batches it is given.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
import pytest

from scripts.serving.batching import Batcher, BatchingOptions, merge_inputs
from scripts.serving.protos import parse_text


def _options(text: str) -> BatchingOptions:
    return BatchingOptions.from_proto(parse_text(text, "BatchingParameters", "test"))


def test_absent_fields_take_tf_servings_defaults() -> None:
    options = _options("")
    assert (options.max_batch_size, options.batch_timeout_micros) == (1000, 0)
    assert options.max_enqueued_batches == 10
    assert options.num_batch_threads == len(os.sched_getaffinity(0))
    assert (options.allowed_batch_sizes, options.pad_variable_length_inputs) == ((), False)


def test_every_field_is_read() -> None:
    options = _options(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 500 }\n"
        "max_enqueued_batches { value: 3 }\nnum_batch_threads { value: 2 }\n"
        "allowed_batch_sizes: 2\nallowed_batch_sizes: 8\npad_variable_length_inputs: true\n"
        'thread_pool_name { value: "pool" }\n'
    )
    assert options == BatchingOptions(8, 500, 3, 2, (2, 8), pad_variable_length_inputs=True)


def test_zero_enqueued_batches_means_one_as_in_tf_serving() -> None:
    assert _options("max_enqueued_batches { value: 0 }").max_enqueued_batches == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("num_batch_threads { value: 0 }", "num_batch_threads must be positive; was 0"),
        ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
        ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be non-negative"),
        (
            "max_batch_size { value: 8 }\nallowed_batch_sizes: 4",
            "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4",
        ),
        ("allowed_batch_sizes: 4", "expected 1000"),
        (
            "max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 2\n"
            "allowed_batch_sizes: 8",
            "strictly increasing",
        ),
    ],
)
def test_what_tf_serving_refuses_is_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        _options(text)
    assert message in str(caught.value)


def test_a_batch_is_filled_to_the_allowed_size_with_the_last_requests_first_row() -> None:
    first = {"x": np.array([[1.0, 1.0]])}
    last = {"x": np.array([[7.0, 7.0], [8.0, 8.0]])}
    merged = merge_inputs([first, last], 5, pad_variable_length=False)
    np.testing.assert_array_equal(merged["x"], [[1, 1], [7, 7], [8, 8], [7, 7], [7, 7]])


def test_variable_length_inputs_are_padded_with_their_own_first_element() -> None:
    short = {"ids": np.array([[5, 1]]), "text": np.array([[b"a"]], dtype=object)}
    long = {"ids": np.array([[9, 2, 3, 4]]), "text": np.array([[b"b", b"c"]], dtype=object)}
    merged = merge_inputs([short, long], 3, pad_variable_length=True)
    np.testing.assert_array_equal(merged["ids"], [[5, 1, 5, 5], [9, 2, 3, 4], [9, 2, 3, 4]])
    assert merged["text"].tolist() == [[b"a", b"a"], [b"b", b"c"], [b"b", b"c"]]


class _RecordingManager:
    """Runs a "model" that returns its input and records each batch's shape."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, ...]] = []

    async def run(self, signature: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append(inputs["x"].shape)
        return {"y": inputs["x"]}


class _Signature:
    name = "serving_default"


def _serve_together(options: BatchingOptions, requests: list[np.ndarray]) -> Any:
    manager = _RecordingManager()

    async def main() -> list[dict[str, np.ndarray]]:
        batcher = Batcher(manager, _Signature(), options)  # type: ignore[arg-type]
        return await asyncio.gather(*(batcher.submit({"x": r}) for r in requests))

    return manager.batches, asyncio.run(main())


def test_requests_of_different_lengths_share_a_batch_only_when_padding_is_on() -> None:
    requests = [np.array([[1, 2]]), np.array([[3, 4, 5]])]
    base = {"max_batch_size": 4, "batch_timeout_micros": 20_000, "num_batch_threads": 1}
    padded_batches, padded = _serve_together(
        BatchingOptions(**base, pad_variable_length_inputs=True), requests
    )
    assert padded_batches == [(2, 3)]
    # As in TF Serving, each request gets its rows of the padded output.
    assert [r["y"].tolist() for r in padded] == [[[1, 2, 1]], [[3, 4, 5]]]
    separate_batches, separate = _serve_together(BatchingOptions(**base), requests)
    assert sorted(separate_batches) == [(1, 2), (1, 3)]
    assert [r["y"].tolist() for r in separate] == [[[1, 2]], [[3, 4, 5]]]
