"""`--workers N`: N worker processes serving one listening socket.

The parent binds the socket, starts the workers (each builds its own app and
loads the model; the parent loads nothing), forwards SIGTERM/SIGINT to them so
each drains its own requests, restarts a worker that dies unexpectedly, and
exits 0 only when every worker drained cleanly. Prometheus metrics are merged
across workers through the multiprocess directory the parent prepares.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from service.config import Settings
from service.server import STARTUP_FAILURE, serve_worker

log = logging.getLogger("service.supervisor")


def run_workers(
    settings: Settings, listener: socket.socket, workers: int, early: threading.Event
) -> int:
    """Run `workers` processes until a signal stops them; the exit code to return.

    `early`: set if a signal came before this function installed its handlers."""
    context = multiprocessing.get_context("spawn")
    # A signal during a worker's start used to kill it by the default action (exit
    # -15, so we exited 1). Now a worker is signalled only once it says its handlers
    # exist (`armed`); one still starting reads `stop` when it gets there. `stop` is
    # set before `armed` is read, and a worker sets `armed` before reading `stop`:
    # one of the two always sees the other.
    stop = context.Event()
    armed: dict[int, Any] = {}

    def start() -> BaseProcess:
        ready = context.Event()
        process = context.Process(
            target=serve_worker, args=(settings, [listener], stop, ready), daemon=False
        )
        process.start()
        assert process.pid is not None
        armed[process.pid] = ready
        return process

    processes: list[BaseProcess] = []
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop.set()
        for process in processes:
            pid = process.pid
            if pid is not None and process.exitcode is None and armed[pid].is_set():
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    if early.is_set():
        forward(signal.SIGTERM, None)
    for _ in range(workers):
        if not stopping:
            processes.append(start())
    while True:
        running = [p for p in processes if p.exitcode is None]
        if not running:
            break
        wait([p.sentinel for p in running])
        for index, process in enumerate(processes):
            code = process.exitcode
            if code == STARTUP_FAILURE and not stopping:  # it will fail again: stop them all
                log.error("a worker could not start; stopping")
                forward(signal.SIGTERM, None)
            elif code is not None and code != 0 and not stopping:
                log.warning("worker died; starting another", extra={"exitcode": code})
                processes[index] = start()
        if not stopping and all(p.exitcode == 0 for p in processes):
            break  # every worker stopped on its own (e.g. its lifespan ended): so do we
    codes = [p.exitcode for p in processes]
    return 0 if all(code == 0 for code in codes) else 1
