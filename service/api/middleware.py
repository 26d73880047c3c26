"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request).

`RequestMiddleware` does, for every HTTP request: request id (accept a sane
`X-Request-ID` or make one, echo it back), the drain gate (503 while shutting
down), load shedding (429 when too many requests are in flight), the body
size limit (413 from Content-Length, and again while the body streams in),
the body deadline against slow clients (408), in-flight tracking, request
metrics by route template, and one JSON access-log line. Health probes and
/metrics skip the gate, the metrics and the access log: they are not traffic.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, RequestTimeout
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})
SHUTTING_DOWN = "the service is shutting down; retry on another replica"
TOO_MANY = "too many requests in flight; retry in a second"
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
access_log = logging.getLogger("service.access")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServiceMetrics,
        lifecycle: Lifecycle,
        max_body_bytes: int,
        body_timeout_s: float,
        max_concurrent: int,
        log_requests: bool,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.max_concurrent = max_concurrent
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given_id = _header(scope, b"x-request-id")
        request_id = (
            given_id if given_id and _REQUEST_ID.match(given_id) else uuid.uuid4().hex.encode()
        )
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        if scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send_with_id)
            return
        if self.lifecycle.draining:
            await self._refuse(scope, send_with_id, 503, "shutting_down", SHUTTING_DOWN)
            return
        if self.lifecycle.accepted >= self.max_concurrent:
            # Shed load before reading the body: answering fast is the point.
            await self._refuse(scope, send_with_id, 429, "too_many_requests", TOO_MANY)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(scope, send_with_id, 413, "too_large", self._too_large_message())
            return

        received = 0
        body_done = False
        body_deadline = asyncio.get_running_loop().time() + self.body_timeout_s

        async def receive_limited() -> Message:
            nonlocal received, body_done
            if body_done:  # later calls only wait for a disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(body_deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"the request body did not arrive within {self.body_timeout_s:g} s"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(self._too_large_message())
                body_done = not message.get("more_body", False)
            return message

        started = time.perf_counter()
        self.lifecycle.request_started()
        self.metrics.http_in_flight.inc()
        try:
            await self.app(scope, receive_limited, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            self.lifecycle.request_finished()
            self.metrics.http_in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.http_requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.http_duration.labels(template).observe(seconds)
            if self.log_requests:
                access_log.info(
                    "request",
                    extra={
                        "request_id": request_id.decode(),
                        "method": scope["method"],
                        "route": template,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        "client": (scope.get("client") or ("-",))[0],
                    },
                )

    def _too_large_message(self) -> str:
        return (
            f"request body is larger than the {self.max_body_bytes} byte limit; "
            "send a smaller image or fewer images per request"
        )

    async def _refuse(self, scope: Scope, send: Send, status: int, why: str, message: str) -> None:
        """Answer before routing; counted like any request (route not resolved yet)."""
        self.metrics.rejections.labels(reason=why).inc()
        self.metrics.http_requests.labels("unmatched", scope["method"], str(status)).inc()
        body = orjson.dumps({"error": message})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if status in (429, 503):
            headers.append((b"retry-after", b"1"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
