"""Image quality metrics for evaluation: PSNR and SSIM on float RGB in [0, 1].

* :func:`psnr` -- 10 log10(1 / MSE) over all pixels and channels of each image;
* :func:`ssim` -- the standard SSIM of Wang et al. (2004), as scikit-image computes it
  (``skimage.metrics.structural_similarity``: an 11x11 Gaussian window with sigma 1.5,
  population covariances, K1 = 0.01, K2 = 0.03, data range 1, averaged over the pixels
  away from the border -- the reference MATLAB ``ssim_index`` protocol -- then over the
  RGB channels).

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

__all__ = ["psnr", "ssim"]

#: side of the SSIM window (sigma 1.5, truncated at 3.5 sigma, as scikit-image does)
SSIM_WINDOW = 11


def _4d(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 3 else x


def psnr(pred: torch.Tensor, target: torch.Tensor, max_db: float = 100.0,
         weight: torch.Tensor | None = None, clamp: bool = True) -> torch.Tensor:
    """PSNR in dB per image (capped at ``max_db`` for identical images), peak 1; ``pred``
    is clamped to [0, 1] (``clamp=False``: as it is, e.g. for frame differences);
    ``weight`` (B, 1, H, W): the squared errors' weights per pixel (e.g. a 0/1 mask of the
    pixels that count).

    >>> w = torch.zeros(1, 1, 4, 4); w[..., :2, :] = 1
    >>> round(float(psnr(torch.full((1, 3, 4, 4), 0.1), torch.zeros(1, 3, 4, 4), weight=w)), 3)
    20.0
    """
    pred, target = _4d(pred).double(), _4d(target).double()
    pred = pred.clamp(0, 1) if clamp else pred
    if weight is None:
        mse = ((pred - target) ** 2).flatten(1).mean(1)
    else:
        w = _4d(weight).double().expand_as(pred)
        mse = (((pred - target) ** 2) * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-12)
    return (10 * torch.log10(1.0 / mse.clamp_min(10 ** (-max_db / 10)))).float()


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image (scikit-image's, with the Wang et al. settings above)."""
    from skimage.metrics import structural_similarity  # only the evaluation needs scikit-image

    x = _4d(pred).detach().double().clamp(0, 1).cpu().numpy()
    y = _4d(target).detach().double().cpu().numpy()
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"ssim: images of {x.shape[-2:]} are smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} window")
    return torch.tensor([structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                               data_range=1.0, channel_axis=0) for a, b in zip(x, y)],
                        dtype=torch.float32)
