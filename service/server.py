"""uvicorn's HTTP protocol, hardened: a deadline for the request head (slowloris
guard) and a JSON 503 with Retry-After past the connection limit.

uvicorn times out idle keep-alive connections, but not a connection that opens
and then sends its headers one byte at a time (or nothing at all): enough of
those hold every connection slot. Here each connection must deliver a complete
request head within `MNIST_HEADER_TIMEOUT_S` of opening (or of its previous
response), or it is closed. The body has its own deadline in the middleware.
"""

from __future__ import annotations

import asyncio
import os
from functools import cache

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CONNECTION_LIMIT_BODY = b'{"error":"too many connections; retry in a second"}'


async def too_many_connections(scope: Scope, receive: Receive, send: Send) -> None:
    """What uvicorn answers past `limit_concurrency` (its default is plain text, no Retry-After)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(CONNECTION_LIMIT_BODY)).encode()),
        (b"retry-after", b"1"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": CONNECTION_LIMIT_BODY, "more_body": False})


# uvicorn looks this module-level app up on every over-limit request.
httptools_impl.service_unavailable = too_many_connections  # type: ignore[attr-defined,assignment]


@cache
def header_timeout_s() -> float:
    # Read once per process: worker processes get their settings as MNIST_* variables.
    return float(os.environ.get("MNIST_HEADER_TIMEOUT_S", "10"))


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(header_timeout_s(), self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
