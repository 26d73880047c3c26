"""MNIST's geometry for a contrast-stretched digit: crop, stroke width, scale, centre.

The digit's box leaves out specks and dust; hairlines and marker strokes are
brought to MNIST's stroke width; the longer side is scaled to 20 px with
anti-aliasing and the centre of mass put at the middle of the 28x28 field.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from service.preprocess.constants import (
    BOX,
    SIZE,
    SPECK_FRACTION,
    STROKE_WIDTH,
    THICK_STROKE,
    THIN_STROKE,
    FloatImage,
)


def _digit_box(mask: np.ndarray, stretched: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box of the digit; separate small blobs (specks, dust) are left out."""
    solid = stretched > 64.0
    rows = _main_run(solid.sum(axis=1)) if solid.any() else (0, mask.shape[0])
    cols = _main_run(solid.sum(axis=0)) if solid.any() else (0, mask.shape[1])
    # grow to the faint anti-aliased edge so a clean 20 px digit keeps its 20 px
    pad = 2
    r0, r1 = max(rows[0] - pad, 0), min(rows[1] + pad, mask.shape[0])
    c0, c1 = max(cols[0] - pad, 0), min(cols[1] + pad, mask.shape[1])
    window = mask[r0:r1, c0:c1]
    in_rows, in_cols = np.flatnonzero(window.any(axis=1)), np.flatnonzero(window.any(axis=0))
    return r0 + in_rows[0], r0 + in_rows[-1] + 1, c0 + in_cols[0], c0 + in_cols[-1] + 1


def _main_run(profile: np.ndarray) -> tuple[int, int]:
    """[start, stop) covering the heaviest run of non-empty lines and every heavy-enough run."""
    edges = np.flatnonzero(np.diff((profile > 0).astype(np.int8), prepend=0, append=0))
    starts, stops = edges[::2], edges[1::2]
    if starts.size == 1:  # one blob: the usual case
        return int(starts[0]), int(stops[0])
    masses = np.add.reduceat(profile, starts)  # gaps between runs add nothing
    keep = masses >= SPECK_FRACTION * masses.sum()
    keep[int(np.argmax(masses))] = True
    return int(starts[keep].min()), int(stops[keep].max())


def _even_strokes(digit: np.ndarray) -> np.ndarray:
    """Bring hairlines and marker strokes to MNIST's stroke width.

    A fine pen on a big page shrinks to a faint sub-pixel trace at 20 px, a marker
    to a blob; the model saw neither. Width ~ 2 * ink area / perimeter, measured at
    the crop's scale and converted to the 20 px box; MNIST: 10th-90th percentile
    1.35-2.55 px, median 1.8. Only the outliers are changed (max/min filter). Doing
    it on a 64 px copy instead would be faster but cost 4 points on fat markers.
    """
    solid = digit > 127.0
    edges = np.count_nonzero(solid[:, 1:] != solid[:, :-1])
    perimeter = max(1, int(edges) + int(np.count_nonzero(solid[1:] != solid[:-1])))
    scale = BOX / float(max(digit.shape[0], digit.shape[1]))
    width = 2.0 * float(digit.sum()) / 255.0 / perimeter * scale
    if THIN_STROKE <= width <= THICK_STROKE:
        return digit
    radius = round(abs(STROKE_WIDTH - width) / 2.0 / scale)
    if radius < 1:
        return digit
    widen = width < THIN_STROKE
    wide = np.pad(digit, radius)
    for axis in (0, 1):  # separable square filter: 2 * (2r + 1) cheap passes
        size = wide.shape[axis] - 2 * radius
        shifted = [wide.take(range(k, k + size), axis=axis) for k in range(2 * radius + 1)]
        wide = np.pad(
            np.max(shifted, axis=0) if widen else np.min(shifted, axis=0),
            [(radius, radius) if a == axis else (0, 0) for a in (0, 1)],
        )
    return wide[radius:-radius, radius:-radius]


def _centre(digit: np.ndarray) -> FloatImage:
    """Scale the longer side to 20 px (anti-aliased) and put the centre of mass at (14, 14)."""
    height, width = digit.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):  # already 20 px: keep every pixel as it is
        small = digit
    else:
        image = Image.fromarray(np.ascontiguousarray(digit, dtype=np.float32))
        small = np.asarray(image.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
        small = small.clip(0.0, 255.0)
    h, w = small.shape
    total = float(small.sum()) or 1.0
    cy = float(small.sum(axis=1) @ np.arange(h)) / total
    cx = float(small.sum(axis=0) @ np.arange(w)) / total
    top = min(max(round(14.0 - cy), 0), SIZE - h)
    left = min(max(round(14.0 - cx), 0), SIZE - w)
    field = np.zeros((SIZE, SIZE), dtype=np.float32)
    field[top : top + h, left : left + w] = small
    return field
