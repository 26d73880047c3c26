"""A storm of new connections: what each costs a full worker, and the least a Python server pays.

    python -m benchmarks.storm                      # 1,008 and 4,080 connections at once

In the first seconds of a spike every client connects at once and the worker
refuses almost all of them; a newcomer that arrives behind the storm waits
until the worker has got through it. wrk (1 thread, core 0) opens N keep-alive
connections at once, each posting a 28x28 PNG, against a server on core 1 that
refuses every first request with a 429 and parks the connection, as a full
worker does:

- `mnist-serve`: the worker's own accept loop and HTTP protocol
  (`service/server.py`: `Acceptor`, `GuardedHttpToolsProtocol`) with a
  `LoadShedder` that has no free slot, so nothing but the storm runs;
- `floor`: uvloop's own server and a protocol that writes a prepared 429 and
  stops reading: the least any Python worker on this event loop can do;
- `head-only`: the worker's accept loop and a protocol that only parses the
  request with httptools before it writes the prepared 429: what refusing
  newcomers before uvicorn's protocol is set up would cost.

Both tune the garbage collector as the worker does (`settle_the_collector`).

It prints the server's CPU per connection and wrk's latency of those first
answers: the slowest is about how long the storm held the core, which is what
a newcomer arriving behind it waits at least. Writes `--out/storm.json` and `.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httptools
import uvloop
from uvicorn.server import ServerState

from benchmarks.bodies import write_bodies
from benchmarks.overload import raise_file_limit
from benchmarks.refusal_cost import never_called, server_config
from benchmarks.report import save_results
from benchmarks.run import CLIENT_CPU, SERVER_CPU, machine
from benchmarks.server import ROOT
from benchmarks.wrk import STATUS_LUA, run_wrk
from service.app import settle_the_collector
from service.lifecycle import Lifecycle
from service.server import Acceptor, GuardedHttpToolsProtocol, Refusals
from service.shedding import LoadShedder

SERVERS = ("mnist-serve", "floor", "head-only")
BACKLOG = 8192
REFUSAL = Refusals().busy.keep_bytes  # the very bytes the worker answers with


class RefuseAndPark(asyncio.Protocol):
    """The floor: a prepared 429 for the first bytes, then nothing is read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(REFUSAL)
        self.transport.pause_reading()


class ParseRefuseAndPark(RefuseAndPark):
    """The request parsed to its end with httptools, then the prepared 429."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        super().data_received(b"")


async def serve_forever(kind: str, listener: socket.socket, ready: Connection) -> None:
    loop = asyncio.get_running_loop()
    if kind == "floor":
        await loop.create_server(RefuseAndPark, sock=listener, backlog=BACKLOG)
    elif kind == "head-only":
        Acceptor(listener, ParseRefuseAndPark, loop, BACKLOG).start()
    else:
        # A shedder without a free slot: every request is refused at its head.
        config = server_config(never_called, LoadShedder(limit=0), Lifecycle())
        state = ServerState()

        def create_protocol() -> asyncio.Protocol:
            return GuardedHttpToolsProtocol(config=config, server_state=state, app_state={})

        Acceptor(listener, create_protocol, loop, BACKLOG).start()
    settle_the_collector()  # as the worker does once it has started
    ready.send("ready")
    await asyncio.Event().wait()  # until terminated


def serve(kind: str, listener: socket.socket, ready: Connection) -> None:
    os.sched_setaffinity(0, {int(SERVER_CPU)})
    raise_file_limit(BACKLOG + 256)
    uvloop.run(serve_forever(kind, listener, ready))


def one_storm(kind: str, connections: int, body_dir: Path) -> dict[str, Any]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=BACKLOG)
    port = listener.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=serve, args=(kind, listener, theirs), daemon=True)
    server.start()
    try:
        if not ours.poll(30):
            raise RuntimeError(f"the {kind} server did not start")
        ours.recv()
        wrk = run_wrk(
            f"http://127.0.0.1:{port}/v1/predict",
            server_pid=server.pid,
            connections=connections,
            seconds=2,
            body_dir=body_dir,
            cpus=CLIENT_CPU,
            script=STATUS_LUA,
        )
    finally:
        server.terminate()
        server.join(10)
        listener.close()
    first_answers = sum(wrk.statuses.values())
    return {
        "server": kind,
        "connections": connections,
        "first_answers": first_answers,
        "statuses": wrk.statuses,
        "socket_errors": wrk.socket_errors,
        "server_cpu_ms": round(1000 * wrk.server_cpu_s, 1),
        "cpu_us_per_connection": round(1e6 * wrk.server_cpu_s / max(1, first_answers), 1),
        "answer_p50_ms": round(wrk.p50_ms, 1),
        "answer_p99_ms": round(wrk.p99_ms, 1),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# Storm: {results['command']}",
        "",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores; "
        f"{results['machine']['pinning']}.",
        "",
        "| server | connections at once | first answers | socket errors | server CPU "
        "| CPU per connection | first answer p50 / p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["storms"]:
        lines.append(
            f"| {r['server']} | {r['connections']} | {r['first_answers']} {r['statuses']} "
            f"| {r['socket_errors']} | {r['server_cpu_ms']} ms | {r['cpu_us_per_connection']} µs "
            f"| {r['answer_p50_ms']} / {r['answer_p99_ms']} ms |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.storm", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--connections", default="1008,4080", help="storm sizes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    options = parser.parse_args(argv)
    sizes = [int(c) for c in options.connections.split(",")]
    raise_file_limit(2 * max(sizes) + 256)
    with tempfile.TemporaryDirectory(prefix="mnist-storm-") as scratch:
        body_dir = write_bodies(Path(scratch) / "bodies")["png"].folder
        storms = [one_storm(kind, n, body_dir) for n in sizes for kind in SERVERS]
    results = {
        "command": " ".join(["python -m benchmarks.storm", *(argv or [])]),
        "machine": machine(),
        "storms": storms,
    }
    save_results(options.out, "storm", results, markdown(results))


if __name__ == "__main__":
    main()
