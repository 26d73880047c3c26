"""The libspng path for common PNGs decodes exactly what Pillow's path decodes."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from evaluation.samples import load_sample
from service.errors import InvalidImage
from service.preprocess import preprocess_image
from service.preprocess.decode import decode, decode_plain_png, flatten_alpha


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def by_pillow(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    pixels = np.asarray(image)
    return flatten_alpha(pixels) if image.mode in ("RGBA", "LA") else pixels


def uploads() -> list[tuple[str, bytes]]:
    digit = load_sample()[0][0]
    big = Image.fromarray(255 - digit).resize((280, 280))
    rgb = Image.merge("RGB", (big, big.point(lambda v: v // 2), big))
    strokes = Image.new("RGBA", (280, 280), (20, 22, 31, 0))
    strokes.putalpha(Image.fromarray(digit).resize((280, 280)))
    white = Image.new("RGBA", (280, 280), (255, 255, 255, 255))
    white.alpha_composite(strokes)
    return [
        ("mnist 28x28 grey", png(Image.fromarray(digit))),
        ("grey 280", png(big)),
        ("rgb 280", png(rgb)),
        ("canvas: strokes in alpha", png(strokes)),
        ("canvas: the page's opaque white sheet", png(white)),
    ]


@pytest.mark.parametrize(("kind", "data"), uploads(), ids=[k for k, _ in uploads()])
def test_fast_png_equals_the_pillow_path(kind: str, data: bytes) -> None:
    fast = decode_plain_png(data, 40_000_000)
    assert fast is not None, f"{kind} should take the fast path"
    assert np.array_equal(fast, by_pillow(data))
    assert np.array_equal(decode(data, 40_000_000), fast)


def test_unusual_pngs_go_to_pillow_and_bad_ones_still_get_clear_errors() -> None:
    digit = load_sample()[0][0]
    palette = png(Image.fromarray(digit).convert("P"))
    sixteen = png(Image.fromarray(digit.astype(np.uint16) * 257))
    grey_alpha = png(Image.merge("LA", (Image.fromarray(255 - digit), Image.fromarray(digit))))
    for unusual in (palette, sixteen, grey_alpha):
        assert decode_plain_png(unusual, 40_000_000) is None
        assert preprocess_image(unusual).shape == (28, 28)
    truncated = png(Image.fromarray(digit))[:60]
    assert decode_plain_png(truncated, 40_000_000) is None
    with pytest.raises(InvalidImage, match=r"decoded|readable|truncated"):
        preprocess_image(truncated)
    huge = bytearray(png(Image.fromarray(digit)))
    huge[16:24] = (100_000).to_bytes(4, "big") * 2  # a header claiming 10^10 pixels
    assert decode_plain_png(bytes(huge), 40_000_000) is None
