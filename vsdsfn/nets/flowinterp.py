"""M_T: a compact coarse-to-fine bidirectional-flow frame interpolator.

Each pyramid level estimates (a residual of) the two flows from the middle frame to its
neighbours, F_t0 and F_t1, and a blending logit; the middle frame is the mask-weighted
blend of both neighbours backward-warped to time t (as in SuperSloMo, the paper's M_T,
and RIFE's IFNet). Any input size works: levels resize to explicit sizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import backwarp, conv, resize_flow

__all__ = ["FlowInterp"]


class _FlowBlock(nn.Module):
    """One pyramid level: works at 1/(4*scale) of the input and returns full-size outputs."""

    def __init__(self, cin: int, channels: int, depth: int) -> None:
        super().__init__()
        self.down = nn.Sequential(conv(cin, channels // 2, 3, 2), conv(channels // 2, channels, 3, 2))
        self.body = nn.Sequential(*[conv(channels, channels) for _ in range(depth)])
        self.up = nn.ConvTranspose2d(channels, 5, 4, 2, 1)

    def forward(self, x: torch.Tensor, flow: torch.Tensor | None, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        size = (max(1, h // scale), max(1, w // scale))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        if flow is not None:
            x = torch.cat((x, resize_flow(flow, size)), 1)
        feat = self.down(x)
        feat = self.body(feat) + feat
        out = self.up(feat)
        flow_out = resize_flow(out[:, :4], (h, w))
        mask = F.interpolate(out[:, 4:5], size=(h, w), mode="bilinear", align_corners=False)
        return flow_out, mask


class FlowInterp(nn.Module):
    """Synthesises the frame halfway between ``i0`` and ``i1`` (B, 3, H, W) in [0, 1].

    >>> net = FlowInterp(channels=(16, 16), scales=(2, 1), depth=1)
    >>> a, b = torch.rand(2, 1, 3, 20, 12)
    >>> net(a, b).shape
    torch.Size([1, 3, 20, 12])
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (96, 64, 48),
        scales: tuple[int, ...] = (4, 2, 1),
        depth: int = 6,
    ) -> None:
        super().__init__()
        if len(channels) != len(scales):
            raise ValueError("FlowInterp: channels and scales need one entry per level")
        self.scales = tuple(int(s) for s in scales)
        self.blocks = nn.ModuleList(
            _FlowBlock(6 if i == 0 else 17, c, depth) for i, c in enumerate(channels)
        )

    def forward(self, i0: torch.Tensor, i1: torch.Tensor, return_flow: bool = False, return_warps: bool = False):
        """As :meth:`CostFlow.forward <vsdsfn.nets.costflow.CostFlow.forward>` (without ``scale``)."""
        if return_flow and return_warps:
            raise ValueError("FlowInterp: return_flow and return_warps are exclusive")
        flow = mask = None
        w0, w1 = i0, i1
        for block, scale in zip(self.blocks, self.scales):
            if flow is None:
                flow, mask = block(torch.cat((i0, i1), 1), None, scale)
            else:
                dflow, dmask = block(torch.cat((i0, i1, w0, w1, mask), 1), flow, scale)
                flow, mask = flow + dflow, mask + dmask
            w0 = backwarp(i0, flow[:, :2])
            w1 = backwarp(i1, flow[:, 2:])
        m = torch.sigmoid(mask)
        out = m * w0 + (1 - m) * w1
        if return_flow:
            return out, flow, m
        if return_warps:
            return out, w0, w1
        return out
