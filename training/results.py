"""The rows of the evaluation tables and the scores behind them."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .metrics import psnr, ssim

__all__ = ["Result", "result_dict", "write_report", "ROWS", "ST", "TS", "F1", "F2", "R", "R1", "BLEND", "SPLINE_FLOW", "FLOW_SPLINE",
           "MS_FLOW", "SPLINE_FLOW_QP", "SPLINE_RIFE", "SPLINE_RIFE_R", "RIFE_SPLINE", "MV_ROWS", "RIFE_ROWS"]

ST, TS, F1, F2, R = "S→T", "T→S", "F one-mask", "F two-mask", "R"
R1 = "R (one-mask model)"
BLEND, SPLINE_FLOW, FLOW_SPLINE = "bicubic + frame blend", "Spline36 → FlowFPS", "FlowFPS → Spline36"
#: a hybrid: the model's M_S, then mvtools FlowFPS as M_T (how far the model's own M_T is
#: from mvtools' on the same frames)
MS_FLOW = "M_S → FlowFPS"
#: the classic pipeline with better mvtools settings: the mean of FlowFPS's middle frames
#: under :data:`training.mvbaseline.QUARTER_PEL` (quarter-pel, 16- and 8-pixel blocks)
SPLINE_FLOW_QP = "Spline36 → FlowFPS (quarter-pel)"
#: the cascades users run with RIFE (the model's own M_T weights): as vs-rife runs it
#: (Practical-RIFE's fastmode), and with RIFE's refinement
SPLINE_RIFE, SPLINE_RIFE_R, RIFE_SPLINE = ("Spline36 → RIFE (as vs-rife)", "Spline36 → RIFE (refined)",
                                           "RIFE → Spline36 (as vs-rife)")
#: the table's rows, in order (R1 is only shown when a one-mask model is evaluated)
ROWS = (ST, TS, F1, F2, R, R1, BLEND, SPLINE_RIFE, SPLINE_RIFE_R, RIFE_SPLINE, SPLINE_FLOW, SPLINE_FLOW_QP,
        FLOW_SPLINE, MS_FLOW)
MV_ROWS = (SPLINE_FLOW, SPLINE_FLOW_QP, FLOW_SPLINE, MS_FLOW)
RIFE_ROWS = (SPLINE_RIFE, SPLINE_RIFE_R, RIFE_SPLINE)


@dataclass
class Result:
    """Per-triplet scores of every method: rows -> list of (psnr, ssim)."""

    scores: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    groups: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)    # row -> why it has no scores
    seconds: float = 0.0
    size: set = field(default_factory=set)

    def add(self, row: str, group: str, pred: torch.Tensor, gt: torch.Tensor) -> tuple[float, float]:
        pred = pred.float()
        p, s = float(psnr(pred, gt)[0]), float(ssim(pred, gt)[0])
        self.scores.setdefault(row, []).append((p, s))
        self.groups.setdefault(group, {}).setdefault(row, []).append(p)
        return p, s

    def mean(self, row: str) -> tuple[float, float] | None:
        v = self.scores.get(row)
        if not v:
            return None
        a = np.asarray(v, dtype=np.float64)
        return float(a[:, 0].mean()), float(a[:, 1].mean())


def result_dict(res: Result, command: str = "") -> dict:
    """The scores of :func:`evaluate` as plain data (what ``--json`` writes)."""
    rows = {}
    for row, v in res.scores.items():
        psnr_mean, ssim_mean = res.mean(row)
        rows[row] = {"psnr": psnr_mean, "ssim": ssim_mean, "n": len(v)}
    groups = {g: {row: float(np.mean(v)) for row, v in by_row.items()} for g, by_row in res.groups.items()}
    return {"command": command, "rows": rows, "not_run": dict(res.notes), "per_sequence_psnr": groups,
            "triplets": list(res.names), "per_triplet": {row: [list(x) for x in v] for row, v in res.scores.items()},
            "skipped": list(res.skipped), "seconds": res.seconds}


def write_report(path: str | None, text: str) -> None:
    """Write a report (its folder made if needed) through an exclusive temporary file
    renamed over ``path`` when complete; nothing when ``path`` is None."""
    from vsdsfn.partial import Partial

    if path:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Partial(out) as part:
            part.file.write(text.encode())
            part.commit()
        print(f"wrote {out}", file=sys.stderr)
