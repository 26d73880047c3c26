"""Optional API-key authentication (off when no key is configured).

Keys come in `Authorization: Bearer <key>` or `X-API-Key: <key>`. Every
configured key is compared in constant time, so the answer's timing tells an
attacker nothing about how much of a guess was right. Keys are never logged.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.security import APIKeyHeader, HTTPBearer

from service.errors import Unauthorized

# Declared for the OpenAPI page ("Authorize" button); checked by `ApiKeyCheck`.
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
bearer = HTTPBearer(auto_error=False)


class ApiKeyCheck:
    """A FastAPI dependency; a no-op when `keys` is empty."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [key.encode() for key in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def is_valid(self, presented: str | None) -> bool:
        if not presented:
            return False
        candidate = presented.encode()
        valid = False
        for key in self._keys:  # no early exit: same work whichever key matches
            valid |= hmac.compare_digest(candidate, key)
        return valid

    async def __call__(self, request: Request) -> None:
        if not self._keys:
            return
        presented = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if presented is None and authorization[:7].lower() == "bearer ":
            presented = authorization[7:].strip()
        if not self.is_valid(presented):
            raise Unauthorized(
                "missing or invalid API key: send 'Authorization: Bearer <key>' or 'X-API-Key'"
            )
