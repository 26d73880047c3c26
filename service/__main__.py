"""Start the service: `mnist-serve [--host H] [--port P] [--grpc-port G] [--workers N] ...`.

Every setting is a flag and an `MNIST_*` environment variable (flags win;
`mnist-serve --help` lists them, `service.cli` builds them). Before anything is
loaded it checks the model files and binds the port, so a wrong repository or a
taken port fails at once with one line naming the flag that fixes it. Once the
service answers, one human line on stdout gives the URLs; the JSON logs go to
stderr. With `--workers N`, N worker processes share one listening socket
(`service.supervisor`); Prometheus metrics are then merged across them through
a fresh multiprocess directory.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from service.cli import PROG, ServeOptions, package_version, parse_options
from service.config import Settings
from service.errors import ModelLoadError

READY_WAIT_S = 600.0  # stop watching for readiness after this (a start never takes so long)
READY_POLL_S = 0.05


def prepare_metrics_dir(options: ServeOptions) -> None:
    """A clean multiprocess directory: stale files from a previous run would be summed in."""
    folder = options.metrics_dir or Path(tempfile.mkdtemp(prefix="mnist-metrics-"))
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def prepare_state_dir(settings: Settings) -> Path:
    """Where the workers share the serving set the repository API asked for: fresh per
    start, since a restarted server begins again from its version policy."""
    folder = settings.repository_state_dir or Path(tempfile.mkdtemp(prefix="mnist-state-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("worker-*.json"), folder / "desired.json"]:
        stale.unlink(missing_ok=True)
    return folder


def base_url(host: str, port: int) -> str:
    """The address a person opens: a wildcard host is reachable on the loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def ready_line(url: str) -> str:
    return (
        f"{PROG} {package_version()} ready: page {url}/ · API docs {url}/docs · "
        f"metrics {url}/metrics (Ctrl+C stops it)"
    )


def is_ready(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def announce_when_ready(url: str, host: str, port: int) -> None:
    """Print the ready line once /readyz answers 200 (model loaded and warm), in a
    daemon thread: the same signal for one process or a supervisor of N workers."""

    def watch() -> None:
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            if is_ready(host, port):
                print(ready_line(url), flush=True)
                return
            time.sleep(READY_POLL_S)

    threading.Thread(target=watch, name="ready-announcer", daemon=True).start()


def check_model(settings: Settings) -> None:
    """The model files (repository, card, checksum; no session): fail fast with one line."""
    from service.model import selected_folders, verify_model_files
    from service.packaged import repository_problem

    problem = repository_problem(settings.model_repository, settings.model_name)
    if problem is not None:
        raise ModelLoadError(problem)
    folders = selected_folders(
        settings.model_repository, settings.model_name, settings.served_policy()
    )
    for folder in folders.values():
        verify_model_files(folder, settings.model_variant)


def main() -> None:
    # A SIGTERM during the start (a deploy that changes its mind) must drain and exit 0,
    # not kill the process by the default action: recorded here, acted on once the
    # server or the supervisor has its own handlers.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # before onnxruntime is imported
    options = parse_options()
    settings = Settings.model_validate(options.model_dump(include=set(Settings.model_fields)))
    if settings.grpc_host is None:  # gRPC listens where HTTP does unless told otherwise
        settings = settings.model_copy(update={"grpc_host": options.host})

    from service.grpc.server import check_port_free
    from service.logs import configure_logging
    from service.server import bind_listener, serve_worker

    try:
        check_model(settings)
        listener = bind_listener(options.host, options.port)
        if settings.grpc_port:
            check_port_free(settings.grpc_host or options.host, settings.grpc_port)
    except (ModelLoadError, OSError) as error:
        print(f"{PROG}: cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    host, port = listener.getsockname()[:2]
    url = base_url(options.host, port)
    probe_host = "::1" if listener.family == socket.AF_INET6 and host == "::" else host
    announce_when_ready(url, "127.0.0.1" if host == "0.0.0.0" else probe_host, port)
    configure_logging(settings.log_level)
    if options.workers > 1 or settings.repository_state_dir is not None:
        state_dir = prepare_state_dir(settings)
        settings = settings.model_copy(update={"repository_state_dir": state_dir})
    if options.workers == 1:
        serve_worker(settings, [listener], stop)
        return
    prepare_metrics_dir(options)  # before any worker imports prometheus_client
    from service.supervisor import run_workers

    raise SystemExit(run_workers(settings, listener, options.workers, stop))


if __name__ == "__main__":
    main()
