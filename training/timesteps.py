"""Quality at timesteps other than 1/2 (``python -m training.evaluate --t``).

From each validation sequence, outer frames i and i + m and the true frame i + j
(t = j/m) for t in 1/4, 1/3, 1/2, 2/3, 3/4; the outer frames downscaled 2x as in
:mod:`training.evaluate`. Rows: the network's output R and both streams, and the
cascades users run today with the model's own RIFE weights: Spline36 -> RIFE(t) as
vs-rife runs it (fastmode) and with RIFE's refinement.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from vsdsfn.precision import autocast

from .datasets import downscale
from .results import R, SPLINE_RIFE, SPLINE_RIFE_R, ST, TS, Result
from .triplets import Triplet, load_triplets, outer_low_res, select, to_array, to_tensor

__all__ = ["TIMESTEPS", "ROWS", "timestep_triplets", "evaluate_timesteps", "format_timesteps"]

#: (j, m): the true frame j of m frames after L-, t = j / m
TIMESTEPS = ((1, 4), (1, 3), (1, 2), (2, 3), (3, 4))
ROWS = (R, ST, TS, SPLINE_RIFE, SPLINE_RIFE_R)


def timestep_triplets(triplets: Sequence[Triplet], j: int, m: int) -> list[Triplet]:
    """Frames (i, i + j, i + m) of every sequence that ``triplets`` come from."""
    seqs = {id(t.seq): t for t in triplets}
    return [Triplet(f"{t.group}:{i}", t.seq, (i, i + j, i + m), t.group)
            for t in seqs.values() for i in range(len(t.seq) - m)]


def _score(res: Result, trip: Triplet, frames: list[torch.Tensor], t: float, model, dtype: torch.dtype,
           st_scale: float | None, ensemble: bool) -> None:
    from . import mvbaseline as mvb

    h0, h1, h2 = frames
    l0, l2 = downscale(h0), downscale(h2)
    g = trip.group
    with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
        before, after = outer_low_res(trip, h1) if model.radius else (None, None)
        out = model.run(l0, l2, t=t, st_scale=st_scale, ensemble=ensemble, before=before, after=after)
        for row, key in ((R, "refined"), (ST, "st"), (TS, "ts")):
            res.add(row, g, out[key], h1)
        up = mvb.spline36_2x(mvb.clip_from_frames([to_array(l0), to_array(l2)]))
        s0, s2 = (to_tensor(a) for a in mvb.frames_from_clip(up))
        res.add(SPLINE_RIFE, g, model.temporal(s0, s2, timestep=t, fast=True).clamp(0, 1), h1)
        res.add(SPLINE_RIFE_R, g, model.temporal(s0, s2, timestep=t).clamp(0, 1), h1)
    res.names.append(trip.name)


def evaluate_timesteps(triplets: Sequence[Triplet], model, max_n: int | None = None,
                       dtype: torch.dtype = torch.float32, progress: bool = True, st_scale: float | None = None,
                       ensemble: bool = False) -> dict[tuple[int, int], Result]:
    """A :class:`Result` per timestep of :data:`TIMESTEPS` (at most ``max_n`` triplets each;
    unreadable ones skipped as :func:`training.triplets.load_triplets` does); ``st_scale``
    and ``ensemble`` as in :func:`training.evaluate.evaluate` (the RIFE cascades run as
    they are)."""
    out = {}
    for j, m in TIMESTEPS:
        res, t0 = Result(), time.time()
        for _, trip, frames in load_triplets(select(timestep_triplets(triplets, j, m), max_n), res.skipped):
            _score(res, trip, frames, j / m, model, dtype, st_scale, ensemble)
        res.seconds = time.time() - t0
        if progress:
            print(f"t = {j}/{m}: " + ", ".join(f"{r} {res.mean(r)[0]:.2f}" for r in ROWS), flush=True)
        out[(j, m)] = res
    return out


def format_timesteps(results: dict[tuple[int, int], Result], dataset: str, command: str, weights: str) -> str:
    """The markdown report: mean PSNR (dB) per row and timestep, and R's margins."""
    cols = list(results)
    lines = [f"# DSFN at any timestep: {dataset}", "",
             "| Method | " + " | ".join(f"t = {j}/{m}" for j, m in cols) + " |", "|---|" + "---:|" * len(cols)]
    means = {r: [results[c].mean(r)[0] for c in cols] for r in ROWS}
    lines += [f"| {r} | " + " | ".join(f"{v:.2f}" for v in means[r]) + " |" for r in ROWS]
    for other in (SPLINE_RIFE, ST):
        lines.append(f"| R − {other} | " + " | ".join(f"{a - b:+.2f}" for a, b in zip(means[R], means[other])) + " |")
    skipped = sum(len(results[c].skipped) for c in cols)
    lines += ["", f"- Triplets per timestep: {', '.join(str(len(results[c].names)) for c in cols)}"
              + (f" ({skipped} skipped: unreadable)" if skipped else ""),
              f"- Weights: {weights}", f"- Command: `{command}`"]
    return "\n".join(lines) + "\n"
