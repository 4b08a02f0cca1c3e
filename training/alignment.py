"""How well a weights file's flows between frames align real footage.

    python -m training.alignment --config training/configs/cpu.toml --data-root DATA \\
        [--split val] [--weights W] [--step 2] [--lk-steps 0 2]

For ``--pairs`` frame pairs i, i + ``--step`` of each sequence of the split (step 2: the
neighbours a multi-frame M_S sees when every other frame comes in), both downscaled 2x as
in training, the flow from frame i to i + step (the file's M_T,
:func:`~vsdsfn.nets.multiframe.pair_flows` with each ``--lk-steps``) is upscaled and warps
the true frame i + step onto the true frame i; the PSNR counts the textured pixels (local
luma standard deviation above ``--texture``, 16 px from the borders), where alignment
decides what a neighbour adds. No motion (a zero flow) is the first row.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vsdsfn.nets.common import backwarp, resize_flow
from vsdsfn.nets.multiframe import luma, pair_flows
from vsdsfn.weights import load_model

from .config import SPLITS, data_section
from .datasets import config_sequences, downscale
from .metrics import psnr
from .results import write_report
from .triplets import to_tensor

__all__ = ["textured", "warp_scores", "main"]

def textured(frame: torch.Tensor, threshold: float, border: int = 16) -> torch.Tensor:
    """(B, 1, H, W) 0/1 mask of the pixels whose 5x5 luma standard deviation exceeds
    ``threshold``, ``border`` pixels from the edges left out.

    >>> x = torch.zeros(1, 3, 40, 40); x[..., ::2, :] = 1
    >>> m = textured(x, 0.03, 4)
    >>> int(m.sum()), int(textured(torch.zeros(1, 3, 40, 40), 0.03).sum())
    (1024, 0)
    """
    y = luma(frame)
    mean = F.avg_pool2d(y, 5, 1, 2, count_include_pad=False)
    var = F.avg_pool2d(y * y, 5, 1, 2, count_include_pad=False) - mean * mean
    mask = (var.clamp_min(0).sqrt() > threshold).float()
    inner = torch.zeros_like(mask)
    inner[..., border:-border, border:-border] = 1
    return mask * inner


def _frame(seq, i: int) -> torch.Tensor:
    x = to_tensor(seq.frame(i)) / 255
    return x[..., : x.shape[-2] // 2 * 2, : x.shape[-1] // 2 * 2]


def warp_scores(model, seq, step: int, pairs: int, lk_steps: list[int], threshold: float) -> dict[str, float]:
    """Mean textured-pixel PSNR over ``pairs`` evenly spaced pairs of ``seq``: ``"zero"``
    and ``"lk=N"`` for each entry of ``lk_steps``."""
    starts = np.linspace(0, len(seq) - 1 - step, pairs).round().astype(int)
    rows: dict[str, list[float]] = {}
    for i in sorted(set(starts.tolist())):
        a, b = _frame(seq, i), _frame(seq, i + step)
        small_a, small_b = downscale(a), downscale(b)
        mask = textured(a, threshold)
        flows = {"zero": torch.zeros(1, 2, *small_a.shape[-2:])}
        for n in lk_steps:
            flows[f"lk={n}"] = pair_flows(model.temporal.estimate, small_a, small_b, n)[0]
        for name, flow in flows.items():
            warped = backwarp(b, resize_flow(flow, a.shape[-2:]))
            rows.setdefault(name, []).append(float(psnr(warped, a, weight=mask)))
    return {k: float(np.mean(v)) for k, v in rows.items()}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.alignment", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--data-root")
    p.add_argument("--split", choices=sorted(SPLITS), default="val")
    p.add_argument("--weights", help="a weights file (default: the shipped one)")
    p.add_argument("--step", type=int, default=2, help="frames between the two of a pair")
    p.add_argument("--pairs", type=int, default=5, help="pairs per sequence, evenly spaced")
    p.add_argument("--lk-steps", type=int, nargs="+", default=[0, 2], help="Lucas-Kanade steps to score")
    p.add_argument("--texture", type=float, default=0.03, help="luma standard deviation of a textured pixel")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", help="also write the scores here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data, root = data_section(args.config, args.data_root)
    seqs = config_sequences(root, data[SPLITS[args.split]])
    model = load_model(args.weights).eval().float()
    names = ["zero"] + [f"lk={n}" for n in args.lk_steps]
    print(f"| sequence | {' | '.join('no motion' if n == 'zero' else f'M_T, {n[3:]} LK steps' for n in names)} |")
    print("|---|" + "---:|" * len(names))
    scores = {}
    with torch.no_grad():
        for seq in seqs:
            scores[seq.name] = s = warp_scores(model, seq, args.step, args.pairs, args.lk_steps, args.texture)
            print(f"| {seq.name} | {' | '.join(f'{s[n]:.2f}' for n in names)} |", flush=True)
    mean = {n: float(np.mean([s[n] for s in scores.values()])) for n in names}
    print(f"| **mean** | {' | '.join(f'{mean[n]:.2f}' for n in names)} |")
    write_report(args.json, json.dumps({"sequences": scores, "mean": mean}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
