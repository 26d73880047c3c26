"""Preprocessing: every kind of real upload comes out MNIST-style; bad bytes get clear errors."""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from evaluation import field, render
from evaluation import uploads as pool
from service.errors import InvalidImage, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.preprocess import (
    is_mnist_style,
    preprocess_image,
    preprocess_pixels,
    sniff_image_format,
)

MODELS = Path(__file__).resolve().parents[2] / "models"


def encode(image: Image.Image | np.ndarray, image_format: str = "PNG", **options: object) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def page(
    digit: np.ndarray,
    *,
    size: int = 240,
    scale: float = 0.7,
    paper: tuple[int, int, int] = (245, 242, 230),
    ink: tuple[int, int, int] = (20, 20, 30),
    light: float = 0.0,
    noise: float = 0.0,
    at: tuple[float, float] = (0.5, 0.5),
) -> Image.Image:
    """The digit drawn on a page, like a photo or scan: size, colours, light, noise."""
    side = round(size * scale)
    strokes = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    alpha = np.zeros((size, size), np.float32)
    top, left = round((size - side) * at[0]), round((size - side) * at[1])
    alpha[top : top + side, left : left + side] = np.asarray(strokes, np.float32) / 255.0
    shade = 1.0 - light * np.linspace(0.0, 1.0, size, dtype=np.float32)[None, :, None]
    rgb = np.asarray(paper, np.float32) * shade * (1 - alpha[..., None])
    rgb += np.asarray(ink, np.float32) * alpha[..., None]
    rgb += np.random.default_rng(0).normal(0.0, noise, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def similarity(out: np.ndarray, digit: np.ndarray) -> float:
    """Pearson correlation of the preprocessed field with the original MNIST digit."""
    return float(np.corrcoef(out.reshape(-1), digit.reshape(-1).astype(np.float32))[0, 1])


def check_mnist_style(out: np.ndarray) -> None:
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 255.0
    assert out.max() > 200.0  # full-contrast ink
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (19, 20, 21)
    mass = out / out.sum()
    centre = (mass.sum(axis=1) @ np.arange(28), mass.sum(axis=0) @ np.arange(28))
    assert np.allclose(centre, 14.0, atol=1.0)


def _alpha_only(colour: tuple[int, int, int]) -> Callable[[np.ndarray], bytes]:
    def make(digit: np.ndarray) -> bytes:
        big = np.asarray(Image.fromarray(digit).resize((200, 200), Image.Resampling.BICUBIC))
        rgba = np.zeros((260, 260, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[30:230, 40:240, 3] = big
        return encode(rgba)

    return make


def _exif_rotated(orientation: int, turn: Image.Transpose) -> Callable[[np.ndarray], bytes]:
    def make(digit: np.ndarray) -> bytes:
        exif = Image.Exif()
        exif[0x0112] = orientation
        return encode(page(digit).transpose(turn), "JPEG", quality=90, exif=exif.tobytes())

    return make


def _transparent_margins(digit: np.ndarray) -> bytes:
    """A cut-out photo: opaque paper with the digit, transparent all around it."""
    rgba = np.zeros((300, 300, 4), np.uint8)
    rgba[30:270, 30:270, :3] = np.asarray(page(digit))
    rgba[30:270, 30:270, 3] = 255
    return encode(rgba)


def _transparent_gif(digit: np.ndarray) -> bytes:
    """A canvas saved as GIF: palette image whose background index is transparent."""
    return encode(Image.open(io.BytesIO(_alpha_only((0, 0, 0))(digit))), "GIF")


def _paper_on_desk(digit: np.ndarray) -> bytes:
    """A phone photo of a sheet lying on a dark desk: the desk must not count as ink."""
    desk = np.full((400, 440, 3), (90, 70, 50), np.uint8)
    desk[40:340, 70:370] = np.asarray(page(digit, size=300, light=0.3))
    return encode(desk, "JPEG", quality=85)


def _sixteen_bit(digit: np.ndarray) -> bytes:
    inverted = (255 - np.asarray(page(digit).convert("L"), np.uint16)) * 257
    return encode(Image.fromarray(inverted.astype(np.uint16)))


def _specks(digit: np.ndarray) -> bytes:
    pixels = np.asarray(page(digit, size=300, scale=0.5)).copy()
    pixels[5:8, 5:8] = pixels[280:283, 20:23] = pixels[150:152, 290:292] = 0  # dust
    return encode(pixels)


CASES: dict[str, Callable[[np.ndarray], bytes]] = {
    "dark_on_light_png": lambda d: encode(page(d)),
    "light_on_dark_png": lambda d: encode(page(d, paper=(15, 20, 25), ink=(240, 240, 220))),
    "inverted_mnist_28px": lambda d: encode(255 - d),
    "off_centre_28px": lambda d: encode(np.pad(d, ((3, 0), (0, 4)))[:28, 4:]),
    "tiny_digit_28px": lambda d: encode(np.pad(np.asarray(Image.fromarray(d).resize((14, 14))), 7)),
    "red_ink_on_yellow": lambda d: encode(page(d, paper=(250, 240, 150), ink=(200, 20, 20))),
    "blue_ink_on_black": lambda d: encode(page(d, paper=(0, 0, 0), ink=(40, 60, 255))),
    "alpha_only_black_strokes": _alpha_only((0, 0, 0)),
    "alpha_only_white_strokes": _alpha_only((255, 255, 255)),
    "alpha_only_green_strokes": _alpha_only((20, 160, 40)),
    "alpha_only_fat_strokes_la": lambda d: encode(
        Image.merge("LA", (Image.new("L", (280, 280)), Image.fromarray(d).resize((280, 280))))
    ),
    "transparent_margins_photo": _transparent_margins,
    "transparent_gif_canvas": _transparent_gif,
    "paper_on_desk": _paper_on_desk,
    "exif_rotate_90": _exif_rotated(6, Image.Transpose.ROTATE_90),
    "exif_rotate_180": _exif_rotated(3, Image.Transpose.ROTATE_180),
    "exif_rotate_270": _exif_rotated(8, Image.Transpose.ROTATE_270),
    "jpeg_quality_15": lambda d: encode(page(d), "JPEG", quality=15),
    "lighting_gradient": lambda d: encode(page(d, light=0.6), "JPEG", quality=85),
    "faint_pen": lambda d: encode(page(d, ink=(185, 185, 190), noise=2.0), "JPEG"),
    "noisy_paper": lambda d: encode(page(d, noise=15.0)),
    "specks_of_dust": _specks,
    "small_digit_big_canvas": lambda d: encode(page(d, size=1200, scale=0.08, at=(0.2, 0.7))),
    "big_photo_jpeg": lambda d: encode(page(d, noise=3.0).resize((3000, 3000)), "JPEG"),
    "mpo_phone_jpeg": lambda d: encode(
        page(d).resize((1600, 1600)), "MPO", save_all=True, append_images=[page(d)]
    ),
    "gif": lambda d: encode(page(d).convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
    "tiff": lambda d: encode(page(d), "TIFF"),
    "webp": lambda d: encode(page(d), "WEBP", quality=80),
    "bmp": lambda d: encode(page(d), "BMP"),
    "grey_png": lambda d: encode(page(d).convert("L")),
    "bilevel_png": lambda d: encode(page(d).convert("1", dither=Image.Dither.NONE)),
    "sixteen_bit_png": _sixteen_bit,
    "cmyk_jpeg": lambda d: encode(page(d).convert("CMYK"), "JPEG"),
    "opaque_rgba_png": lambda d: encode(page(d).convert("RGBA")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_real_world_uploads_become_mnist_style(
    case: str, mnist_sample: tuple[np.ndarray, np.ndarray]
) -> None:
    for digit in mnist_sample[0][:3]:
        out = preprocess_image(CASES[case](digit))
        check_mnist_style(out)
        # a 10 px digit blown up to 20 px has lost detail the original had
        assert similarity(out, digit) > (0.7 if case == "tiny_digit_28px" else 0.75), case


def every_synthetic_upload(digits: np.ndarray, labels: np.ndarray) -> list[tuple[str, bytes]]:
    """Each kind of upload we can render: these cases, the field benchmark's kinds, the
    load-test pool's kinds and both canvas PNGs browsers send."""
    uploads = [(case, make(digit)) for case, make in CASES.items() for digit in digits[:2]]
    count = 2 * len(field.KINDS)
    renders = field.render_field_set(digits[:count], labels[:count], seed=7)
    uploads += [(item.kind, item.data) for item in renders]
    rng = random.Random(0)
    uploads += [(kind, pool.render(d, kind, rng)[0]) for kind in pool.KINDS for d in digits[:2]]
    uploads += [("web_canvas", render.encode(render.web_canvas(d))) for d in digits[:2]]
    uploads += [("alpha_canvas", render.encode(render.alpha_canvas(d, 280))) for d in digits[:2]]
    return uploads


def test_preprocessing_is_idempotent(mnist_sample: tuple[np.ndarray, np.ndarray]) -> None:
    """What the model saw, sent back as a PNG (POST /v1/preprocess), comes back unchanged
    by the MNIST-style fast path: the same pixels, so the same digit."""
    uploads = every_synthetic_upload(*mnist_sample)
    assert len({kind for kind, _ in uploads}) >= 40
    for kind, data in uploads:
        seen = np.round(preprocess_image(data)).astype(np.uint8)
        assert is_mnist_style(seen), kind
        again = preprocess_image(encode(seen))
        assert np.array_equal(again, seen.astype(np.float32)), kind


def test_mnist_digits_pass_through_unchanged(mnist_sample: tuple[np.ndarray, np.ndarray]) -> None:
    images = mnist_sample[0][:300]
    out = np.stack([preprocess_image(encode(digit)) for digit in images])
    assert np.array_equal(out, images.astype(np.float32))  # bit for bit: the fast path
    model = newest_model()
    if model is not None:
        assert (predict(model, out) == predict(model, images.astype(np.float32))).mean() >= 0.99


def test_inverted_mnist_through_the_full_pipeline_stays_close(
    mnist_sample: tuple[np.ndarray, np.ndarray],
) -> None:
    images = mnist_sample[0][:200]
    out = np.stack([preprocess_image(encode(255 - digit)) for digit in images])
    assert float(np.abs(out - images).mean()) < 8.0
    model = newest_model()
    if model is not None:
        assert (predict(model, out) == predict(model, images.astype(np.float32))).mean() >= 0.97


def newest_model() -> Path | None:
    found = sorted(MODELS.glob("mnist-mlp/*/model.onnx"), key=lambda p: int(p.parent.name))
    return found[-1] if found else None


def predict(model: Path, fields: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rows = fields.reshape(len(fields), 784).astype(np.float32)
    probabilities = np.asarray(session.run(["probabilities"], {"pixels": rows})[0])
    return np.asarray(np.argmax(probabilities, axis=1))


# --- bad input -------------------------------------------------------------------------


def png_header(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header claims width x height: a decompression bomb needs no pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (8_000, 8_000), (40_001, 1_000)])
def test_decompression_bomb_rejected_from_the_header(width: int, height: int) -> None:
    # The file holds no pixel data at all: decoding would fail as truncated (422),
    # so a 413 proves the size was judged from the header alone.
    with pytest.raises(PayloadTooLarge, match="scale the image down"):
        preprocess_image(png_header(width, height))


def test_limit_above_pillows_own_bomb_check_still_rejects() -> None:
    # Pillow warns past MAX_IMAGE_PIXELS (~89 M) and raises past twice that; a
    # configured limit above it must not let such a file through to decoding.
    for width in (10_000, 20_000):
        with pytest.raises(PayloadTooLarge):
            preprocess_image(png_header(width, 10_000), max_pixels=10**10)


def test_max_pixels_is_configurable(mnist_sample: tuple[np.ndarray, np.ndarray]) -> None:
    data = encode(page(mnist_sample[0][0], size=100))
    assert preprocess_image(data, max_pixels=10_000).shape == (28, 28)
    with pytest.raises(PayloadTooLarge, match="9,999"):
        preprocess_image(data, max_pixels=9_999)


def test_blank_images_are_rejected_not_guessed() -> None:
    paper = np.full((300, 400, 3), (245, 240, 230), np.uint8)
    noisy = np.clip(paper + np.random.default_rng(1).normal(0, 3, paper.shape), 0, 255)
    for data in (
        encode(np.zeros((28, 28), np.uint8)),
        encode(paper),
        encode(noisy.astype(np.uint8), "JPEG", quality=70),
        encode(np.zeros((50, 50, 4), np.uint8)),  # a fully transparent canvas
    ):
        with pytest.raises(InvalidImage, match="the image is blank: no digit found"):
            preprocess_image(data)


def test_faint_and_low_contrast_digits_are_not_blank(
    mnist_sample: tuple[np.ndarray, np.ndarray],
) -> None:
    """Blank means no stroke found, never "low contrast": what a person can read is kept.

    A small, blurry phone crop of a blue ballpoint 8 on grey paper (the ink ~119 grey
    levels from the paper) was refused as blank; so were faint pencil digits.
    """
    eight = mnist_sample[0][np.flatnonzero(mnist_sample[1] == 8)[0]]
    grey_paper, blue_pen = (150, 150, 155), (40, 45, 120)
    grainy = page(eight, size=60, scale=0.9, paper=grey_paper, ink=blue_pen, noise=25, light=0.3)
    shaded = page(eight, size=60, scale=0.8, paper=grey_paper, ink=blue_pen, noise=14, light=0.5)
    for data in [  # the first two were refused as blank ("only 96 / 82 grey levels")
        encode(grainy.filter(ImageFilter.GaussianBlur(1.2)), "JPEG", quality=80),
        encode(shaded, "JPEG", quality=80),
        encode(page(eight, paper=(200, 195, 185), ink=(170, 165, 160), noise=2.0)),
        encode(page(eight, paper=(235, 235, 235), ink=(205, 205, 205)), "JPEG"),
    ]:
        out = preprocess_image(data)
        check_mnist_style(out)
        assert similarity(out, eight) > 0.7


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is not an image", "not a readable image"),
        (b"\x89PNG\r\n\x1a\n", "could not be decoded|not a readable image"),
        (b"GIF89a" + b"\x00" * 10, "could not be decoded|not a readable image"),
    ],
)
def test_not_an_image(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImage, match=message):
        preprocess_image(data)


def test_truncated_and_corrupt_files(mnist_sample: tuple[np.ndarray, np.ndarray]) -> None:
    png = encode(page(mnist_sample[0][0]))
    jpeg = encode(page(mnist_sample[0][0]), "JPEG")
    corrupt = bytearray(png)
    corrupt[60:90] = b"\xff" * 30  # inside the compressed pixel data
    for data in (png[: len(png) // 2], jpeg[: len(jpeg) // 3], bytes(corrupt)):
        with pytest.raises(InvalidImage, match="PNG, JPEG"):
            preprocess_image(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x1cftypheic" + b"\x00" * 40,
        b"\x00\x00\x00\x1cftypavif" + b"\x00" * 40,
        b"%PDF-1.7\n",
        b'<svg xmlns="http://www.w3.org/2000/svg"/>',
        b"\x00\x00\x01\x00\x01\x00" + b"\x00" * 30,
    ],
)
def test_known_but_unsupported_formats_are_415(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType, match="PNG, JPEG, WebP"):
        preprocess_image(data)


def test_sniff_image_format(mnist_sample: tuple[np.ndarray, np.ndarray]) -> None:
    image = Image.fromarray(mnist_sample[0][0])
    for image_format, media_type in [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("WEBP", "image/webp"),
        ("BMP", "image/bmp"),
        ("GIF", "image/gif"),
        ("TIFF", "image/tiff"),
    ]:
        assert sniff_image_format(encode(image, image_format)) == media_type
    assert sniff_image_format(b"plain text") is None
    assert sniff_image_format(b"") is None


# --- client-supplied pixel arrays ------------------------------------------------------


def test_pixels_pass_unchanged(mnist_sample: tuple[np.ndarray, np.ndarray]) -> None:
    digit = mnist_sample[0][0]
    for given in (digit, digit.tolist(), digit.reshape(-1), digit.reshape(1, 28, 28) / 1.0):
        out = preprocess_pixels(given)
        assert out.shape == (28, 28) and out.dtype == np.float32
        assert np.array_equal(out, digit.astype(np.float32))


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((27, 28)), r"shape 28x28 .* got \(27, 28\)"),
        (np.zeros(783), "shape"),
        (np.zeros((28, 28, 3)), "shape"),
        (np.full((28, 28), np.nan), "finite"),
        (np.full((28, 28), np.inf), "finite"),
        (np.full((28, 28), -1.0), r"0\.\.255"),
        (np.full((28, 28), 256.0), r"0\.\.255"),
        ([[1, 2], [3]], "numeric array"),
        ([["a"] * 28] * 28, "numeric array"),
        ("not pixels", "numeric array|shape"),
    ],
)
def test_bad_pixel_arrays(pixels: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        preprocess_pixels(pixels)  # type: ignore[arg-type]


@pytest.mark.parametrize("radius", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_square_filter_is_scipys_grey_dilation_and_erosion(radius: int, dtype: type) -> None:
    from scipy import ndimage

    from service.preprocess.shape import square_filter

    rng = np.random.default_rng(radius)
    image: np.ndarray = (rng.random((37, 23)) * 255).astype(dtype)
    image[rng.random(image.shape) < 0.4] = 0
    size = (2 * radius + 1,) * 2
    dilated = square_filter(image, radius, np.maximum)
    eroded = square_filter(image, radius, np.minimum)
    assert np.array_equal(dilated, ndimage.grey_dilation(image, size=size))
    assert np.array_equal(eroded, ndimage.grey_erosion(image, size=size))
    assert dilated.dtype == image.dtype and not np.shares_memory(dilated, image)
