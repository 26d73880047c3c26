"""The load shedder's turns, with fake connections: who runs, waits, is refused, woken."""

from __future__ import annotations

from service.shedding import LoadShedder, Turn, Waiting


class Connection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.resumed = 0
        self.started = 0  # its request, waiting in line, was run
        self.closed = False
        self.sent = True  # its next request waits in the socket (a client that retries at once)

    def start(self) -> None:
        self.started += 1

    def resume(self) -> None:
        self.resumed += 1

    def peek(self) -> Waiting:
        if self.closed:
            return Waiting.GONE
        return Waiting.REQUEST if self.sent else Waiting.IDLE


def full(holder: Connection, *waiting: Connection) -> LoadShedder:
    """A shedder with one slot, held by `holder`; each of `waiting` arrived, was
    refused (the protocol's 429) and parked, in that order."""
    shedder = LoadShedder(limit=1)
    assert shedder.admit(holder) is Turn.RUN
    for connection in waiting:
        assert shedder.admit(connection) is Turn.REFUSE
        shedder.park(connection)
    return shedder


def test_admits_up_to_the_limit_then_refuses() -> None:
    shedder = LoadShedder(limit=2)
    a, b, c = Connection("a"), Connection("b"), Connection("c")
    assert shedder.admit(a) is shedder.admit(b) is Turn.RUN
    assert shedder.admit(c) is Turn.REFUSE
    shedder.finished()
    assert shedder.admit(c) is Turn.RUN  # a slot freed and nobody waits: admitted


def test_parked_connections_get_freed_slots_first_come_first_served() -> None:
    holder, first, second, newcomer = (Connection(n) for n in ("h", "1", "2", "n"))
    shedder = full(holder, first, second)
    assert (first.resumed, second.resumed) == (0, 0)  # nothing free yet: they wait
    shedder.finished()  # the holder's request is answered
    assert (first.resumed, second.resumed) == (1, 0)  # the first in line is woken...
    assert shedder.admit(newcomer) is Turn.REFUSE  # ...its slot kept from a newcomer...
    assert shedder.admit(first) is Turn.RUN  # ...and taken by its next request
    shedder.finished()
    assert second.resumed == 1 and shedder.admit(second) is Turn.RUN


def test_a_closed_connection_gives_its_turn_away() -> None:
    holder, gone, waiting = Connection("h"), Connection("g"), Connection("w")
    shedder = full(holder, gone, waiting)
    gone.closed = True
    shedder.finished()
    assert (gone.resumed, waiting.resumed) == (0, 1)  # skipped while parked
    waiting.closed = True
    shedder.forget(waiting)  # woken, then closed before its request came
    assert shedder.admit(Connection("next")) is Turn.RUN  # the reserved slot is free again


def test_drain_wakes_every_parked_connection_and_admits_nobody() -> None:
    holder, parked, late = Connection("h"), Connection("p"), Connection("l")
    shedder = full(holder, parked)
    shedder.drain()
    assert parked.resumed == 1  # its next request gets the drain's 503 at once
    shedder.finished()
    assert shedder.admit(late) is Turn.REFUSE
    shedder.park(late)
    assert late.resumed == 1


def test_a_newcomer_after_the_crowd_left_is_admitted_at_once() -> None:
    crowd = [Connection(str(i)) for i in range(3)]
    shedder = full(Connection("h"), *crowd)
    for parked in crowd:
        parked.closed = True  # the spike is over: every waiting client hung up
    shedder.finished()  # (their turns were skipped here already)
    assert shedder.admit(Connection("newcomer")) is Turn.RUN


def test_an_answered_connection_waits_behind_the_line_without_a_refusal() -> None:
    holder, parked = Connection("h"), Connection("p")
    shedder = full(holder, parked)  # its one refusal: it arrived at a crowd
    assert shedder.others_waiting()  # so the holder, answered, parks behind it...
    shedder.park(holder)
    shedder.finished()
    assert (parked.resumed, holder.resumed) == (1, 0)  # ...and the line goes first
    assert shedder.admit(parked) is Turn.RUN
    assert shedder.others_waiting()  # the holder waits now: the next answered goes behind it
    shedder.finished()
    assert holder.resumed == 1 and shedder.admit(holder) is Turn.RUN  # its request, never refused


def test_an_idle_connection_at_its_turn_reads_again_but_keeps_no_slot() -> None:
    sleeper, busy = Connection("s"), Connection("b")
    shedder = full(Connection("h"), sleeper, busy)
    sleeper.sent = False  # it honours Retry-After: nothing sent when its turn comes
    shedder.finished()
    assert (sleeper.resumed, busy.resumed) == (1, 1)  # the slot went on to the next in line
    assert shedder.admit(busy) is Turn.RUN
    assert shedder.admit(sleeper) is Turn.REFUSE  # no slot was kept for it: it waits a turn


def test_nobody_waits_during_the_drain() -> None:
    shedder = full(Connection("h"), Connection("p"))
    shedder.drain()
    assert not shedder.others_waiting()  # an answered connection reads on and gets 503


def test_a_burst_waits_in_line_and_runs_in_order_as_slots_free() -> None:
    shedder = LoadShedder(limit=1, line=2)
    holder, first, second, third = (Connection(n) for n in ("h", "1", "2", "3"))
    assert shedder.admit(holder) is Turn.RUN
    assert shedder.admit(first) is shedder.admit(second) is Turn.WAIT  # no 429 for a burst
    assert shedder.admit(third) is Turn.REFUSE  # the line is full
    shedder.park(third)
    assert (first.started, second.started) == (0, 0)
    shedder.finished()  # the holder is answered: the slot goes to the head of the line
    assert (first.started, second.started, third.resumed) == (1, 0, 0)
    shedder.finished()
    assert (second.started, third.resumed) == (1, 0)  # the line goes before the parked
    shedder.finished()
    assert third.resumed == 1 and shedder.admit(third) is Turn.RUN  # then the parked, in turn
    assert shedder.held == 1


def test_a_newcomer_does_not_jump_the_parked_into_the_line() -> None:
    shedder = LoadShedder(limit=1, line=1)
    holder, waiter, parked = Connection("h"), Connection("w"), Connection("p")
    assert shedder.admit(holder) is Turn.RUN
    assert shedder.admit(waiter) is Turn.WAIT
    assert shedder.admit(parked) is Turn.REFUSE
    shedder.park(parked)
    shedder.finished()  # the waiter runs; the line has room again...
    assert waiter.started == 1
    assert shedder.admit(Connection("n")) is Turn.REFUSE  # ...but the parked were first


def test_a_request_whose_client_left_the_line_never_runs() -> None:
    shedder = LoadShedder(limit=1, line=2)
    holder, gone, kept = Connection("h"), Connection("g"), Connection("k")
    assert shedder.admit(holder) is Turn.RUN
    assert shedder.admit(gone) is shedder.admit(kept) is Turn.WAIT
    shedder.forget(gone)  # the connection closed while its request waited
    shedder.finished()
    assert (gone.started, kept.started) == (0, 1)
    assert shedder.waiting == 0 and shedder.held == 1


def test_the_drain_runs_the_line_at_once() -> None:
    """Requests read before the drain run to their answer at once, not left waiting."""
    shedder = LoadShedder(limit=1, line=2)
    holder, first, second = Connection("h"), Connection("1"), Connection("2")
    assert shedder.admit(holder) is Turn.RUN
    assert shedder.admit(first) is shedder.admit(second) is Turn.WAIT
    shedder.drain()
    assert (first.started, second.started) == (1, 1) and shedder.waiting == 0
    for _ in range(3):
        shedder.finished()
    assert shedder.held == 0
