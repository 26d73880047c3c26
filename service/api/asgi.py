"""Small ASGI helpers the request path shares: headers, the body, the client's connection.

The body is read with one function, `read_body`, which enforces the size limit
while it streams in (a chunked upload has no Content-Length to check up front).
The time limit on slow uploads is enforced by the HTTP protocol
(`service.server`), which tells us through the scope's `ConnectionGuard`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from starlette.types import Receive, Scope

from service.errors import ClientDisconnected, PayloadTooLarge, RequestTimeout, ServiceError

# The scope extension under which `service.server`'s HTTP protocol offers its
# `ConnectionGuard`. Other servers (a test client) offer none, and nothing breaks.
CONNECTION_GUARD = "mnist.connection"
# Set by that protocol on a request it admitted from its head (to run, or to wait in
# line for a slot): the capacity and drain decisions are made, `Admission` does not
# make them again. Its line is read before a drain, so it runs to its answer.
ADMITTED_AT_HEAD = "mnist.admitted"


class ConnectionGuard(Protocol):
    """What the HTTP protocol knows about the connection a request came on."""

    body_timed_out: bool  # the body did not arrive in time; the protocol answered 408

    def client_gone(self) -> bool: ...


def connection_guard(scope: Scope) -> ConnectionGuard | None:
    extensions = scope.get("extensions")
    return extensions.get(CONNECTION_GUARD) if extensions else None


def admitted_at_head(scope: Scope) -> bool:
    extensions = scope.get("extensions")
    return bool(extensions and extensions.get(ADMITTED_AT_HEAD))


def client_gone(scope: Scope) -> Callable[[], bool] | None:
    """The server's "has this client disconnected?" check, when the server offers one."""
    guard = connection_guard(scope)
    return guard.client_gone if guard is not None else None


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header `name` (lower case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is larger than the {limit} byte limit; "
        "send a smaller image or fewer images per request"
    )


def _cut_off(scope: Scope) -> ServiceError:
    """Why the body stopped coming: the protocol's deadline (408) or the client left."""
    guard = connection_guard(scope)
    if guard is not None and guard.body_timed_out:
        return RequestTimeout("the request body did not arrive in time")
    return ClientDisconnected("the client disconnected while sending its body")


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, refused with 413 as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _cut_off(scope)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
