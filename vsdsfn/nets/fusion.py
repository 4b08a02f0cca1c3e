"""F: the U-Net that blends the S->T and T->S streams, and R: the refinement net."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .common import check_padding, conv, conv_input, time_plane

__all__ = ["FusionUNet", "Refine"]


class FusionUNet(nn.Module):
    """Five down- and five up-sampling stages with skip connections (paper, Sec. 3.5);
    returns (fused, masks), masks (B, 2, H, W) = (M_S->T, M_T->S).

    ``masks=2``: two independent sigmoid masks (the paper's model); ``masks=1``: one mask
    M and 1 - M (the ablation). ``widths``: the top level, then one per strided stage; the
    input is space-to-depth'ed and the masks depth-to-space'd, so no convolution runs at
    full size; sizes must be multiples of ``2 ** len(widths)``. ``split``: the two logits
    are predicted as common ``c`` and difference ``d``, (c + d, c - d), so that "how much of
    both" and "which stream" learn apart (plain logits of near-equal streams stay at 0.5).
    ``context``: F also sees M_S(L-), M_S(L+) (``hr0``/``hr1``) and ``|st - ts|``;
    ``time``: the timestep ``t`` as a constant plane; ``time_bias``: a learned bias of each
    mask logit, quadratic in ``t - 1/2`` (zero at first): the blend of the two streams as a
    whole follows t (S->T is the better stream by more at some timesteps than at others).

    >>> f = FusionUNet(widths=(4, 4, 4, 4, 4))
    >>> st, ts = torch.rand(2, 1, 3, 32, 64)
    >>> fused, masks = f(st, ts)
    >>> fused.shape, masks.shape
    (torch.Size([1, 3, 32, 64]), torch.Size([1, 2, 32, 64]))
    >>> ctx = FusionUNet(widths=(4, 4, 4, 4, 4), split=True, context=True)
    >>> ctx(st, ts, hr0=st, hr1=ts)[1].shape
    torch.Size([1, 2, 32, 64])
    """

    def __init__(
        self, widths: tuple[int, ...] = (16, 32, 48, 64, 96), masks: int = 2, split: bool = False,
        context: bool = False, time: bool = False, time_bias: bool = False,
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError("FusionUNet: widths needs the top level and at least one stage")
        if masks not in (1, 2):
            raise ValueError("FusionUNet: masks must be 1 or 2")
        if split and masks != 2:
            raise ValueError("FusionUNet: split needs masks=2")
        self.masks = masks
        self.split = bool(split)
        self.context = bool(context)
        self.time = bool(time)
        self.multiple = 2 ** len(widths)
        n = len(widths) - 1
        cin = 6 + (3 + 3 + 1 if self.context else 0) + self.time   # st, ts (+ hr0, hr1, |st - ts|) (+ t)
        self.inc = conv(cin * 4, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(conv(widths[i], widths[i + 1], 3, 2), conv(widths[i + 1], widths[i + 1]))
            for i in range(n)
        )
        self.ups = nn.ModuleList(conv(widths[i + 1] + widths[i], widths[i]) for i in range(n))
        self.head = nn.Conv2d(widths[0], masks * 4, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        #: per mask logit: its bias at t = 1/2 and the coefficients of (t - 1/2) and (t - 1/2)^2
        self.t_bias = nn.Parameter(torch.zeros(masks, 3)) if time_bias else None

    def forward(
        self, st: torch.Tensor, ts: torch.Tensor, hr0: torch.Tensor | None = None, hr1: torch.Tensor | None = None,
        t: float | torch.Tensor = 0.5,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [st, ts]
        if self.context:
            if hr0 is None or hr1 is None:
                raise ValueError("FusionUNet: context=True needs hr0 and hr1")
            parts += [hr0, hr1, (st - ts).abs().mean(1, keepdim=True)]
        if self.time:
            parts.append(time_plane(t, st))
        x = self.inc(conv_input(parts, self.inc, space_to_depth=True))
        skips = [x]
        for down in self.downs:
            x = down(x)
            skips.append(x)
        for i in reversed(range(len(self.ups))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.ups[i](conv_input([x, skips[i]], self.ups[i]))
        logits = F.pixel_shuffle(self.head(x), 2).float()   # masks and blend in float32
        if self.t_bias is not None:
            tau = torch.as_tensor(t, dtype=torch.float32, device=logits.device).reshape(-1, 1) - 0.5
            basis = torch.cat((torch.ones_like(tau), tau, tau * tau), 1)
            logits = logits + (basis @ self.t_bias.float().t()).view(-1, self.masks, 1, 1)
        if self.split:
            c, d = logits[:, :1], logits[:, 1:]
            logits = torch.cat((c + d, c - d), 1)
        if self.masks == 2:
            m = torch.sigmoid(logits)
        else:
            m1 = torch.sigmoid(logits)
            m = torch.cat((m1, 1 - m1), 1)
        fused = m[:, :1] * st.float() + m[:, 1:2] * ts.float()
        return fused.to(st.dtype), m


class _ResBlock(nn.Module):
    def __init__(self, c: int, padding: str = "zeros") -> None:
        super().__init__()
        self.body = nn.Sequential(conv(c, c, padding_mode=padding), conv(c, c, act=False, padding_mode=padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Refine(nn.Module):
    """R: three residual blocks; returns the residual R(H_F) (H_R = H_F + R(H_F)).

    It works on a pixel-unshuffled (half-resolution, 12-channel) view of the frame, which
    quadruples its receptive field for the same cost. The last layer starts at zero, so
    an untrained R is the identity.

    ``extra=n`` adds ``n`` more full-resolution input channels, passed as
    ``forward(x, extra=)``: one tensor or a sequence of them (the DSFN passes both
    streams and M_S(L-), M_S(L+) with :attr:`DSFNConfig.refine_context`). Each is
    space-to-depth'ed on its own, so no full-size stack of them is ever built.

    ``padding``: how its convolutions pad (``nn.Conv2d``'s ``padding_mode``);
    ``"replicate"`` continues a frame's edge, so a flat frame stays flat up to its border.

    >>> r = Refine(channels=8)
    >>> x = torch.rand(1, 3, 32, 32)
    >>> bool((x + r(x) == x).all())
    True
    >>> Refine(channels=8, extra=6)(x, extra=torch.rand(1, 6, 32, 32)).shape
    torch.Size([1, 3, 32, 32])
    """

    def __init__(self, channels: int = 32, blocks: int = 3, extra: int = 0, padding: str = "zeros") -> None:
        super().__init__()
        check_padding("Refine", padding)
        self.extra = int(extra)
        self.head = conv(4 * (3 + self.extra), channels, padding_mode=padding)
        self.blocks = nn.Sequential(*[_ResBlock(channels, padding) for _ in range(blocks)])
        self.tail = conv(channels, 12, act=False, padding_mode=padding)
        self.shuffle = nn.PixelShuffle(2)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        parts = [x]
        if self.extra:
            parts += [extra] if isinstance(extra, torch.Tensor) else list(extra or ())
            if sum(p.shape[1] for p in parts[1:]) != self.extra:
                raise ValueError(f"Refine: extra={self.extra} needs {self.extra} extra channels")
        x = conv_input(parts, self.head, space_to_depth=True)
        return self.shuffle(self.tail(self.blocks(self.head(x))))
