"""The load shedder's turns, with fake connections: who is admitted, refused, woken."""

from __future__ import annotations

from service.shedding import LoadShedder, Waiting


class Connection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.resumed = 0
        self.closed = False
        self.sent = True  # its next request waits in the socket (a client that retries at once)

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
    assert shedder.admit(holder)
    for connection in waiting:
        assert not shedder.admit(connection)
        shedder.park(connection)
    return shedder


def test_admits_up_to_the_limit_then_refuses() -> None:
    shedder = LoadShedder(limit=2)
    a, b, c = Connection("a"), Connection("b"), Connection("c")
    assert shedder.admit(a) and shedder.admit(b)
    assert not shedder.admit(c)
    shedder.finished()
    assert shedder.admit(c)  # a slot freed and nobody waits: admitted


def test_parked_connections_get_freed_slots_first_come_first_served() -> None:
    holder, first, second, newcomer = (Connection(n) for n in ("h", "1", "2", "n"))
    shedder = full(holder, first, second)
    assert (first.resumed, second.resumed) == (0, 0)  # nothing free yet: they wait
    shedder.finished()  # the holder's request is answered
    assert (first.resumed, second.resumed) == (1, 0)  # the first in line is woken...
    assert not shedder.admit(newcomer)  # ...its slot kept from a newcomer...
    assert shedder.admit(first)  # ...and taken by its next request
    shedder.finished()
    assert second.resumed == 1 and shedder.admit(second)


def test_a_closed_connection_gives_its_turn_away() -> None:
    holder, gone, waiting = Connection("h"), Connection("g"), Connection("w")
    shedder = full(holder, gone, waiting)
    gone.closed = True
    shedder.finished()
    assert (gone.resumed, waiting.resumed) == (0, 1)  # skipped while parked
    waiting.closed = True
    shedder.forget(waiting)  # woken, then closed before its request came
    assert shedder.admit(Connection("next"))  # the reserved slot is free again


def test_drain_wakes_every_parked_connection_and_admits_nobody() -> None:
    holder, parked, late = Connection("h"), Connection("p"), Connection("l")
    shedder = full(holder, parked)
    shedder.drain()
    assert parked.resumed == 1  # its next request gets the drain's 503 at once
    shedder.finished()
    assert not shedder.admit(late)
    shedder.park(late)
    assert late.resumed == 1


def test_a_newcomer_after_the_crowd_left_is_admitted_at_once() -> None:
    crowd = [Connection(str(i)) for i in range(3)]
    shedder = full(Connection("h"), *crowd)
    for parked in crowd:
        parked.closed = True  # the spike is over: every waiting client hung up
    shedder.finished()  # (their turns were skipped here already)
    assert shedder.admit(Connection("newcomer"))


def test_an_answered_connection_waits_behind_the_line_without_a_refusal() -> None:
    holder, parked = Connection("h"), Connection("p")
    shedder = full(holder, parked)  # its one refusal: it arrived at a crowd
    assert shedder.others_waiting()  # so the holder, answered, parks behind it...
    shedder.park(holder)
    shedder.finished()
    assert (parked.resumed, holder.resumed) == (1, 0)  # ...and the line goes first
    assert shedder.admit(parked)
    assert shedder.others_waiting()  # the holder waits now: the next answered goes behind it
    shedder.finished()
    assert holder.resumed == 1 and shedder.admit(holder)  # its request, never refused


def test_an_idle_connection_at_its_turn_reads_again_but_keeps_no_slot() -> None:
    sleeper, busy = Connection("s"), Connection("b")
    shedder = full(Connection("h"), sleeper, busy)
    sleeper.sent = False  # it honours Retry-After: nothing sent when its turn comes
    shedder.finished()
    assert (sleeper.resumed, busy.resumed) == (1, 1)  # the slot went on to the next in line
    assert shedder.admit(busy)
    assert not shedder.admit(sleeper)  # no slot was kept for it; its request waits a turn


def test_nobody_waits_during_the_drain() -> None:
    shedder = full(Connection("h"), Connection("p"))
    shedder.drain()
    assert not shedder.others_waiting()  # an answered connection reads on and gets 503
