"""A JSON response rendered with orjson: several times faster than the stdlib for our payloads."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class FastJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(
    status_code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    """Every error body in the service has one shape: {"error": "<what to do>"}."""
    return FastJSONResponse({"error": message}, status_code=status_code, headers=headers)
