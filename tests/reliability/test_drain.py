"""Graceful drain under load: SIGTERM loses no request, then the process exits 0.

A real server holds each request ~300 ms in the batch queue, so several are in
flight when SIGTERM arrives. Clients keep sending (a fresh connection per
request, or keep-alive connections) until the server has exited. Every attempt
must end answered (200 for work accepted before the signal, 503 with
`Connection: close` after it) or refused at connect; none may be lost (accepted,
written, then cut off without an answer). Asserted with counts and statuses.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from evaluation.drain_clients import Attempt, Client
from evaluation.live_server import LiveServer, live_server
from evaluation.loadgen import host_port, run_async
from tests.reliability.support import (
    PREDICTION,
    post_seven,
    raw_connection,
    read_raw_response,
    the_only_slot_held,
    wait_for_metric,
)

pytestmark = pytest.mark.slow

CLIENTS = 8
DRAIN_DELAY_S = 1.0
GRACE_S = 10.0
ENV = {
    "MNIST_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
    "MNIST_SHUTDOWN_GRACE_S": str(GRACE_S),
    "MNIST_MAX_QUEUE_DELAY_MS": "300",  # requests stay in flight ~300 ms
    "MNIST_MAX_BATCH_SIZE": "64",
}


async def _until(condition: Callable[[], bool], what: str, attempts: int = 3000) -> None:
    """Bounded polling of state another process changes (no event crosses processes)."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {what}")


def _queued_rows(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    return next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("mnist_queue_depth_rows ")
    )


def _answered_200_by_server(server: LiveServer) -> int:
    """200s the server's access log shows it sent (for /v1/predict)."""
    count = 0
    for line in server.log().splitlines():
        if line.startswith("{"):
            entry = orjson.loads(line)
            if entry.get("logger") == "service.access" and entry.get("status") == 200:
                count += entry.get("route") == "/v1/predict"
    return count


@pytest.mark.parametrize("keep_alive", [False, True], ids=["fresh", "keepalive"])
def test_sigterm_under_load_loses_nothing(tmp_path: Path, keep_alive: bool) -> None:
    with live_server(tmp_path, env=ENV) as server:
        host, port = host_port(server.url)
        crowd = [Client(host, port, keep_alive) for _ in range(CLIENTS)]
        readiness: list[int | str] = []

        async def scenario() -> tuple[float, int]:
            stop = asyncio.Event()
            tasks = [asyncio.create_task(c.run(stop)) for c in crowd]

            def warmed() -> bool:
                return sum(a.status == 200 for c in crowd for a in c.attempts) >= 3 * CLIENTS

            await _until(warmed, "the load running")
            await _until(lambda: _queued_rows(server.url) >= CLIENTS // 2, "requests in flight")
            signalled = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            async with httpx.AsyncClient(timeout=2.0) as probe:
                while server.process.poll() is None and len(readiness) < 1000:
                    try:  # a fresh connection each time, as a load balancer's probe
                        response = await probe.get(
                            f"{server.url}/readyz", headers={"Connection": "close"}
                        )
                        readiness.append(response.status_code)
                    except httpx.TransportError as error:
                        readiness.append(type(error).__name__)
                    await asyncio.sleep(0.02)  # probe period, not synchronisation
            code = await asyncio.to_thread(server.process.wait, GRACE_S + 5)
            exited = time.monotonic() - signalled
            assert exited <= GRACE_S, exited  # within the grace period (the promise)
            await _until(
                lambda: all(c.attempts and c.attempts[-1].done > signalled + exited for c in crowd),
                "every client's attempt after the exit",
            )
            stop.set()
            await asyncio.gather(*tasks)
            return signalled, code

        signalled, code = run_async(scenario)
        server_200 = _answered_200_by_server(server)

    attempts: list[Attempt] = [a for c in crowd for a in c.attempts]
    outcomes = {kind: [a for a in attempts if a.outcome == kind] for kind in ("answered", "lost")}
    answered = outcomes["answered"]
    report: dict[str, Any] = {
        "attempts": len(attempts),
        "200": sum(a.status == 200 for a in answered),
        "503": sum(a.status == 503 for a in answered),
        "refused": sum(a.outcome == "refused" for a in attempts),
        "lost": [a.error for a in outcomes["lost"]],
        "in_flight_at_sigterm_ok": sum(
            a.status == 200 and a.sent < signalled < a.done for a in answered
        ),
    }
    print(f"\ndrain report ({'keep-alive' if keep_alive else 'fresh'}): {report}")

    assert code == 0  # a clean drain
    assert not outcomes["lost"], report  # nothing accepted was cut off
    assert {a.status for a in answered} <= {200, 503}, report
    assert report["in_flight_at_sigterm_ok"] > 0, report  # work in flight was finished
    assert report["503"] > 0 and report["refused"] > 0, report  # both ways of "go elsewhere"
    for attempt in answered:
        if attempt.status == 503:  # the last answer of its connection, after the signal
            assert attempt.closes and attempt.done > signalled, attempt
    # Every 200 the server sent reached its client (none was written into a dead socket).
    assert server_200 == report["200"], (server_200, report)
    # Readiness went false first, never came back, and the port closed only after.
    assert 503 in readiness, readiness
    went_false = readiness.index(503)
    assert 200 not in readiness[went_false:], readiness
    assert all(status in (200, 503) for status in readiness[:went_false]), readiness


def test_requests_waiting_in_line_at_sigterm_are_answered_200(tmp_path: Path) -> None:
    """One slot, held by a request waiting ~1 s for its batch, and two requests waiting
    in line for it. They were read before the signal, so the drain runs them to their
    answer (200, `Connection: close`) instead of refusing them; then the exit is clean."""
    env = {**ENV, "MNIST_DRAIN_DELAY_S": "0"}
    with the_only_slot_held(tmp_path, waiting=2, env=env) as (server, holder):
        in_line = [raw_connection(server.url) for _ in range(2)]
        try:
            for connection in in_line:
                connection.sendall(PREDICTION)
            wait_for_metric(server.url, "mnist_http_requests_waiting", 2)
            # Both wait in line: a fourth request finds it full and is refused.
            assert post_seven(server.url).status_code == 429
            server.process.send_signal(signal.SIGTERM)
            answers = [read_raw_response(connection) for connection in [holder, *in_line]]
            code = server.process.wait(GRACE_S + 5)
        finally:
            for connection in in_line:
                connection.close()
    assert [status for status, _, _ in answers] == [200, 200, 200], answers
    assert all(headers.get("connection") == "close" for _, headers, _ in answers[1:]), answers
    assert code == 0
