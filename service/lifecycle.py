"""Readiness and the count of admitted requests, shared by the health routes,
admission and the drain (`service.server` runs the shutdown sequence).

`accepted` counts requests that passed admission; requests refused with 503
while draining are not counted, so a drain ends even under steady load.
"""

from __future__ import annotations

import asyncio


class Lifecycle:
    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.accepted = 0
        self._idle: asyncio.Event | None = None

    def request_started(self) -> None:
        self.accepted += 1

    def request_finished(self) -> None:
        self.accepted -= 1
        if self.accepted == 0 and self._idle is not None:
            self._idle.set()

    def begin_drain(self) -> None:
        """Readiness goes false and admission answers new requests 503 from now on."""
        self.ready = False
        self.draining = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """True when no admitted request is in flight, False when `timeout_s` ran out first."""
        if self.accepted == 0:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        finally:
            self._idle = None
        return True
