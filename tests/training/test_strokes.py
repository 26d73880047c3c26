"""training.strokes: the strokes MNIST's writers left out land where they belong, on the
right digits only, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.strokes import (
    StyleConfig,
    cross_sevens,
    flag_ones,
    open_fours,
    segments,
    writer_styles,
)
from training.train import to_tensor


@pytest.fixture(scope="module")
def digits(sample: tuple[np.ndarray, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = sample
    return to_tensor(images[:300]), torch.from_numpy(labels[:300].astype(np.int64))


def of(digits: tuple[torch.Tensor, torch.Tensor], label: int) -> torch.Tensor:
    images, labels = digits
    return images[labels == label]


def test_segments_are_antialiased_lines() -> None:
    ink = segments(torch.tensor([[4.0, 14.0]]), torch.tensor([[24.0, 14.0]]), torch.tensor([1.0]))
    assert ink.shape == (1, 1, 28, 28)
    assert float(ink[0, 0, 14, 4:25].min()) == 1.0  # solid along the line
    assert float(ink[0, 0, 14, 26]) == 0.0 and float(ink[0, 0, 20, 14]) == 0.0
    edge = float(ink[0, 0, 15, 14]) + float(ink[0, 0, 16, 14])
    assert 0.0 < edge < 2.0  # soft edge, not a hard staircase


def test_flags_go_up_left_of_a_ones_top(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    ones = of(digits, 1)
    flagged = flag_ones(ones, torch.Generator().manual_seed(0), foot_p=0.0)
    added = (flagged - ones).clamp(min=0).squeeze(1)
    assert torch.equal(flagged, torch.maximum(flagged, ones))  # only adds ink
    visible = 0
    for before, new in zip(ones.squeeze(1), added, strict=True):
        rows = torch.nonzero(before > 0.5)[:, 0]
        top, bottom = int(rows.min()), int(rows.max())
        ys, xs = torch.nonzero(new > 0.5, as_tuple=True)
        if ys.numel() == 0:  # a 1 slanted like the flag hides it in its own stroke
            continue
        visible += 1
        assert int(ys.max()) <= top + (bottom - top) * 0.5  # in the upper half
        top_x = float(torch.nonzero(before[top : top + 3] > 0.5)[:, 1].float().mean())
        assert float(xs.float().mean()) < top_x  # to the left of the stroke's top
    assert visible >= 0.8 * len(ones)


def test_crossbars_cross_the_sevens_stem(digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    sevens = of(digits, 7)
    crossed = cross_sevens(sevens, torch.Generator().manual_seed(0))
    added = (crossed - sevens).clamp(min=0).squeeze(1)
    visible = 0
    for before, new in zip(sevens.squeeze(1), added, strict=True):
        rows = torch.nonzero(before > 0.5)[:, 0]
        ys, _ = torch.nonzero(new > 0.5, as_tuple=True)
        if ys.numel() == 0:  # MNIST has a few crossed 7s already: the bar lands on theirs
            continue
        visible += 1
        middle = (float(rows.min()) + float(rows.max())) / 2
        assert abs(float(ys.float().mean()) - middle) < 0.3 * float(rows.max() - rows.min()) + 2
    assert visible >= 0.8 * len(sevens)


def test_open_fours_are_open_at_the_top() -> None:
    fours = open_fours(64, torch.Generator().manual_seed(0)).squeeze(1)
    assert fours.shape == (64, 28, 28) and float(fours.max()) == 1.0
    for four in fours:
        rows = torch.nonzero(four.any(dim=1)).flatten()
        top_row = four[int(rows.min()) + 1] > 0.5
        runs = int((top_row[1:] & ~top_row[:-1]).sum()) + int(top_row[0])
        assert runs == 2 or int(top_row.sum()) <= 3  # arm and stem apart, or one tip showing


def test_writer_styles_touch_only_ones_sevens_and_fours(
    digits: tuple[torch.Tensor, torch.Tensor],
) -> None:
    images, labels = digits
    every = StyleConfig(one_flag_p=1.0, one_foot_p=0.5, seven_bar_p=1.0, open_four_p=1.0)
    out = writer_styles(images, labels, every, torch.Generator().manual_seed(1))
    changed = (out - images).abs().flatten(1).amax(dim=1) > 0
    styled = (labels == 1) | (labels == 7) | (labels == 4)
    assert torch.equal(changed, styled)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    again = writer_styles(images, labels, every, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)  # seeded: the same strokes every run
    off = writer_styles(images, labels, StyleConfig.off(), torch.Generator().manual_seed(1))
    assert torch.equal(off, images)
