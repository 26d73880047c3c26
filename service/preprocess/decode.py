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

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidImage, PayloadTooLarge
from service.preprocess.constants import WORK
from service.preprocess.formats import FORMAT_HINT, PILLOW_FORMATS

_HIGH_DEPTH = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode to uint8 (H, W) grey or (H, W, 3) colour, about WORK px a side, alpha resolved."""
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
        return flatten_alpha(image)
    return np.asarray(image)


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


def as_rgb(array: np.ndarray) -> np.ndarray:
    return array if array.ndim == 3 else np.repeat(array[..., None], 3, axis=2)


def flatten_alpha(image: Image.Image) -> np.ndarray:
    """Resolve transparency so the digit is never lost.

    Canvas drawings keep the digit only in alpha: opaque strokes (any colour, black
    included) on a transparent background. Compositing them on a fixed colour erases
    strokes of that colour, so when the opaque part is a minority or one flat colour
    the alpha channel itself is the ink (white on black). Otherwise (a photo with
    transparent margins) the transparent part is filled with the photo's own paper.
    """
    rgba = image if image.mode in ("RGBA", "LA") else image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    colour = rgba.convert("RGB") if rgba.mode == "RGBA" else rgba.getchannel("L")
    if int(alpha.min()) > 250:  # opaque after all (the draw-a-digit page's sheet)
        return np.asarray(colour)
    opaque = alpha > 127
    if opaque.mean() < 0.5:  # strokes on a transparent sheet: ink = opacity
        return alpha
    grey = np.asarray(colour.convert("L"))[opaque]
    if grey.size == 0 or float(grey.std()) < 20.0:  # one flat colour: ink = opacity too
        return alpha
    rgb = as_rgb(np.asarray(colour, dtype=np.float32))
    paper = np.median(rgb[opaque], axis=0)
    a = alpha[..., None].astype(np.float32) / 255.0
    return np.asarray(rgb * a + paper * (1.0 - a), dtype=np.float32).round().astype(np.uint8)
