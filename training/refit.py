"""Fine-tune F and R on the streams of a weights file's frozen M_S and M_T: the paper's
stage 2 again for a new M_S, whose sharper frames change S->T and everything F and R see.

    python -m training.refit --config training/configs/cpu.toml --data-root DATA \\
        --weights W --out runs/refit [--iters N] [--resume]
    python -m training.refit --config ... --weights W --out runs/refit --export OUT

M_S and M_T are frozen, so each sample's streams are computed once: a pool of samples is
cut from the config's training sequences as high-res crops. A sample at timestep t = j/m
(the config's spans and strides, as the fusion stage draws them) has the source frames
i and i + ms, the truth i + js, and the neighbours a multi-frame M_S sees (its radius of
source frames on each side, ms apart); the network's M_S of both source frames (each from
its window, :func:`windowed_upscale`), the S->T and T->S streams (:meth:`DSFN.streams`)
and the truth are stored per sample (``pool-*.pt`` in the run folder, float16). Training
draws batches from the pool with the eight flips/rotations and temporal reversal (the
source frames swapped, t -> 1 - t) and optimises F and R (:meth:`DSFN.combine`; Eq. 13-14:
L1 of the fused and refined frames) with RAdam and a cosine learning rate. Validation:
the same kind of pool from the validation sequences (central crops), PSNR of S->T, of F
and of R; the best step is kept (``best.pt``), ``--export`` writes the weights file with
its F and R. ``--resume`` continues from ``last.pt``.

The crop pool does not predict the whole frames well (RIFE sees less of the motion on a
crop): ``--val-triplets`` also scores F and R on the whole frames of ``training.evaluate``'s
validation triplets (t = 1/2, its main table; their streams cached once, ``DSFN.run``'s
output to float16) and keeps the best step by their R.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vsdsfn.nets import DSFN
from vsdsfn.nets.common import PADDINGS, pad_to
from vsdsfn.weights import load_model, save_model

from .config import data_section
from .datasets import config_sequences, downscale
from .loop import PoolTrainer, add_loop_arguments, train_or_export
from .metrics import psnr
from .multiframe import dihedral
from .train import load_checkpoint, save_checkpoint, triplet_spans
from .triplets import config_triplets, load_triplets, outer_low_res

__all__ = ["windowed_upscale", "whole_streams", "build_pool", "build_triplet_pool", "augment", "CHANGES", "rebuilt",
           "Refit", "export", "main"]

log = logging.getLogger("vsdsfn.training")

_KEYS = ("hr0", "hr1", "st", "ts", "truth")


def windowed_upscale(model: DSFN, lrs: torch.Tensor, centre: int) -> torch.Tensor:
    """M_S of ``lrs[:, centre]`` from the low-res frames ``lrs`` (B, N, 3, H, W) in time
    order, as the engine makes it: a multi-frame M_S sees ``model.radius`` of them on each
    side (flows by :meth:`DSFN.window_flows`), a single-frame M_S the frame alone."""
    r = model.radius
    if not r:
        return model.upscale(lrs[:, centre])
    window = lrs[:, centre - r:centre + r + 1]
    return model.upscale(lrs[:, centre], window=window, flows=model.window_flows(window))


def whole_streams(model: DSFN, l0: torch.Tensor, l1: torch.Tensor, t: torch.Tensor,
                  before: torch.Tensor | None = None, after: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """M_S of both frames and the two streams on whole frames, as :meth:`DSFN.run` makes them
    (``before``/``after``: the frames a multi-frame M_S also sees), kept padded to the
    network's size multiple: :meth:`DSFN.combine` on them, cropped to twice the low-res
    size, is ``run``'s output."""
    m = model.multiple_for(model.config.st_scale)
    out = model.run(*(None if x is None else pad_to(x, m) for x in (l0, l1)), t=t,
                    before=None if before is None else pad_to(before, m),
                    after=None if after is None else pad_to(after, m))
    return {k: out[k] for k in ("hr0", "hr1", "st", "ts")}


def build_pool(model: DSFN, sequences: list, spans: dict[int, list[int]], count: int, size: int, seed: int,
               central: bool = False) -> dict[str, torch.Tensor]:
    """``count`` samples of ``size`` x ``size`` high-res crops: ``hr0``, ``hr1`` (M_S of the
    source frames), ``st``, ``ts`` (the streams at t), ``truth`` (N, 3, S, S) float16 and
    ``t`` (N,) float32. ``spans``: span m -> strides s (:func:`training.train.triplet_spans`);
    ``central``: deterministic central crops spread evenly over the sequences."""
    rng = np.random.default_rng(seed)
    r = model.radius
    choices = []
    for si, seq in enumerate(sequences):
        h, w = seq.frame(0).shape[:2]
        if min(h, w) < size:
            continue
        for m, strides in spans.items():
            for s in strides:
                gap = m * s                                   # the source frames' spacing
                for i in range(r * gap, len(seq) - (r + 1) * gap):
                    choices += [(si, gap, s, j, m, i) for j in range(1, m)]
    picks = (np.linspace(0, len(choices) - 1, count).round().astype(int) if central
             else rng.choice(len(choices), count, replace=count > len(choices)))
    out: dict[str, list[torch.Tensor]] = {k: [] for k in (*_KEYS, "t")}
    t0 = time.time()
    for n, c in enumerate(picks):
        si, gap, s, j, m, i = choices[int(c)]
        seq = sequences[si]
        h, w = seq.frame(0).shape[:2]
        y = (h - size) // 2 if central else int(rng.integers(0, h - size + 1))
        x = (w - size) // 2 if central else int(rng.integers(0, w - size + 1))

        def crop(k: int) -> torch.Tensor:
            f = np.ascontiguousarray(seq.frame(k)[y:y + size, x:x + size], dtype=np.float32) / 255
            return torch.from_numpy(f).permute(2, 0, 1)

        sources = torch.stack([crop(i + d * gap) for d in range(-r, r + 2)])[None]   # i - r*gap .. i + (r+1)*gap
        lrs = downscale(sources.flatten(0, 1)).unflatten(0, (1, -1))
        t = torch.tensor([j / m])
        with torch.no_grad():
            hr0, hr1 = windowed_upscale(model, lrs, r), windowed_upscale(model, lrs, r + 1)
            streams = model.streams(lrs[:, r], lrs[:, r + 1], hr0, hr1, t=t)
        for k, v in (("hr0", hr0), ("hr1", hr1), ("st", streams["st"]), ("ts", streams["ts"]),
                     ("truth", crop(i + j * s)[None])):
            out[k].append(v[0].half())
        out["t"].append(t)
        if n % 100 == 0:
            log.info("pool: %d / %d samples (%.0f s)", n, count, time.time() - t0)
    return {k: torch.stack(v) if k != "t" else torch.cat(v) for k, v in out.items()}


def build_triplet_pool(model: DSFN, config: str, data_root: str | None) -> dict[str, list[torch.Tensor]]:
    """The validation triplets of ``training.evaluate``'s main table (whole frames, t = 1/2):
    per triplet ``hr0``, ``hr1``, ``st``, ``ts`` as :func:`whole_streams` keeps them (float16)
    and ``truth`` (float32), so that F and R are scored on what the table scores."""
    triplets, _ = config_triplets(config, "val", data_root)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in _KEYS}
    t0 = time.time()
    for k, trip, (h0, h1, h2) in load_triplets(triplets, []):
        outer = outer_low_res(trip, h1) if model.radius else (None, None)
        with torch.no_grad():
            got = whole_streams(model, downscale(h0), downscale(h2), torch.tensor([0.5]), *outer)
        for key in _KEYS[:-1]:
            out[key].append(got[key][0].half())
        out["truth"].append(h1[0])
        if k % 20 == 0:
            log.info("validation triplets: %d / %d (%.0f s)", k, len(triplets), time.time() - t0)
    return out


def augment(sample: dict[str, torch.Tensor], op: int, reverse: bool) -> dict[str, torch.Tensor]:
    """A batch of samples flipped/rotated (:func:`~training.multiframe.dihedral` ``op``)
    and, with ``reverse``, played backwards: the source frames swap and t becomes 1 - t.

    >>> x = {k: torch.rand(1, 3, 4, 4) for k in _KEYS} | {"t": torch.tensor([0.25])}
    >>> y = augment(x, 0, True)
    >>> torch.equal(y["hr0"], x["hr1"]), y["t"].tolist()
    (True, [0.75])
    """
    out = {k: dihedral(sample[k], op) for k in _KEYS} | {"t": sample["t"]}
    if reverse:
        out["hr0"], out["hr1"], out["t"] = out["hr1"], out["hr0"], 1 - out["t"]
    return out


class Refit(PoolTrainer):
    """F and R, the frozen network and the pools on :class:`~training.loop.PoolTrainer`'s
    loop (see the module doc)."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, args.out)
        self.score = "R triplets" if args.val_triplets else "R"
        changes = {"fusion_time_bias": True} if args.time_bias else {}
        for name in ("refine_padding", "spatial_padding"):
            if getattr(args, name):
                changes[name] = getattr(args, name)
        self.model = rebuilt(load_model(args.weights), **changes)
        if args.size % (2 * self.model.multiple):
            raise ValueError(f"--size must be a multiple of {2 * self.model.multiple} (twice the network's "
                             "low-res size multiple)")
        for name, mod in self.model.named_children():
            mod.requires_grad_(name in ("fusion", "refine"))
        d, root = data_section(args.config, args.data_root)
        spans = triplet_spans(d)
        self.train_pool = self._pool(d["sequences"], root, "train", args.pool, spans, False)
        self.val_pool = self._pool(d["val_sequences"], root, "val", args.val_pool, {m: [1] for m in spans}, True)
        self.triplet_pool = self._triplet_pool() if args.val_triplets else None
        self.model.fusion.train()
        self.model.refine.train()

    def state(self) -> dict:
        return {**super().state(), "config": {k: getattr(self.model.config, k) for k in CHANGES}}

    def resume(self) -> None:
        """:meth:`PoolTrainer.resume`, refused if the run was trained with other :data:`CHANGES`."""
        saved = load_checkpoint(self.out / "last.pt").get("config", {})
        ours = {k: getattr(self.model.config, k) for k in CHANGES}
        if saved != ours:
            raise ValueError(f"--resume: {self.out / 'last.pt'} was trained with {saved}, not {ours}: "
                             "give the run's --time-bias and --refine-padding")
        super().resume()

    def _pool(self, entries: list, root: Path, name: str, count: int, spans: dict, central: bool) -> dict:
        path = self.out / f"pool-{name}-{count}-{self.args.size}.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
        self.model.eval()
        with torch.no_grad():
            pool = build_pool(self.model, config_sequences(root, entries), spans, count, self.args.size,
                              1 + central, central)
        save_checkpoint(path, pool)
        log.info("%s pool: %d samples -> %s", name, count, path)
        return pool

    def _triplet_pool(self) -> dict:
        path = self.out / "pool-val-triplets.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
        self.model.eval()
        pool = build_triplet_pool(self.model, self.args.config, self.args.data_root)
        save_checkpoint(path, pool)
        return pool

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"fusion": self.model.fusion, "refine": self.model.refine}

    def optimizer(self) -> torch.optim.Optimizer:
        """RAdam over F and R, F's timestep bias (if any) at ``--bias-lr``: one number per
        logit moves as far in a few hundred steps as it must."""
        if self.opt is None:
            bias = self.model.fusion.t_bias
            rest = [p for m in self.modules().values() for p in m.parameters() if p is not bias]
            groups = [{"params": rest}] + ([{"params": [bias], "scale": self.args.bias_lr / self.args.lr}]
                                           if bias is not None else [])
            self.opt = torch.optim.RAdam(groups, lr=self.args.lr)
        return self.opt

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(step)
        idx = torch.randint(0, self.train_pool["t"].shape[0], (self.args.batch,), generator=g)
        sample = {k: self.train_pool[k][idx].float() for k in _KEYS} | {"t": self.train_pool["t"][idx]}
        op, rev = int(torch.randint(0, 8, (1,), generator=g)), bool(torch.rand(1, generator=g) < 0.5)
        return {k: v.contiguous() for k, v in augment(sample, op, rev).items()}

    def loss(self, step: int) -> torch.Tensor:
        """Eq. 13 + 14: L1 of the fused and of the refined frame."""
        s = self.batch(step)
        out = self.model.combine(s["st"], s["ts"], s["hr0"], s["hr1"], s["t"])
        return F.l1_loss(out["fused"], s["truth"]) + F.l1_loss(out["refined"], s["truth"])

    def validate(self) -> dict[str, float]:
        """PSNR of S->T, of F and of R on the validation pool and, with ``--val-triplets``,
        on the whole validation triplets (``... triplets``; the score is then their R)."""
        sums: dict[str, list[float]] = {}
        self.model.fusion.eval()
        self.model.refine.eval()
        with torch.no_grad():
            # the crop pool's samples are stacked (4 at a time); the triplets' whole frames differ in size
            for name, pool, whole in (("", self.val_pool, False), (" triplets", self.triplet_pool, True)):
                if pool is None:
                    continue
                n, step = len(pool["st"]), 1 if whole else 4
                for i in range(0, n, step):
                    s = {k: (pool[k][i][None] if whole else pool[k][i:i + step]).float() for k in _KEYS}
                    t = torch.tensor([0.5]) if whole else pool["t"][i:i + step]
                    out = self.model.combine(s["st"], s["ts"], s["hr0"], s["hr1"], t)
                    h, w = s["truth"].shape[-2:]
                    for k, v in (("S->T", s["st"]), ("F", out["fused"]), ("R", out["refined"])):
                        sums.setdefault(k + name, []).extend(psnr(v[..., :h, :w], s["truth"]).tolist())
        self.model.fusion.train()
        self.model.refine.train()
        return {k: float(np.mean(v)) for k, v in sums.items()}


#: the architecture fields a refit may change (:func:`rebuilt`), kept in its checkpoints
CHANGES = ("fusion_time_bias", "refine_padding", "spatial_padding")


def rebuilt(model: DSFN, **changes) -> DSFN:
    """``model`` with some of its :data:`CHANGES`: F's timestep bias of the mask logits
    (``fusion_time_bias=True``, added at zero: the same output) or how R or M_S pad
    (``refine_padding``, ``spatial_padding``), all tensors kept."""
    if set(changes) - set(CHANGES):
        raise ValueError(f"a refit changes only {CHANGES}, not {sorted(set(changes) - set(CHANGES))}")
    if all(getattr(model.config, k) == v for k, v in changes.items()):
        return model
    new = DSFN(replace(model.config, **changes))
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if set(missing) - {"fusion.t_bias"} or unexpected:
        raise ValueError(f"cannot rebuild the network with {changes}: missing {missing}, unexpected {unexpected}")
    return new


def export(checkpoint: str | Path, weights: str | Path, out: str | Path) -> Path:
    """A weights file: ``weights``'s network with the checkpoint's F and R (and the
    architecture changes it was trained with)."""
    ck = load_checkpoint(checkpoint)
    model = rebuilt(load_model(weights), **ck.get("config", {}))
    model.fusion.load_state_dict(ck["fusion"])
    model.refine.load_state_dict(ck["refine"])
    extra = {"stage": "refit", "step": str(ck["step"]), "val_psnr": f"{ck['best']:.4f}",
             "source": Path(checkpoint).name}
    return save_model(model, out, extra)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.refit", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--data-root")
    p.add_argument("--weights", required=True, help="the weights file whose M_S and M_T make the streams (frozen) "
                   "and whose F and R are fine-tuned")
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="high-res crop of the pool's samples")
    p.add_argument("--pool", type=int, default=1200)
    p.add_argument("--val-pool", type=int, default=120)
    p.add_argument("--val-triplets", action="store_true",
                   help="also score F and R on training.evaluate's whole validation triplets (t = 1/2) and "
                   "keep the best step by their R")
    p.add_argument("--time-bias", action="store_true",
                   help="add F's timestep bias of the mask logits (vsdsfn.nets.FusionUNet(time_bias=True))")
    p.add_argument("--bias-lr", type=float, default=1e-2, help="learning rate of F's timestep bias")
    p.add_argument("--refine-padding", choices=PADDINGS,
                   help="how R's convolutions pad (vsdsfn.nets.Refine(padding=)); default: as in --weights")
    p.add_argument("--spatial-padding", choices=PADDINGS,
                   help="how M_S's convolutions pad (DSFNConfig.spatial_padding), for the streams F and R are "
                   "fine-tuned on; default: as in --weights")
    add_loop_arguments(p, iters=1000, lr=1e-4, warmup=50, val_every=250)
    p.add_argument("--export", metavar="OUT", help="write --weights with --out's best F and R to OUT and stop")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        train_or_export(args, lambda: Refit(args), lambda: export(Path(args.out) / "best.pt", args.weights, args.export))
    except ValueError as exc:
        raise SystemExit(f"training.refit: {exc}") from None
    return 0

if __name__ == "__main__":
    sys.exit(main())
