"""M_T: a cost-volume, coarse-to-fine bilateral-flow frame interpolator.

A shared encoder builds a feature pyramid (1/2 ... 1/2^L) of both frames. From the
coarsest level up, the current flows F_t0, F_t1 (middle frame -> neighbours) warp the
neighbours' features towards time t, and a *bilateral* cost volume compares them:
for each displacement ``d`` in a (2r+1)^2 window, ``<f0(x - d), f1(x + d)>``, i.e. the
symmetric-motion matching that block-matching interpolators (mvtools) do, but on
learned features. Its soft-argmax gives a parameter-free flow candidate; a small
decoder turns cost, features, candidate and current estimate into a flow update and a
blending logit. Explicit matching makes large motion learnable from little training,
which is where the regression-only :class:`~vsdsfn.nets.flowinterp.FlowInterp` is weak.

The middle frame is the mask-weighted blend of both neighbours backward-warped at full
resolution by the finest flows, upsampled (as SuperSloMo, the paper's M_T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import backwarp, conv, resize_flow

__all__ = ["CostFlow", "bilateral_cost"]


def _shifts(radius: int):
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]


#: CPU only: rows of the output computed together, few enough that a block's products
#: stay in the cache (the loop over whole frames was memory-bound, ~2x slower at 1080p);
#: on GPUs the whole frame is one block (fewer kernel launches)
_BLOCK_BYTES = 1 << 20


def _cost_forward(p0: torch.Tensor, p1: torch.Tensor, r: int, h: int, w: int) -> torch.Tensor:
    b, c = p0.shape[:2]
    shifts = _shifts(r)
    out = p0.new_empty(b, len(shifts), h, w)
    rows = h
    if p0.device.type == "cpu":
        rows = max(1, min(h, _BLOCK_BYTES // max(1, b * c * w * p0.element_size())))
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        for k, (dy, dx) in enumerate(shifts):
            a = p0[:, :, r - dy + y0: r - dy + y1, r - dx: r - dx + w]
            bb = p1[:, :, r + dy + y0: r + dy + y1, r + dx: r + dx + w]
            out[:, k, y0:y1].copy_((a * bb).sum(1))
    return out.div_(c)


class _BilateralCost(torch.autograd.Function):
    """Same values as the plain loop; the backward accumulates into two padded buffers in
    place instead of autograd's one zero-filled full-size tensor per slice (~2x faster)."""

    @staticmethod
    def forward(ctx, f0, f1, r):
        h, w = f0.shape[-2:]
        p0 = F.pad(f0, (r, r, r, r))
        p1 = F.pad(f1, (r, r, r, r))
        ctx.save_for_backward(p0, p1)
        ctx.r = r
        return _cost_forward(p0, p1, r, h, w)

    @staticmethod
    def backward(ctx, grad):
        p0, p1 = ctx.saved_tensors
        r = ctx.r
        h, w = p0.shape[-2] - 2 * r, p0.shape[-1] - 2 * r
        grad = grad / p0.shape[1]
        g0 = torch.zeros_like(p0)
        g1 = torch.zeros_like(p1)
        for k, (dy, dx) in enumerate(_shifts(r)):
            g = grad[:, k:k + 1]
            sa = (slice(None), slice(None), slice(r - dy, r - dy + h), slice(r - dx, r - dx + w))
            sb = (slice(None), slice(None), slice(r + dy, r + dy + h), slice(r + dx, r + dx + w))
            g0[sa].addcmul_(g, p1[sb])
            g1[sb].addcmul_(g, p0[sa])
        return g0[..., r:r + h, r:r + w], g1[..., r:r + h, r:r + w], None


def bilateral_cost(f0: torch.Tensor, f1: torch.Tensor, radius: int) -> torch.Tensor:
    """Bilateral matching cost (B, (2r+1)^2, H, W): mean over channels of f0(x-d) * f1(x+d).

    Displacements ``d = (dx, dy)`` run row-major over ``[-r, r]^2``; borders are zero.

    >>> f = torch.zeros(1, 1, 5, 5); f[0, 0, 2, 1] = 1
    >>> g = torch.zeros(1, 1, 5, 5); g[0, 0, 2, 3] = 1
    >>> c = bilateral_cost(f, g, 1)        # pixel (2, 2) sees f at x-1 and g at x+1
    >>> int(c[0, :, 2, 2].argmax())        # index of d = (dx=1, dy=0)
    5
    """
    r = int(radius)
    if torch.is_grad_enabled() and (f0.requires_grad or f1.requires_grad):
        return _BilateralCost.apply(f0, f1, r)
    h, w = f0.shape[-2:]
    return _cost_forward(F.pad(f0, (r, r, r, r)), F.pad(f1, (r, r, r, r)), r, h, w)


def _standardize(f: torch.Tensor) -> torch.Tensor:
    """Per pixel: subtract the mean over channels, scale to unit L2 norm."""
    return F.normalize(f - f.mean(1, keepdim=True), dim=1, eps=1e-6)


class _Decoder(nn.Module):
    """One pyramid level: (cost, warped features, candidate, estimate) -> update."""

    def __init__(self, feat: int, radius: int, channels: int, normalize: bool = True) -> None:
        super().__init__()
        self.radius = radius
        self.normalize = normalize
        n = (2 * radius + 1) ** 2
        d = torch.arange(-radius, radius + 1, dtype=torch.float32)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        self.register_buffer("disp", torch.stack((dx.flatten(), dy.flatten()), 1), persistent=False)
        self.log_temp = nn.Parameter(torch.zeros(()))
        self.body = nn.Sequential(
            conv(n + 2 * feat + 2 + 5, channels),
            conv(channels, channels),
            conv(channels, channels // 2),
        )
        self.head = nn.Conv2d(channels // 2, 5, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, f0, f1, flow, mask):
        f0w = backwarp(f0, flow[:, :2])
        f1w = backwarp(f1, flow[:, 2:])
        cost, cand = self.match(f0w, f1w)
        x = torch.cat((cost, f0w, f1w, cand, flow * 0.25, mask), 1)
        out = self.head(self.body(x))
        return out[:, :4], out[:, 4:5]

    def match(self, f0w: torch.Tensor, f1w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cost volume of the (warped) features and its soft-argmax displacement (B, 2, h, w)."""
        if self.normalize:
            # correlation in [-1, 1] over channels, whatever the features' scale and offset
            cost = bilateral_cost(_standardize(f0w), _standardize(f1w), self.radius) * f0w.shape[1]
        else:  # files written before `normalize` existed (raw products: tiny on coarse levels)
            cost = F.leaky_relu(bilateral_cost(f0w, f1w, self.radius), 0.1)
        # soft-argmax over the window: a parameter-free symmetric displacement d
        prob = torch.softmax(cost * torch.exp(self.log_temp) * 10.0, 1)
        cand = torch.einsum("bkhw,kc->bchw", prob, self.disp.to(prob.dtype))
        return cost, cand


class CostFlow(nn.Module):
    """Synthesises the frame halfway between ``i0`` and ``i1`` (B, 3, H, W) in [0, 1].

    ``widths``/``decoders``/``radii`` list the pyramid levels from fine (1/2) to coarse.
    ``normalize`` matches features centred and L2-normalised per pixel (a correlation in
    [-1, 1], as the normalised correlation layers of optical-flow networks); ``False``
    reproduces the first shipped files, whose raw feature products were too small on the
    coarse levels for the soft-argmax to see.
    ``forward(..., scale=s)`` estimates the flows on inputs resized by ``s`` and warps
    at full size (RIFE's "scale": ``0.5`` for frames twice the training size). Any
    input size works.

    >>> net = CostFlow(widths=(8, 8), decoders=(8, 8), radii=(1, 2))
    >>> a, b = torch.rand(2, 1, 3, 20, 12)
    >>> net(a, b).shape, net(a, b, scale=0.5).shape
    (torch.Size([1, 3, 20, 12]), torch.Size([1, 3, 20, 12]))
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 48, 64),
        decoders: tuple[int, ...] = (32, 48, 64, 96),
        radii: tuple[int, ...] = (2, 2, 2, 4),
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if not len(widths) == len(decoders) == len(radii):
            raise ValueError("CostFlow: widths, decoders and radii need one entry per level")
        stages, cin = [], 3
        for w in widths:
            stages.append(nn.Sequential(conv(cin, w, 3, 2), conv(w, w)))
            cin = w
        self.encoder = nn.ModuleList(stages)
        self.decoders = nn.ModuleList(_Decoder(w, r, c, normalize) for w, r, c in zip(widths, radii, decoders))

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.encoder:
            x = stage(x)
            feats.append(x)
        return feats

    def flows(self, i0: torch.Tensor, i1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows (B, 4, h, w) at the finest level (F_t0, F_t1, in that level's pixels) and the logit."""
        b = i0.shape[0]
        feats = self._pyramid(torch.cat((i0, i1), 0))
        flow = mask = None
        for level in reversed(range(len(feats))):
            f0, f1 = feats[level][:b], feats[level][b:]
            size = f0.shape[-2:]
            if flow is None:
                flow = f0.new_zeros(b, 4, *size)
                mask = f0.new_zeros(b, 1, *size)
            else:
                flow = resize_flow(flow, size)
                mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
            dflow, dmask = self.decoders[level](f0, f1, flow, mask)
            flow, mask = flow + dflow, mask + dmask
        return flow, mask

    def forward(self, i0: torch.Tensor, i1: torch.Tensor, return_flow: bool = False, scale: float = 1.0,
                return_warps: bool = False):
        """The middle frame; with ``return_flow`` also the full-size flows (B, 4, H, W) and
        mask, with ``return_warps`` (instead) the two warped neighbours it blends."""
        if return_flow and return_warps:
            raise ValueError("CostFlow: return_flow and return_warps are exclusive")
        h, w = i0.shape[-2:]
        a, b = i0, i1
        if scale != 1.0:
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            a = F.interpolate(i0, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
            b = F.interpolate(i1, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        flow, mask = self.flows(a, b)
        flow = resize_flow(flow, (h, w))
        mask = torch.sigmoid(F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False))
        w0 = backwarp(i0, flow[:, :2])
        w1 = backwarp(i1, flow[:, 2:])
        out = mask * w0 + (1 - mask) * w1
        if return_flow:
            return out, flow, mask
        if return_warps:
            return out, w0, w1
        return out
