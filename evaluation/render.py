"""Drawing MNIST digits as the files people upload: the one set of renderers.

The field benchmark (`evaluation.field`), the load-test pool (`evaluation.uploads`)
and the preprocessing benchmark (`benchmarks.preprocess_bench`) all build their
uploads from these pieces, so a change to how a "phone photo" looks changes it
everywhere at once. numpy + Pillow only; every random choice comes from the
caller's generator, so a seed gives the same bytes.

- `pen_mask`: the digit as a crisp, anti-aliased pen stroke of any size, marker or fine pen
- `paper`: a page of one colour under a lighting gradient
- `ink_on_paper`: a pen mask composited on a page, with sensor noise
- `ruled_lines`, `shadow`, `fold_line`: what real pages add (lines, a hand's shadow, a fold)
- `on_page`: a quick grey page with the digit centred (benchmarks, pools)
- `alpha_canvas`, `web_canvas`: the two canvas PNGs browsers send
- `encode`: any array or image to the bytes of a file format
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

Colour = tuple[int, int, int]
CONTENT_TYPES = {f: f"image/{f.lower()}" for f in ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")}


def encode(image: Image.Image | np.ndarray, image_format: str = "PNG", **options: object) -> bytes:
    """The bytes of `image` as a file of `image_format` (Pillow's name: PNG, JPEG, ...).

    PNGs are written at zlib level 1 unless asked otherwise: the same pixels, and
    building thousands of benchmark files is not the bottleneck any more.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    if image_format == "PNG":
        options.setdefault("compress_level", 1)
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def pen_mask(digit: np.ndarray, size: int, rng: np.random.Generator, width: float) -> np.ndarray:
    """The digit as an anti-aliased pen mask of `size` px: float32 (size, size), 255 = ink.

    Upscaled MNIST is blurry; re-thresholding it gives crisp pen edges. `width` > 0
    fattens strokes by that many 28-px units (a marker); `width` < 0 draws the
    digit's skeleton with a fine pen of about `-width` output pixels (a ballpoint).
    """
    if width < 0:
        fine = Image.fromarray(digit).resize((84, 84), Image.Resampling.BICUBIC)
        line = Image.fromarray(skeleton(np.asarray(fine) > 110).astype(np.uint8) * 255)
        big = line.resize((size, size), Image.Resampling.BILINEAR)
        big = big.filter(ImageFilter.MaxFilter(2 * round(-width / 2) + 1))
        return np.asarray(big.point(lambda v: min(255, v * 4)), dtype=np.float32)
    big = Image.fromarray(digit)
    if width > 0:  # fatten at 4x MNIST scale: cheap and size-independent
        big = big.resize((112, 112), Image.Resampling.BICUBIC)
        big = big.filter(ImageFilter.MaxFilter(2 * round(width * 4) + 1))
    big = big.resize((size, size), Image.Resampling.BICUBIC)
    level = float(rng.uniform(90, 150))
    gain = max(2.0, size / 56)  # edges ~2 px wide at any size, as a real pen's
    mask = np.clip((np.asarray(big, dtype=np.float32) - level) * gain + 128.0, 0, 255)
    return np.asarray(mask.astype(np.uint8), dtype=np.float32)


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning, vectorised: the one-pixel centre line of the strokes."""
    image = np.pad(mask.astype(np.uint8), 1)
    removed = True
    while removed:
        removed = False
        for step in (0, 1):
            p = image
            # neighbours P2..P9, clockwise from north
            ring = [p[:-2, 1:-1], p[:-2, 2:], p[1:-1, 2:], p[2:, 2:]]
            ring += [p[2:, 1:-1], p[2:, :-2], p[1:-1, :-2], p[:-2, :-2]]
            count = sum(n.astype(np.int8) for n in ring)
            turns = sum((ring[i] == 0) & (ring[(i + 1) % 8] == 1) for i in range(8))
            p2, p4, p6, p8 = ring[0], ring[2], ring[4], ring[6]
            if step == 0:
                side = ((p2 & p4 & p6) == 0) & ((p4 & p6 & p8) == 0)
            else:
                side = ((p2 & p4 & p8) == 0) & ((p2 & p6 & p8) == 0)
            drop = (p[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (turns == 1) & side
            if drop.any():
                image[1:-1, 1:-1][drop] = 0
                removed = True
    return image[1:-1, 1:-1]


def paper(
    size: tuple[int, int], colour: Colour, rng: np.random.Generator, light: float
) -> np.ndarray:
    """A page (H, W, 3) float32 of `colour` under a linear lighting gradient of depth `light`."""
    width, height = size
    angle = rng.uniform(0, 2 * np.pi)
    xx = np.linspace(0.0, np.cos(angle), width, dtype=np.float32)[None, :]
    yy = np.linspace(0.0, np.sin(angle), height, dtype=np.float32)[:, None]
    ramp = (xx + yy + 1.0) / 2.0
    shade = (1.0 - light * ramp)[..., None]
    return np.asarray(np.asarray(colour, np.float32)[None, None, :] * shade, dtype=np.float32)


def ink_on_paper(
    page: np.ndarray,
    mask: np.ndarray,
    pen: Colour,
    at: tuple[int, int],
    strength: float = 1.0,
) -> np.ndarray:
    """`page` (H, W, 3) float32 with the pen `mask` (255 = ink) laid on at (top, left), in place."""
    top, left = at
    alpha = (mask / 255.0 * strength)[..., None]
    where = np.s_[top : top + mask.shape[0], left : left + mask.shape[1]]
    page[where] = page[where] * (1 - alpha) + np.asarray(pen, np.float32) * alpha
    return page


def ruled_lines(
    page: np.ndarray, rng: np.random.Generator, spacing: float, colour: Colour
) -> np.ndarray:
    """Exercise-book lines across the page, `spacing` px apart, maybe a margin line; in place."""
    height, width = page.shape[:2]
    thickness = max(1, round(spacing / 25))
    offset = rng.uniform(0, spacing)
    line = np.asarray(colour, np.float32)
    for y in np.arange(offset, height, spacing):
        row = round(float(y))
        page[row : row + thickness] = page[row : row + thickness] * 0.35 + line * 0.65
    if rng.random() < 0.5:  # the red margin line of a school notebook
        x = round(width * rng.uniform(0.05, 0.2))
        red = np.asarray((210, 60, 60), np.float32)
        page[:, x : x + thickness] = page[:, x : x + thickness] * 0.35 + red * 0.65
    return page


def shadow(page: np.ndarray, rng: np.random.Generator, depth: float) -> np.ndarray:
    """A soft-edged shadow (a hand or the phone) darkening one side of the page, in place."""
    height, width = page.shape[:2]
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    across = (xx - width * rng.uniform(0.3, 0.7)) * np.cos(angle)
    across += (yy - height * rng.uniform(0.3, 0.7)) * np.sin(angle)
    softness = max(height, width) * rng.uniform(0.02, 0.1)
    dark = 1.0 / (1.0 + np.exp(-across / softness))
    page *= (1.0 - depth * dark)[..., None]
    return page


def fold_line(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A crease crossing the page: a thin dark line with a light edge beside it, in place."""
    height, width = page.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    distance = (xx - width / 2) * np.sin(angle) - (yy - height / 2) * np.cos(angle)
    distance -= rng.uniform(-0.3, 0.3) * min(height, width)
    crease = np.exp(-((distance / 1.2) ** 2)) * 0.25 - np.exp(-(((distance - 3) / 2) ** 2)) * 0.08
    page *= (1.0 - crease)[..., None]
    return page


def on_page(
    digit: np.ndarray,
    size: tuple[int, int],
    fraction: float,
    *,
    level: int = 235,
    ink: int = 20,
    light: float = 0.0,
    noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> Image.Image:
    """Dark ink on light grey paper (RGB), the digit `fraction` of the page height, centred.

    With `light` a top-to-bottom lighting gradient, with `noise` sensor noise:
    a phone photo at its plainest.
    """
    width, height = size
    side = int(height * fraction)
    strokes = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    page = np.full((height, width), float(level), np.float32)
    top, left = (height - side) // 2, (width - side) // 2
    page[top : top + side, left : left + side] -= strokes * ((level - ink) / 255)
    if light:
        page *= 1.0 - light * np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    if noise:
        page += (rng or np.random.default_rng(0)).normal(0.0, noise, page.shape).astype(np.float32)
    return Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).convert("RGB")


def alpha_canvas(
    digit: np.ndarray, size: int, colour: Colour = (0, 0, 0), *, margin: float = 0.0
) -> Image.Image:
    """A browser canvas with a transparent background: strokes of `colour` only in alpha."""
    side = round(size * (1 - 2 * margin))
    alpha = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = colour
    start = round(size * margin)
    rgba[start : start + side, start : start + side, 3] = np.asarray(alpha)
    return Image.fromarray(rgba)


def web_canvas(digit: np.ndarray, size: int = 280) -> Image.Image:
    """What the draw-a-digit page sends: an opaque white RGBA sheet, strokes in #14161f."""
    alpha = np.asarray(
        Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC), np.float32
    )[..., None]
    ink = np.asarray((0x14, 0x16, 0x1F), np.float32)
    rgb = 255.0 * (1 - alpha / 255.0) + ink * (alpha / 255.0)
    rgba = np.full((size, size, 4), 255, np.uint8)
    rgba[..., :3] = np.round(rgb).astype(np.uint8)
    return Image.fromarray(rgba)


def pick(rng: np.random.Generator, options: Sequence[Colour]) -> Colour:
    return options[int(rng.integers(len(options)))]


def random_colour(rng: np.random.Generator, low: int, high: int) -> Colour:
    red, green, blue = (int(c) for c in rng.integers(low, high, 3))
    return red, green, blue
