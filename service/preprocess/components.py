"""Which parts of the ink mask are the digit: connected components, judged by shape.

Photos hold more than the digit: the page's edge, a shadow's rim, a desk, dust,
specks of another line of writing. Each connected component is measured (box,
ink mass, strongest signal) and the digit is grown from the heaviest part that
does not touch the image border: parts close to it join (the separate bar of a
5 or a 7, a broken or dotted stroke), far ones and faint ones are left out.
Parts touching the border count only when nothing else could be a digit (a
tightly cropped upload). No part that could be a digit means blank: "no stroke
found", judged on the mask, whatever the contrast of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from service.preprocess.constants import JOIN_DISTANCE, MIN_DIGIT, SPECK_FRACTION, STRONG_FRACTION

_EIGHT = np.ones((3, 3), dtype=bool)  # diagonal neighbours connect: pen strokes are thin


@dataclass(frozen=True)
class Digit:
    """The chosen parts: their mask and box (top, bottom, left, right) at analysis scale."""

    mask: np.ndarray
    box: tuple[int, int, int, int]
    ink_level: float  # typical signal of the digit's strongest pixels
    whole: bool = False  # every part of the mask was chosen: nothing else is ink


def find_digit(mask: np.ndarray, signal: np.ndarray) -> Digit | None:
    """The digit's parts in `mask` (bool, analysis scale), or None when none could be one."""
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return None
    height, width = mask.shape
    boxes = ndimage.find_objects(labels)
    if count == 1:  # one stroke, the usual drawing: nothing to choose
        rows, cols = boxes[0]
        if max(rows.stop - rows.start, cols.stop - cols.start) < MIN_DIGIT * max(height, width):
            return None
        bounds = (rows.start, rows.stop, cols.start, cols.stop)
        return Digit(mask, bounds, float(signal[mask].max()), whole=True)
    top = np.array([b[0].start for b in boxes])
    bottom = np.array([b[0].stop for b in boxes])
    left = np.array([b[1].start for b in boxes])
    right = np.array([b[1].stop for b in boxes])
    # per-part sums over the mask's pixels only (ndimage.maximum sorts the whole image)
    owner, value = labels[mask] - 1, np.maximum(signal[mask], 0.0)
    area = np.bincount(owner, minlength=count)
    mass = np.bincount(owner, value, minlength=count)
    peak = np.zeros(count, dtype=np.float32)
    np.maximum.at(peak, owner, value)
    span = np.maximum(bottom - top, right - left)
    big_enough = span >= max(2.0, MIN_DIGIT * max(height, width))
    border = (top == 0) | (left == 0) | (bottom == height) | (right == width)
    # a drawn box, a sheet's rim on a desk: a thin part whose box holds another, heavy part
    fill = area / np.maximum((bottom - top) * (right - left), 1)
    encloses = (
        (top[:, None] < top[None, :])
        & (bottom[:, None] > bottom[None, :])
        & (left[:, None] < left[None, :])
        & (right[:, None] > right[None, :])
        & big_enough[None, :]
        & (mass[None, :] >= 0.03 * mass[:, None])
    )
    outline = (fill < 0.25) & encloses.any(axis=1)
    usable = big_enough & ~outline
    inside = usable & ~border
    if not usable.any():
        return None
    # a tightly cropped digit touches the border: then inside there are only specks
    heaviest_inside = float(mass[inside].max()) if inside.any() else 0.0
    candidates = inside if heaviest_inside >= 0.05 * float(mass[usable].max()) else usable
    main = int(np.argmax(np.where(candidates, mass, -1.0)))
    ink_level = float(peak[main])
    allowed = (peak >= STRONG_FRACTION * ink_level) & ~outline
    allowed &= ~border | (candidates & border)  # border parts only when they were candidates
    chosen = np.zeros(count, dtype=bool)
    chosen[main] = True
    box = [int(top[main]), int(bottom[main]), int(left[main]), int(right[main])]
    for _ in range(4):  # grow: a part that joins can bring the next one within reach
        size = max(box[1] - box[0], box[3] - box[2])
        gap = np.maximum(
            np.maximum(box[0] - bottom, top - box[1]), np.maximum(box[2] - right, left - box[3])
        )
        total = float(mass[chosen].sum())
        near = (gap <= JOIN_DISTANCE * size) & (mass >= SPECK_FRACTION * total)
        touching = (gap <= max(1.0, 0.1 * size)) & (mass >= 0.2 * SPECK_FRACTION * total)
        joining = allowed & ~chosen & (near | touching)
        if not joining.any():
            break
        chosen |= joining
        box = [
            min(box[0], int(top[chosen].min())),
            max(box[1], int(bottom[chosen].max())),
            min(box[2], int(left[chosen].min())),
            max(box[3], int(right[chosen].max())),
        ]
    keep = np.concatenate([[False], chosen])
    return Digit(keep[labels], (box[0], box[1], box[2], box[3]), ink_level, bool(chosen.all()))
