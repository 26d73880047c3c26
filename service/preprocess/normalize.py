"""The full path for any decoded image: find the ink, choose the digit, cut and shape it.

Users send phone photos and canvas drawings, not MNIST, so we redo what MNIST's
creators did to their scans, robustly and on few pixels: decisions are made on
a copy of about 128 px (`ink`, `mask`, `components`), the digit is cut from the
decoded image (`shape`). Blank means that no part of the ink mask could be a
digit; the error says so.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from service.errors import InvalidImage
from service.preprocess.components import Digit, find_digit
from service.preprocess.constants import FloatImage
from service.preprocess.ink import analysis_copy, clean_ink, find_ink
from service.preprocess.mask import bridge, ink_threshold, long_lines, ruled_lines
from service.preprocess.shape import centre, cut_digit, even_strokes, trim

BLANK = (
    "the image is blank: no digit found (no stroke stands out from the paper); send a "
    "photo or drawing of one digit, dark on light or light on dark, filling a good part "
    "of the image"
)


def normalise(work: np.ndarray) -> FloatImage:
    """Any decoded image (uint8, grey or RGB) -> MNIST-style 28x28 float32, 0..255."""
    small, _ = analysis_copy(work)
    drawn = clean_ink(small)  # a drawing on a flat canvas: no light, noise, ruling or desk
    ink, signal = drawn or find_ink(small)
    mask = signal > ink_threshold(signal, ink.sigma)
    if ink.page is not None:
        mask &= ink.page
    digit = find_digit(mask, signal)
    if drawn is None:  # ruled paper and folds belong to photographed pages, not canvases
        digit = off_the_lines(mask, signal, digit)
    if digit is None:
        raise InvalidImage(BLANK)
    alone = drawn is not None and digit.whole  # a clean drawing: no line, desk or speck
    cut = trim(cut_digit(work, small.shape[:2], digit, ink, alone=alone))
    if not cut.any():
        raise InvalidImage(BLANK)
    return centre(trim(even_strokes(cut)))


def off_the_lines(mask: np.ndarray, signal: FloatImage, digit: Digit | None) -> Digit | None:
    """The digit without the ruled lines or folds it sits on, strokes they cut rejoined."""
    lines = long_lines(mask)
    if not (lines[0].any() or lines[1].any()):
        return digit
    without = find_digit(mask & ~(lines[0] | lines[1]), signal)
    ruled = ruled_lines(lines, without.box) if without is not None else None
    if ruled is None or not ruled.any():
        return digit
    digit = find_digit(mask & ~ruled, signal)
    return replace(digit, mask=bridge(digit.mask, ruled)) if digit is not None else None
