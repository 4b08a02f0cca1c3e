"""How F blends the two streams, timestep by timestep: where F and R gain over S->T, and
where they lose.

    python -m training.blend --config training/configs/cpu.toml --data-root DATA \\
        --weights models/dsfn_default.safetensors [--split val] [--count 240] [--pool FILE]

Central crops of the split's sequences at every timestep of the config's spans
(:func:`training.refit.build_pool`: M_S of the source frames, both streams and the truth)
are scored per timestep t, over all crops and over the small-motion and the detailed half
(motion: mean |M_S(L-) - M_S(L+)|; detail: mean vertical gradient of the truth; each split
at its median): PSNR of S->T, T->S, F and R, the mean of F's two masks, and the best
constant blend ``w * S->T + (1 - w) * T->S`` (``w`` in steps of 0.05; an oracle that knows
the truth). A fixed blend that wins on the training split but loses on held-out footage
points at the data F was trained on. ``--pool FILE`` keeps the crops' streams for a rerun.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from vsdsfn.weights import load_model

from .config import SPLITS, data_section
from .datasets import config_sequences
from .metrics import psnr
from .refit import build_pool
from .train import triplet_spans

__all__ = ["scores", "table", "main"]

def scores(model, pool: dict[str, torch.Tensor], weights: np.ndarray = np.arange(0.5, 1.001, 0.05)) -> list[dict]:
    """One row per crop of ``pool``: t, motion, detail, the PSNRs of ``st``, ``ts``, ``F``,
    ``R``, F's mean masks ``mask_st``/``mask_ts`` and the PSNR of each constant blend."""
    rows = []
    with torch.no_grad():
        for i in range(0, pool["t"].shape[0], 8):
            s = {k: pool[k][i:i + 8].float() for k in ("hr0", "hr1", "st", "ts", "truth")}
            t = pool["t"][i:i + 8]
            out = model.combine(s["st"], s["ts"], s["hr0"], s["hr1"], t)
            cols = {"st": psnr(s["st"], s["truth"]), "ts": psnr(s["ts"], s["truth"]),
                    "F": psnr(out["fused"], s["truth"]), "R": psnr(out["refined"], s["truth"]),
                    "mask_st": out["masks"][:, 0].flatten(1).mean(1), "mask_ts": out["masks"][:, 1].flatten(1).mean(1),
                    "motion": (s["hr0"] - s["hr1"]).abs().flatten(1).mean(1),
                    "detail": (s["truth"][..., 1:, :] - s["truth"][..., :-1, :]).abs().flatten(1).mean(1)}
            blends = torch.stack([psnr(w * s["st"] + (1 - w) * s["ts"], s["truth"]) for w in weights], 1)
            for j in range(t.shape[0]):
                rows.append({"t": float(t[j]), **{k: float(v[j]) for k, v in cols.items()},
                             "blends": dict(zip((round(float(w), 2) for w in weights), blends[j].tolist()))})
    return rows


def table(rows: list[dict]) -> list[str]:
    """A Markdown table: per group (all, small motion, detailed) and t, the mean of each
    score, R and F against S->T, and the best constant blend.

    >>> row = {"t": 0.5, "st": 30.0, "ts": 29.0, "F": 30.1, "R": 30.2, "mask_st": 0.7, "mask_ts": 0.3,
    ...        "motion": 0.1, "detail": 0.1, "blends": {0.8: 30.15, 1.0: 30.0}}
    >>> table([row])[2]
    '| all | 1/2 | 1 | 30.000 | 29.000 | 30.100 | 30.200 | +0.200 | +0.100 | 0.70 / 0.30 | 0.80: 30.150 |'
    """
    from fractions import Fraction

    motion, detail = (float(np.median([r[k] for r in rows])) for k in ("motion", "detail"))
    groups = [("all", lambda r: True), ("small motion", lambda r: r["motion"] < motion),
              ("detailed", lambda r: r["detail"] >= detail),
              ("small motion, detailed", lambda r: r["motion"] < motion and r["detail"] >= detail)]
    out = ["| crops | t | n | S->T | T->S | F | R | R - S->T | F - S->T | masks (S->T / T->S) | best constant blend |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for name, keep in groups:
        for t in sorted({r["t"] for r in rows}):
            g = [r for r in rows if r["t"] == t and keep(r)]
            if not g:
                continue
            m = {k: float(np.mean([r[k] for r in g])) for k in ("st", "ts", "F", "R", "mask_st", "mask_ts")}
            blends = {w: float(np.mean([r["blends"][w] for r in g])) for w in g[0]["blends"]}
            w = max(blends, key=blends.get)
            out.append(f"| {name} | {Fraction(t).limit_denominator(8)} | {len(g)} | {m['st']:.3f} | {m['ts']:.3f} | "
                       f"{m['F']:.3f} | {m['R']:.3f} | {m['R'] - m['st']:+.3f} | {m['F'] - m['st']:+.3f} | "
                       f"{m['mask_st']:.2f} / {m['mask_ts']:.2f} | {w:.2f}: {blends[w]:.3f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.blend", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--data-root")
    p.add_argument("--weights", required=True)
    p.add_argument("--split", choices=sorted(SPLITS), default="val")
    p.add_argument("--count", type=int, default=240, help="crops, spread evenly over the split's triplets")
    p.add_argument("--size", type=int, default=256, help="high-res crop size")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pool", help="keep the crops' streams in this file (read from it when it exists)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_model(a.weights).eval()
    if a.pool and Path(a.pool).exists():
        pool = torch.load(a.pool, weights_only=True)
    else:
        data, root = data_section(a.config, a.data_root)
        spans = {m: [1] for m in triplet_spans(data)}
        pool = build_pool(model, config_sequences(root, data[SPLITS[a.split]]), spans, a.count, a.size, 2,
                          central=True)
        if a.pool:
            torch.save(pool, a.pool)
    print("\n".join([f"# How F blends the streams: {Path(a.weights).name}, split {a.split}, {a.count} crops of "
                     f"{a.size}x{a.size}", "", *table(scores(model, pool))]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
