"""M_S: ESPCN-style x2 super-resolution (Shi et al., CVPR 2016) with a bicubic skip."""

from __future__ import annotations

import torch
from torch import nn

from .common import Conv2d, bicubic_up2, check_padding, conv

__all__ = ["ESPCN"]


class ESPCN(nn.Module):
    """Sub-pixel convolution x2 upsampler.

    All convolutions run at low resolution; a pixel shuffle produces the high-resolution
    residual that is added to a bicubic upscale of the input, so an untrained network
    starts as bicubic. ``padding``: how its convolutions pad the frame's edges
    (:data:`~vsdsfn.nets.common.PADDINGS`).

    >>> net = ESPCN(channels=16, layers=2)
    >>> net(torch.rand(1, 3, 8, 10)).shape
    torch.Size([1, 3, 16, 20])
    """

    scale = 2

    def __init__(self, channels: int = 48, layers: int = 4, padding: str = "zeros") -> None:
        super().__init__()
        check_padding("ESPCN", padding)
        body = [conv(3, channels, 5, padding_mode=padding)]
        body += [conv(channels, channels, padding_mode=padding) for _ in range(layers - 1)]
        self.body = nn.Sequential(*body)
        self.tail = Conv2d(channels, 3 * self.scale**2, 3, padding=1, padding_mode=padding)
        self.shuffle = nn.PixelShuffle(self.scale)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def context(self) -> int:
        """Input pixels on each side of a pixel that its output depends on: the reach of
        the stride-1 convolutions in sequence, or bicubic's 2 if larger.

        >>> ESPCN(channels=8, layers=6).context()     # 5x5, five 3x3, the 3x3 tail: 2 + 5 + 1
        8
        """
        reach = sum(m.kernel_size[0] // 2 for m in self.modules() if isinstance(m, nn.Conv2d))
        return max(reach, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_up2(x) + self.shuffle(self.tail(self.body(x)))
