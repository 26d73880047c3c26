"""Fuzzing: hostile or damaged image bytes may only ever raise our typed errors.

Mutated PNG/JPEG/GIF/TIFF files (flipped bytes, cut files, spliced garbage, lying
headers) must end as a 28x28 field or as a `ServiceError` (a clear 4xx), never
as a stray Pillow/numpy exception (a 500) and never as a long stall. The
hypothesis deadline bounds the time per input.
"""

from __future__ import annotations

import io
import struct
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from service.errors import ServiceError
from service.preprocess import preprocess_image


def _seed_files() -> list[bytes]:
    """Small valid uploads of every shape the mutations start from."""
    yy, xx = np.mgrid[0:64, 0:48]
    ring = np.abs(np.hypot(yy - 32, xx - 24) - 14) < 3  # a drawn "0"
    dark = np.where(ring, 20, 235).astype(np.uint8)
    rgba = np.zeros((64, 48, 4), np.uint8)
    rgba[..., 3] = ring * 255
    files = []
    for image, image_format in [
        (Image.fromarray(dark), "PNG"),
        (Image.fromarray(dark), "JPEG"),
        (Image.fromarray(rgba), "PNG"),
        (Image.fromarray(dark).convert("P"), "GIF"),
        (Image.fromarray(dark), "TIFF"),
        (Image.fromarray(dark), "WEBP"),
    ]:
        buffer = io.BytesIO()
        image.save(buffer, format=image_format)
        files.append(buffer.getvalue())
    return files


SEEDS = _seed_files()
# A limit far below the default keeps lying headers from allocating much during
# the fuzz run; the decompression-bomb path itself is tested in test_preprocess.
MAX_PIXELS = 2_000_000


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "cut", "splice", "header", "dimensions"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[position:]
        elif action == "splice":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif action == "header" and data:
            end = min(len(data), 64)
            spot = draw(st.integers(0, end - 1))
            data[spot] = draw(st.integers(0, 255))
        elif action == "dimensions" and data.startswith(b"\x89PNG") and len(data) > 24:
            width, height = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
            data[16:24] = struct.pack(">II", width, height)  # the IHDR size fields
    return bytes(data)


def _check(data: bytes) -> None:
    try:
        out = preprocess_image(data, max_pixels=MAX_PIXELS)
    except ServiceError as error:
        assert 400 <= error.status_code < 500
        assert error.message
        return
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 255.0


@settings(
    max_examples=300,
    deadline=timedelta(seconds=2),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(mutated_files())
def test_mutated_images_only_raise_service_errors(data: bytes) -> None:
    _check(data)


@settings(max_examples=200, deadline=timedelta(seconds=1), derandomize=True)
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_service_errors(data: bytes) -> None:
    _check(data)


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_seed_files_are_valid(seed: int) -> None:
    assert preprocess_image(SEEDS[seed]).shape == (28, 28)
