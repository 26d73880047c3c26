"""Start the HTTP server: uvicorn, configured and subclassed here and nowhere else.

- `GuardedHttpToolsProtocol`: uvicorn's HTTP protocol with deadlines for slow
  clients (the request head within `header_timeout_s` of the connection or of
  the previous answer, the body within `body_timeout_s` of the head; a late
  body gets a 408), and the `ConnectionGuard` the app uses to drop the work of
  clients that have gone.
- `ConnectionLimit`: past `max_connections` open connections, a JSON 503 with
  `Retry-After` that closes the connection.
- `MnistServer`: the shutdown sequence on SIGTERM, written once, in order:
  readiness off and new requests 503, the drain delay, every admitted request
  finished (at most `shutdown_grace_s`), then uvicorn closes the listening
  socket and the lifespan drains the batchers. A second signal stops at once.
- `serve_worker`: one worker process, its app and its server on given sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.answers import raw_error, send_error
from service.api.asgi import CONNECTION_GUARD
from service.config import Settings
from service.errors import RequestTimeout, ShuttingDown
from service.lifecycle import Lifecycle

log = logging.getLogger("service.server")


class ServerConfig(uvicorn.Config):
    """uvicorn's config plus the slow-client deadlines our protocol enforces."""

    def __init__(self, app: ASGIApp, *, settings: Settings, **options: Any) -> None:
        super().__init__(app, **options)
        self.header_timeout_s = settings.header_timeout_s
        self.body_timeout_s = settings.body_timeout_s


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Deadlines for the request head and body, and the app's `ConnectionGuard`."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        assert isinstance(config, ServerConfig)
        self.header_timeout_s = config.header_timeout_s
        self.body_timeout_s = config.body_timeout_s
        self.body_timed_out = False
        self._deadline: asyncio.TimerHandle | None = None

    # -- ConnectionGuard ---------------------------------------------------------
    def client_gone(self) -> bool:
        return self.transport.is_closing()

    # -- deadlines ------------------------------------------------------------
    def _arm(self, seconds: float, expired: Any) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _body_too_slow(self) -> None:
        self._deadline = None
        self.body_timed_out = True
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_started:
            error = RequestTimeout(
                f"the request body did not arrive within {self.body_timeout_s:g} s"
            )
            self.transport.write(raw_error(error))
        self.transport.close()

    # -- uvicorn's callbacks -------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, self._head_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.body_timed_out = False
        self._arm(self.header_timeout_s, self._head_too_slow)

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout_s, self._body_too_slow)
        super().on_headers_complete()
        self.scope["extensions"] = {CONNECTION_GUARD: self}  # type: ignore[dict-item]

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class ConnectionLimit:
    """Past `limit` open connections, answer 503 and close instead of queueing more."""

    def __init__(self, app: ASGIApp, connections: set[Any], limit: int) -> None:
        self.app = app
        self.connections = connections
        self.limit = limit
        self.error = ShuttingDown("too many connections; retry in a second")
        self.error.headers["Connection"] = "close"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and len(self.connections) >= self.limit:
            await send_error(send, self.error)
            return
        await self.app(scope, receive, send)


class MnistServer(uvicorn.Server):
    def __init__(self, config: ServerConfig, *, lifecycle: Lifecycle, settings: Settings):
        super().__init__(config)
        self.lifecycle = lifecycle
        self.settings = settings
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        config = self.config
        if not config.loaded:
            config.load()
        config.loaded_app = ConnectionLimit(
            config.loaded_app, self.server_state.connections, self.settings.max_connections
        )
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: drain first; a second signal stops at once.

        A signal handler may only set flags: admission and readiness see
        `draining` at once, and the next tick of uvicorn's main loop (every
        0.1 s) starts the drain itself."""
        if self.lifecycle.draining:
            self.force_exit = True
            self.should_exit = True
            return
        self.lifecycle.begin_drain()

    async def on_tick(self, counter: int) -> bool:
        if self.lifecycle.draining and self._drain is None and not self.should_exit:
            self._drain = asyncio.create_task(self.drain())
        return await super().on_tick(counter)

    async def drain(self) -> None:
        started = time.monotonic()
        settings = self.settings
        log.info("draining", extra={"accepted": self.lifecycle.accepted})
        idle = await self.lifecycle.wait_idle(settings.shutdown_grace_s)
        remaining_delay = settings.drain_delay_s - (time.monotonic() - started)
        if remaining_delay > 0:
            await asyncio.sleep(remaining_delay)  # let load balancers see "not ready"
        log.info("drained", extra={"idle": idle, "seconds": round(time.monotonic() - started, 3)})
        self.should_exit = True


def bind_listener(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is loaded so a taken port fails at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(
            f"cannot listen on {host}:{port} ({error.strerror}); choose another --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def serve_worker(settings: Settings, sockets: list[socket.socket]) -> None:
    """One worker process: build the app, serve it on `sockets` until a signal drains it."""
    from service.app import create_app
    from service.logs import configure_logging

    configure_logging(settings.log_level)
    lifecycle = Lifecycle()
    app = create_app(settings, lifecycle=lifecycle)
    config = ServerConfig(
        app,
        settings=settings,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 1,
        timeout_keep_alive=5,
    )
    MnistServer(config, lifecycle=lifecycle, settings=settings).run(sockets=sockets)
