"""M_S from several frames: L_k and its neighbours, aligned to L_k by flow and fused.

A sliding window L_{k-r} .. L_{k+r} (radius r >= 1): each neighbour is aligned to L_k by
a flow from the temporal backbone (:func:`pair_flows`: RIFE's flows to the middle of a
pair, composed into the flow between the two frames and refined by Lucas-Kanade steps,
chained over the window by :func:`chain_flows`), which a small network refines by a
learned residual and weighs by a learned confidence. The aligned neighbours correct the
single-frame :class:`~vsdsfn.nets.espcn.ESPCN`'s features before its tail, so the
network starts as that single-frame network.

At a clip's ends and scene cuts a missing neighbour repeats the nearest frame on the
centre's side with its flow (the centre itself with a zero flow next to it): every
output stays a pure function of its own window.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import Conv2d, backwarp, bicubic_up2, check_padding, conv, conv_input
from .espcn import ESPCN

__all__ = ["MultiFrameSR", "chain_flows", "lucas_kanade", "luma", "pair_flows", "replicate_window"]


def _box(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a ``size`` x ``size`` window (edges replicated), as two 1-D passes."""
    x = F.avg_pool2d(F.pad(x, (size // 2, size // 2, 0, 0), mode="replicate"), (1, size), 1)
    return F.avg_pool2d(F.pad(x, (0, 0, size // 2, size // 2), mode="replicate"), (size, 1), 1)


def lucas_kanade(a: torch.Tensor, b: torch.Tensor, flow: torch.Tensor, iterations: int = 2,
                 window: int = 7) -> torch.Tensor:
    """``flow`` (B, 2, H, W) from ``a`` to ``b`` refined by dense Lucas-Kanade: each step
    solves, over a ``window`` x ``window`` neighbourhood of every pixel, the least-squares
    shift that brings ``backwarp(b, flow)`` onto ``a`` (at most one pixel per step; a small
    ridge keeps flat regions where they are). Computed in float32.

    >>> y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    >>> a = (torch.sin(x / 3) * torch.cos(y / 4))[None, None]
    >>> b = (torch.sin((x - 0.6) / 3) * torch.cos(y / 4))[None, None]   # a moved 0.6 px right
    >>> flow = lucas_kanade(a, b, torch.zeros(1, 2, 32, 32), iterations=3)
    >>> abs(flow[0, 0, 16, 16].item() - 0.6) < 0.05, abs(flow[0, 1, 16, 16].item()) < 0.05
    (True, True)
    """
    a, b, flow = a.float(), b.float(), flow.float()
    for _ in range(iterations):
        warped = backwarp(b, flow)
        padded = F.pad(warped, (1, 1, 1, 1), mode="replicate")
        gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
        gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
        err = warped - a
        sums = _box(torch.cat([(u * v).sum(1, keepdim=True) for u, v in
                               ((gx, gx), (gx, gy), (gy, gy), (gx, err), (gy, err))], 1), window)
        xx, xy, yy, xe, ye = (sums[:, i:i + 1] for i in range(5))
        xx, yy = xx + 1e-4, yy + 1e-4
        det = xx * yy - xy * xy
        step = torch.cat(((xy * ye - yy * xe) / det, (xy * xe - xx * ye) / det), 1)
        flow = flow + step.clamp(-1.0, 1.0)
    return flow


def pair_flows(estimate: Callable[..., tuple[torch.Tensor, torch.Tensor]], a: torch.Tensor,
               b: torch.Tensor, lk_steps: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The flows (in pixels) from ``a`` to ``b`` and from ``b`` to ``a``: output pixel
    ``p`` of ``backwarp(b, flow_ab)`` shows what lies at ``p`` in ``a``.

    ``estimate(a, b, timestep=0.5)`` gives the flows from the middle of the pair to each
    frame (RIFE's :meth:`~vsdsfn.nets.rife.RIFE.estimate`); their difference moved from
    the middle to each end (two fixed-point steps of ``y + f(y) = x``) is the flow
    between the two frames. ``lk_steps``: then refined by that many :func:`lucas_kanade`
    steps on the frames' luma. RIFE's finest block works at a quarter of its input, so
    its flows between small frames are coarse: on the validation footage at half size, the
    true frame i + 2 warped onto frame i by them scores 20.6 dB on textured pixels, 25.0 dB
    after two steps (``python -m training.alignment``).

    >>> shift = lambda x, dx: torch.roll(x, dx, -1)
    >>> def fake(a, b, timestep=0.5):   # a moves 2 px right to b: the middle sees a at -1, b at +1
    ...     f = torch.zeros(1, 4, 8, 8); f[:, 0], f[:, 2] = -1.0, 1.0
    ...     return f, torch.zeros(1, 1, 8, 8)
    >>> ab, ba = pair_flows(fake, torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    >>> ab[0, 0, 4, 4].item(), ba[0, 0, 4, 4].item()
    (2.0, -2.0)
    """
    flow, _ = estimate(a, b, timestep=0.5)
    to_a, to_b = flow[:, :2].float(), flow[:, 2:4].float()
    between = to_b - to_a

    def moved(to_end: torch.Tensor) -> torch.Tensor:
        # x on the end frame comes from y = x - to_end(y) in the middle frame
        y = -backwarp(to_end, -to_end)
        return backwarp(between, y)

    ab, ba = moved(to_a), -moved(to_b)
    if lk_steps:
        ya, yb = luma(a), luma(b)
        ab, ba = lucas_kanade(ya, yb, ab, lk_steps), lucas_kanade(yb, ya, ba, lk_steps)
    return ab, ba


def luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma of RGB frames (BT.601 weights), in float32."""
    return torch.tensordot(x.float(), x.new_tensor([0.299, 0.587, 0.114], dtype=torch.float32), ([1], [0]))[:, None]


def chain_flows(step: Callable[[int, int], torch.Tensor], radius: int,
                real: torch.Tensor | None = None) -> torch.Tensor:
    """The flows (B, 2r, 2, H, W) from a window's centre (entry ``radius``) to each
    neighbour in window order, chained outward from the adjacent ``step(a, b)`` flows
    (from entry ``a`` to the adjacent ``b``); ``real`` (B, 2r+1) bools: False for a
    replicated neighbour (:func:`replicate_window`), whose flow is that of the entry it
    repeats (zero next to the centre).

    >>> ones = lambda a, b: torch.full((1, 2, 4, 4), float(b - a))   # 1 px per step
    >>> chain_flows(ones, 2)[0, :, 0, 0, 0].tolist()
    [-2.0, -1.0, 1.0, 2.0]
    >>> chain_flows(ones, 2, torch.tensor([[False, True, True, True, False]]))[0, :, 0, 0, 0].tolist()
    [-1.0, -1.0, 1.0, 1.0]
    """
    r, flows = int(radius), []
    for side in (-1, 1):
        total = None
        for d in range(1, r + 1):
            step_flow = step(r + side * (d - 1), r + side * d)
            chained = step_flow if total is None else total + backwarp(step_flow, total)
            if real is not None:
                keep = real[:, r + side * d].view(-1, 1, 1, 1).to(chained)
                chained = chained * keep + (0 if total is None else total * (1 - keep))
            total = chained
            flows.append((side * d, total))
    return torch.stack([f for _, f in sorted(flows, key=lambda e: e[0])], 1)


def replicate_window(frames: Sequence[torch.Tensor | None]) -> tuple[list[torch.Tensor], list[bool]]:
    """Fill a window's missing neighbours (``None``: beyond the clip's ends or a scene
    cut) with the nearest frame on the centre's side; also which entries are real."""
    r = len(frames) // 2
    out = list(frames)
    for i in range(r - 1, -1, -1):
        out[i] = out[i] if out[i] is not None else out[i + 1]
    for i in range(r + 1, len(out)):
        out[i] = out[i] if out[i] is not None else out[i - 1]
    return out, [f is not None for f in frames]


class MultiFrameSR(nn.Module):
    """x2 M_S from a window of ``2 * radius + 1`` low-res frames: the single-frame
    :class:`~vsdsfn.nets.espcn.ESPCN` (``single``) whose body features are corrected by
    the aligned neighbours before its tail.

    Each neighbour is warped onto the centre by the flow from the centre; a small network
    (``align``, ``align`` channels wide) on the centre, the warped neighbour, their
    difference and the flow predicts a residual flow and a confidence (flow-guided
    alignment, as in BasicVSR++, on frames rather than features); the neighbour warped by
    the refined flow, its difference from the centre weighed by the confidence, and the
    confidence are fused (``fuse``) with the single-frame body's features into a correction
    of them (``correct``, zero at the start: the network starts as ``single``).

    ``forward(frames, flows)``: ``frames`` (B, 2r+1, 3, H, W), the centre at index r;
    ``flows`` (B, 2r, 2, H, W), the flow from the centre to each neighbour in window
    order (:func:`chain_flows`). ``forward(x)`` with a (B, 3, H, W) tensor is ``single(x)``.
    ``lk_steps``: the Lucas-Kanade steps that refine M_T's flows between frames
    (:func:`pair_flows`). ``padding``: how all its convolutions pad the frame's edges
    (:data:`~vsdsfn.nets.common.PADDINGS`).

    >>> net = MultiFrameSR(channels=8, layers=2, align=4)
    >>> x = torch.rand(1, 3, 3, 12, 10)
    >>> net(x, torch.zeros(1, 2, 2, 12, 10)).shape
    torch.Size([1, 3, 24, 20])
    >>> bool(torch.allclose(net(x, torch.zeros(1, 2, 2, 12, 10)), net.single(x[:, 1])))   # untrained
    True
    """

    scale = 2

    def __init__(self, channels: int = 48, layers: int = 6, align: int = 8, fuse_layers: int = 1,
                 radius: int = 1, lk_steps: int = 0, padding: str = "zeros") -> None:
        super().__init__()
        check_padding("MultiFrameSR", padding)
        self.radius = int(radius)
        self.lk_steps = int(lk_steps)
        self.single = ESPCN(channels, layers, padding)
        # residual flow (2) and confidence logit (1) from the centre, the warped neighbour,
        # their difference and the flow; the confidence starts at sigmoid(2)
        self.align = nn.Sequential(conv(3 + 3 + 3 + 2, align, padding_mode=padding),
                                   conv(align, align, padding_mode=padding),
                                   Conv2d(align, 3, 3, padding=1, padding_mode=padding))
        nn.init.zeros_(self.align[-1].weight)
        nn.init.zeros_(self.align[-1].bias)
        with torch.no_grad():
            self.align[-1].bias[2] = 2.0
        fuse = [conv(channels + 2 * self.radius * 4, channels, padding_mode=padding)]
        fuse += [conv(channels, channels, padding_mode=padding) for _ in range(fuse_layers - 1)]
        self.fuse = nn.Sequential(*fuse)
        self.correct = Conv2d(channels, channels, 3, padding=1, padding_mode=padding)
        nn.init.zeros_(self.correct.weight)
        nn.init.zeros_(self.correct.bias)

    def context(self) -> int:
        """Input pixels on each side of a pixel that its output depends on, the flows' own
        reach aside (the engine adds it): the single-frame tail's, the correction's and the
        fusion's on top of the larger of the single-frame body's and the alignment's (its
        own and bilinear sampling's), or the single-frame network's if larger.

        >>> MultiFrameSR(channels=8, layers=6, align=4, fuse_layers=1).context()   # 1 + 1 + 1 + 7
        10
        """
        def reach(module: nn.Module) -> int:
            return sum(m.kernel_size[0] // 2 for m in module.modules() if isinstance(m, nn.Conv2d))

        aligned = reach(self.align) + 1
        return max(self.single.context(), reach(self.single.tail) + reach(self.correct) + reach(self.fuse)
                   + max(reach(self.single.body), aligned))

    def _aligned(self, centre: torch.Tensor, frame: torch.Tensor, flow: torch.Tensor) -> list[torch.Tensor]:
        """A neighbour's fusion inputs: its difference from the centre once aligned, weighed
        by the confidence, and the confidence."""
        warped = backwarp(frame, flow)
        delta = self.align(conv_input([centre, warped, warped - centre, flow], self.align))
        warped = backwarp(frame, flow.float() + delta[:, :2].float())
        confidence = torch.sigmoid(delta[:, 2:3])
        return [(warped - centre) * confidence, confidence]

    def forward(self, frames: torch.Tensor, flows: torch.Tensor | None = None) -> torch.Tensor:
        if frames.dim() == 4:
            return self.single(frames)
        r = self.radius
        centre = frames[:, r]
        if flows is None:
            flows = centre.new_zeros(centre.shape[0], 2 * r, 2, *centre.shape[-2:])
        body = self.single.body(centre)
        parts = [body]
        for j, i in enumerate(i for i in range(2 * r + 1) if i != r):
            parts += self._aligned(centre, frames[:, i], flows[:, j])
        body = body + self.correct(self.fuse(conv_input(parts, self.fuse)))
        return bicubic_up2(centre) + self.single.shuffle(self.single.tail(body))
