"""Every answer the service writes, JSON or error, built in one place.

Errors always have one shape, `{"error": "<what to do>"}`, with the status of
their `ServiceError` type and its headers (`Retry-After` on 429/503,
`WWW-Authenticate` on 401). The same bytes serve every writer: the ASGI
middlewares and routes (`send_error`, `error_response`) and the HTTP protocol
itself, which refuses connections before any ASGI app runs (`raw_error`).
"""

from __future__ import annotations

import http
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Send

from service.errors import ServiceError

JSON = b"application/json"


def json_bytes(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class JSONAnswer(Response):
    """A JSON response rendered with orjson (numpy arrays included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def error_headers(error: ServiceError, body: bytes) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    return headers


async def send_error(send: Send, error: ServiceError) -> None:
    """Answer an ASGI request with `error` (nothing may have been sent yet)."""
    body = error_body(error.message)
    headers = error_headers(error, body)
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_response(error: ServiceError) -> Response:
    """The same answer as a Response object, for FastAPI exception handlers."""
    body = error_body(error.message)
    return Response(
        body, status_code=error.status_code, headers=error.headers, media_type="application/json"
    )


def raw_error(error: ServiceError, *, close: bool = True) -> bytes:
    """The whole HTTP/1.1 response as bytes, for the protocol layer (no ASGI app involved)."""
    body = error_body(error.message)
    try:
        phrase = http.HTTPStatus(error.status_code).phrase
    except ValueError:  # 499, nginx's "client closed request", is not a standard status
        phrase = ""
    lines = [f"HTTP/1.1 {error.status_code} {phrase}".encode()]
    lines += [name + b": " + value for name, value in error_headers(error, body)]
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
