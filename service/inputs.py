"""The one check every pixel array passes, whatever protocol brought it.

REST v1 `{"pixels": ...}`, Open Inference Protocol tensors (JSON or binary,
HTTP or gRPC) all end here as (n, 784) rows of 0..255 intensities, white digit
on black: checked for shape, finiteness, range and a visible digit in every
row. Images (PNG, JPEG, ...) reach the same rows through `service.preprocess`.
"""

from __future__ import annotations

import numpy as np

from service.errors import InvalidImage, InvalidInput

SIDE = 28
PIXELS = SIDE * SIDE
# A row whose brightest and darkest pixels differ by less than this holds no digit.
MIN_CONTRAST = 12.0
_ROW_SHAPES = ((PIXELS,), (SIDE, SIDE), (1, SIDE, SIDE))


def pixel_rows(array: np.ndarray, *, single: bool = False) -> np.ndarray:
    """`array` -> (n, 784) rows, or a clear `InvalidInput` saying what to send instead.

    Accepts (n, 784), (n, 28, 28) and (n, 1, 28, 28); with `single`, one image as
    (28, 28), (784,) or (1, 28, 28). Integer arrays keep their dtype (the batcher
    converts each row once); floats are checked for NaN and infinity.
    """
    shape = array.shape
    if single:
        if shape not in _ROW_SHAPES:
            raise InvalidInput(f"pixels must have shape 28x28 (or 784 values); got {list(shape)}")
        rows = array.reshape(1, PIXELS)
    else:
        if len(shape) < 2 or shape[1:] not in _ROW_SHAPES or shape[0] < 1:
            raise InvalidInput(
                f"pixel shape {list(shape)} not supported: use [N,784], [N,28,28] or [N,1,28,28]"
            )
        rows = array.reshape(shape[0], PIXELS)
    if rows.dtype.kind not in "uif":
        raise InvalidInput(f"pixels must be numbers; got {rows.dtype}")
    if rows.dtype.kind == "f" and not np.isfinite(rows).all():
        raise InvalidInput("pixels must be finite numbers; got NaN or infinity")
    lows, highs = rows.min(axis=1), rows.max(axis=1)  # per image: range and blank checks
    if rows.dtype != np.uint8:
        low, high = float(lows.min()), float(highs.max())
        if low < 0.0 or high > 255.0:
            raise InvalidInput(
                f"pixels must lie in 0..255 (white digit on black); got values {low:g}..{high:g}"
            )
        if 0.0 < high <= 1.0:
            raise InvalidInput(
                "pixels lie within 0..1, but this input takes intensities 0..255 "
                "(white digit on black): multiply by 255"
            )
    contrast = highs - lows
    blank = np.flatnonzero(contrast < MIN_CONTRAST)
    if blank.size:
        which = "the pixels are" if len(rows) == 1 else f"image {int(blank[0])} is"
        raise InvalidImage(
            f"{which} blank: no digit found; send a white digit on black, values 0..255"
        )
    return rows
