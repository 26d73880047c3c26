"""Which pixels are ink: a threshold relative to the paper's noise, minus ruled lines.

The threshold is local in effect: the light was divided out in `ink`, so one
level relative to the noise of the paper works across shadows and gradients. It
is set by the noise, not by the contrast of the whole image, so a faint
ballpoint digit (or a pencil on grey paper) is kept as long as it stands out
from the paper around it; whether a digit is there at all is decided later, on
the shapes this mask holds (`components`).

Ruled lines and folds are removed here: straight runs reaching across most of
the image (a digit's strokes never do), found as long 1-D openings with a
running mean, which costs the same whatever their length.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from service.preprocess.constants import INK_FRACTION, LINE_LENGTH, MIN_STEP, NOISE_SIGMAS


def ink_threshold(signal: np.ndarray, sigma: float) -> float:
    """Signal above which a pixel may be ink: clear of the paper's noise.

    Also a small fraction of the strongest ink, because compression flattens the
    paper's noise (a low-quality JPEG has sigma 0) but leaves its block edges.
    """
    step = max(1, signal.size // 4096)
    strongest = float(np.sort(signal.reshape(-1)[::step])[-max(1, signal.size // step // 1000)])
    return max(NOISE_SIGMAS * sigma, MIN_STEP, INK_FRACTION * strongest)


def long_lines(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(horizontal, vertical): pixels of `mask` on straight runs across most of the image.

    Each direction tolerates a slight tilt (the mask is first thickened by two pixels
    across the run), as a photographed page is rarely exactly level. Small images
    (a cropped digit) have no room for ruled lines: none are looked for.
    """
    found = []
    for axis in (1, 0):  # rows (ruled lines), then columns (margins, folds)
        if min(mask.shape) < 64:
            found.append(np.zeros_like(mask))
            continue
        length = int(LINE_LENGTH * mask.shape[axis])
        thick = ndimage.maximum_filter1d(mask, 5, axis=1 - axis)
        if int(thick.sum(axis=axis).max()) < length:  # no line holds that many: usually
            found.append(np.zeros_like(mask))
            continue
        full = ndimage.uniform_filter1d(thick.astype(np.float32), length, axis=axis) > 0.999
        run = ndimage.uniform_filter1d(full.astype(np.float32), length, axis=axis) > 0.0
        found.append(run & mask)
    return found[0], found[1]


def ruled_lines(lines: tuple[np.ndarray, np.ndarray], box: tuple[int, int, int, int]) -> np.ndarray:
    """The lines that are a page's ruling or folds, not the digit's own strokes.

    A ruled line is thin, reaches the image's edge and runs on well past both ends
    of the digit's box (`box`, found without any line); the bar of a 7 or the stem
    of a 4 ends with the digit at least on one side.
    """
    height, width = lines[0].shape
    top, bottom, left, right = box
    margin = 0.25 * max(bottom - top, right - left)
    ruled = np.zeros((height, width), dtype=bool)
    for across, found in enumerate(lines):  # 0: horizontal lines, 1: vertical ones
        labels, count = ndimage.label(found, structure=np.ones((3, 3), bool))
        keep = np.zeros(count + 1, dtype=bool)
        for index, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
            if across == 0:
                thin = rows.stop - rows.start <= 0.08 * height
                at_edge = cols.start <= 0.03 * width or cols.stop >= 0.97 * width
                outside = cols.start < left - margin and cols.stop > right + margin
            else:
                thin = cols.stop - cols.start <= 0.08 * width
                at_edge = rows.start <= 0.03 * height or rows.stop >= 0.97 * height
                outside = rows.start < top - margin and rows.stop > bottom + margin
            keep[index] = thin and at_edge and outside
        ruled |= keep[labels]
    return ruled


def bridge(digit: np.ndarray, ruled: np.ndarray) -> np.ndarray:
    """`digit` with the ruled-line pixels that cut through its strokes put back.

    Where a stroke crosses a line, removing the line left a gap; a pixel of the line
    with the stroke on both sides of it (across the line) belongs to the digit.
    """
    across = ndimage.binary_closing(digit, structure=np.ones((7, 1), bool))
    across |= ndimage.binary_closing(digit, structure=np.ones((1, 7), bool))
    return np.asarray(digit | (ruled & across))
