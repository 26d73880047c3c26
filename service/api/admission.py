"""Admission: whether a request may proceed, decided from its head alone.

A pure ASGI middleware with one job. In order: a draining process answers 503,
a request without a valid API key (when keys are set) 401, one past the
in-flight limit 429, one whose declared body is over the limit 413. Each
refusal is answered before the body is read, so it costs a few microseconds,
not the work it protects. Health probes and /metrics pass (they are how
operators see an overloaded or draining process), except for the key check
when /metrics is protected.

Our HTTP protocol (`service.server`) makes the drain and capacity decisions
itself, from the request head, and marks the requests it admitted
(`ADMITTED_AT_HEAD`): for those only the key and size checks are left here.
Without that protocol (a test client, another server) all of them are made here.

Admitted requests are counted in the `Lifecycle`, so a drain knows when the
last one has been answered. Load shed while draining or over capacity is
marked in the scope (`SHED`): it is counted in the metrics but gets no
access-log line, since under overload a log line per refusal would cost more
than the refusal itself.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.answers import send_error
from service.api.asgi import admitted_at_head, header, too_large
from service.api.auth import ApiKeyCheck, needs_key, presented_key
from service.errors import ServiceError, ShuttingDown, TooManyRequests, Unauthorized
from service.lifecycle import Lifecycle
from service.metrics import ServiceMetrics

SHED = "mnist.shed"
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


class Admission:
    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: Lifecycle,
        metrics: ServiceMetrics,
        keys: ApiKeyCheck,
        metrics_protected: bool,
        max_body_bytes: int,
        max_concurrent: int,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.keys = keys
        self.metrics_protected = metrics_protected
        self.max_body_bytes = max_body_bytes
        self.max_concurrent = max_concurrent

    def refusal(self, scope: Scope) -> ServiceError | None:
        """Why this request must be refused now, or None to let it in."""
        path = scope["path"]
        if (
            self.keys.enabled
            and needs_key(path, metrics_protected=self.metrics_protected)
            and not self.keys.is_valid(presented_key(scope["headers"]))
        ):
            return Unauthorized()
        if path in PROBE_PATHS:
            return None
        if admitted_at_head(scope):  # the HTTP protocol decided capacity and drain already
            return self._too_large(scope)
        if self.lifecycle.draining:
            error = ShuttingDown()
            error.headers["Connection"] = "close"  # its last answer: clients go elsewhere
            return error
        if self.lifecycle.accepted >= self.max_concurrent:
            return TooManyRequests()
        return self._too_large(scope)

    def _too_large(self, scope: Scope) -> ServiceError | None:
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return too_large(self.max_body_bytes)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        error = self.refusal(scope)
        if error is not None:
            scope[SHED] = isinstance(error, ShuttingDown | TooManyRequests)
            self.metrics.rejected(error.reason)
            await send_error(send, error)
            return
        lifecycle = self.lifecycle
        lifecycle.request_started()
        try:
            await self.app(scope, receive, send)
        finally:
            lifecycle.request_finished()
