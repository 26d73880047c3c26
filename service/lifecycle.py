"""Readiness, in-flight tracking and graceful drain on SIGTERM.

Order on SIGTERM (what Kubernetes and load balancers expect):
1. readiness goes false and new requests get 503 (`draining`);
2. every request already accepted completes (we wait for in-flight to reach 0,
   at most `shutdown_grace_s`), after at least `drain_delay_s`;
3. only then is the server told to stop (uvicorn's own SIGTERM handler), which
   closes the sockets and runs the lifespan shutdown (batcher drain).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

log = logging.getLogger("service.lifecycle")


class Lifecycle:
    """Process state shared by the health routes, the request gate and the drain.

    `accepted` counts requests that passed the gate; requests refused with 503
    while draining are not counted, so the drain ends even under steady load.
    """

    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.accepted = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def request_started(self) -> None:
        self.accepted += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.accepted -= 1
        if self.accepted == 0:
            self._idle.set()

    def begin_drain(self) -> None:
        self.ready = False
        self.draining = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """True when no request is in flight, False when `timeout_s` ran out first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


def install_drain_on_sigterm(lifecycle: Lifecycle, *, drain_delay_s: float, grace_s: float) -> None:
    """Put a drain in front of the server's own SIGTERM handler.

    Works for any server that handles SIGTERM with `signal.signal` in the main
    thread (uvicorn does, in one process or each of `--workers N`). In tests,
    where the lifespan runs off the main thread, nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    server_handler = signal.getsignal(signal.SIGTERM)
    if not callable(server_handler):
        return
    loop = asyncio.get_running_loop()

    async def drain_then_stop() -> None:
        started = time.monotonic()
        log.info("draining", extra={"accepted": lifecycle.accepted})
        idle = await lifecycle.wait_idle(grace_s)
        remaining_delay = drain_delay_s - (time.monotonic() - started)
        if remaining_delay > 0:
            await asyncio.sleep(remaining_delay)  # let load balancers see "not ready"
        log.info("drained", extra={"idle": idle, "seconds": round(time.monotonic() - started, 3)})
        server_handler(signal.SIGTERM, None)

    def on_sigterm(signum: int, frame: FrameType | None) -> Any:
        if lifecycle.draining:  # a second SIGTERM: stop now
            return server_handler(signum, frame)
        lifecycle.begin_drain()
        loop.call_soon_threadsafe(lambda: loop.create_task(drain_then_stop()))
        return None

    signal.signal(signal.SIGTERM, on_sigterm)
