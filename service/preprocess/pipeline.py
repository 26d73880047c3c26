"""The public entry points: uploaded bytes or a client's pixel array -> the model's input.

`preprocess_image` runs the stages in order: sniff the format, decode, then
either the fast path (a 28x28 upload that is already MNIST-style is returned bit
for bit) or the full normalisation. Every failure becomes a typed `ServiceError`.
`preprocess_pixels` only validates arrays that clients normalised themselves.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from service.errors import InvalidImage, InvalidInput, ServiceError, UnsupportedMediaType
from service.preprocess.constants import BOX, DEFAULT_MAX_PIXELS, MIN_STEP, SIZE, FloatImage
from service.preprocess.decode import decode
from service.preprocess.formats import FORMAT_HINT, SUPPORTED_MEDIA_TYPES, sniff_image_format
from service.preprocess.normalize import normalise


def preprocess_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> FloatImage:
    """Encoded image bytes -> (28, 28) float32 in 0..255, white digit on black, MNIST-style.

    Raises `InvalidImage` (empty, not an image, corrupt, blank), `UnsupportedMediaType`
    (a known format we do not decode) or `PayloadTooLarge` (declared size over `max_pixels`).
    """
    if not data:
        raise InvalidImage(f"the image is empty (0 bytes); {FORMAT_HINT}")
    media_type = sniff_image_format(data)
    if media_type is not None and media_type not in SUPPORTED_MEDIA_TYPES:
        raise UnsupportedMediaType(f"{media_type} is not supported; {FORMAT_HINT}")
    try:
        pixels = decode(data, max_pixels)
        if pixels.shape == (SIZE, SIZE) and is_mnist_style(pixels):
            return pixels.astype(np.float32)  # fast path: already what the model wants
        return normalise(pixels)
    except ServiceError:
        raise
    except Exception as exc:  # Pillow raises many types on hostile bytes; all mean "bad file"
        raise InvalidImage(f"the image could not be decoded ({exc}); {FORMAT_HINT}") from exc


def preprocess_pixels(pixels: npt.ArrayLike) -> FloatImage:
    """A client's 28x28 (or flat 784) array of 0..255 white-on-black pixels, validated."""
    try:
        array = np.asarray(pixels, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            "pixels must be a 28x28 array (nested lists) of numbers 0..255; "
            f"got something that is not a numeric array ({exc})"
        ) from exc
    if array.shape not in ((SIZE, SIZE), (SIZE * SIZE,), (1, SIZE, SIZE)):
        raise InvalidInput(f"pixels must have shape 28x28 (or 784 values); got {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidInput("pixels must be finite numbers; got NaN or infinity")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 255.0:
        raise InvalidInput(
            f"pixels must lie in 0..255 (white digit on black); got values {low:g}..{high:g}"
        )
    if high - low < MIN_STEP:
        raise InvalidImage(
            f"the pixels are blank (all about {low:g}): no digit found; "
            "send a white digit on black, values 0..255"
        )
    return array.reshape(SIZE, SIZE).copy()


def is_mnist_style(pixels: np.ndarray) -> bool:
    """Black background, a 19-20 px digit box, centred by mass: leave it exactly as it is.

    Tuned for speed (about 10 µs): this is the path of every already-normalised
    28x28 upload, e.g. the batch endpoint's traffic, and of our own output sent
    back (`POST /v1/preprocess`): a digit whose mass lies far to one side of its
    box could not be centred further without leaving the field, so it counts as
    centred when its box already touches the field's edge on that side.
    """
    if np.count_nonzero(pixels) > pixels.size // 2:
        return False
    row_mass = pixels.sum(axis=1, dtype=np.float32)
    col_mass = pixels.sum(axis=0, dtype=np.float32)
    rows, cols = np.flatnonzero(row_mass), np.flatnonzero(col_mass)
    if rows.size == 0:
        return False
    extent = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    total = float(row_mass.sum())
    cy = float(row_mass @ _AXIS) / total
    cx = float(col_mass @ _AXIS) / total
    return BOX - 1 <= extent <= BOX and centred(cy, rows) and centred(cx, cols)


def centred(centre: float, occupied: np.ndarray) -> bool:
    """Mass within 1 px of the middle, or as near as the field's edge lets it be."""
    if centre > 15.0:  # would move towards 0: only if there is room
        return bool(occupied[0] == 0)
    if centre < 13.0:
        return bool(occupied[-1] == SIZE - 1)
    return True


_AXIS = np.arange(SIZE, dtype=np.float32)
