"""Dynamic batching with TF Serving's parameter semantics.

* ``max_batch_size``: examples per batch (a single request larger than this is
  rejected, as TF Serving does without large-batch splitting);
* ``batch_timeout_micros``: how long the first queued request waits for others;
* ``max_enqueued_batches``: the queue bound, in batches — a request that would
  overflow it is rejected at once with UNAVAILABLE (HTTP 503);
* ``num_batch_threads``: how many batches run at the same time;
* ``allowed_batch_sizes``: a formed batch is padded up to the next allowed size
  (the padding rows are discarded).

Results are split back in request order. Requests whose inner shapes differ are
never merged into one batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scripts.serving.errors import ServingError, invalid
from scripts.serving.models import ModelManager, Signature


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 32
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()

    @classmethod
    def from_proto(cls, params: Any) -> BatchingOptions:
        def value(name: str, default: int) -> int:
            return int(getattr(params, name).value) if params.HasField(name) else default

        options = cls(
            max_batch_size=value("max_batch_size", 32),
            batch_timeout_micros=value("batch_timeout_micros", 0),
            max_enqueued_batches=value("max_enqueued_batches", 100),
            num_batch_threads=max(1, value("num_batch_threads", 1)),
            allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
        )
        if options.allowed_batch_sizes and (
            list(options.allowed_batch_sizes) != sorted(options.allowed_batch_sizes)
            or options.allowed_batch_sizes[-1] != options.max_batch_size
        ):
            raise ValueError("allowed_batch_sizes must increase and end at max_batch_size")
        return options


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
        key = tuple(sorted((k, a.shape[1:], a.dtype.str) for k, a in inputs.items()))
        task = _Task(inputs, size, key, asyncio.get_running_loop().create_future())
        self._queue.append(task)
        self._queued_examples += size
        self._wakeup.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await task.future

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
            total = sum(t.size for t in batch)
            padded = self._pad_to(total)
            merged = {}
            for key in batch[0].inputs:
                parts = [t.inputs[key] for t in batch]
                array = np.concatenate(parts) if len(parts) > 1 else parts[0]
                if padded > total:
                    filler = np.repeat(array[:1], padded - total, axis=0)
                    array = np.concatenate([array, filler])
                merged[key] = array
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
