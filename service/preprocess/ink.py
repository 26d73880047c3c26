"""Where the ink is: a decoded image -> a grey signal, ink positive, background about 0.

Three problems of real photos are solved here, before any contrast decision:
ink and paper of any colour and either polarity (`_ink_signal`), a sheet lying on
a darker or lighter desk (`_without_desk`), and lighting gradients and shadows
(`_background`). `_quantile` is the fast robust statistic they all rely on.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _ink_signal(pixels: np.ndarray) -> np.ndarray:
    """(H, W[, C]) -> (H, W) float32 where ink is positive and the background about 0.

    The background colour is the median; the ink colour is the mean of the pixels
    farthest from it. Projecting every pixel on the background->ink direction handles
    either polarity and any ink/paper colours (red pen, blue paper) in one step.
    """
    step = max(1, max(pixels.shape[:2]) // 128)
    if pixels.ndim == 2:  # grey: the direction is just the polarity
        ordered = np.sort(pixels[::step, ::step].reshape(-1))
        last = ordered.size - 1
        background_level = float(ordered[last // 2])
        low, high = float(ordered[round(0.001 * last)]), float(ordered[round(0.999 * last)])
        sign = -1.0 if background_level - low > high - background_level else 1.0
        return np.asarray((pixels - background_level) * sign, dtype=np.float32)
    colour = pixels
    samples = colour[::step, ::step].reshape(-1, colour.shape[2])
    background = np.sort(samples, axis=0)[len(samples) // 2]
    offsets = samples - background
    distance = np.sqrt((offsets * offsets).sum(axis=1))
    far = distance >= max(_quantile(distance, 0.995), 1e-3)
    direction = offsets[far].mean(axis=0) if far.any() else np.ones(colour.shape[2])
    norm = float(np.sqrt(direction @ direction))
    if norm < 1e-6:
        direction, norm = np.ones(colour.shape[2]), float(np.sqrt(colour.shape[2]))
    unit = (direction / norm).astype(np.float32)
    return np.asarray((colour - background.astype(np.float32)) @ unit, dtype=np.float32)


def _without_desk(pixels: np.ndarray, signal: np.ndarray) -> np.ndarray | None:
    """A photo of a sheet lying on a desk -> the same photo with the desk painted paper.

    On a <= 64 px grid the image splits into two large regions (each >= 20%); the
    sheet is the one holding the writing (more fine detail per cell) and is nearly
    a solid rectangle; the desk is flat: uniform next to the step between the two
    (a lighting gradient is not, so shadows are left to `_background`). A sheet
    turned more than ~8 degrees is missed, and left to the normal path.
    """
    height, width = signal.shape
    if min(height, width) < 64:
        return None
    step = max(height, width) / 64
    size = (max(1, round(width / step)), max(1, round(height / step)))
    mean = np.asarray(Image.fromarray(signal).resize(size, Image.Resampling.BOX))
    square = np.asarray(Image.fromarray(signal * signal).resize(size, Image.Resampling.BOX))
    detail = np.sqrt(np.maximum(square - mean * mean, 0.0))
    mask = mean > 0.5 * _quantile(mean, 0.99)
    # desk = whichever class touches the border, flood-filled; sheet = the rest, holes
    # (the writing) included
    if not 0.12 <= mask.mean() <= 0.88:  # the usual photo: writing on a sheet filling it
        return None
    classes = [m for m in (mask, ~mask) if _border(m).any()]
    sheets = [c for c in (~_from_border(m) for m in classes) if 0.2 <= c.mean() <= 0.8]
    if not sheets:
        return None
    sheet = max(sheets, key=lambda c: float(detail[c].mean() - detail[~c].mean()))
    rows, cols = np.flatnonzero(sheet.any(axis=1)), np.flatnonzero(sheet.any(axis=0))
    step_size = abs(float(mean[sheet].mean() - mean[~sheet].mean()))
    # a sheet is a rectangle (an ellipse, e.g. a filled-in "0", covers 79% of its box)
    if sheet.sum() < 0.88 * rows.size * cols.size or mean[~sheet].std() > 0.2 * step_size:
        return None
    # two cells in from the sheet's blurred edge, and from the image border too: a
    # sliver of desk thinner than a cell may hide there
    core = np.pad(sheet, 1)
    for _ in range(2):
        edge = core.copy()
        core[1:] &= edge[:-1]
        core[:-1] &= edge[1:]
        core[:, 1:] &= edge[:, :-1]
        core[:, :-1] &= edge[:, 1:]
    core = core[1:-1, 1:-1]
    inside = Image.fromarray(core.astype(np.uint8) * 255)
    keep = np.asarray(inside.resize((width, height), Image.Resampling.NEAREST)) > 0
    if not keep.any():
        return None
    paper = np.sort(pixels[keep], axis=0)[int(keep.sum()) // 2]  # median colour
    flattened = pixels.copy()
    flattened[~keep] = paper
    return flattened


def _border(mask: np.ndarray) -> np.ndarray:
    """`mask` on the outermost ring of cells only."""
    ring = np.zeros_like(mask)
    ring[[0, -1], :], ring[:, [0, -1]] = mask[[0, -1], :], mask[:, [0, -1]]
    return ring


def _from_border(mask: np.ndarray) -> np.ndarray:
    """The part of `mask` connected to the image border (4-neighbour flood fill)."""
    reached = _border(mask)
    for _ in range(mask.size):
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= mask
        if np.array_equal(grown, reached):
            break
        reached = grown
    return reached


def _quantile(values: np.ndarray, q: float) -> float:
    """np.quantile without interpolation or overhead.

    A full sort, on purpose: numpy 2.4's partition (behind median and percentile too)
    is 30-150x slower than sort on these arrays, worst with many equal values.
    """
    flat = values.reshape(-1)
    return float(np.sort(flat)[min(round(q * (flat.size - 1)), flat.size - 1)])


def _background(signal: np.ndarray) -> np.ndarray:
    """A smooth estimate of the background under the ink (min of coarse cell means)."""
    height, width = signal.shape
    cells = Image.fromarray(signal).resize((16, 16), Image.Resampling.BOX)
    grid = np.pad(np.asarray(cells, dtype=np.float32), 2, mode="edge")
    # 5x5 cell minimum: strokes are narrower than 5/16 of the image, paper is not
    low = np.min([grid[i : i + 16, j : j + 16] for i in range(5) for j in range(5)], axis=0)
    surface = Image.fromarray(low).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(surface, dtype=np.float32)
