"""CPU cost of one refusal in the HTTP protocol, measured in-process, no sockets.

    python -m benchmarks.refusal_cost      # µs of CPU per 429: at the head, and the old ASGI way

Feeds the bytes of a keep-alive POST of a 28x28 PNG into `GuardedHttpToolsProtocol`
(`service/server.py`) with a fake transport, again and again, while the worker
is full (a `LoadShedder` with no free slot): each call parses the request, writes
the prepared 429 and drops the body, as under overload. What it leaves out is the
kernel's share (one read and one write system call per refusal, a few µs each).
For comparison, the same for a request the old path refused: uvicorn's own
protocol, its request cycle and the ASGI middlewares (`Observation`, `Admission`)
to `send_error`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from benchmarks.server import ROOT
from evaluation.loadgen import build_request
from evaluation.samples import SEVEN_PNG
from service.api.admission import Admission
from service.api.auth import ApiKeyCheck
from service.api.observation import Observation
from service.config import Settings
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics
from service.server import GuardedHttpToolsProtocol, ServerConfig
from service.shedding import LoadShedder

REQUEST = build_request("/v1/predict", SEVEN_PNG, "image/png")


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("a refused request reached the app")


def server_config(app: Any, shedder: LoadShedder, lifecycle: Lifecycle) -> ServerConfig:
    """The worker's protocol configuration with default settings, loaded, around `app`."""
    config = ServerConfig(
        app,
        settings=Settings(),
        lifecycle=lifecycle,
        shedder=shedder,
        metrics=ServiceMetrics(max_batch_size=64, low_confidence_threshold=0.6),
        http=GuardedHttpToolsProtocol,
        log_config=None,
    )
    config.load()
    return config


def protocol(
    app: Any,
    shedder: LoadShedder,
    lifecycle: Lifecycle,
    kind: type[HttpToolsProtocol] = GuardedHttpToolsProtocol,
) -> HttpToolsProtocol:
    from uvicorn.server import ServerState

    config = server_config(app, shedder, lifecycle)
    made = kind(config, server_state=ServerState(), app_state={})
    made.connection_made(FakeTransport())
    return made


async def per_call_us(proto: HttpToolsProtocol, count: int) -> float:
    started = time.process_time()
    for _ in range(count):
        proto.data_received(REQUEST)
        await asyncio.sleep(0)  # let an ASGI task, if any, run to its end
    return 1e6 * (time.process_time() - started) / count


async def measure(count: int) -> dict[str, float]:
    full = LoadShedder(limit=0)  # no free slot: every request is refused at its head
    head = protocol(never_called, full, Lifecycle())
    await per_call_us(head, 1000)  # warm-up
    refused_at_head = await per_call_us(head, count)

    # The old path: the same refusal made by the ASGI `Admission` layer.
    metrics = ServiceMetrics(max_batch_size=64, low_confidence_threshold=0.6)
    busy = Lifecycle()
    busy.accepted = 1
    chain = Observation(
        Admission(
            never_called,
            lifecycle=busy,
            metrics=metrics,
            keys=ApiKeyCheck([]),
            metrics_protected=False,
            max_body_bytes=10 * 2**20,
            max_concurrent=1,
        ),
        metrics=metrics,
        access_log=None,
    )
    # (Our protocol would admit the request at its head, and `Admission` would trust it.)
    asgi = protocol(chain, LoadShedder(limit=10**9), Lifecycle(), kind=HttpToolsProtocol)
    await per_call_us(asgi, 1000)
    refused_in_asgi = await per_call_us(asgi, count)
    return {
        "refused_at_head_us": round(refused_at_head, 1),
        "refused_in_asgi_us": round(refused_in_asgi, 1),
        "requests": count,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.refusal_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    options = parser.parse_args(argv)
    result = {
        "command": "python -m benchmarks.refusal_cost",
        **uvloop.run(measure(options.requests)),
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "refusal_cost.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2)
    )
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
