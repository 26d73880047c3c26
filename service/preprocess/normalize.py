"""The full path for any decoded image: find the ink, stretch it to full contrast, shape it.

Users send phone photos and canvas drawings, not MNIST, so we redo what MNIST's
creators did to their scans, robustly. The ink signal (any colour, either
polarity, desk and uneven light removed) comes from `ink`; here it is measured
robustly, rejected as blank if it barely stands out, and stretched so the ink is
255 and the background 0; `shape` then crops, evens strokes, scales and centres.
"""

from __future__ import annotations

import numpy as np

from service.errors import InvalidImage
from service.preprocess.constants import FLOOR_FRACTION, MIN_CONTRAST, FloatImage
from service.preprocess.ink import _background, _ink_signal, _quantile, _without_desk
from service.preprocess.shape import _centre, _digit_box, _even_strokes


def _normalise(pixels: np.ndarray) -> FloatImage:
    """Any decoded image -> MNIST-style 28x28: ink signal, contrast, crop, scale, centre."""
    signal = _ink_signal(pixels)
    sheet = _without_desk(pixels, signal)
    if sheet is not None:  # a sheet photographed on a desk: judge the sheet alone
        signal = _ink_signal(sheet)
    if min(signal.shape) >= 64:
        signal -= _background(signal)  # lighting gradients and shadows of photos
    sample = signal[:: max(1, signal.shape[0] // 128), :: max(1, signal.shape[1] // 128)]
    level0 = _quantile(sample, 0.5)
    sigma = 1.4826 * _quantile(np.abs(sample - level0), 0.5)
    present = level0 + max(3.0 * sigma, 2.0)  # above this a pixel carries some ink
    # ink level: typical value of the strongest pixels, so that neither a hot pixel
    # nor thousands of faint noise pixels decide it
    rows = signal.max(axis=1)  # 3rd brightest row: two hot pixels cannot set the scale
    peak = float(np.sort(rows)[-min(rows.size, 3)])
    strong = signal[signal > (level0 + peak) / 2.0]
    ink = _quantile(strong, 0.9) if strong.size >= 8 else level0
    if ink - level0 < max(MIN_CONTRAST, 6.0 * sigma):
        raise InvalidImage(
            "the image is blank: no digit found (the ink differs from the background by "
            f"only {max(ink - level0, 0.0):.0f} of 255 grey levels); send a photo or drawing "
            "of one digit, dark on light or light on dark, filling a good part of the image"
        )
    floor = max(present, level0 + FLOOR_FRACTION * (ink - level0))
    stretched = np.clip((signal - floor) * (255.0 / (ink - floor)), 0.0, 255.0)
    top, bottom, left, right = _digit_box(stretched > 0.0, stretched)
    return _centre(_even_strokes(stretched[top:bottom, left:right]))
