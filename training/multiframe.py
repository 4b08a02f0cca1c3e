"""Train the multi-frame M_S (:class:`vsdsfn.nets.multiframe.MultiFrameSR`) on real video.

    python -m training.multiframe --config training/configs/cpu.toml --data-root DATA \\
        --init models/dsfn_default.safetensors --out runs/multiframe [--part neighbours] \\
        [--iters N] [--resume]

The temporal backbone is frozen, so its flows are computed once: a pool of windows
L_{k-rs} .. L_{k+rs} (radius ``--radius``, strides ``strides``) is cut from the config's
training sequences (HR crops downscaled 2x as :func:`training.datasets.downscale` does),
the flows from L_k to its neighbours (:func:`build_pool`) are computed on each whole
low-res crop and stored with it (``pool-*.pt`` in the run folder); ``--stills N`` adds N
windows of the config's still images under a random camera motion
(:func:`training.datasets.moving_stills`: clean detail, aliased differently in each frame,
which the video alone teaches too little of). Training samples are
random sub-crops of the pool's interior with the eight flips/rotations (flows transformed
with them), temporal reversal, and a share of windows cut short on one side or both
(:func:`truncate`: what a clip's ends and scene cuts give). The single-frame
part starts from ``--init``'s M_S and the network starts as that M_S; an ``--init`` whose M_S
is already multi-frame (of the same radius, Lucas-Kanade steps and layers) continues from all
of it. ``--part``: what
is trained: ``single`` the single-frame network alone on the windows' centres (M_S
fine-tuned on video frames; ``--export`` writes a single-frame M_S), ``neighbours`` the
alignment and fusion with the single-frame network frozen, ``all`` both. L1 loss, RAdam,
cosine learning rate. Validation: the same kind of pool from the validation sequences,
PSNR of the multi-frame output, of its single-frame network alone and of ``--init``'s M_S
(``start``) on the same crops; the best step (by what is trained) is kept in
``best.pt``. ``--resume`` continues from ``last.pt``. ``--export`` writes ``best.pt``'s M_S
into a weights file, ``--export --average`` the mean of ``best.pt``'s and ``last.pt``'s.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dataclasses import replace

from vsdsfn.nets import DSFN
from vsdsfn.nets.common import PADDINGS
from vsdsfn.nets.multiframe import MultiFrameSR, chain_flows, pair_flows, replicate_window
from vsdsfn.weights import load_model, save_model

from .config import data_section
from .datasets import config_images, config_sequences, downscale, moving_stills
from .metrics import psnr
from .loop import PoolTrainer, add_loop_arguments, train_or_export
from .triplets import to_tensor
from .train import load_checkpoint, save_checkpoint

__all__ = ["build_pool", "truncate", "dihedral", "transform", "MultiFrameTrainer", "export", "main"]

log = logging.getLogger("vsdsfn.training")


def build_pool(sequences: list, flows_of: Callable, count: int, lr_size: int, strides: tuple[int, ...], seed: int,
               central: bool = False, radius: int = 1) -> dict[str, torch.Tensor]:
    """``count`` windows of ``2 * radius + 1`` frames: ``lr`` (N, 2r+1, 3, S, S), ``hr``
    (N, 3, 2S, 2S) the centre's truth, ``flows`` (N, 2r, 2, S, S) from the centre to each
    neighbour (adjacent ``flows_of(a, b)``, :func:`~vsdsfn.nets.multiframe.pair_flows` as
    the model computes them, chained by :func:`~vsdsfn.nets.multiframe.chain_flows`, as
    the engine does); float16.
    ``central``: deterministic central crops spread evenly over the sequences."""
    rng = np.random.default_rng(seed)
    hr_size, r = 2 * lr_size, int(radius)
    lrs, hrs, flows = [], [], []
    usable = [min(seq.frame(0).shape[:2]) >= hr_size for seq in sequences]
    choices = [(si, s, k) for si, seq in enumerate(sequences) if usable[si] for s in strides
               for k in range(r * s, len(seq) - r * s)]
    picks = (np.linspace(0, len(choices) - 1, count).round().astype(int) if central
             else rng.choice(len(choices), count, replace=count > len(choices)))
    for n, c in enumerate(picks):
        si, s, k = choices[int(c)]
        seq = sequences[si]
        frames = torch.cat([to_tensor(seq.frame(k + d * s)) for d in range(-r, r + 1)]) / 255
        h, w = frames.shape[-2:]
        y = (h - hr_size) // 2 if central else int(rng.integers(0, h - hr_size + 1))
        x = (w - hr_size) // 2 if central else int(rng.integers(0, w - hr_size + 1))
        frames = frames[..., y:y + hr_size, x:x + hr_size]
        lr = downscale(frames)
        with torch.no_grad():
            pairs = {i: flows_of(lr[i:i + 1], lr[i + 1:i + 2]) for i in range(2 * r)}
            window = chain_flows(lambda a, b: pairs[min(a, b)][0 if a < b else 1], r)
        lrs.append(lr.half())
        hrs.append(frames[r].half())
        flows.append(window[0].half())
        if n % 200 == 0:
            log.info("pool: %d / %d windows", n, count)
    return {"lr": torch.stack(lrs), "hr": torch.stack(hrs), "flows": torch.stack(flows)}


def truncate(lr: torch.Tensor, flows: torch.Tensor, keep: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The window (2r+1, 3, H, W) and its flows (2r, 2, H, W) as a clip's end or a scene
    cut leaves them: ``keep`` neighbours before and after the centre, the others repeating
    the nearest kept frame with its flow (:func:`~vsdsfn.nets.multiframe.replicate_window`).

    >>> lr = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    >>> fl = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 2, 2, 2)
    >>> a, b = truncate(lr, fl, (0, 1))
    >>> a[:, 0, 0, 0].tolist(), b[:, 0, 0, 0].tolist()
    ([2.0, 2.0, 2.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0])
    """
    r = lr.shape[0] // 2
    entries = [lr[i] if r - keep[0] <= i <= r + keep[1] else None for i in range(2 * r + 1)]
    filled, real = replicate_window(entries)
    full = torch.cat((flows[:r], flows.new_zeros(1, *flows.shape[1:]), flows[r:]))
    fl = [full[i] for i in range(2 * r + 1)]
    for i in range(r - 1, -1, -1):
        fl[i] = fl[i] if real[i] else fl[i + 1]
    for i in range(r + 1, 2 * r + 1):
        fl[i] = fl[i] if real[i] else fl[i - 1]
    return torch.stack(filled), torch.stack(fl[:r] + fl[r + 1:])


def dihedral(x: torch.Tensor, op: int) -> torch.Tensor:
    """``x`` (..., H, W) under one of the eight flips/rotations: ``op`` in 0..7, bit 0
    flips left-right, bit 1 upside down, bit 2 transposes.

    >>> dihedral(torch.arange(4.0).view(2, 2), 5).tolist()
    [[1.0, 3.0], [0.0, 2.0]]
    """
    if op & 1:
        x = x.flip(-1)
    if op & 2:
        x = x.flip(-2)
    return x.transpose(-1, -2) if op & 4 else x


def transform(lr: torch.Tensor, hr: torch.Tensor, flows: torch.Tensor, op: int, reverse: bool):
    """:func:`dihedral` ``op`` applied to frames and flows alike (the flows' vectors turned
    with them), and the window reversed in time (``reverse``). Tensors (..., H, W); flows
    (..., 2, H, W) in pixels.

    >>> f = torch.zeros(1, 2, 2, 4, 4); f[:, :, 0] = 1.0      # x-flow of +1
    >>> _, _, g = transform(torch.zeros(1, 3, 3, 4, 4), torch.zeros(1, 3, 8, 8), f, 5, False)
    >>> g[0, 0, :, 0, 0].tolist()    # left-right flip negates x, the transpose makes it y
    [0.0, -1.0]
    """
    lr, hr, flows = dihedral(lr, op), dihedral(hr, op), dihedral(flows, op)
    sign = torch.tensor([-1.0 if op & 1 else 1.0, -1.0 if op & 2 else 1.0]).view(2, 1, 1)
    flows = flows * sign
    if op & 4:
        flows = flows.flip(-3)
    if reverse:
        lr, flows = lr.flip(-4), flows.flip(-4)
    return lr, hr, flows


class MultiFrameTrainer(PoolTrainer):
    """The model and its pools on :class:`~training.loop.PoolTrainer`'s loop (see the
    module doc)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, args.out)
        dsfn = load_model(args.init)
        start = getattr(dsfn.spatial, "single", dsfn.spatial)
        self.single_ref = start.eval()
        self.model_args = {**{k: dsfn.config.spatial_args[k] for k in ("channels", "layers")}, "align": args.align,
                           "fuse_layers": args.fuse_layers, "radius": args.radius, "lk_steps": args.lk_steps}
        self.flows_of = partial(pair_flows, dsfn.temporal.eval().estimate, lk_steps=args.lk_steps)
        #: how its convolutions pad the frame's edges (``--spatial-padding``, else --init's M_S's)
        self.padding = args.spatial_padding or dsfn.config.spatial_padding
        self.model = MultiFrameSR(**self.model_args, padding=self.padding)
        if isinstance(dsfn.spatial, MultiFrameSR):   # a multi-frame M_S continues as it is, if it has this shape
            if dsfn.spatial.radius != args.radius or dsfn.spatial.lk_steps != args.lk_steps:
                raise ValueError(f"--init's multi-frame M_S has radius {dsfn.spatial.radius} and lk_steps "
                                 f"{dsfn.spatial.lk_steps}: train it with --radius and --lk-steps as those")
            try:
                self.model.load_state_dict(dsfn.spatial.state_dict())
            except RuntimeError:
                raise ValueError(f"--init's multi-frame M_S has other layers than --align {args.align} "
                                 f"--fuse-layers {args.fuse_layers}: give its own") from None
        else:
            self.model.single.load_state_dict(start.state_dict())
        # the neighbours' part alone: the single-frame network stays what it was
        self.model.requires_grad_(args.part != "single")
        self.model.single.requires_grad_(args.part != "neighbours")
        self.score = "single-frame" if args.part == "single" else "multi-frame"
        data, root = data_section(args.config, args.data_root)
        self.train_pool = self._pool(data["sequences"], root, "train", args.pool, False)
        if args.stills:
            stills = self._pool(data["sr_images"], root, "stills", args.stills, False)
            self.train_pool = {k: torch.cat((v, stills[k])) for k, v in self.train_pool.items()}
        self.val_pool = self._pool(data["val_sequences"], root, "val", args.val_pool, True)

    def _pool(self, entries: list, root: Path, name: str, count: int, central: bool) -> dict:
        a = self.args
        kind = f"shift{a.still_shift:g}-p{a.still_patches}" if name == "stills" else "-".join(map(str, a.strides))
        path = self.out / f"pool-{name}-{count}-{a.pool_size}-{kind}-r{a.radius}-lk{a.lk_steps}.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
        t0 = time.time()
        if name == "stills":
            seqs = moving_stills(config_images(root, entries), count, 2 * a.radius + 1, 2 * a.pool_size, 3, a.still_shift,
                                 a.still_patches)
            pool = build_pool(seqs, self.flows_of, count, a.pool_size, (1,), 4, False, a.radius)
        else:
            seqs = config_sequences(root, entries)
            pool = build_pool(seqs, self.flows_of, count, a.pool_size, tuple(a.strides), 1 + central, central,
                              a.radius)
        save_checkpoint(path, pool)
        log.info("%s pool: %d windows in %.0f s -> %s", name, count, time.time() - t0, path)
        return pool

    def batch(self, step: int):
        a, pool = self.args, self.train_pool
        g = torch.Generator().manual_seed(step)
        n, size, margin = pool["lr"].shape[0], a.crop // 2, a.margin
        span = pool["lr"].shape[-1] - 2 * margin - size
        lrs, hrs, fls = [], [], []
        for i in torch.randint(0, n, (a.batch,), generator=g).tolist():
            y, x = (margin + int(v) for v in torch.randint(0, span + 1, (2,), generator=g))
            lr = pool["lr"][i, :, :, y:y + size, x:x + size].float()
            hr = pool["hr"][i, :, 2 * y:2 * (y + size), 2 * x:2 * (x + size)].float()
            fl = pool["flows"][i, :, :, y:y + size, x:x + size].float()
            op = int(torch.randint(0, 8, (1,), generator=g))
            rev, cut = (bool(v) for v in torch.rand(2, generator=g) < torch.tensor([0.5, a.alone]))
            lr, hr, fl = transform(lr, hr, fl, op, rev)
            if cut:
                r = lr.shape[0] // 2
                keep = torch.randint(0, r, (2,), generator=g).tolist()
                keep[int(torch.randint(0, 2, (1,), generator=g))] = int(torch.randint(0, r + 1, (1,), generator=g))
                lr, fl = truncate(lr, fl, (keep[0], keep[1]))
            lrs.append(lr)
            hrs.append(hr)
            fls.append(fl)
        return torch.stack(lrs).contiguous(), torch.stack(hrs).contiguous(), torch.stack(fls).contiguous()

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def loss(self, step: int) -> torch.Tensor:
        lr, hr, fl = self.batch(step)
        if self.args.part == "single":
            return F.l1_loss(self.model.single(lr[:, lr.shape[1] // 2]), hr)
        return F.l1_loss(self.model(lr, fl), hr)

    def validate(self) -> dict[str, float]:
        """PSNR of the multi-frame network, of its single-frame network alone and of the
        single-frame M_S it started from, on the validation pool's crops (their borders left
        out)."""
        pool, b = self.val_pool, self.args.margin
        errs: dict[str, list[float]] = {"multi-frame": [], "single-frame": [], "start": []}
        self.model.eval()
        with torch.no_grad():
            for i in range(0, pool["lr"].shape[0], 8):
                lr, hr, fl = pool["lr"][i:i + 8].float(), pool["hr"][i:i + 8].float(), pool["flows"][i:i + 8].float()
                centre = lr[:, lr.shape[1] // 2]
                crop = (..., slice(2 * b, -2 * b), slice(2 * b, -2 * b))
                for name, out in (("multi-frame", self.model(lr, fl)), ("single-frame", self.model.single(centre)),
                                  ("start", self.single_ref(centre))):
                    errs[name] += psnr(out[crop], hr[crop]).tolist()
        self.model.train()
        return {k: float(np.mean(e)) for k, e in errs.items()}

    def state(self) -> dict:
        return {**super().state(), "model_args": dict(self.model_args), "part": self.args.part,
                "padding": self.padding}


def export(checkpoint: str | Path, init: str | Path, out: str | Path, average: str | Path | None = None) -> Path:
    """A weights file: ``init``'s network with the checkpoint's multi-frame M_S as M_S (its
    single-frame network alone after ``--part single``); with ``average`` (a checkpoint of
    the same run), the mean of both checkpoints' weights."""
    ck = load_checkpoint(checkpoint)
    base = load_model(init)
    args, weights = dict(ck["model_args"]), ck["model"]
    other = None if average is None else load_checkpoint(average)
    if other is not None:
        weights = {k: (v.float() + other["model"][k].float()).div(2).to(v.dtype) for k, v in weights.items()}
    if ck.get("part") == "single":
        spatial, args = "espcn", {"channels": args["channels"], "layers": args["layers"]}
        weights = {k.removeprefix("single."): v for k, v in weights.items() if k.startswith("single.")}
    else:
        spatial = "multiframe"
    model = DSFN(replace(base.config, spatial=spatial, spatial_args=args, spatial_padding=ck.get("padding", "zeros")))
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("spatial.")}
    state.update({f"spatial.{k}": v for k, v in weights.items()})
    model.load_state_dict(state)
    extra = {"stage": f"multiframe-{ck.get('part', 'neighbours')}", "step": str(ck["step"]), "val_psnr": f"{ck['best']:.4f}",
             "source": Path(checkpoint).name}
    if other is not None:
        extra["source"] += f" + {Path(average).name} (mean, step {other['step']})"
    return save_model(model, out, extra)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.multiframe", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--data-root")
    p.add_argument("--init", required=True, help="a weights file whose M_S and M_T are used (frozen M_T)")
    p.add_argument("--out", required=True)
    p.add_argument("--part", choices=("single", "neighbours", "all"), default="neighbours",
                   help="what is trained: the single-frame network on the centres, the neighbours' alignment and "
                   "fusion (single-frame network frozen), or both")
    p.add_argument("--align", type=int, default=8, help="channels of the alignment network")
    p.add_argument("--fuse-layers", type=int, default=1)
    p.add_argument("--spatial-padding", choices=PADDINGS, help="how M_S's convolutions pad the frame's edges "
                   "(vsdsfn.nets.MultiFrameSR(padding=)); default: as --init's M_S")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--crop", type=int, default=96, help="high-res training crop")
    p.add_argument("--margin", type=int, default=16, help="low-res pixels of the pool crops' borders not trained on")
    p.add_argument("--pool", type=int, default=2400)
    p.add_argument("--val-pool", type=int, default=160)
    p.add_argument("--pool-size", type=int, default=128, help="low-res size of the pool's crops")
    p.add_argument("--strides", type=int, nargs="+", default=[1, 2])
    p.add_argument("--radius", type=int, default=1, help="neighbours on each side of the centre")
    p.add_argument("--lk-steps", type=int, default=2,
                   help="Lucas-Kanade steps refining M_T's flows between frames (0: its flows as they are)")
    p.add_argument("--stills", type=int, default=0,
                   help="windows of still images under a random camera motion (data.sr_images, "
                   "training.datasets.moving_stills) added to the training pool")
    p.add_argument("--still-shift", type=float, default=4.0, help="the stills' largest motion per frame (pixels)")
    p.add_argument("--still-patches", type=int, default=0,
                   help="at most this many patches of other stills moving over each still (occlusion)")
    p.add_argument("--alone", type=float, default=0.1,
                   help="share of windows cut short as at a clip's end or scene cut (at least one side)")
    add_loop_arguments(p, iters=3000, lr=3e-4, warmup=100, val_every=500)
    p.add_argument("--export", metavar="OUT", help="write --out's best.pt with --init's other networks to OUT "
                   "(safetensors) and stop")
    p.add_argument("--average", action="store_true", help="with --export: M_S is the mean of best.pt's and "
                   "last.pt's weights")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.average and not args.export:
        p.error("--average goes with --export")
    out = Path(args.out)
    try:
        train_or_export(args, lambda: MultiFrameTrainer(args), lambda: export(
            out / "best.pt", args.init, args.export, out / "last.pt" if args.average else None))
    except ValueError as exc:
        raise SystemExit(f"training.multiframe: {exc}") from None
    return 0

if __name__ == "__main__":
    sys.exit(main())
