"""Load shedding by what the worker holds: requests running, a short line, and turns.

The HTTP protocol (`service.server`) asks `admit` when a request head has
arrived and before its body is read. Below `limit` requests running it runs
(`Turn.RUN`). Past it, while fewer than `line` requests wait, it waits
(`Turn.WAIT`): its body is read and kept, and it runs, first come first served,
when a slot frees. So a burst at moderate load is absorbed, not refused, while
the number running, and with it the length of an event-loop turn (and so how
long a refusal waits to be written), stays at `limit`. Past both, the protocol
answers 429 at once (`Turn.REFUSE`: a few microseconds, no ASGI app, no body)
and then *parks* the connection: it stops reading from it, so the
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

Knows nothing of HTTP or of uvicorn: a connection is anything with `resume()`,
`peek()` and `start()`.
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


class Turn(Enum):
    """What `admit` decided for a request."""

    RUN = "run"  # a slot is free: it runs now
    WAIT = "wait"  # no slot, room in the line: it runs (`start`) when one frees
    REFUSE = "refuse"  # 429; the protocol then `park`s the connection


class Parkable(Protocol):
    def start(self) -> None:
        """The request that waited in line has a slot now: run it."""

    def resume(self) -> None:
        """Start reading again: the next request (often already buffered) arrives."""

    def peek(self) -> Waiting:
        """What the connection holds, without reading it."""


class LoadShedder:
    def __init__(self, limit: int, line: int = 0) -> None:
        self.limit = limit
        self.line = line
        self.held = 0  # requests running (started and not finished)
        self._waiting: deque[Parkable] = deque()  # requests read, waiting for a slot
        self._parked: deque[Parkable] = deque()
        self._reserved: set[Parkable] = set()  # resumed, their slot kept for them
        self._draining = False

    @property
    def parked(self) -> int:
        return len(self._parked)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self, connection: Parkable) -> Turn:
        """Run this connection's request now, let it wait in line, or refuse it."""
        if connection in self._reserved:
            self._reserved.discard(connection)
            self.held += 1
            return Turn.RUN
        if self._draining:
            return Turn.REFUSE
        if self._parked and self.held + len(self._reserved) < self.limit:
            self._hand_out()  # free turns: wake those waiting, drop those who left
        if self._parked:  # refused clients go first: a newcomer queues behind them
            return Turn.REFUSE
        if self.held + len(self._reserved) < self.limit:
            self.held += 1
            return Turn.RUN
        if len(self._waiting) < self.line:
            self._waiting.append(connection)
            return Turn.WAIT
        return Turn.REFUSE

    def finished(self) -> None:
        """A running request was answered (or abandoned): its slot goes to the next turn."""
        self.held -= 1
        if self._waiting:
            self.held += 1
            self._waiting.popleft().start()
        else:
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
        """The connection closed: its request waiting in line is dropped (nobody is
        there to answer), a slot reserved for it goes to the next in line."""
        if connection in self._waiting:
            self._waiting.remove(connection)
        if connection in self._reserved:
            self._reserved.discard(connection)
            self._hand_out()

    def drain(self) -> None:
        """Shutting down: no more turns. Requests waiting in line were read before the
        drain: they run now, to their answer; every parked connection reads again
        (and gets 503)."""
        self._draining = True
        self._reserved.clear()
        while self._waiting:
            self.held += 1
            self._waiting.popleft().start()
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
