"""Synthetic strokes for the writers MNIST lacks, drawn on batches in torch.

    from training.strokes import StyleConfig, writer_styles
    x = writer_styles(x, labels, StyleConfig(), generator)   # before `augment`

MNIST's digits were written by American census staff and students. People
elsewhere write a 1 with a flag (an upstroke from the top, often with a foot),
cross their 7s, and many draw a 4 with an open top and a long stem; the model
read such digits as 7, 9 or 2. Rather than collect new data we add the missing
strokes to MNIST's own 1s and 7s (so each keeps its writer's slant and size)
and replace a few 4s by open-topped ones drawn from strokes. The geometric
augmentation that runs afterwards then bends the new strokes like the old ones.

Strokes are anti-aliased segments drawn with a distance field, all images of a
batch at once; labels never change (a crossed 7 is still a 7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SIZE = 28
_GRID_Y, _GRID_X = torch.meshgrid(
    torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij"
)


@dataclass
class StyleConfig:
    one_flag_p: float = 0.3  # share of 1s given a flag (European 1)
    one_foot_p: float = 0.3  # of those, share that also get a foot (a serif at the base)
    seven_bar_p: float = 0.3  # share of 7s given a crossbar
    open_four_p: float = 0.15  # share of 4s replaced by an open-topped, long-stemmed 4

    @classmethod
    def off(cls) -> StyleConfig:
        return cls(0.0, 0.0, 0.0, 0.0)


def segments(
    starts: torch.Tensor, ends: torch.Tensor, radius: torch.Tensor, size: int = SIZE
) -> torch.Tensor:
    """(B, 1, size, size) ink of one anti-aliased segment per image, 0..1.

    `starts` and `ends` are (B, 2) pixel coordinates (x, y), `radius` (B,) half widths.
    Ink fades linearly over one pixel at the edge, like a scanned pen stroke.
    """
    grid_y, grid_x = (_GRID_Y, _GRID_X) if size == SIZE else _grid(size)
    ax, ay = starts[:, 0].view(-1, 1, 1), starts[:, 1].view(-1, 1, 1)
    dx, dy = (ends - starts)[:, 0].view(-1, 1, 1), (ends - starts)[:, 1].view(-1, 1, 1)
    length2 = (dx * dx + dy * dy).clamp(min=1e-6)
    t = (((grid_x - ax) * dx + (grid_y - ay) * dy) / length2).clamp(0.0, 1.0)
    distance = torch.hypot(grid_x - (ax + t * dx), grid_y - (ay + t * dy))
    ink = (radius.view(-1, 1, 1) + 0.5 - distance).clamp(0.0, 1.0)
    return ink.unsqueeze(1)


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    axis = torch.arange(size, dtype=torch.float32)
    grid_y, grid_x = torch.meshgrid(axis, axis, indexing="ij")
    return grid_y, grid_x


def _uniform(n: int, low: float, high: float, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def _ink_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(top, bottom) row of each image's ink (B,), as floats."""
    rows = (x.squeeze(1) > 0.5).any(dim=2).float()
    index = torch.arange(SIZE, dtype=torch.float32)
    top = torch.where(rows > 0, index, torch.full_like(rows, SIZE)).amin(dim=1)
    bottom = torch.where(rows > 0, index, torch.full_like(rows, -1)).amax(dim=1)
    return top, bottom


def _ink_x(x: torch.Tensor, row: torch.Tensor, half: int = 1) -> torch.Tensor:
    """Ink-weighted mean column of each image in rows row-half..row+half (B,)."""
    index = torch.arange(SIZE, dtype=torch.float32)
    band = ((index.view(1, -1) - row.view(-1, 1)).abs() <= half).float()  # (B, H)
    mass = x.squeeze(1) * band.unsqueeze(2)  # (B, H, W)
    per_column = mass.sum(dim=1)  # (B, W)
    total = per_column.sum(dim=1).clamp(min=1e-6)
    return (per_column @ index) / total


def flag_ones(x: torch.Tensor, gen: torch.Generator | None, foot_p: float) -> torch.Tensor:
    """1s -> European 1s: an upstroke from the top going down-left, sometimes a foot."""
    n = x.shape[0]
    top, bottom = _ink_rows(x)
    top_x = _ink_x(x, top + 1)
    height = (bottom - top).clamp(min=8.0)
    length = height * _uniform(n, 0.2, 0.4, gen)
    angle = _uniform(n, math.radians(25), math.radians(60), gen)  # below the horizontal
    start = torch.stack([top_x, top + 0.5], dim=1)
    end = torch.stack([top_x - length * torch.cos(angle), top + length * torch.sin(angle)], 1)
    radius = _uniform(n, 0.7, 1.3, gen)
    out = torch.maximum(x, segments(start, end, radius))
    bottom_x = _ink_x(x, bottom - 1)
    half = height * _uniform(n, 0.15, 0.25, gen)
    foot = segments(
        torch.stack([bottom_x - half, bottom - 0.5], 1),
        torch.stack([bottom_x + half, bottom - 0.5], 1),
        radius,
    )
    with_foot = (torch.rand(n, generator=gen) < foot_p).view(n, 1, 1, 1)
    return torch.where(with_foot, torch.maximum(out, foot), out)


def cross_sevens(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """7s -> crossed 7s: a short bar across the stem a little below mid-height."""
    n = x.shape[0]
    top, bottom = _ink_rows(x)
    row = top + (bottom - top) * _uniform(n, 0.45, 0.6, gen)
    centre = _ink_x(x, row.round())
    half = _uniform(n, 2.5, 4.5, gen)
    tilt = _uniform(n, -0.15, 0.15, gen) * half
    start = torch.stack([centre - half, row + tilt], dim=1)
    end = torch.stack([centre + half, row - tilt], dim=1)
    return torch.maximum(x, segments(start, end, _uniform(n, 0.7, 1.3, gen)))


def open_fours(n: int, gen: torch.Generator | None) -> torch.Tensor:
    """n open-topped 4s drawn from three strokes: arm, crossbar, long stem (0..1 ink)."""
    top = _uniform(n, 4.0, 7.0, gen)
    bottom = _uniform(n, 22.0, 24.5, gen)
    cross = top + (bottom - top) * _uniform(n, 0.45, 0.65, gen)
    arm_top = torch.stack([_uniform(n, 8.0, 12.0, gen), top + _uniform(n, 0.0, 2.5, gen)], 1)
    arm_end = torch.stack([_uniform(n, 5.0, 9.0, gen), cross], 1)
    bar_end = torch.stack([_uniform(n, 18.0, 22.0, gen), cross + _uniform(n, -1.0, 1.0, gen)], 1)
    stem_x = _uniform(n, 14.0, 17.0, gen)
    stem_top = torch.stack([stem_x + _uniform(n, 0.0, 1.5, gen), top - _uniform(n, 0, 2, gen)], 1)
    stem_end = torch.stack([stem_x - _uniform(n, 0.0, 1.5, gen), bottom], 1)
    radius = _uniform(n, 0.7, 1.4, gen)
    ink = segments(arm_top, arm_end, radius)
    ink = torch.maximum(ink, segments(arm_end, bar_end, radius))
    return torch.maximum(ink, segments(stem_top, stem_end, radius))


@torch.no_grad()
def writer_styles(
    x: torch.Tensor, labels: torch.Tensor, config: StyleConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Copy of `x` (B, 1, 28, 28) in 0..1 with some 1s flagged, 7s crossed and 4s opened."""
    n = x.shape[0]
    draw = torch.rand(3, n, generator=gen)
    out = x.clone()
    for label, p, index in ((1, config.one_flag_p, 0), (7, config.seven_bar_p, 1)):
        chosen = torch.nonzero((labels == label) & (draw[index] < p)).flatten()
        if p > 0 and chosen.numel():
            if label == 1:
                out[chosen] = flag_ones(out[chosen], gen, config.one_foot_p)
            else:
                out[chosen] = cross_sevens(out[chosen], gen)
    chosen = torch.nonzero((labels == 4) & (draw[2] < config.open_four_p)).flatten()
    if config.open_four_p > 0 and chosen.numel():
        out[chosen] = open_fours(chosen.numel(), gen)
    return out
