"""Binary pixel arrays for `/v1/predict/batch`: raw N x 28 x 28 uint8 bytes, or a `.npy` file.

For users who don't speak the inference protocol but have images as arrays
(`images.tobytes()`, `np.save`), no image files to decode:

- `application/octet-stream`: N x 784 bytes, one uint8 intensity per pixel,
  row-major; N is the body length / 784;
- `application/x-npy` (or an octet-stream body starting with numpy's magic):
  a `.npy` array of shape (N, 28, 28), (N, 784) or (N, 1, 28, 28), any
  integer or float dtype, intensities 0..255.

The `.npy` header is parsed without unpickling anything, and its shape and
dtype are checked against the body's length before the data is read; the
pixels are a view of the body (no copy). Rows then pass `pixel_rows`
(in `service.api.parsing`).
"""

from __future__ import annotations

import ast
import math
import struct

import numpy as np

from service.errors import InvalidInput
from service.inputs import PIXELS

NPY_MAGIC = b"\x93NUMPY"
NPY_TYPES = ("application/x-npy", "application/npy", "application/vnd.numpy")
_MAX_HEADER = 4096


def raw_array(body: bytes) -> np.ndarray:
    """Raw uint8 bytes, 784 per image -> (n, 784) pixels (a view of the body)."""
    if len(body) % PIXELS:
        raise InvalidInput(
            f"an application/octet-stream body holds N x 28 x 28 uint8 pixels (784 bytes "
            f"per image); {len(body)} bytes is not a multiple of 784"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(len(body) // PIXELS, PIXELS)


def _npy_header(body: bytes) -> tuple[dict[str, object], int]:
    """The header dict of a `.npy` body and where its data starts."""
    if not body.startswith(NPY_MAGIC) or len(body) < 10:
        raise InvalidInput("not a .npy array: the body must start with numpy's magic bytes")
    major = body[6]
    if major == 1:
        (length,), start = struct.unpack_from("<H", body, 8), 10
    elif major in (2, 3):
        (length,), start = struct.unpack_from("<I", body, 8), 12
    else:
        raise InvalidInput(f".npy format version {major} is not supported")
    if length > _MAX_HEADER or start + length > len(body):
        raise InvalidInput(".npy header is longer than the body")
    try:
        header = ast.literal_eval(body[start : start + length].decode("latin-1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise InvalidInput(".npy header is not a valid header dictionary") from None
    if not isinstance(header, dict) or {"descr", "fortran_order", "shape"} - set(header):
        raise InvalidInput(".npy header lacks descr, fortran_order or shape")
    return header, start + length


def npy_array(body: bytes) -> np.ndarray:
    """A `.npy` array body -> the array it holds (a view of the body)."""
    header, offset = _npy_header(body)
    shape, descr = header["shape"], header["descr"]
    if not isinstance(shape, tuple) or not all(
        isinstance(size, int) and size >= 0 for size in shape
    ):
        raise InvalidInput(f".npy shape {shape!r} is not a tuple of sizes")
    if header["fortran_order"] is not False:
        raise InvalidInput(".npy array must be C-ordered (np.save writes C order by default)")
    try:
        dtype = np.dtype(descr)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise InvalidInput(f".npy dtype {descr!r} is not understood") from None
    if dtype.kind not in "uif" or dtype.hasobject or dtype.itemsize > 8:
        raise InvalidInput(f".npy dtype {dtype} not accepted: send uint8 or float32 pixels")
    if not shape:
        raise InvalidInput(".npy array must have shape (N, 28, 28) or (N, 784)")
    expected = math.prod(shape) * dtype.itemsize
    if len(body) - offset != expected:
        raise InvalidInput(
            f".npy array {shape} of {dtype} needs {expected} bytes of data; "
            f"the body has {len(body) - offset}"
        )
    return np.frombuffer(body, dtype=dtype, offset=offset).reshape(shape)


def body_array(body: bytes, media_type: str) -> np.ndarray:
    """A binary batch body (raw uint8 or `.npy`) -> its pixel array, sizes checked,
    values not yet (the caller counts the images, then calls `pixel_rows`)."""
    if media_type in NPY_TYPES or body.startswith(NPY_MAGIC):
        return npy_array(body)
    return raw_array(body)
