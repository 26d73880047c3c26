"""Bytes -> a pixel array at work resolution, safely: the decoding stage.

The image size is checked from the header before any pixel is decoded, so a
decompression bomb costs microseconds, not gigabytes. JPEGs are decoded by
libjpeg at reduced scale, everything else is shrunk to at most `WORK` px a side.
EXIF orientation is undone (phones store photos sideways), 16-bit and float
modes are brought to the 8-bit range, and transparency is resolved so that a
canvas drawing kept only in alpha does not lose its digit.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidImage, PayloadTooLarge
from service.preprocess.constants import WORK
from service.preprocess.formats import _FORMATS, _HINT


def _decode(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode to an (H, W) or (H, W, 3) array at most WORK px a side, alpha resolved.

    uint8 for plain grey/RGB files (so an MNIST-style 28x28 PNG needs no copy),
    float32 when alpha or a 16-bit/float mode had to be resolved.
    """
    try:
        image: Image.Image = Image.open(io.BytesIO(data), formats=_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(str(exc), max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"the file is not a readable image; {_HINT}") from exc
    width, height = image.size  # from the header: nothing decoded yet
    # (over Pillow's own MAX_IMAGE_PIXELS, ~89 M, Image.open has already warned or raised)
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise _too_large(f"the image is {width}x{height}", limit)
    if width == 0 or height == 0:
        raise InvalidImage(f"the image has no pixels ({width}x{height}); {_HINT}")
    if image.format in ("JPEG", "MPO"):  # MPO: phone cameras' multi-picture JPEG
        image.draft(None, (WORK, WORK))  # let libjpeg decode at 1/2, 1/4 or 1/8 size
    image.load()
    # Phones store photos sideways plus an orientation tag; undo it (TIFF keeps it in tags)
    exif = image.format == "TIFF" or "exif" in image.info
    if exif and image.getexif().get(0x0112, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # NaN/inf/negative values in float TIFFs must not reach the statistics
        array = np.nan_to_num(np.asarray(image, dtype=np.float32), posinf=0.0).clip(0.0, None)
        peak = float(array.max())
        if peak > 255.0:  # 16-bit scans: bring to the 8-bit range the thresholds assume
            array *= 255.0 / (65535.0 if peak <= 65535.0 else peak)
        return _shrink(array)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        image = image.convert("RGBA")
    elif image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in ("1", "P") and _is_gray(image) else "RGB")
    if max(image.size) > WORK:
        image.thumbnail((WORK, WORK), Image.Resampling.BILINEAR)
    if has_alpha:
        return _flatten_alpha(np.asarray(image, dtype=np.float32))
    if image.mode == "L":  # uint8 as it is: the MNIST-style fast path needs no copy
        return np.frombuffer(image.tobytes(), np.uint8).reshape(image.height, image.width)
    return np.asarray(image)


def _too_large(what: str, max_pixels: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what}: more than the limit of {max_pixels:,} pixels; "
        "scale the image down (about 1000 px on the longer side is plenty) and retry"
    )


def _is_gray(image: Image.Image) -> bool:
    if image.mode == "1":
        return True
    palette = np.asarray(image.getpalette() or [], dtype=np.int16).reshape(-1, 3)
    return bool((palette.max(axis=1) == palette.min(axis=1)).all())


def _shrink(array: np.ndarray) -> np.ndarray:
    if max(array.shape[:2]) <= WORK:
        return array
    image = Image.fromarray(array)
    image.thumbnail((WORK, WORK), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Resolve transparency so the digit is never lost.

    Canvas drawings keep the digit only in alpha: opaque strokes (any colour, black
    included) on a transparent background. Compositing them on a fixed colour erases
    strokes of that colour, so when the opaque part is a minority or one flat colour
    the alpha channel itself is the ink. Otherwise (a photo with transparent margins)
    the transparent part is filled with the photo's own paper colour.
    """
    alpha = rgba[..., 3] / 255.0
    if alpha.min() > 0.98:
        return rgba[..., :3]
    opaque = alpha > 0.5
    colour = rgba[..., :3][opaque]
    if opaque.mean() < 0.5 or colour.size == 0 or float(colour.mean(axis=1).std()) < 20.0:
        return rgba[..., 3].copy()  # white-on-black already: ink = opacity
    paper = np.sort(colour, axis=0)[len(colour) // 2]  # median (see _quantile)
    a = alpha[..., None]
    return np.asarray(rgba[..., :3] * a + paper * (1.0 - a), dtype=np.float32)
