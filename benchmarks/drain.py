"""SIGTERM under load: is any request lost? Fresh-connection and keep-alive clients.

    python -m benchmarks.drain                        # both kinds, 16 clients, SIGTERM after 2 s
    python -m benchmarks.drain --kinds fresh --clients 32 --drain-delay 1

For each kind of client, one `mnist-serve` (1 worker, defaults, plus
`--drain-delay` as MNIST_DRAIN_DELAY_S) pinned to core 1; `--clients` clients in
this process post 28x28 PNGs back to back, each either on a fresh connection
per request (`fresh`) or on one keep-alive connection, reopened after the server
closes it (`keepalive`). SIGTERM comes after `--before` seconds; the clients go
on until the server has exited. Every attempt ends one way:

- answered: an HTTP answer (200, or 503 `Connection: close` once draining);
- refused: the connect failed (the port was closed or stopped queueing);
- lost: the connection was accepted and the request written, then the
  connection was reset or closed without an answer (the client cannot tell
  whether it was processed). The promise is zero.

Also counted: 503s without `Connection: close`, 200s for requests sent after the
signal reached the server (work accepted after it), the exit code and the
seconds from SIGTERM to exit. Writes `--out/<name>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.report import save_results
from benchmarks.run import CLIENT_CPU, SERVER_CPU, machine
from benchmarks.server import ROOT, Server, start_server, stop_servers_on_sigterm
from evaluation.drain_clients import Attempt, Client
from evaluation.loadgen import host_port


async def scenario(server: Server, clients: int, keep_alive: bool, before_s: float) -> Any:
    host, port = host_port(server.url)
    stop = asyncio.Event()
    crowd = [Client(host, port, keep_alive) for _ in range(clients)]
    tasks = [asyncio.create_task(c.run(stop)) for c in crowd]
    await asyncio.sleep(before_s)  # the load before the signal, by design
    signalled = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(server.process.wait, 120)
    exited = time.monotonic()
    await asyncio.sleep(0.5)  # clients see the closed port, by design
    stop.set()
    await asyncio.gather(*tasks)
    return [a for c in crowd for a in c.attempts], signalled, exited, code


def summarize(
    kind: str, attempts: list[Attempt], signalled: float, exited: float, code: int
) -> dict[str, Any]:
    outcomes = Counter(a.outcome for a in attempts)
    statuses = Counter(str(a.status) for a in attempts if a.outcome == "answered")
    after = [a for a in attempts if a.sent > signalled]
    return {
        "clients": kind,
        "attempts": len(attempts),
        "answered": outcomes["answered"],
        "statuses": dict(statuses),
        "answered_503": statuses.get("503", 0),
        "refused": outcomes["refused"],
        "lost": outcomes["lost"],
        "lost_errors": dict(Counter(a.error for a in attempts if a.outcome == "lost")),
        "503_without_close": sum(1 for a in attempts if a.status == 503 and not a.closes),
        "200_sent_after_signal": sum(1 for a in after if a.status == 200),
        "other_statuses": sum(1 for a in attempts if a.status not in (None, 200, 503)),
        "exit_code": code,
        "exit_s": round(exited - signalled, 3),
    }


def markdown(results: dict[str, Any]) -> str:
    machine_info = results["machine"]
    lines = [
        f"# Drain: {results['command']}",
        "",
        f"Machine: {machine_info['cpu']}, {machine_info['cores']} cores, load "
        f"{machine_info['load_average']}; {machine_info['pinning']}. "
        f"{results['settings']}",
        "",
        "| clients | attempts | answered (200 / 503) | refused | lost | 503 without close "
        "| exit code | exit after SIGTERM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        lines.append(
            f"| {r['clients']} | {r['attempts']} | {r['answered']} "
            f"({r['statuses'].get('200', 0)} / {r['answered_503']}) | {r['refused']} | "
            f"{r['lost']} | {r['503_without_close']} | {r['exit_code']} | {r['exit_s']} s |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.drain", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kinds", default="fresh,keepalive")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--before", type=float, default=2.0, help="seconds of load before")
    parser.add_argument("--drain-delay", type=float, default=0.0, help="MNIST_DRAIN_DELAY_S")
    parser.add_argument("--workers", type=int, default=1, help="mnist-serve --workers N")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--service-dir",
        type=Path,
        help="serve the `service` package of another checkout (before/after)",
    )
    parser.add_argument("--name", default="drain")
    options = parser.parse_args(argv)
    stop_servers_on_sigterm()
    env = {"MNIST_DRAIN_DELAY_S": str(options.drain_delay)}
    results: dict[str, Any] = {
        "command": "python -m benchmarks.drain",
        "machine": machine(),
        "settings": {
            "clients": options.clients,
            "sigterm_after_s": options.before,
            "drain_delay_s": options.drain_delay,
            "workers": options.workers,
        },
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="mnist-drain-") as scratch:
        for kind in options.kinds.split(","):
            server = start_server(
                kind,
                ["--workers", str(options.workers)],
                cpus=SERVER_CPU,
                env=env,
                log_dir=Path(scratch),
                cwd=options.service_dir,
            )
            os.sched_setaffinity(0, {int(CLIENT_CPU)})
            try:
                attempts, signalled, exited, code = asyncio.run(
                    scenario(server, options.clients, kind == "keepalive", options.before)
                )
            finally:
                server.stop()
            results["runs"].append(summarize(kind, attempts, signalled, exited, code))
    save_results(options.out, options.name, results, markdown(results))
    print(f"wrote {options.out / options.name}.json and .md")


if __name__ == "__main__":
    main()
