"""Dynamic micro-batching: many small requests, one onnxruntime call.

Requests put image rows on a bounded queue owned by one inference thread. The
thread takes rows in arrival order and runs a batch when `max_batch_size` rows
are waiting or when the OLDEST waiting row has waited `max_queue_delay`; with
the default delay of 0 it simply takes whatever arrived while the previous
batch ran. The queue is counted in rows, not requests: a request with 40 images
may be split across two batches and is answered when its last row is done.

The hand-off is cheap on purpose: the batch is formed once per event-loop turn
(not once per request), so everything parsed in that turn forms one batch. When
the model is cheap (the batch's expected cost, from the measured cost per row, is
under `INLINE_BUDGET_S`) the loop runs that batch itself at the end of the turn:
no thread wake-up and no hand-back, which a small MLP's ~40 µs call cannot
afford (two cross-thread wake-ups cost more than the call). A slower model, or
a batch that would block the loop too long, goes to the inference thread
instead, which hands it back with ONE call into the loop; running onnxruntime
there keeps the event loop parsing requests meanwhile (`run` releases the GIL).

Each image is copied once, into the batch buffer (converted to float32 there),
and results are returned as views of the batch's output.

Knows nothing of HTTP (errors are `service.errors` types) or of Prometheus
(it reports through the small `BatchObserver` protocol).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.errors import (
    ClientDisconnected,
    DeadlineExceeded,
    InferenceFailed,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    ShuttingDown,
)

# The longest the event loop may spend on one batch itself (see the module docstring):
# about one canvas decode, so a small model's batch never delays other requests more.
INLINE_BUDGET_S = 0.001
InferFn = Callable[[np.ndarray], np.ndarray]


class BatchObserver(Protocol):
    """What the batcher reports; `service.metrics` implements it with Prometheus."""

    def batch_done(self, probabilities: np.ndarray, seconds: float) -> None: ...
    def queue_waited(self, seconds: float) -> None: ...
    def queue_depth(self, rows: int) -> None: ...


class NullObserver:
    def batch_done(self, probabilities: np.ndarray, seconds: float) -> None:
        pass

    def queue_waited(self, seconds: float) -> None:
        pass

    def queue_depth(self, rows: int) -> None:
        pass


@dataclass(eq=False)
class _Request:
    rows: np.ndarray  # (n, row_size), any numeric dtype
    future: asyncio.Future[np.ndarray]
    enqueued_at: float
    abandoned: Callable[[], bool] | None  # e.g. "has the client gone?", polled by the thread
    taken: int = 0  # rows handed to a batch so far (guarded by the batcher's lock)
    parts: list[np.ndarray] = field(default_factory=list)  # results so far, in order
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True)
class _Slice:
    request: _Request
    start: int
    stop: int


class MicroBatcher:
    """Collects rows from concurrent `submit` calls into batches for `infer`.

    `merge_requests=False` makes every batch exactly one request (the naive
    one-call-per-request baseline the benchmark compares against).
    """

    def __init__(
        self,
        infer: InferFn,
        *,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_rows: int,
        observer: BatchObserver | None = None,
        merge_requests: bool = True,
        row_size: int = 784,
        loop_budget_s: float = INLINE_BUDGET_S,
    ) -> None:
        self._infer = infer
        self._max_batch = max_batch_size
        self._delay = max_queue_delay_s
        self._max_queue_rows = max_queue_rows
        self._observer = observer or NullObserver()
        self._merge = merge_requests
        self._row_size = row_size
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0  # rows not yet taken by a batch
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._idle = False  # the thread waits for work: the next submit must wake it
        self._wake_scheduled = False  # a wake-up is due at the end of this event-loop turn
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._loop_budget = loop_budget_s
        self._row_seconds = float("inf")  # measured cost per row; unknown: use the thread
        self._loop_buffer = np.empty((max_batch_size, row_size), dtype=np.float32)

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    @property
    def max_queue_rows(self) -> int:
        return self._max_queue_rows

    def has_room(self) -> bool:
        """False when the queue is full: refuse before decoding anything."""
        return self._queued_rows < self._max_queue_rows

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Refuse new work, finish every row already accepted, then end the thread."""
        with self._lock:
            self._stopping = True
            self._wakeup.notify()
        if self._stopped is not None:
            await self._stopped

    def submit(
        self,
        rows: np.ndarray,
        *,
        timeout_s: float | None = None,
        abandoned: Callable[[], bool] | None = None,
    ) -> asyncio.Future[np.ndarray]:
        """Queue `rows` (n, row_size); the future gives their (n, classes) results in order.

        Raises at once (before queueing) when stopping, or when the rows do not fit.
        `timeout_s` fails the future with `DeadlineExceeded` and frees its queue slots;
        `abandoned` is polled before a batch is formed, and a request it reports gone
        never reaches the model."""
        loop = self._loop
        if self._stopping or loop is None:
            raise ShuttingDown()
        count = len(rows)
        if count > self._max_queue_rows:
            raise PayloadTooLarge(
                f"{count} images can never fit the queue of {self._max_queue_rows}; send fewer"
            )
        future: asyncio.Future[np.ndarray] = loop.create_future()
        request = _Request(rows, future, time.perf_counter(), abandoned)
        with self._lock:
            if self._queued_rows + count > self._max_queue_rows:
                raise Overloaded(waiting_rows=self._queued_rows)
            self._queue.append(request)
            self._queued_rows += count
            wake = self._idle and not self._wake_scheduled
            self._wake_scheduled |= wake
        if wake:  # once per event-loop turn: every request parsed in this turn joins the batch
            loop.call_soon(self._wake)
        self._observer.queue_depth(self._queued_rows)
        if timeout_s is not None:
            request.timer = loop.call_later(timeout_s, self._expire, request, timeout_s)
        future.add_done_callback(lambda _: self._finished(request))
        return future

    # -- event-loop side -------------------------------------------------------
    def _wake(self) -> None:
        """End of a loop turn with new rows: run them here if cheap, else wake the thread."""
        with self._lock:
            self._wake_scheduled = False
            if not self._idle:  # the thread is busy and takes these rows next
                return
            if not self._cheap_enough():
                self._idle = False
                self._wakeup.notify()
                return
            batch, dropped, waited = self._take_batch()
            more = bool(self._queue)  # over one batch's worth: the next runs next turn
            self._wake_scheduled = more
        self._run_batch(batch, dropped, waited, self._loop_buffer, on_loop=True)
        if more:
            assert self._loop is not None
            self._loop.call_soon(self._wake)

    def _cheap_enough(self) -> bool:
        """May the loop run the waiting rows itself? (Called with the lock held.)"""
        return (
            self._merge
            and self._delay <= 0  # a queue delay needs the thread's timed wait
            and not self._stopping
            and min(self._queued_rows, self._max_batch) * self._row_seconds <= self._loop_budget
        )

    def _finished(self, request: _Request) -> None:
        if request.timer is not None:
            request.timer.cancel()
        if request.future.cancelled():  # the caller gave up: free its queue slots now
            self._release(request)

    def _expire(self, request: _Request, timeout_s: float) -> None:
        """The deadline passed: answer 504 now and give back the rows still waiting."""
        self._release(request)
        if not request.future.done():
            request.future.set_exception(
                DeadlineExceeded(
                    f"no result within the {timeout_s:.3g} s deadline; the service is busy, retry"
                )
            )

    def _release(self, request: _Request) -> None:
        with self._lock:
            untaken = len(request.rows) - request.taken
            request.taken = len(request.rows)
            self._queued_rows -= untaken
        if untaken:
            self._observer.queue_depth(self._queued_rows)

    def _deliver(
        self,
        batch: list[_Slice],
        results: np.ndarray | None,
        error: ServiceError | None,
        seconds: float,
        dropped: list[_Request],
        waited: list[float],
    ) -> None:
        """Runs on the event loop, once per batch: answer every request in it."""
        for wait in waited:
            self._observer.queue_waited(wait)
        for request in dropped:
            if not request.future.done():
                request.future.set_exception(
                    ClientDisconnected("the client disconnected before its answer was ready")
                )
        if results is not None:
            self._observer.batch_done(results, seconds)
        offset = 0
        for piece in batch:
            request = piece.request
            count = piece.stop - piece.start
            if request.future.done():
                offset += count
                continue
            if error is not None:
                request.future.set_exception(error)
            else:
                assert results is not None
                request.parts.append(results[offset : offset + count])
                if piece.stop == len(request.rows):
                    parts = request.parts
                    request.future.set_result(
                        parts[0] if len(parts) == 1 else np.concatenate(parts)
                    )
            offset += count
        self._observer.queue_depth(self._queued_rows)

    # -- inference thread ------------------------------------------------------
    def _run(self) -> None:
        buffer = np.empty((self._max_batch, self._row_size), dtype=np.float32)
        try:
            while True:
                batch, dropped, waited = self._next_batch()
                if batch is None:
                    return
                self._run_batch(batch, dropped, waited, buffer)
        finally:
            assert self._loop is not None and self._stopped is not None
            self._loop.call_soon_threadsafe(self._stopped.set_result, None)

    def _next_batch(self) -> tuple[list[_Slice] | None, list[_Request], list[float]]:
        """Wait for work, then take up to `max_batch_size` rows (None: stop)."""
        with self._lock:
            while True:
                if not self._queue:
                    if self._stopping:
                        return None, [], []
                    self._idle = True
                    self._wakeup.wait()
                    continue
                if self._delay > 0 and not self._stopping and self._queued_rows < self._max_batch:
                    remaining = self._queue[0].enqueued_at + self._delay - time.perf_counter()
                    if remaining > 0:
                        self._idle = True
                        self._wakeup.wait(remaining)
                        continue
                self._idle = False
                return self._take_batch()

    def _take_batch(self) -> tuple[list[_Slice], list[_Request], list[float]]:
        batch: list[_Slice] = []
        dropped: list[_Request] = []
        waited: list[float] = []
        space = self._max_batch
        now = time.perf_counter()
        while self._queue and space > 0:
            request = self._queue[0]
            total = len(request.rows)
            if request.taken == 0 and request.abandoned is not None and request.abandoned():
                request.taken = total
                self._queued_rows -= total
                dropped.append(request)
            if request.taken == total:  # expired, dropped, or fully taken earlier
                self._queue.popleft()
                continue
            if not self._merge and batch:
                break
            if request.taken == 0:
                waited.append(now - request.enqueued_at)
            count = total - request.taken if not self._merge else min(space, total - request.taken)
            batch.append(_Slice(request, request.taken, request.taken + count))
            request.taken += count
            space -= count
            self._queued_rows -= count
            if request.taken == total:
                self._queue.popleft()
        return batch, dropped, waited

    def _run_batch(
        self,
        batch: list[_Slice],
        dropped: list[_Request],
        waited: list[float],
        buffer: np.ndarray,
        *,
        on_loop: bool = False,
    ) -> None:
        """Infer one batch and answer it: directly on the loop, or with one call into it."""
        rows = sum(piece.stop - piece.start for piece in batch)
        results: np.ndarray | None = None
        error: ServiceError | None = None
        started = time.perf_counter()
        if rows:
            if len(batch) == 1 and batch[0].request.rows.dtype == np.float32:
                piece = batch[0]
                pixels = piece.request.rows[piece.start : piece.stop]  # no copy needed
            else:
                fits = rows <= len(buffer)  # only a whole unmerged request can be larger
                pixels = buffer[:rows] if fits else np.empty((rows, self._row_size), np.float32)
                offset = 0
                for piece in batch:  # the one copy of each image, converted to float32
                    count = piece.stop - piece.start
                    pixels[offset : offset + count] = piece.request.rows[piece.start : piece.stop]
                    offset += count
            try:
                results = self._infer(pixels)
                if results.shape[0] != rows:
                    raise ValueError(f"model returned {results.shape[0]} rows for {rows}")
            except Exception as exc:  # onnxruntime raises its own untyped errors
                results, error = None, InferenceFailed(f"inference failed for this batch: {exc}")
        seconds = time.perf_counter() - started
        if rows and error is None:  # a moving average: one slow call does not decide
            cost = seconds / rows
            known = self._row_seconds != float("inf")
            self._row_seconds = 0.8 * self._row_seconds + 0.2 * cost if known else cost
        if on_loop:
            self._deliver(batch, results, error, seconds, dropped, waited)
            return
        assert self._loop is not None
        with self._lock:  # idle before the answers leave: what their callers send next
            self._idle = self._idle or not self._queue  # may run on the loop (`_wake`)
        self._loop.call_soon_threadsafe(
            self._deliver, batch, results, error, seconds, dropped, waited
        )
