"""The Dual-Stream Fusion Network: M_S and M_T in both orders, fused by F, refined by R."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .espcn import ESPCN
from .fusion import FusionUNet, Refine
from .common import pad_to, time_plane
from .multiframe import MultiFrameSR, chain_flows, pair_flows, replicate_window
from .rife import RIFE

__all__ = ["DSFN", "DSFNConfig", "SPATIAL", "TEMPORAL", "flip_ensemble"]

#: Backbone registries: name -> constructor taking keyword arguments. Any module with
#: ``forward(l) -> 2x upscaled`` (spatial; one with a ``radius`` > 0 also takes a window
#: of frames and the flows from its centre, ``forward(window, flows)``) or ``forward(i0, i1, scale=, timestep=) -> the
#: frame at timestep`` (temporal; ``timestep`` a number or one per batch item) can be plugged in by adding it here (``TEMPORAL["mine"] = MyNet``); its name
#: and arguments are stored in the weights file. A spatial backbone may have ``context()``:
#: the input pixels around a pixel that its result there depends on (without it, M_S is
#: not tiled). A temporal backbone may also have ``multiple(scale)``: the size its inputs
#: must be a multiple of; and ``plan(i0, i1, scale=, timestep=)``: per-frame decisions
#: taken on whole frames that ``forward(..., plan=)`` follows (RIFE: which frames take its
#: large-motion pass), so that every tile of a frame decides alike; and ``reach(plan)``: how
#: many times farther than usual it then sees (tiles keep that many times their overlap).
SPATIAL: dict[str, Callable[..., nn.Module]] = {"espcn": ESPCN, "multiframe": MultiFrameSR}
TEMPORAL: dict[str, Callable[..., nn.Module]] = {"rife": RIFE}


@dataclass
class DSFNConfig:
    """Architecture of a DSFN; stored as JSON in every weights file. The defaults are the
    shipped architecture with a single-frame M_S (the shipped multi-frame M_S is trained on
    top of it: ``training.multiframe``)."""

    spatial: str = "espcn"
    spatial_args: dict[str, Any] = field(default_factory=lambda: {"channels": 48, "layers": 6})
    #: how M_S's convolutions pad the frame's edges (its ``padding=``): ``"replicate"`` (a
    #: flat frame stays flat up to its border) or ``"zeros"`` (files that do not name it)
    spatial_padding: str = "replicate"
    temporal: str = "rife"
    temporal_args: dict[str, Any] = field(default_factory=lambda: {
        "widths": [192, 128, 96, 64], "refine": True, "large_motion": True})
    fusion_masks: int = 2
    fusion_widths: tuple[int, ...] = (16, 32, 48, 64, 96)
    #: F's two mask logits predicted as common + difference (``FusionUNet(split=True)``);
    #: ignored with ``fusion_masks=1`` (one logit), so the one-mask ablation of a split
    #: model only changes ``fusion_masks``
    fusion_split: bool = True
    #: F also sees M_S(L-), M_S(L+) and |S->T - T->S| (``FusionUNet(context=True)``)
    fusion_context: bool = True
    #: F's mask logits get a learned bias that follows t (``FusionUNet(time_bias=True)``)
    fusion_time_bias: bool = False
    refine_channels: int = 24
    refine_blocks: int = 3
    #: R also sees both streams and M_S(L-), M_S(L+), not only H_F (``Refine(extra=12)``)
    refine_context: bool = True
    #: how R's convolutions pad the frame's edges (``Refine(padding=)``): ``"replicate"``
    #: (a flat frame stays flat up to its border) or ``"zeros"`` (files before 1.5.0)
    refine_padding: str = "replicate"
    #: M_T in the S->T stream estimates its flows on the high-res frames resized by this
    #: factor (``forward(..., scale=)``; 0.5 = at the low-res size)
    st_scale: float = 1.0
    #: T->S runs M_T on the low-res frames in reverse order, M_T(L+, L-) at 1 - t: the two
    #: streams then do not share M_T's input-order bias and fail less alike
    ts_reverse: bool = True
    #: F and R are also given the timestep t (a constant plane); a network without it was
    #: trained for t = 1/2 only and refuses other timesteps
    time_input: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fusion_widths"] = list(self.fusion_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DSFNConfig":
        """Build from a dict; missing fields take the defaults, unknown ones are refused."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown architecture fields {sorted(unknown)}")
        d = dict(d)
        if "fusion_widths" in d:
            d["fusion_widths"] = tuple(d["fusion_widths"])
        return cls(**d)


class DSFN(nn.Module):
    """Two low-res frames -> three high-res frames (paper, Fig. 1).

    ``forward`` returns every intermediate so that training, evaluation, the debug views
    and inference share one code path:

    ``hr0``/``hr1`` M_S(L-)/M_S(L+); ``lt`` M_T(L+, L-) (M_T(L-, L+) without
    :attr:`DSFNConfig.ts_reverse`); ``st`` S->T stream; ``ts`` T->S stream; ``masks``
    (B, 2, H, W) = (M_S->T, M_T->S); ``fused`` H_F; ``refined`` H_R.

    Frame sizes must be multiples of :attr:`multiple` (the engine pads); values are RGB
    in [0, 1].

    >>> net = DSFN(DSFNConfig(spatial_args={"channels": 8, "layers": 2},
    ...                       temporal_args={"widths": [8, 8, 8, 8], "refine": False},
    ...                       fusion_widths=(4, 4, 4, 4, 4), refine_channels=4))
    >>> out = net(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    >>> out["refined"].shape
    torch.Size([1, 3, 128, 128])
    >>> net.run(torch.rand(1, 3, 20, 30), torch.rand(1, 3, 20, 30))["refined"].shape
    torch.Size([1, 3, 40, 60])
    """

    def __init__(self, config: DSFNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DSFNConfig()
        if config.spatial not in SPATIAL:
            raise ValueError(f"unknown spatial backbone {config.spatial!r}; known: {sorted(SPATIAL)}")
        if config.temporal not in TEMPORAL:
            raise ValueError(f"unknown temporal backbone {config.temporal!r}; known: {sorted(TEMPORAL)}")
        self.spatial = SPATIAL[config.spatial](**config.spatial_args, padding=config.spatial_padding)
        self.temporal = TEMPORAL[config.temporal](**config.temporal_args)
        self.fusion = FusionUNet(tuple(config.fusion_widths), config.fusion_masks,
                                 config.fusion_split and config.fusion_masks == 2, config.fusion_context,
                                 config.time_input, time_bias=config.fusion_time_bias)
        #: low-res frame sizes must be multiples of this (F's strided stages at high res,
        #: M_T's at low and high res; see :meth:`multiple_for`)
        self.multiple = self.multiple_for(config.st_scale)
        self.refine = Refine(config.refine_channels, config.refine_blocks,
                             (12 if config.refine_context else 0) + config.time_input, config.refine_padding)

    def multiple_for(self, st_scale: float) -> int:
        """Low-res size multiple for a given ``st_scale``: F's (half of its high-res
        multiple) and M_T's on the low-res frames (T->S) and on the high-res frames
        resized by ``st_scale`` (S->T), so that the padded frame and every tile (whose
        origins are multiples of it) land on the same grids as the whole frame.

        >>> net = DSFN(DSFNConfig(fusion_widths=(4, 4, 4, 4, 4)))
        >>> [net.multiple_for(s) for s in (0.5, 1.0)]
        [64, 64]
        """
        base = max(1, self.fusion.multiple // 2)
        tm = getattr(self.temporal, "multiple", None)
        if tm is None:
            return base
        # T->S: M_T on the low-res frames; S->T: on the high-res ones (2x the low-res size)
        return math.lcm(base, tm(1.0), -(-tm(st_scale) // 2))

    def forward(
        self,
        l0: torch.Tensor,
        l1: torch.Tensor,
        hr0: torch.Tensor | None = None,
        hr1: torch.Tensor | None = None,
        st_scale: float | None = None,
        t: float | torch.Tensor = 0.5,
        plans: dict[str, Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run both streams, fusion and refinement (training; :meth:`run` serves) for the
        frame at timestep ``t`` (0 = l0, 1 = l1; a number or one per batch item).
        ``plans``: M_T's decisions for these frames (:meth:`temporal_plans`), by default
        taken on these inputs.

        Frame sizes must be multiples of :meth:`multiple_for`. ``hr0``/``hr1`` may pass
        M_S(l0)/M_S(l1) computed earlier (the engine computes M_S once per source frame
        and reuses it for both neighbouring pairs). ``st_scale`` overrides
        :attr:`DSFNConfig.st_scale` for this call (a speed/quality trade-off at inference:
        F and R were trained on streams made with the stored one).
        """
        out = self.streams(l0, l1, hr0, hr1, st_scale, t, plans)
        return {**out, **self.combine(out["st"], out["ts"], out["hr0"], out["hr1"], t)}

    def streams(self, l0: torch.Tensor, l1: torch.Tensor, hr0: torch.Tensor | None = None,
                hr1: torch.Tensor | None = None, st_scale: float | None = None, t: float | torch.Tensor = 0.5,
                plans: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """The first half of :meth:`forward` (its arguments): M_S of both frames (``hr0``,
        ``hr1``), M_T on the low-res ones (``lt``) and the two streams (``st``, ``ts``); the
        part F and R are trained on while it stays frozen (``training.refit`` caches it)."""
        if hr0 is None or hr1 is None:
            hr0, hr1 = self.spatial(torch.cat((l0, l1), 0)).chunk(2, 0)
        calls = self._temporal_calls(l0, l1, hr0, hr1, st_scale, t)
        if plans is not None:
            for name, (_, _, kw) in calls.items():
                kw["plan"] = plans[name]
        lt, st = (self.temporal(a, b, **kw) for a, b, kw in (calls["lt"], calls["st"]))
        ts = self.spatial(lt)   # T->S's frame has no neighbours (a multi-frame M_S: its single-frame net)
        return {"hr0": hr0, "hr1": hr1, "lt": lt, "st": st, "ts": ts}

    def combine(self, st: torch.Tensor, ts: torch.Tensor, hr0: torch.Tensor, hr1: torch.Tensor,
                t: float | torch.Tensor = 0.5) -> dict[str, torch.Tensor]:
        """The second half of :meth:`forward`: F and R on the two streams and M_S of both
        frames (what :meth:`streams` gives): ``fused``, ``masks`` and ``refined``."""
        t = self.check_timestep(t, hr0)
        fused, masks = self.fusion(st, ts, hr0, hr1, t)
        extra = [st, ts, hr0, hr1] if self.config.refine_context else []
        if self.config.time_input:
            extra.append(time_plane(t, fused))
        return {"fused": fused, "masks": masks, "refined": fused + self.refine(fused, extra or None)}

    def _temporal_calls(self, l0, l1, hr0, hr1, st_scale: float | None, t) -> dict[str, tuple]:
        """M_T's two calls as (i0, i1, keyword arguments): ``"lt"`` on the low-res frames
        (for T->S), ``"st"`` on the high-res ones (S->T)."""
        scale = self.config.st_scale if st_scale is None else st_scale
        t = self.check_timestep(t, l0)
        lt = (l1, l0, {"timestep": 1 - t}) if self.config.ts_reverse else (l0, l1, {"timestep": t})
        return {"lt": lt, "st": (hr0, hr1, {"scale": scale, "timestep": t})}

    def temporal_plans(self, l0, l1, hr0, hr1, st_scale: float | None = None,
                       t: float | torch.Tensor = 0.5) -> dict[str, Any] | None:
        """M_T's per-frame decisions (its ``plan``, e.g. RIFE's large-motion pass) for both of
        its calls on these whole frames (arguments as :meth:`forward`'s), to hand to every
        tile's :meth:`forward`/:meth:`run`; ``None`` when M_T takes none."""
        plan = getattr(self.temporal, "plan", None)
        if plan is None:
            return None
        return {name: plan(a, b, **kw) for name, (a, b, kw) in self._temporal_calls(l0, l1, hr0, hr1, st_scale,
                                                                                   t).items()}

    def tile_reach(self, plans: dict[str, Any] | None) -> int:
        """How many times farther than with no plans M_T sees, following ``plans`` (its
        ``reach(plan)``; RIFE: 2 where a frame takes its half-resolution pass): tiles keep
        that many times their overlap."""
        reach = getattr(self.temporal, "reach", None)
        if plans is None or reach is None:
            return 1
        return max(int(reach(plan)) for plan in plans.values())

    def spatial_context(self) -> int | None:
        """Input pixels of context M_S reads around a pixel (its backbone's ``context()``):
        tiles that keep this much around their core give exactly the untiled M_S; ``None``
        when the backbone does not say."""
        context = getattr(self.spatial, "context", None)
        return None if context is None else int(context())

    def check_timestep(self, t: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``t`` as a float32 tensor of one timestep per batch item (or one for all), each in
        (0, 1); a :class:`ValueError` for other timesteps than 1/2 on a network without
        :attr:`DSFNConfig.time_input`."""
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1)   # checked where it is (the CPU: no sync)
        if not bool(((t > 0) & (t < 1)).all()):
            raise ValueError(f"timesteps must lie in (0, 1), not {t.tolist()}")
        if not self.config.time_input and not bool((t == 0.5).all()):
            raise ValueError("these weights were trained for the middle frame (t = 1/2) only")
        return t.to(like.device)

    def run(
        self,
        l0: torch.Tensor,
        l1: torch.Tensor,
        hr0: torch.Tensor | None = None,
        hr1: torch.Tensor | None = None,
        *,
        st_scale: float | None = None,
        ensemble: bool = False,
        t: float | torch.Tensor = 0.5,
        plans: dict[str, Any] | None = None,
        before: torch.Tensor | None = None,
        after: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every output of :meth:`forward` for frames of any size: the one inference path
        (the engine, per frame or tile, and ``training.evaluate`` call it).

        The low-res frames (and ``hr0``/``hr1``, when given) are replicate-padded to
        :meth:`multiple_for`, the outputs cropped back; ``ensemble``: M_S (unless given)
        and the network also run on the frames flipped upside down and are averaged
        (:func:`flip_ensemble`). ``plans``: M_T's decisions (:meth:`temporal_plans`),
        by default taken on these (padded, unflipped) frames; the flipped run follows them
        too. ``before``/``after``: the frames before ``l0`` and after ``l1``, which a
        multi-frame M_S also sees (:meth:`upscale_pair`; not needed with ``hr0``/``hr1``).
        Nothing is clamped: callers clamp what they show.
        """
        h, w = l0.shape[-2:]
        m = self.multiple_for(self.config.st_scale if st_scale is None else st_scale)
        l0, l1 = pad_to(l0, m), pad_to(l1, m)
        if hr0 is not None and hr1 is not None:
            hr0, hr1 = pad_to(hr0, m, (h, w)), pad_to(hr1, m, (h, w))
        if hr0 is None or hr1 is None:
            outer = (None if x is None else pad_to(x, m) for x in (before, after))
            hr0, hr1 = self.upscale_pair(l0, l1, *outer, ensemble=ensemble)
        if ensemble and plans is None:     # one decision per frame for both orientations
            plans = self.temporal_plans(l0, l1, hr0, hr1, st_scale, t)
        net = flip_ensemble(self) if ensemble else self
        out = net(l0, l1, hr0, hr1, st_scale=st_scale, t=t, plans=plans)
        return {k: v[..., :h, :w] if k == "lt" else v[..., : 2 * h, : 2 * w] for k, v in out.items()}

    @property
    def radius(self) -> int:
        """Neighbours on each side M_S takes (0: a single-frame M_S)."""
        return int(getattr(self.spatial, "radius", 0))

    def pair_flows(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The flows from ``a`` to ``b`` and back, for aligning neighbours in a multi-frame
        M_S (:func:`~vsdsfn.nets.multiframe.pair_flows` on M_T's estimate, refined by the
        M_S's ``lk_steps``)."""
        return pair_flows(self.temporal.estimate, a, b, getattr(self.spatial, "lk_steps", 0))

    def window_flows(self, window: torch.Tensor, real: torch.Tensor | None = None,
                     step: Callable[[int, int], torch.Tensor] | None = None) -> torch.Tensor:
        """The flows (B, 2r, 2, H, W) from each window's centre to its neighbours, computed
        pair by pair outward from the centre and chained (:func:`chain_flows`, with ``real``).
        ``step(a, b)``: the flow from window entry ``a`` to the adjacent ``b`` (default
        :meth:`pair_flows` of the two in time order, as the engine caches them)."""
        def in_order(a: int, b: int) -> torch.Tensor:
            both = self.pair_flows(window[:, min(a, b)], window[:, max(a, b)])
            return both[0] if a < b else both[1]

        return chain_flows(step or in_order, self.radius, real)

    def upscale_pair(self, l0: torch.Tensor, l1: torch.Tensor, before: torch.Tensor | None = None,
                     after: torch.Tensor | None = None, *, ensemble: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """M_S of two consecutive frames: a multi-frame M_S sees each one's other frame, and
        ``before`` (the frame before ``l0``) and ``after`` (after ``l1``) when given; the
        rest of its windows replicate."""
        if not self.radius:
            return self.upscale(torch.cat((l0, l1)), ensemble=ensemble).chunk(2)
        r, out = self.radius, []
        for prev, centre, nxt in ((before, l0, l1), (l0, l1, after)):
            entries: list[torch.Tensor | None] = [None] * (2 * r + 1)
            entries[r - 1: r + 2] = [prev, centre, nxt]
            filled, real = replicate_window(entries)
            window = torch.stack(filled, 1)
            flows = self.window_flows(window, torch.tensor([real]).expand(window.shape[0], -1))
            out.append(self.upscale(centre, ensemble=ensemble, window=window, flows=flows))
        return out[0], out[1]

    def upscale(self, lr: torch.Tensor, *, ensemble: bool = False, window: torch.Tensor | None = None,
                flows: torch.Tensor | None = None) -> torch.Tensor:
        """M_S of (B, 3, H, W) frames of any size (``ensemble``: see :meth:`run`). A
        multi-frame M_S also takes each frame's ``window`` (B, 2r+1, 3, H, W) and the
        ``flows`` from its centre (:meth:`window_flows`); without them it runs on the
        frame alone."""
        if not self.radius or window is None:
            return (flip_ensemble(self.spatial) if ensemble else self.spatial)(lr)
        out = self.spatial(window, flows)
        if ensemble:   # upside down: the flows' vertical components change sign
            down = torch.stack((flows[:, :, 0], -flows[:, :, 1]), 2).flip(-2)
            out = (out + self.spatial(window.flip(-2), down).flip(-2)) / 2
        return out


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
