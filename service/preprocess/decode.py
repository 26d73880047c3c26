"""Bytes -> an 8-bit pixel array at work resolution, safely: the decoding stage.

The image size is checked from the header before any pixel is decoded, so a
decompression bomb costs microseconds, not gigabytes. JPEGs are decoded by
libjpeg at reduced scale (DCT scaling: 1/2, 1/4 or 1/8, much cheaper than a full
decode); other formats are box-reduced by an integer factor to about `WORK` px.
EXIF orientation is undone (phones store photos sideways), 16-bit and float
modes are brought to 8 bits, and transparency is resolved so that a canvas
drawing kept only in alpha does not lose its digit. Everything stays uint8: the
later stages convert only the few pixels they need.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pyspng
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidImage, PayloadTooLarge
from service.preprocess.constants import WORK
from service.preprocess.formats import FORMAT_HINT, PILLOW_FORMATS

_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR colour type -> channels: grey, RGB, RGBA (palettes and grey+alpha go to Pillow:
# libspng's Python binding does not decode the latter).
PNG_CHANNELS = {0: 1, 2: 3, 6: 4}


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode to uint8 (H, W) grey or (H, W, 3) colour, about WORK px a side, alpha resolved."""
    if data.startswith(PNG_SIGNATURE):
        pixels = decode_plain_png(data, max_pixels)
        if pixels is not None:
            return pixels
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_large(str(exc), max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"the file is not a readable image; {FORMAT_HINT}") from exc
    width, height = image.size  # from the header: nothing decoded yet
    # (over Pillow's own MAX_IMAGE_PIXELS, ~89 M, Image.open has already warned or raised)
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise too_large(f"the image is {width}x{height}", limit)
    if width == 0 or height == 0:
        raise InvalidImage(f"the image has no pixels ({width}x{height}); {FORMAT_HINT}")
    if image.format in ("JPEG", "MPO"):  # MPO: phone cameras' multi-picture JPEG
        image.draft(None, (WORK, WORK))  # let libjpeg decode at 1/2, 1/4 or 1/8 size
    image.load()
    # Phones store photos sideways plus an orientation tag; undo it (TIFF keeps it in tags)
    exif = image.format == "TIFF" or "exif" in image.info
    if exif and image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in _HIGH_DEPTH:
        image = eight_bit(image)
    has_alpha = image.mode in _ALPHA or "transparency" in image.info
    if image.mode not in ("L", "RGB", "RGBA", "LA"):  # palettes, bilevel, CMYK, ...
        grey = image.mode in ("1", "P") and is_grey_palette(image)
        image = image.convert("RGBA" if has_alpha else "L" if grey else "RGB")
    factor = max(image.size) // WORK
    if factor > 1:  # a box filter by an integer factor: fast, and keeps thin strokes' ink
        image = image.reduce(factor)
    if has_alpha:
        rgba = image if image.mode in ("RGBA", "LA") else image.convert("RGBA")
        return flatten_alpha(np.asarray(rgba))
    return np.asarray(image)


def decode_plain_png(data: bytes, max_pixels: int) -> np.ndarray | None:
    """The common PNG (8-bit grey, RGB or RGBA, no palette, no EXIF, at most
    2 x WORK a side) decoded by libspng: several times faster than Pillow's decoder,
    whose per-file Python work dominates small images (a 28x28 PNG: ~16 vs ~100 µs).

    None: not such a PNG, or libspng refused it; Pillow then decodes it (and reports
    any error). The size is checked from the header first, like Pillow's path."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if (
        depth != 8
        or colour not in PNG_CHANNELS
        or not 0 < width * height <= max_pixels
        or max(width, height) >= 2 * WORK
        or b"tRNS" in data  # transparency of a colour, or EXIF orientation:
        or b"eXIf" in data  # rare, and Pillow knows them
    ):
        return None
    try:
        pixels = pyspng.load(data)
    except Exception:  # a corrupt file: let Pillow say what is wrong with it
        return None
    if pixels.shape[:2] != (height, width) or pixels.dtype != np.uint8:
        return None
    return flatten_alpha(pixels) if PNG_CHANNELS[colour] == 4 else pixels


def too_large(what: str, max_pixels: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what}: more than the limit of {max_pixels:,} pixels; "
        "scale the image down (about 1000 px on the longer side is plenty) and retry"
    )


def eight_bit(image: Image.Image) -> Image.Image:
    """16-bit scans and float TIFFs -> 8-bit grey; NaN/inf/negative values become 0."""
    array = np.nan_to_num(np.asarray(image, dtype=np.float32), posinf=0.0).clip(0.0, None)
    peak = float(array.max())
    if peak > 255.0:  # 16-bit: bring to the 8-bit range the thresholds assume
        array *= 255.0 / (65535.0 if peak <= 65535.0 else peak)
    return Image.fromarray(array.clip(0.0, 255.0).astype(np.uint8))


def is_grey_palette(image: Image.Image) -> bool:
    if image.mode == "1":
        return True
    palette = np.asarray(image.getpalette() or [], dtype=np.int16).reshape(-1, 3)
    return bool((palette.max(axis=1) == palette.min(axis=1)).all())


def without_alpha(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 2) or (H, W, 4) uint8 -> contiguous grey or RGB without the alpha channel.

    One channel at a time: numpy copies a 3-of-4-channel slice in one go eight
    times slower (a 280x280 canvas: ~100 vs ~830 µs).
    """
    if pixels.shape[2] == 2:
        return np.ascontiguousarray(pixels[..., 0])
    colour = np.empty((*pixels.shape[:2], 3), dtype=np.uint8)
    for channel in range(3):
        colour[..., channel] = pixels[..., channel]
    return colour


def as_rgb(array: np.ndarray) -> np.ndarray:
    return array if array.ndim == 3 else np.repeat(array[..., None], 3, axis=2)


def flatten_alpha(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 2) grey+alpha or (H, W, 4) RGBA uint8 -> grey or RGB with transparency resolved,
    so the digit is never lost.

    Canvas drawings keep the digit only in alpha: opaque strokes (any colour, black
    included) on a transparent background. Compositing them on a fixed colour erases
    strokes of that colour, so when the opaque part is a minority or one flat colour
    the alpha channel itself is the ink (white on black). Otherwise (a photo with
    transparent margins) the transparent part is filled with the photo's own paper.
    """
    alpha = np.ascontiguousarray(pixels[..., -1])  # one strided copy, then fast scans
    if int(alpha.min()) > 250:  # opaque after all (the draw-a-digit page's sheet)
        return without_alpha(pixels)
    colour = pixels[..., 0] if pixels.shape[2] == 2 else pixels[..., :3]
    opaque = alpha > 127
    if np.count_nonzero(opaque) < opaque.size // 2:  # strokes on a transparent sheet:
        return alpha  # ink = opacity
    grey = colour if colour.ndim == 2 else np.asarray(Image.fromarray(pixels, "RGBA").convert("L"))
    shown = grey[opaque]
    if shown.size == 0 or float(shown.std()) < 20.0:  # one flat colour: ink = opacity too
        return alpha
    rgb = as_rgb(np.asarray(colour, dtype=np.float32))
    paper = np.median(rgb[opaque], axis=0)
    a = alpha[..., None].astype(np.float32) / 255.0
    return np.asarray(rgb * a + paper * (1.0 - a), dtype=np.float32).round().astype(np.uint8)
