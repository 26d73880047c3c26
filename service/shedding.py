"""Load shedding by what the worker holds: admitted requests, a limit, and a queue of turns.

The HTTP protocol (`service.server`) asks `admit` when a request head has
arrived and before its body is read. Below `limit` requests in flight it is
admitted; past it the protocol answers 429 at once (a few microseconds, no ASGI
app, no body) and then *parks* the connection: it stops reading from it, so the
client's next request waits in the kernel's socket buffer, costing nothing,
until a slot frees. Slots are handed to parked connections first come, first
served, and reserved for them, so a client that was refused is not refused
again by a newcomer that happened to arrive later.

Why park instead of only refusing: clients that retry at once (load generators,
impatient clients) would otherwise turn every free CPU cycle into another
refusal, and the refusals would eat the capacity they protect. Parked, each
such connection costs one cheap refusal per turn, however many there are.

Knows nothing of HTTP or of uvicorn: a connection is anything with `resume()`
and `gone()`.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol


class Parkable(Protocol):
    def resume(self) -> None:
        """Start reading again: the next request (often already buffered) arrives."""

    def gone(self) -> bool:
        """True once the connection is closed: its turn is skipped."""


class LoadShedder:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0  # requests admitted and not finished
        self._parked: deque[Parkable] = deque()
        self._reserved: set[Parkable] = set()  # resumed, their slot kept for them
        self._draining = False

    @property
    def parked(self) -> int:
        return len(self._parked)

    def admit(self, connection: Parkable) -> bool:
        """Take a slot for this connection's request, or False: refuse and `park` it."""
        if connection in self._reserved:
            self._reserved.discard(connection)
            self.held += 1
            return True
        if self._draining:
            return False
        if self._parked and self.held + len(self._reserved) < self.limit:
            self._hand_out()  # free turns: wake those waiting, drop those who left
        if self._parked or self.held + len(self._reserved) >= self.limit:
            return False
        self.held += 1
        return True

    def finished(self) -> None:
        """An admitted request was answered (or abandoned): its slot goes to the next turn."""
        self.held -= 1
        self._hand_out()

    def park(self, connection: Parkable) -> None:
        """The connection stopped reading after its refusal; wake it when its turn comes."""
        if self._draining:
            connection.resume()  # its next request gets the drain's 503 at once
            return
        self._parked.append(connection)
        self._hand_out()

    def forget(self, connection: Parkable) -> None:
        """The connection closed: a slot reserved for it goes to the next in line."""
        if connection in self._reserved:
            self._reserved.discard(connection)
            self._hand_out()

    def drain(self) -> None:
        """Shutting down: no more turns; every parked connection reads again (and gets 503)."""
        self._draining = True
        self._reserved.clear()
        while self._parked:
            connection = self._parked.popleft()
            if not connection.gone():
                connection.resume()

    def _hand_out(self) -> None:
        while self._parked and self.held + len(self._reserved) < self.limit:
            connection = self._parked.popleft()
            if connection.gone():
                continue
            self._reserved.add(connection)
            connection.resume()
