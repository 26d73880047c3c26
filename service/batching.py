"""Dynamic micro-batching: many small requests, one onnxruntime call.

Requests put image rows on a bounded queue; one loop takes rows in arrival
order and flushes when `max_batch_size` rows are waiting or when the OLDEST
waiting row has waited `max_queue_delay`. The batch runs in a worker thread so
the event loop keeps parsing requests meanwhile; the results are scattered back
in order. The queue is counted in rows, not requests: a request with 40 images
may be split across two batches and is answered when its last row is done.

Knows nothing of HTTP (errors are `service.errors` types) or of Prometheus
(it reports through the small `BatchObserver` protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.errors import (
    DeadlineExceeded,
    InferenceFailed,
    Overloaded,
    PayloadTooLarge,
    ShuttingDown,
)

InferFn = Callable[[np.ndarray], np.ndarray]


class BatchObserver(Protocol):
    """What the batcher reports; `service.metrics` implements it with Prometheus."""

    def batch_done(self, rows: int, seconds: float) -> None: ...
    def queue_waited(self, seconds: float) -> None: ...
    def queue_depth(self, rows: int) -> None: ...


class _NullObserver:
    def batch_done(self, rows: int, seconds: float) -> None:
        pass

    def queue_waited(self, seconds: float) -> None:
        pass

    def queue_depth(self, rows: int) -> None:
        pass


@dataclass(eq=False)
class _Request:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]
    enqueued_at: float
    taken: int = 0  # rows already handed to a batch
    parts: list[np.ndarray] = field(default_factory=list)

    @property
    def untaken(self) -> int:
        return len(self.rows) - self.taken


@dataclass(frozen=True)
class _Slice:
    request: _Request
    start: int
    stop: int


class _Runner:
    """What both runners share: the model call, the row-counted queue bound, one thread."""

    def __init__(self, infer: InferFn, *, max_queue_rows: int, observer: BatchObserver | None):
        self._infer = infer
        self._max_queue_rows = max_queue_rows
        self._observer = observer or _NullObserver()
        self._queued_rows = 0
        self._stopping = False
        # One thread: batches run one after another, and ORT's own intra-op
        # threads decide how many cores one batch uses.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def max_queue_rows(self) -> int:
        return self._max_queue_rows


class MicroBatcher(_Runner):
    """Collects rows from concurrent `submit` calls into batches for `infer`."""

    def __init__(
        self,
        infer: InferFn,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_rows: int,
        observer: BatchObserver | None = None,
    ) -> None:
        super().__init__(infer, max_queue_rows=max_queue_rows, observer=observer)
        self._max_batch = max_batch_size
        self._delay = max_queue_delay_s
        self._queue: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Refuse new work, finish every row already accepted, then stop the loop."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, rows: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        """Queue `rows` (n, 784) and wait for their (n, 10) probabilities, in order."""
        if self._stopping or self._task is None:
            raise ShuttingDown()
        count = len(rows)
        if count > self._max_queue_rows:
            raise PayloadTooLarge(
                f"{count} images can never fit the queue of {self._max_queue_rows}; send fewer"
            )
        if self._queued_rows + count > self._max_queue_rows:
            raise Overloaded(
                f"the queue is full ({self._queued_rows} images waiting); retry after a second"
            )
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        request = _Request(rows, future, time.perf_counter())
        future.add_done_callback(lambda _: self._forget_if_abandoned(request))
        self._queue.append(request)
        self._queued_rows += count
        self._observer.queue_depth(self._queued_rows)
        self._wakeup.set()
        if timeout_s is None:
            return await future
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(
                f"no result within the {timeout_s:.3g} s deadline; the service is busy, retry"
            ) from None

    def _forget_if_abandoned(self, request: _Request) -> None:
        # A cancelled future means the client left or its deadline passed: free
        # its queue slots now, and `_take_batch` will skip it.
        if request.future.cancelled() and request.untaken:
            self._queued_rows -= request.untaken
            request.taken = len(request.rows)
            self._observer.queue_depth(self._queued_rows)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_until_full_or_due()
            batch = self._take_batch()
            if batch:
                await self._run_batch(batch)

    async def _wait_until_full_or_due(self) -> None:
        due = self._queue[0].enqueued_at + self._delay
        while self._queued_rows < self._max_batch and not self._stopping:
            remaining = due - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)

    def _take_batch(self) -> list[_Slice]:
        batch: list[_Slice] = []
        space = self._max_batch
        now = time.perf_counter()
        while self._queue and space > 0:
            request = self._queue[0]
            if request.untaken == 0:  # abandoned, or fully taken earlier
                self._queue.popleft()
                continue
            if request.taken == 0:
                self._observer.queue_waited(now - request.enqueued_at)
            count = min(space, request.untaken)
            batch.append(_Slice(request, request.taken, request.taken + count))
            request.taken += count
            space -= count
            self._queued_rows -= count
            if request.untaken == 0:
                self._queue.popleft()
        self._observer.queue_depth(self._queued_rows)
        return batch

    async def _run_batch(self, batch: list[_Slice]) -> None:
        parts = [piece.request.rows[piece.start : piece.stop] for piece in batch]
        pixels = parts[0] if len(parts) == 1 else np.concatenate(parts)
        started = time.perf_counter()
        try:
            loop = asyncio.get_running_loop()
            probabilities = await loop.run_in_executor(self._executor, self._infer, pixels)
            if probabilities.shape[0] != len(pixels):
                raise ValueError(f"model returned {probabilities.shape[0]} rows for {len(pixels)}")
        except Exception as error:
            failure = InferenceFailed(f"inference failed for this batch: {error}")
            for piece in batch:
                if not piece.request.future.done():
                    piece.request.future.set_exception(failure)
            return
        self._observer.batch_done(len(pixels), time.perf_counter() - started)
        offset = 0
        for piece in batch:
            count = piece.stop - piece.start
            request = piece.request
            if not request.future.done():
                request.parts.append(probabilities[offset : offset + count])
                if piece.stop == len(request.rows):
                    result = (
                        request.parts[0]
                        if len(request.parts) == 1
                        else np.concatenate(request.parts)
                    )
                    request.future.set_result(result)
            offset += count


class UnbatchedRunner(_Runner):
    """The naive baseline (batching off): one onnxruntime call per request.

    Same interface as `MicroBatcher`, so the benchmark can compare the two.
    """

    def __init__(
        self, infer: InferFn, *, max_queue_rows: int, observer: BatchObserver | None = None
    ):
        super().__init__(infer, max_queue_rows=max_queue_rows, observer=observer)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._stopping = True
        self._executor.shutdown(wait=True)

    async def submit(self, rows: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        if self._stopping:
            raise ShuttingDown()
        if self._queued_rows + len(rows) > self._max_queue_rows:
            raise Overloaded(f"the queue is full ({self._queued_rows} images waiting); retry")
        self._queued_rows += len(rows)
        try:
            started = time.perf_counter()
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._infer, rows)
            try:
                result = await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                raise DeadlineExceeded(f"no result within the {timeout_s} s deadline") from None
            except Exception as error:
                raise InferenceFailed(f"inference failed: {error}") from error
            self._observer.batch_done(len(rows), time.perf_counter() - started)
            return result
        finally:
            self._queued_rows -= len(rows)
