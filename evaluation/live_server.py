"""Start the real service (`python -m service`) on a free localhost port, for tests.

Used by every test that needs a real server process: drain, overload, multi-worker
metrics, Prometheus scraping, the browser and the Locust smoke run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path  # stderr: the JSON logs
    stdout_path: Path  # stdout: the human "ready" line
    grpc_port: int = 0  # the inference protocol over gRPC (0: off)

    @property
    def grpc_target(self) -> str:
        """`host:port` for gRPC clients (tritonclient.grpc, grpc.insecure_channel)."""
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait for the exit code (the graceful drain path)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)


def wait_until_ready(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling an external process's readiness, bounded above
    raise RuntimeError(f"server not ready within {READY_TIMEOUT_S}s:\n{log_path.read_text()}")


@contextmanager
def live_server(
    tmp_path: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> Iterator[LiveServer]:
    """Run `python -m service --port <free> --grpc-port <free> *args` until the block ends
    (`*args` may set its own `--grpc-port`, e.g. 0 for none)."""
    port = free_port()
    grpc_port = free_port()
    log_path = tmp_path / f"server-{port}.log"
    stdout_path = tmp_path / f"server-{port}.out"
    environment = {
        **os.environ,
        "MNIST_MODEL_REPOSITORY": str(ROOT / "models"),
        **(env or {}),
    }
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log_path.open("wb") as log_file, stdout_path.open("wb") as out_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service",
                "--port",
                str(port),
                "--grpc-port",
                str(grpc_port),
                *args,
            ],
            cwd=ROOT,
            env=environment,
            stdout=out_file,
            stderr=log_file,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_ready(url, process, log_path)
            given = [a for i, a in enumerate(args[1:]) if args[i] == "--grpc-port"]
            yield LiveServer(
                url, process, log_path, stdout_path, int(given[-1]) if given else grpc_port
            )
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
