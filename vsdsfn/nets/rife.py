"""M_T: RIFE's IFNet (Huang et al., "Real-Time Intermediate Flow Estimation for Video
Frame Interpolation", ECCV 2022), in the Practical-RIFE v4 design that takes the
timestep as an input channel.

Four IFBlocks estimate, coarse to fine, the two flows from the middle frame back to each
input frame and a blending mask; the middle frame is the mask-weighted mean of the two
inputs backward-warped by those flows. An optional context network + U-Net adds a
residual to that frame (``refine=True``, Practical-RIFE's ``fastmode=False``).

The weights the shipped files carry are Practical-RIFE's, converted by
``python -m training.import_rife`` (see the model card for origin and licence).
"""

from __future__ import annotations

from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn

from .common import PReLU, backwarp, conv_input, pad_to, resize_flow, time_plane

__all__ = ["RIFE", "IFBlock"]

#: a refinement (second) pass is run when both flows of the second block exceed this many
#: pixels somewhere: the whole estimate is then redone at half the resolution (Practical-RIFE)
LARGE_MOTION = 32.0


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), PReLU(cout))


def _down(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions with PReLU, the first with stride 2."""
    return nn.Sequential(_conv(cin, cout, 2), _conv(cout, cout))


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False,
                         recompute_scale_factor=False)


class IFBlock(nn.Module):
    """One level: its inputs (``parts``, side by side) at ``1 / scale``, eight convolutions
    at a further 1/4, the flow update (4 channels, in input pixels) and mask logit update at
    full size, in float32."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.down = nn.Sequential(_conv(cin, width // 2, 2), _conv(width // 2, width, 2))
        self.body = nn.Sequential(*(_conv(width, width) for _ in range(8)))
        self.up = nn.ConvTranspose2d(width, 5, 4, 2, 1)

    def forward(self, parts: list[torch.Tensor], flow: torch.Tensor | None,
                scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        # each part resized on its own: the same as resizing them side by side, without
        # building that full-size stack
        parts = [_resize(p, 1.0 / scale) for p in parts]
        if flow is not None:
            parts.append(_resize(flow, 1.0 / scale) / scale)
        feat = self.down(conv_input(parts, self.down))
        # upsampled in float32 and NCHW: more precise, and PyTorch's bilinear kernel is
        # several times slower on 5-channel channels-last bf16
        out = _resize(self.up(self.body(feat) + feat).float().contiguous(), 2.0 * scale)
        return out[:, :4] * (2.0 * scale), out[:, 4:5]


class _Context(nn.Module):
    """Four strided stages; each stage's features are warped by the (downscaled) flow."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stages = nn.ModuleList(_down(a, b) for a, b in ((3, c), (c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c)))

    def forward(self, x: torch.Tensor, flow: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            flow = _resize(flow, 0.5) * 0.5
            feats.append(backwarp(x, flow))
        return feats


class _RefineUNet(nn.Module):
    """Practical-RIFE's U-Net: a residual for the blended frame from both inputs, both
    warped inputs, the mask, the flows and both context pyramids."""

    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.downs = nn.ModuleList(_down(a, b) for a, b in ((17, 2 * c), (4 * c, 4 * c), (8 * c, 8 * c),
                                                               (16 * c, 16 * c)))
        self.ups = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(a, b, 4, 2, 1), PReLU(b))
            for a, b in ((32 * c, 8 * c), (16 * c, 4 * c), (8 * c, 2 * c), (4 * c, c)))
        self.out = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, x: list[torch.Tensor], c0: list[torch.Tensor], c1: list[torch.Tensor]) -> torch.Tensor:
        """``x``: the input's parts, side by side."""
        skips = []
        for i, down in enumerate(self.downs):
            x = down(conv_input(x if i == 0 else [x, c0[i - 1], c1[i - 1]], down))
            skips.append(x)
        x = conv_input([x, c0[3], c1[3]], self.ups[0])
        for i, up in enumerate(self.ups):
            x = up(x if i == 0 else conv_input([x, skips[3 - i]], up))
        return torch.sigmoid(self.out(x).float())


class RIFE(nn.Module):
    """RIFE's IFNet as a temporal backbone: ``forward(i0, i1, scale=1.0)`` -> the frame
    at ``timestep`` (0.5: the middle) between ``i0`` and ``i1``.

    ``widths``: channels of the four IFBlocks (Practical-RIFE v4: 192, 128, 96, 64).
    ``refine``: also build and run the context net + U-Net refinement (Practical-RIFE
    with ``fastmode=False``; ``forward(..., fast=True)`` skips it). ``large_motion``: redo a frame's estimate at half the resolution
    when the second block finds motion beyond :data:`LARGE_MOTION` pixels in both flows
    (decided per frame, so the result does not depend on the batch). :meth:`plan` makes
    that decision on whole frames; tiles of a frame are given it (``plan=``), so that all
    of them take the same pass.

    ``scale`` is the resolution at which flows are estimated, as a fraction of the input
    (0.5 for 4K frames, as Practical-RIFE recommends): a power of two in [1/8, 1]. Inputs
    of any size are replicate-padded to a multiple of :meth:`multiple` and cropped back.

    >>> net = RIFE(widths=(16, 16, 8, 8))
    >>> a, b = torch.rand(2, 1, 3, 40, 56)
    >>> net(a, b).shape
    torch.Size([1, 3, 40, 56])
    >>> flow, mask = net.estimate(a, b)
    >>> flow.shape, mask.shape
    (torch.Size([1, 4, 40, 56]), torch.Size([1, 1, 40, 56]))
    """

    def __init__(self, widths: tuple[int, ...] | list[int] = (192, 128, 96, 64), refine: bool = False,
                 large_motion: bool = True) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError("RIFE: widths needs four entries, one per IFBlock")
        self.blocks = nn.ModuleList(IFBlock(7 if i == 0 else 12, w) for i, w in enumerate(widths))
        self.refine = bool(refine)
        self.large_motion = bool(large_motion)
        if self.refine:
            self.context = _Context()
            self.unet = _RefineUNet()

    #: the flow-estimation scales it takes (its coarsest block then works at scale / 32)
    SCALES = (1.0, 0.5, 0.25, 0.125)

    @classmethod
    def check_scale(cls, scale: float) -> float:
        """``scale`` as a float; a :class:`ValueError` unless it is one of :attr:`SCALES`."""
        if isinstance(scale, bool) or not isinstance(scale, Real) or float(scale) not in cls.SCALES:
            raise ValueError(f"RIFE: scale must be one of {', '.join(f'{s:g}' for s in cls.SCALES)}, not {scale!r}")
        return float(scale)

    def multiple(self, scale: float = 1.0) -> int:
        """Input sizes are padded to a multiple of this: the coarsest block works at
        ``scale / 32`` (``/ 64`` when a large-motion pass may run)."""
        return int(round((64 if self.large_motion else 32) / self.check_scale(scale)))

    def _estimate(self, x0, x1, t, scale: float, retry: bool, decide_only: bool = False):
        """(flow, mask logit, which frames need the half-resolution pass or None);
        ``decide_only``: (None, None, that decision), after the second block."""
        flow = mask = big = None
        w0, w1 = x0, x1
        for i, block in enumerate(self.blocks):
            s = 2.0 ** (3 - i) / scale
            # flows and mask logits accumulate in float32 whatever the blocks compute in
            if flow is None:
                flow, mask = block([x0, x1, t], None, s)
            else:
                f, m = block([w0, w1, t, mask], flow, s)
                if i == 1 and retry:
                    big = ((f[:, :2].abs().flatten(1).amax(1) > LARGE_MOTION)
                           & (f[:, 2:4].abs().flatten(1).amax(1) > LARGE_MOTION))
                    if decide_only:
                        return None, None, big
                flow, mask = flow + f, mask + m
            if i < len(self.blocks) - 1:
                w0, w1 = backwarp(x0, flow[:, :2]), backwarp(x1, flow[:, 2:4])
        return flow, mask, big

    def _pad(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        return pad_to(x, self.multiple(scale))

    def plan(self, i0: torch.Tensor, i1: torch.Tensor, scale: float = 1.0,
             timestep: float | torch.Tensor = 0.5) -> torch.Tensor | None:
        """Which frames (B,) bool take the large-motion pass, decided on these frames as
        :meth:`estimate` decides it (``None`` without ``large_motion``). Given to
        ``estimate(..., plan=)`` of every tile of the frames, all tiles take the pass the
        whole frame takes."""
        if not self.large_motion:
            return None
        scale = self.check_scale(scale)
        x0, x1 = self._pad(i0, scale), self._pad(i1, scale)
        return self._estimate(x0, x1, time_plane(timestep, x0), scale, True, decide_only=True)[2]

    @staticmethod
    def reach(plan: torch.Tensor | None) -> int:
        """How many times farther than one pass the estimate sees with ``plan``: 2 when a
        frame takes the half-resolution pass (its coarsest block then works at 1/64)."""
        return 2 if plan is not None and bool(plan.any()) else 1

    def estimate(self, i0: torch.Tensor, i1: torch.Tensor, scale: float = 1.0,
                 timestep: float | torch.Tensor = 0.5,
                 plan: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The flows (B, 4, H, W) from time ``timestep`` to ``i0`` (channels 0-1) and to
        ``i1`` (2-3), in pixels of the inputs, and the mask logit (B, 1, H, W).
        ``plan``: which frames take the large-motion pass (:meth:`plan`); by default
        decided on these inputs."""
        scale = self.check_scale(scale)
        h, w = i0.shape[-2:]
        x0, x1 = self._pad(i0, scale), self._pad(i1, scale)
        t = time_plane(timestep, x0)
        flow, mask, big = self._estimate(x0, x1, t, scale, self.large_motion and plan is None)
        if plan is not None and self.large_motion:
            big = plan.to(flow.device)
        if big is not None and bool(big.any()):
            f2, m2, _ = self._estimate(x0[big], x1[big], t[big], scale / 2, False)
            flow, mask = flow.clone(), mask.clone()
            flow[big], mask[big] = f2, m2
        return flow[..., :h, :w], mask[..., :h, :w]

    def synthesize(self, i0: torch.Tensor, i1: torch.Tensor, flow: torch.Tensor, mask: torch.Tensor,
                   fast: bool = False) -> torch.Tensor:
        """The frame from both inputs, flows and mask logit (as :meth:`estimate` gives
        them, or resized to these inputs' size); ``fast``: without the refinement, as
        Practical-RIFE's ``fastmode`` (and vs-rife) runs it."""
        if flow.shape[-2:] != i0.shape[-2:]:
            flow = resize_flow(flow, i0.shape[-2:])
            mask = F.interpolate(mask, size=i0.shape[-2:], mode="bilinear", align_corners=False)
        w0, w1 = backwarp(i0, flow[:, :2]), backwarp(i1, flow[:, 2:4])
        m = torch.sigmoid(mask.float())
        out = w0.float() * m + w1.float() * (1 - m)       # the blend in float32, like the flows
        if self.refine and not fast:
            h, w = i0.shape[-2:]      # the context net and U-Net have four strided stages: multiples of 16
            i0, i1, w0, w1, mask, flow = (pad_to(x, 16) for x in (i0, i1, w0, w1, mask, flow))
            c0, c1 = self.context(i0, flow[:, :2]), self.context(i1, flow[:, 2:4])
            res = self.unet([i0, i1, w0, w1, mask, flow], c0, c1)[..., :h, :w]
            out = (out + res * 2 - 1).clamp(0, 1)
        return out.to(i0.dtype)

    def forward(self, i0: torch.Tensor, i1: torch.Tensor, scale: float = 1.0, timestep: float | torch.Tensor = 0.5,
                fast: bool = False, plan: torch.Tensor | None = None) -> torch.Tensor:
        flow, mask = self.estimate(i0, i1, scale, timestep, plan)
        return self.synthesize(i0, i1, flow, mask, fast)
