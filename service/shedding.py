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
refusal, and the refusals would eat the capacity they protect. And while others
wait (`others_waiting`), a connection whose request was just answered is
`park`ed at the back of the line without a refusal: its next request waits,
unread, for its turn.
So a client is refused once, when it arrives at a crowd, not once per request:
under a sustained spike the worker spends its CPU on answers, not on 429s
(goodput at 1,024 and 4,096 connections in docs/reliability.md).

At its turn a connection is peeked at, not read: gone ones are skipped, a
buffered request gets a slot kept for it, an idle one (nothing sent yet) just
reads again and keeps no slot, so a sleeping client cannot hold capacity.

Knows nothing of HTTP or of uvicorn: a connection is anything with `resume()`
and `peek()`.
"""

from __future__ import annotations

from collections import deque
from enum import Enum
from typing import Protocol


class Waiting(Enum):
    """What a parked connection holds when its turn comes."""

    GONE = "gone"  # closed or reset: its turn is skipped
    IDLE = "idle"  # open, nothing sent: it reads again, with no slot kept
    REQUEST = "request"  # its next request is buffered: a slot is kept for it


class Parkable(Protocol):
    def resume(self) -> None:
        """Start reading again: the next request (often already buffered) arrives."""

    def peek(self) -> Waiting:
        """What the connection holds, without reading it."""


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

    def others_waiting(self) -> bool:
        """Do connections wait for a turn? Then one just answered should `park` too
        (after it stops reading), behind them, without a refusal."""
        return bool(self._parked) and not self._draining

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
            if connection.peek() is not Waiting.GONE:
                connection.resume()

    def _hand_out(self) -> None:
        while self._parked and self.held + len(self._reserved) < self.limit:
            connection = self._parked.popleft()
            waiting = connection.peek()
            if waiting is Waiting.GONE:
                continue
            if waiting is Waiting.REQUEST:
                self._reserved.add(connection)
            connection.resume()
