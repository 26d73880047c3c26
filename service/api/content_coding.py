"""Compressed bodies: `Content-Encoding: gzip|deflate` requests, `Accept-Encoding` answers.

tritonclient offers both (`request_compression_algorithm`,
`response_compression_algorithm`). A compressed request is inflated in one
bounded step: more than the body limit once inflated is a 413 (a zip bomb
costs us at most the limit), broken or truncated data a 400. "deflate" is the
zlib format (RFC 9110); a raw deflate stream is accepted too, as some
clients send one.
"""

from __future__ import annotations

import gzip
import zlib

from starlette.types import Scope

from service.api.asgi import header, too_large
from service.errors import BadRequest, UnsupportedMediaType

GZIP, DEFLATE = "gzip", "deflate"
# Speed over ratio: the answers are small, and a busy server's CPU is the scarce thing.
LEVEL = 1
_WBITS = {GZIP: 16 + zlib.MAX_WBITS, DEFLATE: zlib.MAX_WBITS}


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    data = inflater.decompress(body, limit + 1)
    if len(data) > limit:
        raise too_large(limit)
    if not inflater.eof:
        raise BadRequest("the compressed body is truncated")
    if inflater.unused_data:
        raise BadRequest("the body has data after the end of its compressed stream")
    return data


def decode_body(scope: Scope, body: bytes, limit: int) -> bytes:
    """The request body as sent, inflated per its Content-Encoding (at most `limit` bytes)."""
    value = header(scope, b"content-encoding")
    if value is None:
        return body
    coding = value.strip().lower().decode("latin-1")
    if coding in ("", "identity"):
        return body
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise UnsupportedMediaType(
            f"Content-Encoding {coding!r} is not supported; use gzip, deflate or none"
        )
    try:
        return _inflate(body, wbits, limit)
    except zlib.error as error:
        if coding == DEFLATE:  # a raw deflate stream without the zlib wrapper
            try:
                return _inflate(body, -zlib.MAX_WBITS, limit)
            except zlib.error:
                pass
        raise BadRequest(f"the body is not valid {coding} data: {error}") from None


def accepted_coding(scope: Scope) -> str | None:
    """The coding to answer with: gzip or deflate when `Accept-Encoding` allows it."""
    value = header(scope, b"accept-encoding")
    if not value:
        return None
    best, best_q = None, 0.0
    for item in value.decode("latin-1").lower().split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip()
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if name in _WBITS and q > best_q:
            best, best_q = name, q
    return best


def encode_body(body: bytes, coding: str) -> bytes:
    if coding == GZIP:
        return gzip.compress(body, compresslevel=LEVEL, mtime=0)
    return zlib.compress(body, LEVEL)
