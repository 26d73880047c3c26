"""Batched, on-the-fly augmentation in torch for (B, 1, 28, 28) images in 0..1.

    from training.augment import AugmentConfig, augment
    x = augment(x, AugmentConfig(), generator)

Augmentations model what a digit looks like AFTER the service's preprocessing
(crop to ink, longer side scaled to 20 px, centred by centre of mass in 28x28):
different handwriting (rotation, shear, aspect, elastic wobble), imperfect
crops and centring (scale and shift), different pens and scanners (stroke
width, blur), lighting and thresholding (contrast, gamma, intensity) and sensor
noise. Geometry (affine + elastic) is one `grid_sample` call for the batch.

Every random draw goes through the caller's torch.Generator, so a seeded run
augments identically every time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch idiom)


@dataclass
class AugmentConfig:
    rotate_deg: float = 12.0  # uniform in +-rotate_deg
    scale: float = 0.12  # isotropic log-uniform in [1-scale, 1+scale]
    aspect: float = 0.1  # extra x-vs-y stretch, log-uniform +-aspect
    shear_deg: float = 10.0  # uniform in +-shear_deg
    translate_px: float = 2.0  # uniform in +-translate_px per axis (centring errors)
    elastic_p: float = 0.5  # share of images that also get an elastic distortion
    elastic_alpha: float = 30.0  # Simard et al. 2003 used alpha 34, sigma 4 (pixels)
    elastic_sigma: float = 4.0
    stroke_p: float = 0.4  # share of images whose stroke is thickened or thinned
    blur_p: float = 0.15  # share blurred with a gaussian of sigma in blur_sigma
    blur_sigma: tuple[float, float] = (0.3, 0.8)
    intensity_p: float = 0.3  # share with gain/gamma changes (faint pens, thresholding)
    noise_p: float = 0.2  # share with additive gaussian noise of std <= noise_std
    noise_std: float = 0.08
    # Writers MNIST lacks (measured on the real set): a felt marker leaves strokes
    # wider than one dilation makes, a soft pencil a grainy, broken line.
    marker_p: float = 0.05  # share thickened by a full 2 px (two dilations)
    grain_p: float = 0.05  # share with pencil grain: ink randomly thinned pixel by pixel

    def milder(self, factor: float) -> AugmentConfig:
        """Every range and probability times `factor` (0: identity, 1: unchanged)."""
        return replace(
            self,
            rotate_deg=self.rotate_deg * factor,
            scale=self.scale * factor,
            aspect=self.aspect * factor,
            shear_deg=self.shear_deg * factor,
            translate_px=self.translate_px * factor,
            elastic_p=self.elastic_p * factor,
            stroke_p=self.stroke_p * factor,
            blur_p=self.blur_p * factor,
            intensity_p=self.intensity_p * factor,
            noise_p=self.noise_p * factor,
            marker_p=self.marker_p * factor,
            grain_p=self.grain_p * factor,
        )

    @classmethod
    def identity(cls) -> AugmentConfig:
        """A config that changes nothing (tests, and "augmentation off")."""
        return cls(
            rotate_deg=0.0,
            scale=0.0,
            aspect=0.0,
            shear_deg=0.0,
            translate_px=0.0,
            elastic_p=0.0,
            elastic_alpha=0.0,
            stroke_p=0.0,
            blur_p=0.0,
            intensity_p=0.0,
            noise_p=0.0,
            noise_std=0.0,
            marker_p=0.0,
            grain_p=0.0,
        )


def _uniform(n: int, low: float, high: float, gen: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def _gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def _separable_blur(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Blur each (B, C, H, W) image with its own 1-D kernel (B, K), rows then columns."""
    b, c, h, w = x.shape
    k = kernels.shape[1]
    weight = kernels.repeat_interleave(c, dim=0)  # (B*C, K): one kernel per channel
    flat = x.reshape(1, b * c, h, w)
    flat = F.conv2d(flat, weight.view(b * c, 1, 1, k), padding=(0, k // 2), groups=b * c)
    flat = F.conv2d(flat, weight.view(b * c, 1, k, 1), padding=(k // 2, 0), groups=b * c)
    return flat.view(b, c, h, w)


def affine_matrices(config: AugmentConfig, n: int, gen: torch.Generator | None) -> torch.Tensor:
    """(n, 2, 3) `affine_grid` thetas mapping OUTPUT coords to INPUT coords in [-1, 1]."""
    angle = _uniform(n, -1, 1, gen) * math.radians(config.rotate_deg)
    shear = _uniform(n, -1, 1, gen) * math.radians(config.shear_deg)
    log_s = _uniform(n, -1, 1, gen) * math.log1p(config.scale)
    log_a = _uniform(n, -1, 1, gen) * math.log1p(config.aspect)
    sx, sy = torch.exp(log_s + log_a), torch.exp(log_s - log_a)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # forward map A = R @ Shear @ S; the grid needs its inverse (output -> input).
    a = torch.stack(
        [
            torch.stack([cos * sx, (cos * tan - sin) * sy], -1),
            torch.stack([sin * sx, (sin * tan + cos) * sy], -1),
        ],
        -2,
    )
    inv = torch.linalg.inv(a)
    shift = _uniform(2 * n, -1, 1, gen).view(n, 2) * config.translate_px * (2 / 28)
    t = -(inv @ shift.unsqueeze(-1))
    return torch.cat([inv, t], dim=-1)


def elastic_offsets(
    config: AugmentConfig, n: int, size: int, gen: torch.Generator | None
) -> torch.Tensor:
    """(n, H, W, 2) smooth random displacements in grid units (Simard et al. 2003)."""
    field = torch.rand(2 * n, 1, size, size, generator=gen) * 2 - 1
    radius = math.ceil(2 * config.elastic_sigma)
    k = _gaussian_kernel(config.elastic_sigma, radius)
    # One shared kernel, so a plain single-channel conv (grouped convs are slow on CPU).
    field = F.conv2d(field, k.view(1, 1, 1, -1), padding=(0, radius))
    field = F.conv2d(field, k.view(1, 1, -1, 1), padding=(radius, 0))
    field = field * (config.elastic_alpha * 2 / size)
    return field.view(n, 2, size, size).permute(0, 2, 3, 1)


def geometric(x: torch.Tensor, config: AugmentConfig, gen: torch.Generator | None) -> torch.Tensor:
    n, _, h, w = x.shape
    theta = affine_matrices(config, n, gen)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    if config.elastic_p > 0 and config.elastic_alpha > 0:
        use = (torch.rand(n, generator=gen) < config.elastic_p).view(n, 1, 1, 1)
        grid = grid + elastic_offsets(config, n, h, gen) * use
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 max filter as two separable 1-D maxima (max_pool2d with stride 1 is slow on CPU)."""
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def stroke_width(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """Thicken (dilate) or thin (erode) strokes by a random fraction of one pixel."""
    n = x.shape[0]
    dilated = _max3x3(x)
    eroded = -_max3x3(-x)
    # An interpolated amount gives continuous pen widths instead of +-1 px jumps;
    # erosion is weaker because thin MNIST strokes vanish under a full erosion.
    amount = torch.rand(n, generator=gen).view(n, 1, 1, 1)
    thicken = (torch.rand(n, generator=gen) < 0.6).view(n, 1, 1, 1)
    target = torch.where(thicken, dilated, x + (eroded - x) * 0.6)
    use = (torch.rand(n, generator=gen) < p).view(n, 1, 1, 1)
    return torch.where(use, x + (target - x) * amount, x)


def marker(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """A felt marker: strokes thickened by two full dilations (about 2 px wider)."""
    n = x.shape[0]
    use = (torch.rand(n, generator=gen) < p).view(n, 1, 1, 1)
    return torch.where(use, _max3x3(_max3x3(x)), x)


def grain(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    """Soft pencil: each ink pixel keeps a random 40-100% of its value (a grainy line)."""
    n = x.shape[0]
    keep = 0.4 + 0.6 * torch.rand(x.shape, generator=gen)
    use = (torch.rand(n, generator=gen) < p).view(n, 1, 1, 1)
    return torch.where(use, x * keep, x)


def blur(x: torch.Tensor, config: AugmentConfig, gen: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    lo, hi = config.blur_sigma
    sigma = _uniform(n, lo, hi, gen).view(n, 1)
    offsets = torch.arange(-2, 3, dtype=torch.float32).view(1, 5)
    kernels = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernels = kernels / kernels.sum(dim=1, keepdim=True)
    use = (torch.rand(n, generator=gen) < config.blur_p).view(n, 1, 1, 1)
    return torch.where(use, _separable_blur(x, kernels), x)


def intensity(x: torch.Tensor, config: AugmentConfig, gen: torch.Generator | None) -> torch.Tensor:
    """Gamma and gain: faint or saturated ink as left by thresholds and normalisation."""
    n = x.shape[0]
    gamma = torch.exp(_uniform(n, -0.5, 0.5, gen)).view(n, 1, 1, 1)
    gain = _uniform(n, 0.7, 1.4, gen).view(n, 1, 1, 1)
    changed = (x.clamp(min=0) ** gamma * gain).clamp(0, 1)
    use = (torch.rand(n, generator=gen) < config.intensity_p).view(n, 1, 1, 1)
    return torch.where(use, changed, x)


def noise(x: torch.Tensor, config: AugmentConfig, gen: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    std = _uniform(n, 0, config.noise_std, gen).view(n, 1, 1, 1)
    use = (torch.rand(n, generator=gen) < config.noise_p).view(n, 1, 1, 1)
    return torch.where(use, x + torch.randn(x.shape, generator=gen) * std, x)


@torch.no_grad()
def augment(
    x: torch.Tensor, config: AugmentConfig, gen: torch.Generator | None = None
) -> torch.Tensor:
    """Augmented copy of `x` (B, 1, 28, 28) in 0..1; same shape, values kept in 0..1."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected (B, 1, H, W), got {tuple(x.shape)}")
    if config.stroke_p > 0:
        x = stroke_width(x, config.stroke_p, gen)
    if config.marker_p > 0:
        x = marker(x, config.marker_p, gen)
    x = geometric(x, config, gen)
    if config.grain_p > 0:
        x = grain(x, config.grain_p, gen)
    if config.blur_p > 0:
        x = blur(x, config, gen)
    if config.intensity_p > 0:
        x = intensity(x, config, gen)
    if config.noise_p > 0:
        x = noise(x, config, gen)
    return x.clamp(0.0, 1.0)
