"""Whole-sequence evaluation: each validation sequence rendered as a user renders it.

    python -m training.evaluate --config training/configs/cpu.toml --split val --data-root DATA \\
        --sequences [--weights W.safetensors] [--compare OLD.safetensors ...] [--precision fp32]

Every other frame of a sequence, downscaled 2x (:func:`training.datasets.downscale`), is
the input clip; the 2x clip is rendered through the engine (:meth:`Engine.upscale_group`,
the filter's one path: a multi-frame M_S sees its neighbours) and every output frame up
to the last source frame is scored against the true frame (PSNR on RGB in [0, 1]):
all frames, the source positions (t = 0: M_S), the interpolated ones (t = 1/2), and
tPSNR, the PSNR of the frame-to-frame differences against the true ones (flicker and
pumping between the two kinds of frame lower it). Means are over frames (frame pairs for
tPSNR) of all sequences together. Rows: the weights (``--weights``, default the shipped
ones), their S→T stream alone between the same source frames (what F and R add), each
``--compare`` file, Spline36 -> RIFE as vs-rife runs it (the model's RIFE),
bicubic + frame blending.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import mvbaseline
from .datasets import downscale
from .flowfps import clip_from_frames
from .metrics import psnr
from .triplets import to_tensor

__all__ = ["SequenceScores", "render_engine", "method_name", "render_spline_rife", "render_blend", "score_sequence",
           "evaluate_sequences", "format_sequences"]

log = logging.getLogger("vsdsfn.training")

#: a renderer: the low-res source frames (HWC float32) -> the 2x clip's frames 0 .. 2K-2
Renderer = Callable[[list[np.ndarray]], list[np.ndarray]]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """:func:`training.metrics.psnr` of two HWC arrays, ``a`` as it is (the callers clip)."""
    return float(psnr(torch.from_numpy(a).permute(2, 0, 1), torch.from_numpy(b).permute(2, 0, 1), clamp=False))


@dataclass
class SequenceScores:
    """Per-frame PSNRs of one method over the sequences scored so far."""

    source: list[float] = field(default_factory=list)
    interpolated: list[float] = field(default_factory=list)
    temporal: list[float] = field(default_factory=list)

    def means(self) -> dict[str, float]:
        return {"all": float(np.mean(self.source + self.interpolated)), "source": float(np.mean(self.source)),
                "interpolated": float(np.mean(self.interpolated)), "tpsnr": float(np.mean(self.temporal))}


def score_sequence(out: Sequence[np.ndarray], truth: Sequence[np.ndarray], scores: SequenceScores) -> None:
    """Add one sequence's scores: even outputs are source positions, odd ones interpolated.

    >>> t = [np.full((2, 2, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    >>> s = SequenceScores(); score_sequence(t, t, s); s.means()["all"]
    100.0
    """
    for n, (o, t) in enumerate(zip(out, truth)):
        (scores.interpolated if n % 2 else scores.source).append(_psnr(np.clip(o, 0, 1), t))
    for n in range(len(out) - 1):
        scores.temporal.append(_psnr(np.clip(out[n + 1], 0, 1) - np.clip(out[n], 0, 1), truth[n + 1] - truth[n]))


def _interleave(evens: list[np.ndarray], mids: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for k, e in enumerate(evens):
        out.append(e)
        if k < len(mids):
            out.append(mids[k])
    return out


def render_engine(engine, output: str = "refined") -> Renderer:
    """The 2x clip through ``engine`` (a :class:`vsdsfn.engine.Engine`), t = 1/2; ``output``:
    the interpolated frames' view (``st``: the S→T stream; the engine's debug outputs)."""
    def render(lr: list[np.ndarray]) -> list[np.ndarray]:
        k, clip = len(lr), object()             # keys of this clip's frames only
        evens, mids = engine.upscale_group(lr, [(clip, j) for j in range(k)], k, [(j, 0.5) for j in range(k - 1)],
                                           output)
        return _interleave(evens, mids)

    return render


def _np(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).float().numpy()


def render_spline_rife(rife) -> Renderer:
    """Spline36 2x, then ``rife`` at t = 1/2 without its refinement, as vs-rife runs it."""
    def render(lr: list[np.ndarray]) -> list[np.ndarray]:
        up = [np.clip(f, 0, 1) for f in mvbaseline.frames_from_clip(mvbaseline.spline36_2x(clip_from_frames(lr)))]
        with torch.no_grad():
            mids = [_np(rife(to_tensor(a), to_tensor(b), fast=True).clamp(0, 1)) for a, b in zip(up, up[1:])]
        return _interleave(up, mids)

    return render


def render_blend(lr: list[np.ndarray]) -> list[np.ndarray]:
    """Bicubic 2x, and the mean of the two neighbours between source frames."""
    up = [_np(F.interpolate(to_tensor(f), scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)) for f in lr]
    return _interleave(up, [(a + b) / 2 for a, b in zip(up, up[1:])])


def _frames(seq) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(the true frames 0 .. 2K-2 cropped to even sizes, the K low-res source frames)."""
    n = len(seq) - (1 - len(seq) % 2)            # an odd count: the last frame is a source
    truth = [np.asarray(seq.frame(i), dtype=np.float32) / 255.0 for i in range(n)]
    h, w = (v - v % 2 for v in truth[0].shape[:2])
    truth = [t[:h, :w] for t in truth]
    lr = [_np(downscale(to_tensor(t))) for t in truth[0::2]]
    return truth, lr


def evaluate_sequences(sequences: Sequence, methods: dict[str, Renderer], progress: bool = True
                       ) -> tuple[dict[str, SequenceScores], dict[str, dict[str, dict[str, float]]], float]:
    """Scores of each method over all ``sequences`` (each ``len()`` and ``frame(i)``), per
    sequence too, and the seconds taken."""
    t0 = time.time()
    total = {name: SequenceScores() for name in methods}
    per_seq: dict[str, dict[str, dict[str, float]]] = {}
    for seq in sequences:
        truth, lr = _frames(seq)
        name = getattr(seq, "name", str(seq))
        per_seq[name] = {}
        for method, render in methods.items():
            scores = SequenceScores()
            score_sequence(render(lr), truth, scores)
            for part in ("source", "interpolated", "temporal"):
                getattr(total[method], part).extend(getattr(scores, part))
            per_seq[name][method] = scores.means()
            if progress:
                m = scores.means()
                log.info("%s %s: all %.2f source %.2f interpolated %.2f tPSNR %.2f", name, method, m["all"],
                         m["source"], m["interpolated"], m["tpsnr"])
    return total, per_seq, time.time() - t0


def format_sequences(total: dict[str, SequenceScores], per_seq: dict, dataset: str, command: str,
                     seconds: float) -> str:
    """The markdown report of :func:`evaluate_sequences`."""
    frames = sum(len(s.source) + len(s.interpolated) for s in list(total.values())[:1])
    lines = [f"# Whole-sequence evaluation, 2x ({frames} output frames)", "", f"Data: {dataset}", "",
             f"Command: `{command}` ({seconds:.0f} s)", "",
             "| method | all frames | source positions | interpolated | tPSNR |", "|---|---:|---:|---:|---:|"]
    for method, s in total.items():
        m = s.means()
        lines.append(f"| {method} | {m['all']:.2f} | {m['source']:.2f} | {m['interpolated']:.2f} | {m['tpsnr']:.2f} |")
    lines += ["", "Per sequence (all frames / source / interpolated / tPSNR):", ""]
    for name, rows in per_seq.items():
        for method, m in rows.items():
            lines.append(f"- {name}, {method}: {m['all']:.2f} / {m['source']:.2f} / {m['interpolated']:.2f} / "
                         f"{m['tpsnr']:.2f}")
    return "\n".join(lines) + "\n"


def method_name(path: Path | None, view: str = "") -> str:
    """A row's name for a weights file (the shipped one when None) and, if given, the view
    of it the row shows.

    >>> method_name(None), method_name(Path("w/my.safetensors"), "S→T stream")
    ('vsdsfn (shipped weights)', 'vsdsfn (my.safetensors, S→T stream)')
    """
    name = "shipped weights" if path is None else Path(path).name
    return f"vsdsfn ({name}{', ' + view if view else ''})"
