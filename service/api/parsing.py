"""Request bodies -> pixel rows (n, 784), or a clear 4xx.

One endpoint accepts several encodings (a raw image body, multipart upload,
JSON with base64 or pixels), so the dispatch on Content-Type lives here and the
routes stay short. Images go through `service.preprocess`; pixel arrays through
`service.inputs.pixel_rows`. Large images are decoded in a worker thread so a
phone photo never stalls the event loop for everyone else.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message

from service.api.arrays import NPY_TYPES, body_array
from service.api.asgi import header, read_body
from service.errors import InvalidInput, PayloadTooLarge, ServiceError, UnsupportedMediaType
from service.inputs import PIXELS, pixel_rows
from service.preprocess import preprocess_image

# Below this size decoding takes tens of microseconds: cheaper inline than a thread hop.
INLINE_DECODE_BYTES = 32 * 1024
ACCEPTED = "an image body (image/png, image/jpeg, ...), multipart/form-data or application/json"


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int
    max_image_pixels: int
    max_batch_items: int
    max_json_depth: int


def media_type(request: Request) -> str:
    value = header(request.scope, b"content-type") or b""
    return value.split(b";", 1)[0].strip().lower().decode("latin-1")


def _decode_all(blobs: Sequence[bytes], max_pixels: int) -> np.ndarray:
    rows = np.empty((len(blobs), PIXELS), dtype=np.float32)
    for index, blob in enumerate(blobs):
        try:
            rows[index] = preprocess_image(blob, max_pixels=max_pixels).reshape(PIXELS)
        except ServiceError as error:
            if len(blobs) > 1:  # say which one, so the client can drop or fix it
                error.message = f"image {index}: {error.message}"
                error.args = (error.message,)
            raise
    return rows


async def decode_images(blobs: Sequence[bytes], limits: Limits) -> np.ndarray:
    """Encoded image files -> (n, 784) float32 rows, MNIST-style."""
    if sum(len(blob) for blob in blobs) <= INLINE_DECODE_BYTES:
        return _decode_all(blobs, limits.max_image_pixels)
    return await run_in_threadpool(_decode_all, blobs, limits.max_image_pixels)


def decode_base64(text: object, where: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise InvalidInput(f"{where} must be a non-empty base64 string of an image file")
    if text.startswith("data:"):  # a data: URL, as canvas.toDataURL() makes
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where} is not valid base64") from None


def check_depth(value: Any, max_depth: int) -> None:
    """Refuse deeply nested JSON before anything walks it.

    Objects are walked whole; of an array only the first element is followed, so a
    784-number pixel array costs one step, not 784. Arrays are homogeneous or they
    are refused anyway (numpy will not turn a mixed one into pixels), and orjson
    itself stops at 1,024 levels, so nothing deeper reaches this check."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise InvalidInput(f"JSON is nested deeper than {max_depth} levels")
        if isinstance(item, dict):
            stack.extend(
                (child, depth + 1) for child in item.values() if isinstance(child, list | dict)
            )
        elif isinstance(item, list) and item and isinstance(item[0], list | dict):
            stack.append((item[0], depth + 1))


def parse_json_object(body: bytes, limits: Limits, example: str) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"body is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"JSON body must be an object, e.g. {example}")
    check_depth(value, limits.max_json_depth)
    return value


def pixels_from_json(value: object) -> np.ndarray:
    try:
        # numpy's own choice of dtype (int64 for whole numbers) is twice as fast as
        # forcing float32; the batcher converts each row once anyway.
        array = np.asarray(value)
        if array.dtype.kind not in "iuf":
            raise TypeError(array.dtype)
    except (ValueError, TypeError):
        raise InvalidInput('"pixels" must be 28 rows of 28 numbers from 0 to 255') from None
    return pixel_rows(array, single=True)


async def read_form(request: Request, field: str, limits: Limits, *, many: bool) -> list[bytes]:
    body = await read_body(
        request.scope, request.receive, limits.max_upload_bytes
    )  # the size limit, as for all

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=limits.max_batch_items if many else 1,
            max_fields=limits.max_batch_items + 8,
            max_part_size=limits.max_upload_bytes,
        )
    except (MultiPartException, HTTPException) as error:
        # Starlette wraps multipart errors in HTTPException(400) inside an app.
        message = error.detail if isinstance(error, HTTPException) else error.message
        if "Too many" in str(message):
            raise PayloadTooLarge(
                f"{message} Send at most {limits.max_batch_items} files per request."
            ) from None
        raise InvalidInput(f"malformed multipart body: {message}") from None
    try:
        values = form.getlist(field)
        uploads = [item for item in values if isinstance(item, UploadFile)]
        if not uploads:
            if values:  # curl -F file=digit.png (without @) sends the name as text
                raise InvalidInput(
                    f"multipart field '{field}' holds text, not a file; "
                    f"upload the file itself, e.g. curl -F {field}=@digit.png"
                )
            raise InvalidInput(f"multipart body has no file field named '{field}'")
        if not many and len(uploads) > 1:
            raise InvalidInput(f"send one file in '{field}'; use /v1/predict/batch for several")
        return [await upload.read() for upload in uploads]
    finally:
        await form.close()  # uploads spool to temporary files: release them now


def check_item_count(count: int, limits: Limits) -> None:
    if count == 0:
        raise InvalidInput("no images in the request")
    if count > limits.max_batch_items:
        raise PayloadTooLarge(
            f"{count} images in one request; the limit is {limits.max_batch_items}, split it"
        )


async def single_image_rows(request: Request, limits: Limits) -> np.ndarray:
    """The body of POST /v1/predict (and /v1/preprocess) -> (1, 784)."""
    kind = media_type(request)
    if kind.startswith("image/") or kind == "application/octet-stream":
        return await decode_images(
            [await read_body(request.scope, request.receive, limits.max_upload_bytes)], limits
        )
    if kind == "multipart/form-data":
        return await decode_images(await read_form(request, "file", limits, many=False), limits)
    if kind == "application/json":
        body = await read_body(request.scope, request.receive, limits.max_upload_bytes)
        value = parse_json_object(body, limits, '{"image": "<base64>"}')
        if ("image" in value) == ("pixels" in value):
            raise InvalidInput(
                'JSON body needs exactly one of "image" (base64) or "pixels" (28x28)'
            )
        if "image" in value:
            return await decode_images([decode_base64(value["image"], '"image"')], limits)
        return pixels_from_json(value["pixels"])
    raise UnsupportedMediaType(
        f"content type {kind or '(none)'!r} is not accepted; send {ACCEPTED}"
    )


async def batch_rows(request: Request, limits: Limits) -> np.ndarray:
    """The body of POST /v1/predict/batch -> (n, 784), in input order."""
    kind = media_type(request)
    if kind == "application/octet-stream" or kind in NPY_TYPES:
        body = await read_body(request.scope, request.receive, limits.max_upload_bytes)
        array = body_array(body, kind)
        check_item_count(len(array), limits)
        return pixel_rows(array)
    if kind == "multipart/form-data":
        blobs = await read_form(request, "files", limits, many=True)
        check_item_count(len(blobs), limits)
        return await decode_images(blobs, limits)
    if kind == "application/json":
        body = await read_body(request.scope, request.receive, limits.max_upload_bytes)
        value = parse_json_object(body, limits, '{"images": ["<base64>", ...]}')
        images = value.get("images")
        if not isinstance(images, list):
            raise InvalidInput('JSON body needs "images": a list of base64 image files')
        check_item_count(len(images), limits)
        blobs = [decode_base64(item, f'"images"[{index}]') for index, item in enumerate(images)]
        return await decode_images(blobs, limits)
    raise UnsupportedMediaType(
        f"content type {kind or '(none)'!r} is not accepted; send multipart/form-data, JSON, "
        "application/octet-stream (N x 28 x 28 uint8 pixels) or application/x-npy"
    )
