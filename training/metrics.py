"""Image quality metrics for evaluation: PSNR and SSIM on float RGB in [0, 1].

* :func:`psnr` -- 10 log10(1 / MSE) over all pixels and channels of each image;
* :func:`ssim` -- the standard SSIM of Wang et al. (2004): an 11x11 Gaussian window
  with sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, computed per RGB channel over the
  *valid* part of the image (no padding, as the reference MATLAB ``ssim_index`` and
  ``skimage.metrics.structural_similarity(gaussian_weights=True,
  use_sample_covariance=False)``), averaged over pixels and then over the channels.

Both take (B, C, H, W) or (C, H, W) tensors and return one value per image (a tensor
of shape (B,)); the prediction is clamped to [0, 1] first.

>>> x = torch.rand(1, 3, 32, 32)
>>> float(ssim(x, x))
1.0
>>> round(float(psnr(torch.full((3, 4, 4), 0.1), torch.zeros(3, 4, 4))), 3)
20.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "gaussian_window"]


def _4d(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 3 else x


def psnr(pred: torch.Tensor, target: torch.Tensor, max_db: float = 100.0) -> torch.Tensor:
    """PSNR in dB per image (capped at ``max_db`` for identical images)."""
    pred, target = _4d(pred).double().clamp(0, 1), _4d(target).double()
    mse = ((pred - target) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(10 ** (-max_db / 10)))).float()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The normalised 1-D Gaussian of the SSIM window (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid-mode Gaussian filtering of every channel."""
    c = x.shape[1]
    kx = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    ky = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    return F.conv2d(F.conv2d(x, kx, groups=c), ky, groups=c)


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per image (averaged over the valid pixels, then over channels)."""
    x, y = _4d(pred).double().clamp(0, 1), _4d(target).double()
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim: images of {tuple(x.shape[-2:])} are smaller than the {window}x{window} window")
    g = gaussian_window(window, sigma).to(x.device)
    c1, c2 = k1**2, k2**2
    mx, my = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mx * mx
    syy = _filter(y * y, g) - my * my
    sxy = _filter(x * y, g) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.flatten(2).mean(2).mean(1).float()
