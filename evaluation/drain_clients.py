"""Clients for shutdown tests and benchmarks: every attempt ends answered, refused or lost.

Used by `tests/reliability/test_drain.py` and `python -m benchmarks.drain`. A
client posts one request after another, on a fresh connection each time or on
one keep-alive connection (reopened after the server closes it), and records
how each attempt ended:

- answered: an HTTP answer (its status, and whether it said `Connection: close`);
- refused: the connect failed (nothing listening, or the SYN was never answered);
- lost: the connection was accepted and the request written, then the
  connection was reset or closed without an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from evaluation.loadgen import build_request, read_response
from evaluation.samples import SEVEN_PNG

CONNECT_TIMEOUT_S = 10.0  # a SYN dropped by the drain's filter is retried by the kernel
ANSWER_TIMEOUT_S = 30.0  # longer than any drain: an answer that never comes is "lost"
REQUEST = build_request("/v1/predict", SEVEN_PNG, "image/png")


@dataclass(frozen=True)
class Attempt:
    sent: float  # monotonic time the request was written (or the connect began)
    outcome: str  # "answered", "refused" or "lost"
    done: float  # monotonic time the attempt ended
    status: int | None = None
    closes: bool = False  # the answer carried `Connection: close`
    error: str | None = None


class Client:
    """One client: sends until told to stop, recording every attempt."""

    def __init__(self, host: str, port: int, keep_alive: bool, request: bytes = REQUEST) -> None:
        self.host, self.port, self.keep_alive, self.request = host, port, keep_alive, request
        self.attempts: list[Attempt] = []
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            attempt = await self.once()
            self.attempts.append(attempt)
            if attempt.outcome == "refused":
                await asyncio.sleep(0.05)  # nothing listens: do not spin on connect
        await self.close()

    async def once(self) -> Attempt:
        started = time.monotonic()
        if self._streams is None:
            try:
                self._streams = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as error:
                return Attempt(started, "refused", time.monotonic(), error=type(error).__name__)
        reader, writer = self._streams
        sent = time.monotonic()
        try:
            writer.write(self.request)
            await writer.drain()
            status, headers, _ = await asyncio.wait_for(read_response(reader), ANSWER_TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as error:
            await self.close()
            return Attempt(sent, "lost", time.monotonic(), error=type(error).__name__)
        closes = headers.get("connection", "").lower() == "close"
        if closes or not self.keep_alive:
            await self.close()
        return Attempt(sent, "answered", time.monotonic(), status, closes)

    async def close(self) -> None:
        streams, self._streams = self._streams, None
        if streams is not None:
            streams[1].close()
            with contextlib.suppress(OSError):
                await streams[1].wait_closed()
