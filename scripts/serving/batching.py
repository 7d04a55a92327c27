"""Dynamic batching with TF Serving's parameter semantics.

* ``max_batch_size``: examples per batch (a single request larger than this is
  rejected, as TF Serving does without large-batch splitting);
* ``batch_timeout_micros``: how long the first queued request waits for others;
* ``max_enqueued_batches``: the queue bound, in batches — a request that would
  overflow it is rejected at once with UNAVAILABLE (HTTP 503); 0 means 1, as in TF
  Serving;
* ``num_batch_threads``: how many batches run at the same time;
* ``allowed_batch_sizes``: a formed batch is padded up to the next allowed size with
  copies of the last request's first row (the padding rows are discarded);
* ``pad_variable_length_inputs``: requests whose inputs differ in their inner
  dimensions (not dimension 0) share a batch, each input padded at the end of every
  dimension to the batch's largest size with its own first element, as TF Serving's
  ``batching_util`` pads them (outputs come back at the padded size).

A field absent from the file takes TF Serving's default (``max_batch_size`` 1000,
timeout 0, 10 enqueued batches, a thread per schedulable CPU); values TF Serving
refuses at load time are refused here too. Results are split back in request order.
Without padding, requests whose inner shapes differ are never merged into one batch
(where TF Serving would fail the batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scripts.log import log
from scripts.serving.errors import ServingError, invalid
from scripts.serving.models import ModelManager, Signature


def _schedulable_cpus() -> int:
    """TF's ``port::MaxParallelism()``: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) or 1


@dataclass(frozen=True)
class BatchingOptions:
    """``BatchingParameters``; the defaults are TF Serving's (SharedBatchScheduler)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=_schedulable_cpus)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_proto(cls, params: Any) -> BatchingOptions:
        """The options of a parsed ``BatchingParameters``; ValueError for what TF refuses."""
        defaults = cls()

        def value(name: str) -> int:
            if params.HasField(name):
                return int(getattr(params, name).value)
            return int(getattr(defaults, name))

        options = cls(
            max_batch_size=value("max_batch_size"),
            batch_timeout_micros=value("batch_timeout_micros"),
            # TF Serving rewrites 0 to 1 ("many existing models rely on this").
            max_enqueued_batches=value("max_enqueued_batches") or 1,
            num_batch_threads=value("num_batch_threads"),
            allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
            pad_variable_length_inputs=bool(params.pad_variable_length_inputs),
        )
        options.check()
        return options

    def check(self) -> None:
        """Refuse what TF Serving refuses when it loads a model with these parameters."""
        for name, least in (
            ("max_batch_size", 1),
            ("batch_timeout_micros", 0),
            ("max_enqueued_batches", 1),
            ("num_batch_threads", 1),
        ):
            if getattr(self, name) < least:
                kind = "non-negative" if least == 0 else "positive"
                raise ValueError(f"{name} must be {kind}; was {getattr(self, name)}")
        allowed = self.allowed_batch_sizes
        if allowed and (
            any(size < 1 for size in allowed) or any(b <= a for a, b in itertools.pairwise(allowed))
        ):
            raise ValueError(f"allowed_batch_sizes {list(allowed)} must be strictly increasing")
        if allowed and allowed[-1] != self.max_batch_size:
            raise ValueError(
                "Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
                f"{allowed[-1]}; expected {self.max_batch_size}"
            )

    def describe(self) -> str:
        return (
            f"max_batch_size {self.max_batch_size}, batch_timeout_micros "
            f"{self.batch_timeout_micros}, max_enqueued_batches {self.max_enqueued_batches}, "
            f"num_batch_threads {self.num_batch_threads}, allowed_batch_sizes "
            f"{list(self.allowed_batch_sizes)}, pad_variable_length_inputs "
            f"{str(self.pad_variable_length_inputs).lower()}"
        )


_MAX_PADDED_RANK = 6  # TF Serving pads tensors of rank 1 to 6 (like tf.pad)


def pad_inner_dimensions(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Each array padded at the end of every dimension but the 0th to the largest size
    among them, with its own first element (TF Serving's ``batching_util`` AddPadding)."""
    shapes = {a.shape[1:] for a in arrays}
    if len(shapes) <= 1:
        return arrays
    target = tuple(max(sizes) for sizes in zip(*shapes, strict=True))
    padded = []
    for array in arrays:
        if array.shape[1:] == target:
            padded.append(array)
            continue
        if array.ndim > _MAX_PADDED_RANK:
            raise invalid("Only tensors with rank from 1 to 6 can be padded.")
        if array.size == 0:
            raise invalid("Got empty tensor in batch of non-empty tensors.")
        out = np.full((array.shape[0], *target), array.flat[0], dtype=array.dtype)
        out[tuple(slice(0, n) for n in array.shape)] = array
        padded.append(out)
    return padded


def merge_inputs(
    parts: list[dict[str, np.ndarray]], rows: int, *, pad_variable_length: bool
) -> dict[str, np.ndarray]:
    """One batch's inputs (TF Serving's MergeInputTensors): the requests' arrays, padded to
    common inner dimensions when ``pad_variable_length``, concatenated along dimension 0,
    then filled up to ``rows`` with copies of the last request's first row."""
    merged = {}
    for key in parts[0]:
        arrays = [part[key] for part in parts]
        if pad_variable_length:
            arrays = pad_inner_dimensions(arrays)
        total = sum(a.shape[0] for a in arrays)
        if rows > total:
            arrays.append(np.repeat(arrays[-1][:1], rows - total, axis=0))
        merged[key] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    return merged


@dataclass
class _Task:
    inputs: dict[str, np.ndarray]
    size: int
    key: tuple[Any, ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    enqueued: float = field(default_factory=time.monotonic)


class Batcher:
    """One queue per (servable, signature); batches run on the manager's thread pool."""

    def __init__(
        self,
        manager: ModelManager,
        signature: Signature,
        options: BatchingOptions,
        on_batch: Any = None,
    ) -> None:
        self.manager = manager
        self.signature = signature
        self.options = options
        self.on_batch = on_batch  # callback(batch_size) for metrics
        self._queue: deque[_Task] = deque()
        self._queued_examples = 0
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(options.num_batch_threads)
        self._runner: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # keeps executing batches referenced
        # TF Serving logs when it wraps a servable's session for batching; so do we.
        log.info("batching signature %s: %s", signature.name, options.describe())

    def _batches_enqueued(self, extra: int) -> int:
        total = self._queued_examples + extra
        return -(-total // self.options.max_batch_size)

    async def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sizes = {a.shape[0] for a in inputs.values() if a.ndim}
        size = sizes.pop() if sizes else 1
        if size > self.options.max_batch_size:
            raise invalid(
                f"Task size {size} is larger than maximum batch size {self.options.max_batch_size}"
            )
        if self._batches_enqueued(size) > self.options.max_enqueued_batches:
            raise ServingError(
                "UNAVAILABLE", "The batch scheduling queue to which this task was submitted is full"
            )
        task = _Task(inputs, size, self._key(inputs), asyncio.get_running_loop().create_future())
        self._queue.append(task)
        self._queued_examples += size
        self._wakeup.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await task.future

    def _key(self, inputs: dict[str, np.ndarray]) -> tuple[Any, ...]:
        """Requests with equal keys may share a batch: the same inputs and dtypes, and the
        same inner dimensions unless variable-length inputs are padded (then the same rank)."""
        if self.options.pad_variable_length_inputs:
            return tuple(sorted((k, a.ndim, a.dtype.str) for k, a in inputs.items()))
        return tuple(sorted((k, a.shape[1:], a.dtype.str) for k, a in inputs.items()))

    def _take_batch(self) -> list[_Task]:
        first = self._queue.popleft()
        batch, total = [first], first.size
        rest: deque[_Task] = deque()
        while self._queue:
            task = self._queue.popleft()
            if task.key == first.key and total + task.size <= self.options.max_batch_size:
                batch.append(task)
                total += task.size
            else:
                rest.append(task)
        self._queue.extendleft(reversed(rest))
        self._queued_examples -= total
        return batch

    async def _run(self) -> None:
        timeout = self.options.batch_timeout_micros / 1e6
        while self._queue:
            oldest = self._queue[0]
            wait = oldest.enqueued + timeout - time.monotonic()
            if wait > 0 and self._queued_examples < self.options.max_batch_size:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                continue
            await self._slots.acquire()
            batch = self._take_batch()
            running = asyncio.create_task(self._execute(batch))
            self._running.add(running)
            running.add_done_callback(self._running.discard)

    def _pad_to(self, total: int) -> int:
        for allowed in self.options.allowed_batch_sizes:
            if allowed >= total:
                return allowed
        return total

    async def _execute(self, batch: list[_Task]) -> None:
        try:
            padded = self._pad_to(sum(t.size for t in batch))
            merged = merge_inputs(
                [t.inputs for t in batch],
                padded,
                pad_variable_length=self.options.pad_variable_length_inputs,
            )
            if self.on_batch is not None:
                self.on_batch(padded)
            outputs = await self.manager.run(self.signature, merged)
            offset = 0
            for task in batch:
                if not task.future.done():
                    task.future.set_result(
                        {k: v[offset : offset + task.size] for k, v in outputs.items()}
                    )
                offset += task.size
        except Exception as exc:  # noqa: BLE001 - every waiting request gets the error
            for task in batch:
                if not task.future.done():
                    task.future.set_exception(exc)
        finally:
            self._slots.release()
