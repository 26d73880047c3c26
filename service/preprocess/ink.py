"""Where the ink is: a small copy of the image -> a grey signal, ink positive, paper 0.

Three problems of real photos are solved here, before any threshold: uneven
light and shadows (`lighting`: the paper's brightness estimated on a coarse grid
of cells and divided out, so a digit half in shadow reads the same as in light),
ink and paper of any colour and either polarity (`ink_direction`:
the paper is the image's typical colour after the light is flattened, the ink
the colour farthest from it; every pixel is projected on that direction, so a
teal pen on yellow-green paper stands out by colour, not by brightness alone),
and noise (`noise_sigma`, from the paper itself). The result is an `Ink`: the
numbers that turn any pixels of the same upload into the signal, so that the
digit can later be cut from a sharper copy with the same transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from service.preprocess.constants import ANALYSIS, OFF_PAGE, FloatImage


@dataclass(frozen=True)
class Ink:
    """How to turn pixels of one upload into the ink signal (ink > 0, paper about 0)."""

    gain: FloatImage | None  # (h, w) at analysis scale: divides out the light; None: even
    shift: FloatImage | None  # (h, w) at analysis scale: subtracts the light (a dark board)
    paper: FloatImage  # (channels,) the paper's colour under even light
    direction: FloatImage  # (channels,) unit vector from paper to ink colour
    sigma: float  # noise of the signal on the paper, grey levels
    page: np.ndarray | None  # (h, w) bool at analysis scale: False on a desk; None: all page

    def signal(self, pixels: np.ndarray, light: Light | None = None) -> FloatImage:
        """(H, W[, C]) pixels -> (H, W) ink signal; `light` defaults to the analysis field.

        The projection on the ink direction is linear, so the light is applied to
        the projected grey signal: one pass over the colour channels, not three.
        """
        gain, shift = (self.gain, self.shift) if light is None else light
        if pixels.ndim == 2:
            signal = pixels.astype(np.float32) * self.direction[0]
        else:
            signal = pixels.astype(np.float32) @ self.direction
        if gain is not None:
            signal *= gain
        if shift is not None:
            signal += shift * float(self.direction.sum())
        signal -= float(self.paper @ self.direction)
        return np.asarray(signal, dtype=np.float32)


Light = tuple[FloatImage | None, FloatImage | None]


def as_channels(pixels: np.ndarray) -> FloatImage:
    """(H, W) or (H, W, C) -> float32 (H, W, C)."""
    array = pixels.astype(np.float32, copy=False)
    return array[..., None] if array.ndim == 2 else array


def analysis_copy(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """A box-reduced copy about ANALYSIS px on the longer side, and the reduction factor."""
    factor = max(1, round(max(pixels.shape[:2]) / ANALYSIS))
    if factor == 1:
        return pixels, 1
    return np.asarray(Image.fromarray(pixels).reduce(factor)), factor


def dark_ink(grey: FloatImage) -> bool:
    """Polarity: is the ink darker than the paper?

    Judged on the whole image and on its middle (people centre what they
    photograph): the paper is the median, the ink whichever tail of the grey levels
    reaches farther from it. When the two disagree, a paper exactly at one end of the
    whole image's levels settles it (a canvas: a fat white digit on pure black fills
    the middle); else the brighter median is the paper, as it usually is (a white
    sheet in the middle of a dark desk that fills most of the photo).
    """
    height, width = grey.shape
    step = max(1, int(np.sqrt(grey.size / 16384)))
    whole = polarity(grey[::step, ::step])
    middle = polarity(grey[height // 4 : height - height // 4, width // 4 : width - width // 4])
    if whole.dark == middle.dark or middle.dark is None or whole.exact:
        return whole.dark is not False  # nothing there at all: say dark (blank is found later)
    if whole.dark is None:
        return middle.dark
    return whole.dark if whole.paper >= middle.paper else middle.dark


@dataclass(frozen=True)
class Polarity:
    dark: bool | None  # None: one flat colour, no evidence
    paper: float  # the median grey level
    exact: bool  # the paper is exactly the darkest or brightest there is (a canvas)


def polarity(grey: FloatImage) -> Polarity:
    """Polarity evidence from the tails of the grey levels around their median."""
    ordered = np.sort(grey.reshape(-1))
    last = ordered.size - 1
    median, darkest, brightest = float(ordered[last // 2]), float(ordered[0]), float(ordered[-1])
    if brightest - darkest < 16.0:
        return Polarity(None, median, False)
    for dark, gap in ((False, median - darkest), (True, brightest - median)):
        if gap < 8.0:  # the paper is (about) the darkest or the brightest there is
            return Polarity(dark, median, gap < 2.0)
    low, high = float(ordered[round(0.002 * last)]), float(ordered[round(0.998 * last)])
    return Polarity(median - low >= high - median, median, False)


def lighting(grey: FloatImage, dark: bool) -> FloatImage | None:
    """The paper's brightness under the ink, (h, w) and smooth; None when the light is even.

    From a ~16x16 grid of cells: each cell's paper level is a high percentile (low
    for light ink on a dark board), right as long as ink covers less than a fifth
    of the cell; a grey closing (opening) over the cells then removes the cells
    that strokes filled. Small images (a 28 px digit) have too few pixels per cell,
    and a canvas or a scan is evenly lit: then there is nothing to divide out.
    """
    height, width = grey.shape
    cell = max(height, width) // 16
    if min(height, width) < 48 or cell < 3:
        return None
    rows, cols = height // cell, width // cell
    tiles = grey[: rows * cell, : cols * cell].reshape(rows, cell, cols, cell)
    blocks = tiles.transpose(0, 2, 1, 3).reshape(rows, cols, cell * cell)
    # a full sort, on purpose: numpy's partition (behind np.percentile) is far slower here
    rank = round((0.8 if dark else 0.2) * (cell * cell - 1))
    cells = np.sort(blocks, axis=2)[..., rank]
    level = float(np.median(cells))
    if float(cells.max() - cells.min()) <= 0.05 * max(level, 20.0):
        return None
    sign = 1.0 if dark else -1.0  # work as if the ink were dark: closings remove it
    fine = sign * ndimage.grey_closing(sign * cells, size=(3, 3), mode="nearest")
    if float(fine.max() - fine.min()) <= 0.05 * max(level, 20.0):
        return None  # the strokes filled a few cells; the light itself is even
    # A fat marker fills cells two or three wide that a 3x3 closing keeps; a wider one
    # removes them, but would also erase a desk's margin or a shadow. Those reach the
    # image's edge, a stroke does not: use the wide closing where enclosed cells change.
    coarse = sign * ndimage.grey_closing(sign * cells, size=(5, 5), mode="nearest")
    changed = sign * (coarse - fine) > 0.1 * abs(level)
    if changed.any():
        filled, _ = ndimage.label(changed)
        edge = np.unique(np.concatenate([filled[0], filled[-1], filled[:, 0], filled[:, -1]]))
        enclosed = (filled > 0) & ~np.isin(filled, edge)
        fine = np.where(enclosed, coarse, fine)
    if float(fine.max() - fine.min()) <= 0.05 * max(level, 20.0):
        return None
    surface = Image.fromarray(fine.astype(np.float32)).resize((width, height))
    return np.asarray(surface, dtype=np.float32)


def quantile(values: np.ndarray, q: float) -> float:
    """np.quantile without interpolation or overhead: the k-th smallest value, found by
    a partial sort (~4x faster than a full one on a crop's 10,000 values)."""
    flat = values.reshape(-1)
    rank = min(round(q * (flat.size - 1)), flat.size - 1)
    return float(np.partition(flat, rank)[rank])


def find_ink(small: np.ndarray) -> tuple[Ink, FloatImage]:
    """Measure light, paper, ink colour and noise on the analysis copy; and its signal."""
    grey_image = Image.fromarray(small).convert("L") if small.ndim == 3 else Image.fromarray(small)
    grey = np.asarray(grey_image, dtype=np.float32)
    dark = dark_ink(grey)
    light = lighting(grey, dark)
    gain = shift = page = None
    if light is not None:  # uneven light: shadows, gradients, a desk
        level = quantile(light, 0.5)
        if dark:  # ink and paper both reflect the light: divide it out (floor: deep shadow)
            gain = (level / np.maximum(light, max(0.25 * level, 1.0))).astype(np.float32)
            # Far darker than the paper is no paper: a desk around the sheet. Its rim, where
            # the coarse light estimate blurs the sheet's edge, would read as a stroke.
            off_page = light < OFF_PAGE * quantile(light, 0.75)  # vs the lit part of the page
            if off_page.any():
                page = ~ndimage.maximum_filter(off_page, size=max(grey.shape) // 16 + 1)
        else:  # a dark board reflects little: dividing would blow up its noise; subtract
            shift = (level - light).astype(np.float32)
    colour = as_channels(small)
    flat = colour
    if gain is not None:
        flat = colour * gain[..., None]
    if shift is not None:
        flat = colour + shift[..., None]
    pixels = flat.reshape(-1, flat.shape[2])
    samples = pixels[page.reshape(-1)] if page is not None else pixels
    samples = samples[:: max(1, len(samples) // 4096)]  # ~4k samples are plenty for medians
    paper = np.sort(samples, axis=0)[len(samples) // 2].astype(np.float32)
    on_page = pixels[page.reshape(-1)] if page is not None else pixels
    direction = ink_direction(on_page - paper)  # the desk's rim must not pass for ink
    signal = ((flat - paper) @ direction).astype(np.float32)
    sigma = noise_sigma((samples - paper) @ direction)  # on the page only, not the desk
    return Ink(gain, shift, paper, direction, sigma, page), signal


def clean_ink(small: np.ndarray) -> tuple[Ink, FloatImage] | None:
    """The ink of a drawing on a flat background (a canvas, a screenshot), or None.

    Most of the image is exactly one colour, the one in its corner, and that colour
    is pure white or black (a flat grey could be a desk around a sheet): no light
    to flatten, no noise, paper known. This is the draw-a-digit page's traffic, so
    it skips the photo machinery of `find_ink`; anything less clean goes there.
    """
    paper = np.atleast_1d(small[0, 0])  # the corner's colour
    if not (int(paper.min()) >= 250 or int(paper.max()) <= 5):
        return None
    same = same_colour(small, paper if small.ndim == 3 else paper[0])
    if np.count_nonzero(same) < 0.6 * same.size:
        return None
    paper = paper.astype(np.float32)
    drawn = as_channels(small)[~same]  # the paper's own pixels add nothing to the direction
    ink = Ink(None, None, paper, ink_direction(drawn - paper), 0.0, None)
    return ink, ink.signal(small)


def same_colour(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(H, W) bool: where `pixels` (grey or colour) are exactly `colour`.

    Channel by channel: numpy's `.all(axis=2)` over a 3-wide axis is ten times slower.
    """
    if pixels.ndim == 2:
        return np.asarray(pixels == colour)
    same = pixels[..., 0] == colour[0]
    for channel in range(1, pixels.shape[2]):
        same &= pixels[..., channel] == colour[channel]
    return np.asarray(same)


def ink_direction(offsets: np.ndarray) -> FloatImage:
    """Unit vector from the paper's colour towards the ink's (either polarity, any colour).

    The ink is what lies farthest from the paper: the mean offset of every pixel at
    least half as far as the farthest (all pixels: a thin digit may be a few dozen).
    For grey images that is just the sign (dark or light ink).
    """
    distance = np.einsum("ij,ij->i", offsets, offsets)  # squared length; twice .sum(axis=1)'s speed
    peak = float(distance.max()) if distance.size else 0.0  # no pixel off the paper at all
    if peak > 0:
        direction = offsets[distance >= 0.25 * peak].mean(axis=0)
    else:
        direction = np.zeros(offsets.shape[1], dtype=np.float32)
    norm = float(np.sqrt(direction @ direction))
    if norm < 1e-6:  # one flat colour: no ink anywhere (blank is decided later)
        return np.full(offsets.shape[1], 1.0 / np.sqrt(offsets.shape[1]), np.float32)
    return np.asarray(direction / norm, dtype=np.float32)


def noise_sigma(signal: np.ndarray) -> float:
    """Robust noise of the signal on the paper (1.4826 x median absolute deviation)."""
    centre = quantile(signal, 0.5)
    return 1.4826 * quantile(np.abs(signal - centre), 0.5)
