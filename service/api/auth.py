"""Optional API-key authentication (off when no key is configured).

Keys come in `Authorization: Bearer <key>` or `X-API-Key: <key>`. Every
configured key is compared in constant time, so the answer's timing tells an
attacker nothing about how much of a guess was right. Keys are never logged.

The check runs in the admission middleware, before a body is read or parsed;
the routers only *declare* the schemes (`documented_schemes`) so /docs shows an
"Authorize" button.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPBearer

# auto_error=False: these only document the schemes; admission does the checking.
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
    if path.startswith("/v2/repository/"):
        return True
    return path == "/metrics" and metrics_protected


class ApiKeyCheck:
    def __init__(self, keys: Iterable[str]) -> None:
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


def presented_key(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The key a request or call carries, from HTTP headers or gRPC metadata (lower-case names)."""
    for name, value in headers:
        if name == b"x-api-key":
            return bytes(value)
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return bytes(value[7:]).strip()
    return None
