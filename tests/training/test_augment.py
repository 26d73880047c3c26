"""training.augment: shapes, ranges, determinism, identity, and that digits stay digits."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.augment import AugmentConfig, affine_matrices, augment, grain, marker, stroke_width
from training.train import to_tensor


@pytest.fixture(scope="module")
def digits(sample: tuple[np.ndarray, np.ndarray]) -> torch.Tensor:
    return to_tensor(sample[0][:64])


def _centre_of_mass(x: torch.Tensor) -> torch.Tensor:
    grid = torch.arange(28, dtype=torch.float32)
    mass = x.sum(dim=(1, 2, 3))
    cy = (x.sum(dim=3).squeeze(1) @ grid) / mass
    cx = (x.sum(dim=2).squeeze(1) @ grid) / mass
    return torch.stack([cy, cx], dim=1)


def test_identity_config_changes_nothing(digits: torch.Tensor) -> None:
    out = augment(digits, AugmentConfig.identity(), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, digits, atol=1e-5, rtol=0)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 33), seed=st.integers(0, 2**31 - 1))
def test_default_config_keeps_shape_dtype_and_range(batch: int, seed: int) -> None:
    x = torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    out = augment(x, AugmentConfig(), torch.Generator().manual_seed(seed))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.isfinite(out).all()


def test_same_seed_same_result_different_seed_different(digits: torch.Tensor) -> None:
    a = augment(digits, AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment(digits, AugmentConfig(), torch.Generator().manual_seed(1))
    c = augment(digits, AugmentConfig(), torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)


def test_digits_stay_centred_and_visible(digits: torch.Tensor) -> None:
    """Label semantics, geometrically: the digit is moved a little, never lost or pushed out.

    The felt-marker augmentation (two dilations) may quadruple a thin 1's ink on
    purpose; it is measured with its own bound, the rest with the original one.
    """
    without_marker = replace(AugmentConfig(), marker_p=0.0)
    out = augment(digits, without_marker, torch.Generator().manual_seed(3))
    shift = (_centre_of_mass(out) - _centre_of_mass(digits)).abs()
    assert float(shift.max()) < 5.0  # translate_px=2 plus scale/rotation about the centre
    ink_ratio = out.sum(dim=(1, 2, 3)) / digits.sum(dim=(1, 2, 3))
    assert float(ink_ratio.min()) > 0.3 and float(ink_ratio.max()) < 3.0
    with_marker = augment(digits, AugmentConfig(marker_p=1.0), torch.Generator().manual_seed(3))
    marker_ratio = with_marker.sum(dim=(1, 2, 3)) / digits.sum(dim=(1, 2, 3))
    assert float(marker_ratio.min()) > 1.0 and float(marker_ratio.max()) < 6.0
    shift = (_centre_of_mass(with_marker) - _centre_of_mass(digits)).abs()
    assert float(shift.max()) < 5.0


def test_affine_bounds_follow_config() -> None:
    config = AugmentConfig(rotate_deg=10.0, scale=0.0, aspect=0.0, shear_deg=0.0, translate_px=0.0)
    theta = affine_matrices(config, 500, torch.Generator().manual_seed(0))
    angles = torch.atan2(theta[:, 1, 0], theta[:, 0, 0]).abs()
    assert float(angles.max()) <= math.radians(10.0) + 1e-6
    assert float(angles.max()) > math.radians(8.0)  # the range is used, not just zero
    torch.testing.assert_close(theta[:, :, 2], torch.zeros(500, 2))  # no translation asked
    dets = torch.linalg.det(theta[:, :, :2])
    torch.testing.assert_close(dets, torch.ones(500))  # pure rotation keeps area


def test_stroke_width_thickens_or_thins(digits: torch.Tensor) -> None:
    out = stroke_width(digits, p=1.0, gen=torch.Generator().manual_seed(0))
    ink_change = out.sum(dim=(1, 2, 3)) - digits.sum(dim=(1, 2, 3))
    assert (ink_change > 1.0).any() and (ink_change < -1.0).any()
    untouched = stroke_width(digits, p=0.0, gen=torch.Generator().manual_seed(0))
    torch.testing.assert_close(untouched, digits)


def test_rejects_wrong_layout() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        augment(torch.zeros(4, 784), AugmentConfig())


def test_marker_thickens_by_two_pixels(digits: torch.Tensor) -> None:
    out = marker(digits, p=1.0, gen=torch.Generator().manual_seed(0))
    assert torch.equal(torch.maximum(out, digits), out)  # only adds ink
    # the stroke's edge moves out two pixels: ink reaches rows two beyond the digit's box
    rows_before = (digits > 0.5).any(dim=3).sum(dim=(1, 2))
    rows_after = (out > 0.5).any(dim=3).sum(dim=(1, 2))
    grown = (rows_after - rows_before).float()
    assert float(grown.min()) >= 2.0 and float(grown.mean()) >= 3.0  # up to 2 px each side
    assert torch.equal(marker(digits, p=0.0, gen=torch.Generator().manual_seed(0)), digits)


def test_grain_thins_ink_but_keeps_the_strokes(digits: torch.Tensor) -> None:
    out = grain(digits, p=1.0, gen=torch.Generator().manual_seed(0))
    assert bool((out <= digits).all())
    assert torch.equal(out > 0, digits > 0)  # every stroke pixel keeps some ink
    ratio = out.sum() / digits.sum()
    assert 0.6 < float(ratio) < 0.8  # 40-100% kept: about 70% on average
