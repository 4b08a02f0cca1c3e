"""The Dual-Stream Fusion Network: M_S and M_T in both orders, fused by F, refined by R."""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .costflow import CostFlow
from .espcn import ESPCN
from .flowinterp import FlowInterp
from .fusion import FusionUNet, Refine

__all__ = ["DSFN", "DSFNConfig", "SPATIAL", "TEMPORAL", "flip_ensemble", "register_spatial", "register_temporal"]

#: Backbone registries: name -> constructor taking keyword arguments. Any module with
#: ``forward(l) -> 2x upscaled`` (spatial) or ``forward(i0, i1) -> middle`` (temporal)
#: can be plugged in; its name and arguments are stored in the weights file.
SPATIAL: dict[str, Callable[..., nn.Module]] = {"espcn": ESPCN}
TEMPORAL: dict[str, Callable[..., nn.Module]] = {"flowinterp": FlowInterp, "costflow": CostFlow}


def register_spatial(name: str, ctor: Callable[..., nn.Module]) -> None:
    """Make a x2 super-resolution backbone available to :class:`DSFNConfig` by name."""
    SPATIAL[name] = ctor


def register_temporal(name: str, ctor: Callable[..., nn.Module]) -> None:
    """Make a frame-interpolation backbone available to :class:`DSFNConfig` by name."""
    TEMPORAL[name] = ctor


@dataclass
class DSFNConfig:
    """Architecture of a DSFN; stored as JSON in every weights file."""

    spatial: str = "espcn"
    spatial_args: dict[str, Any] = field(default_factory=lambda: {"channels": 32, "layers": 4})
    temporal: str = "costflow"
    temporal_args: dict[str, Any] = field(default_factory=lambda: {
        "widths": [16, 32, 48, 64], "decoders": [32, 48, 64, 96], "radii": [2, 2, 2, 4]})
    fusion_masks: int = 2
    fusion_widths: tuple[int, ...] = (16, 32, 48, 64, 96)
    #: F starts with a 2x space-to-depth (no convolution at full resolution)
    fusion_unshuffle: bool = True
    #: F's two mask logits predicted as common + difference (``FusionUNet(split=True)``);
    #: ignored with ``fusion_masks=1`` (one logit), so the one-mask ablation of a split
    #: model only changes ``fusion_masks``
    fusion_split: bool = False
    #: F also sees M_S(L-), M_S(L+) and |S->T - T->S| (``FusionUNet(context=True)``)
    fusion_context: bool = False
    #: F also sees each stream's warp disagreement ``|w0 - w1|`` (mean over RGB): how
    #: much the two neighbours M_T warped to time t differ, i.e. where its flows are
    #: wrong or a pixel is occluded (the T->S one bilinearly upsampled); needs a temporal
    #: backbone with ``forward(..., return_warps=True)``
    fusion_cues: bool = False
    refine_channels: int = 24
    refine_blocks: int = 3
    #: R also sees both streams and M_S(L-), M_S(L+), not only H_F (``Refine(extra=12)``)
    refine_context: bool = False
    #: M_T in the S->T stream estimates its flows on the high-res frames resized by this
    #: factor (``forward(..., scale=)``; 0.5 = at the low-res size, as RIFE does for 4K);
    #: only for temporal backbones that take ``scale``.
    st_scale: float = 0.5

    #: fields added after the first weights shipped, with the value that reproduces
    #: files written before them
    _LEGACY = {"fusion_unshuffle": False, "st_scale": 1.0}
    #: the same for backbone arguments, per backbone: ``_ARGS_NOW`` is written into every
    #: config (so stored files are explicit), ``_ARGS_LEGACY`` fills stored ones without them
    _ARGS_NOW = {"costflow": {"normalize": True}}
    _ARGS_LEGACY = {"costflow": {"normalize": False}}

    def __post_init__(self) -> None:
        self.temporal_args = {**self._ARGS_NOW.get(self.temporal, {}), **self.temporal_args}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fusion_widths"] = list(self.fusion_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], legacy: bool = False) -> "DSFNConfig":
        """Build from a dict; missing fields take the defaults, or with ``legacy=True``
        (stored configs: weights files, checkpoints) the values of :attr:`_LEGACY` for
        fields that did not exist when the file was written."""
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown architecture fields {sorted(unknown)}")
        d = {**cls._LEGACY, **d} if legacy else dict(d)
        if legacy:
            old = cls._ARGS_LEGACY.get(d.get("temporal", cls.temporal), {})
            args = d.get("temporal_args", cls.__dataclass_fields__["temporal_args"].default_factory())
            d["temporal_args"] = {**old, **args}
        if "fusion_widths" in d:
            d["fusion_widths"] = tuple(d["fusion_widths"])
        return cls(**d)


class DSFN(nn.Module):
    """Two low-res frames -> three high-res frames (paper, Fig. 1).

    ``forward`` returns every intermediate so that training, evaluation, the debug views
    and inference share one code path:

    ``hr0``/``hr1`` M_S(L-)/M_S(L+); ``lt`` M_T(L-, L+); ``st`` S->T stream; ``ts`` T->S
    stream; ``masks`` (B, 2, H, W) = (M_S->T, M_T->S); ``fused`` H_F; ``refined`` H_R.

    Frame sizes must be multiples of :attr:`multiple` (the engine pads); values are RGB
    in [0, 1].

    >>> net = DSFN(DSFNConfig(spatial_args={"channels": 8, "layers": 2},
    ...                       temporal_args={"widths": [8], "decoders": [8], "radii": [1]},
    ...                       fusion_widths=(4, 4, 4, 4, 4), refine_channels=4))
    >>> out = net(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    >>> out["refined"].shape
    torch.Size([1, 3, 32, 32])
    """

    def __init__(self, config: DSFNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DSFNConfig()
        if config.spatial not in SPATIAL:
            raise ValueError(f"unknown spatial backbone {config.spatial!r}; known: {sorted(SPATIAL)}")
        if config.temporal not in TEMPORAL:
            raise ValueError(f"unknown temporal backbone {config.temporal!r}; known: {sorted(TEMPORAL)}")
        self.spatial = SPATIAL[config.spatial](**config.spatial_args)
        self.temporal = TEMPORAL[config.temporal](**config.temporal_args)
        if config.fusion_cues and "return_warps" not in inspect.signature(self.temporal.forward).parameters:
            raise ValueError(f"fusion_cues: the temporal backbone {config.temporal!r} has no return_warps")
        self.fusion = FusionUNet(tuple(config.fusion_widths), config.fusion_masks, config.fusion_unshuffle,
                                 config.fusion_split and config.fusion_masks == 2, config.fusion_context,
                                 2 if config.fusion_cues else 0)
        #: low-res frame sizes must be multiples of this (F's strided stages at high res,
        #: and the S->T stream's resized frames on the same grid; see :meth:`multiple_for`)
        self.multiple = self.multiple_for(config.st_scale)
        self.refine = Refine(config.refine_channels, config.refine_blocks, 12 if config.refine_context else 0)

    def multiple_for(self, st_scale: float) -> int:
        """Low-res size multiple for a given ``st_scale``: a multiple ``m`` of F's (half
        of its high-res multiple) for which the S->T stream's resized high-res size
        ``2 * m * st_scale`` is again a multiple of F's, so that tiles (whose origins are
        multiples of ``m``) land on the same pyramid grid as the whole frame.

        >>> net = DSFN(DSFNConfig(fusion_widths=(4, 4, 4, 4, 4)))
        >>> [net.multiple_for(s) for s in (0.5, 0.75, 1.0)]
        [16, 32, 16]
        """
        base = max(1, self.fusion.multiple // 2)
        s = Fraction(st_scale).limit_denominator(64)
        for k in range(1, 65):
            if (2 * k * base * s) % base == 0:
                return k * base
        return base

    def forward(
        self,
        l0: torch.Tensor,
        l1: torch.Tensor,
        hr0: torch.Tensor | None = None,
        hr1: torch.Tensor | None = None,
        st_scale: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run both streams, fusion and refinement.

        ``hr0``/``hr1`` may pass M_S(l0)/M_S(l1) computed earlier (the engine computes
        M_S once per source frame and reuses it for both neighbouring pairs).
        ``st_scale`` overrides :attr:`DSFNConfig.st_scale` for this call (a speed/quality
        trade-off at inference: F and R were trained on streams made with the stored one).
        """
        if hr0 is None or hr1 is None:
            hr = self.spatial(torch.cat((l0, l1), 0))
            hr0, hr1 = hr.chunk(2, 0)
        scale = self.config.st_scale if st_scale is None else st_scale
        kw = {"scale": scale} if scale != 1.0 else {}
        cues = None
        if self.config.fusion_cues:
            lt, a0, a1 = self.temporal(l0, l1, return_warps=True)
            st, b0, b1 = self.temporal(hr0, hr1, return_warps=True, **kw)
            cue_ts = F.interpolate((a0 - a1).abs().mean(1, keepdim=True), size=st.shape[-2:],
                                   mode="bilinear", align_corners=False)
            cues = torch.cat(((b0 - b1).abs().mean(1, keepdim=True), cue_ts), 1)
        else:
            lt = self.temporal(l0, l1)
            st = self.temporal(hr0, hr1, **kw)
        ts = self.spatial(lt)
        fused, masks = self.fusion(st, ts, hr0, hr1, cues=cues)
        refined = fused + self.refine(fused, (st, ts, hr0, hr1) if self.config.refine_context else None)
        out = {
            "hr0": hr0, "hr1": hr1, "lt": lt, "st": st, "ts": ts,
            "masks": masks, "fused": fused, "refined": refined,
        }
        if cues is not None:
            out["cues"] = cues  # (N, 2, H, W): S->T's and T->S's warp disagreement
        return out

    def inference(self, l0: torch.Tensor, l1: torch.Tensor, **kw) -> torch.Tensor:
        """H_R only, clamped to [0, 1]; sizes need not be multiples (padded here)."""
        h, w = l0.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph or pw:
            l0 = F.pad(l0, (0, pw, 0, ph), mode="replicate")
            l1 = F.pad(l1, (0, pw, 0, ph), mode="replicate")
        out = self.forward(l0, l1, **kw)["refined"]
        return out[..., : 2 * h, : 2 * w].clamp(0, 1)


def flip_ensemble(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A test-time ensemble of ``fn`` (``model.spatial``, or the whole ``model``): the mean
    of ``fn`` on the inputs and of ``fn`` on the inputs flipped upside down, flipped back.
    Tensor outputs and dicts of tensors are averaged; twice the work.

    >>> import torch
    >>> net = DSFN(DSFNConfig(spatial_args={"channels": 4, "layers": 2}))
    >>> x = torch.rand(1, 3, 32, 32)
    >>> y = flip_ensemble(net.spatial)(x)
    >>> bool(torch.allclose(y, (net.spatial(x) + net.spatial(x.flip(-2)).flip(-2)) / 2))
    True
    """
    def run(*xs: torch.Tensor, **kw: Any) -> Any:
        a = fn(*xs, **kw)
        b = fn(*(x.flip(-2) for x in xs), **kw)
        if isinstance(a, dict):
            return {k: (v + b[k].flip(-2)) / 2 for k, v in a.items()}
        return (a + b.flip(-2)) / 2

    return run
