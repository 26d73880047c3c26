"""A small HTTP/1.1 load generator on raw asyncio streams, for overload tests and the soak.

Why not httpx or wrk: a full HTTP client library costs more CPU per request than
the server's cheap 429 (on a 2-core box the client would starve the server it
measures), and wrk is closed-loop and cannot time responses by status. This client:

* `closed_loop`: N connections send back to back (measures the unloaded maximum);
* `open_loop`: requests are *scheduled* at a fixed rate whether or not earlier
  ones finished (what real traffic does), spread over up to `max_connections`
  keep-alive connections; latency is timed from the moment a request is written.

Every outcome is kept: status, `Retry-After`, or the transport error name
(`ConnectionResetError`, `IncompleteReadError`, ...), so tests can assert that
nothing was lost silently. Only 127.0.0.1 targets are used by the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

HEADER_END = b"\r\n\r\n"
READ_LIMIT = 1 << 20


@dataclass(frozen=True)
class Result:
    scheduled: float  # monotonic time the request was due (open loop) or sent (closed loop)
    sent: float  # monotonic time its bytes were written
    done: float  # monotonic time the response (or the error) arrived
    status: int | None  # None: transport error, see `error`
    retry_after: str | None = None
    error: str | None = None
    new_connection: bool = False  # the first request on a freshly opened connection

    @property
    def latency_s(self) -> float:
        return self.done - self.sent


@dataclass
class Run:
    """Everything one load phase produced."""

    started: float
    stopped: float
    results: list[Result] = field(default_factory=list)
    client_lag_s: float = 0.0  # worst oversleep of the generator's own loop (client overload)

    @property
    def seconds(self) -> float:
        return self.stopped - self.started

    def count(self, status: int | None) -> int:
        return sum(1 for r in self.results if r.status == status)

    def rate(self, status: int) -> float:
        """Answers per second with this status over the phase."""
        return self.count(status) / self.seconds if self.seconds > 0 else 0.0


def build_request(
    path: str,
    body: bytes,
    content_type: str,
    *,
    host: str = "127.0.0.1",
    extra_headers: dict[str, str] | None = None,
) -> bytes:
    """The exact bytes of one keep-alive POST, built once and written many times."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in (extra_headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body (all this service sends)."""
    head = await reader.readuntil(HEADER_END)
    status_line, *header_lines = head[: -len(HEADER_END)].decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


class _Connection:
    """One keep-alive connection, reopened after the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes, scheduled: float) -> Result:
        sent = time.monotonic()
        fresh = self.writer is None
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(
                    self.host, self.port, limit=READ_LIMIT
                )
                sent = time.monotonic()
            assert self.reader is not None
            self.writer.write(request)
            status, headers, _ = await read_response(self.reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            await self.close()
            return Result(
                scheduled,
                sent,
                time.monotonic(),
                None,
                error=type(e).__name__,
                new_connection=fresh,
            )
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Result(
            scheduled, sent, time.monotonic(), status, headers.get("retry-after"), None, fresh
        )

    async def connect(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, limit=READ_LIMIT
            )

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def closed_loop(
    host: str,
    port: int,
    request: bytes,
    *,
    concurrency: int,
    duration_s: float,
    on_result: Callable[[Result], None] | None = None,
    fresh_connections: bool = False,
) -> Run:
    """`concurrency` connections, each sending its next request when the last one answered.

    `fresh_connections`: a new connection for every request (a newcomer each time),
    waiting `Retry-After` after a refusal, as a client should (reconnecting at once
    would turn a refusal of "too many connections" into a connection storm)."""
    run = Run(started=time.monotonic(), stopped=0.0)
    end = run.started + duration_s

    async def worker() -> None:
        connection = _Connection(host, port)
        try:
            while time.monotonic() < end:
                result = await connection.exchange(request, time.monotonic())
                run.results.append(result)
                if on_result is not None:
                    on_result(result)
                if fresh_connections:
                    await connection.close()
                    if result.status in (429, 503):  # as a polite client: wait, then retry
                        await asyncio.sleep(float(result.retry_after or 1))
        finally:
            await connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.stopped = time.monotonic()
    return run


async def open_loop(
    host: str,
    port: int,
    request: bytes,
    *,
    rate: float,
    duration_s: float,
    max_connections: int = 256,
    drain_timeout_s: float = 10.0,
    on_result: Callable[[Result], None] | None = None,
    keep_results: bool = True,
) -> Run:
    """Schedule `rate` requests per second for `duration_s`, independent of the answers.

    A request due while all `max_connections` are busy waits in a client-side
    backlog; its `scheduled` time records that, `sent` does not. After the phase,
    answers still outstanding get `drain_timeout_s` to arrive (then count as
    'ClientTimeout' errors: an unbounded wait is a failure too). For long runs
    (the soak) pass `keep_results=False` and aggregate in `on_result`.
    """
    tickets: asyncio.Queue[float | None] = asyncio.Queue()
    # Keep-alive connections opened up front, as a load balancer's pool would be:
    # the phase measures the server under load, not a storm of TCP handshakes.
    connections = [_Connection(host, port) for _ in range(max_connections)]
    for start in range(0, max_connections, 32):
        await asyncio.gather(*(c.connect() for c in connections[start : start + 32]))
    run = Run(started=time.monotonic(), stopped=0.0)
    outstanding = 0
    all_answered = asyncio.Event()
    all_answered.set()

    async def worker(connection: _Connection) -> None:
        nonlocal outstanding
        try:
            while (scheduled := await tickets.get()) is not None:
                result = await connection.exchange(request, scheduled)
                if keep_results:
                    run.results.append(result)
                if on_result is not None:
                    on_result(result)
                outstanding -= 1
                if outstanding == 0:
                    all_answered.set()
        finally:
            await connection.close()

    workers = [asyncio.create_task(worker(connection)) for connection in connections]
    dispatched = 0
    tick = min(0.005, 1.0 / rate)
    while (elapsed := time.monotonic() - run.started) < duration_s:
        due = int(elapsed * rate) - dispatched
        for index in range(due):
            tickets.put_nowait(run.started + (dispatched + index) / rate)
        if due:
            outstanding += due
            all_answered.clear()
        dispatched += due
        before_sleep = time.monotonic()
        await asyncio.sleep(tick)  # pacing of the generator itself, not synchronisation
        run.client_lag_s = max(run.client_lag_s, time.monotonic() - before_sleep - tick)
    run.stopped = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_answered.wait(), drain_timeout_s)
    now = time.monotonic()
    while not tickets.empty():  # never sent: the client could not keep up
        scheduled = tickets.get_nowait()
        if scheduled is not None:
            run.results.append(Result(scheduled, now, now, None, error="NeverSent"))
            outstanding -= 1
    for _ in range(outstanding):
        run.results.append(Result(now, now, now, None, error="ClientTimeout"))
    for task in workers:
        task.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    return run


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation): an observed value, never invented."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None
    return parts.hostname, parts.port


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on uvloop when available: the load generator needs a cheap loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.run(factory())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(factory())
