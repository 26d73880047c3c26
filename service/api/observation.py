"""Observation: a request id, request metrics and one access-log line per request.

A pure ASGI middleware with one job, doing constant work per request: it
accepts a sane `X-Request-ID` or makes one (echoed on the answer), counts the
answer by route template, method and status, times it, and writes the access
log line (not for load shed by admission). Health probes and /metrics get an id but
are not counted or logged: they are not traffic.
"""

from __future__ import annotations

import itertools
import os
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.admission import PROBE_PATHS, SHED
from service.api.asgi import header
from service.logs import AccessLog
from service.metrics import ServiceMetrics

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
UNMATCHED = "unmatched"  # the route label of requests refused or unknown before routing


class RequestIds:
    """Unique 32-hex-digit ids (like a UUID's hex) without a random draw per request:
    a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def next(self) -> bytes:
        return f"{self._prefix}{next(self._counter):020x}".encode()


class Observation:
    def __init__(
        self, app: ASGIApp, *, metrics: ServiceMetrics, access_log: AccessLog | None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else self.ids.next()
        status = 500  # what the client sees if the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        if scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send_with_id)
            return
        metrics = self.metrics
        started = time.perf_counter()
        metrics.http_in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            metrics.http_in_flight.dec()
            route = getattr(scope.get("route"), "path", UNMATCHED)
            metrics.request_done(route, scope["method"], status, seconds)
            if self.access_log is not None and not scope.get(SHED):
                client = scope.get("client")
                self.access_log.record(
                    request_id.decode(),
                    scope["method"],
                    route,
                    status,
                    seconds,
                    client[0] if client else "-",
                )
