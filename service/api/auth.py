"""Optional API-key authentication (off when no key is configured).

Keys come in `Authorization: Bearer <key>` or `X-API-Key: <key>`. Every
configured key is compared in constant time, so the answer's timing tells an
attacker nothing about how much of a guess was right. Keys are never logged.

Enforced by `ApiKeyGate`, a pure ASGI middleware, so an unauthenticated request
is refused before its body is read or parsed. The routers only *declare* the
schemes (`documented_schemes`) so /docs shows an "Authorize" button.
"""

from __future__ import annotations

import hmac

import orjson
from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from service.metrics import ServiceMetrics

MESSAGE = "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"

# auto_error=False: these only document the schemes; ApiKeyGate does the checking.
documented_schemes = [
    Security(APIKeyHeader(name="X-API-Key", auto_error=False)),
    Security(HTTPBearer(auto_error=False)),
]


def needs_key(path: str, *, metrics_protected: bool) -> bool:
    """Prediction and model routes need a key; health, docs and the page stay open."""
    if path.startswith("/v1/"):
        return True
    if path.startswith("/v2/models/"):
        return not path.endswith("/ready")
    return path == "/metrics" and metrics_protected


class ApiKeyCheck:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [key.encode() for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def is_valid(self, presented: bytes | str | None) -> bool:
        if not presented:
            return False
        if isinstance(presented, str):
            presented = presented.encode()
        valid = False
        for key in self._keys:  # no early exit: same work whichever key matches
            valid |= hmac.compare_digest(presented, key)
        return valid


def presented_key(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return bytes(value)
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return bytes(value[7:]).strip()
    return None


class ApiKeyGate:
    def __init__(
        self, app: ASGIApp, *, check: ApiKeyCheck, metrics: ServiceMetrics, metrics_protected: bool
    ) -> None:
        self.app = app
        self.check = check
        self.metrics = metrics
        self.metrics_protected = metrics_protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.check.enabled
            and needs_key(scope["path"], metrics_protected=self.metrics_protected)
            and not self.check.is_valid(presented_key(scope))
        ):
            self.metrics.rejections.labels(reason="unauthorized").inc()
            body = orjson.dumps({"error": MESSAGE})
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ]
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
