"""Evaluate DSFN and the classic baselines on triplets (the paper's Table 1/2 protocol).

    python -m training.evaluate --data DIR --layout vimeo|frames|middlebury|ucf \\
        [--weights W.safetensors] [--one-mask-weights W1.safetensors] [--max N] \\
        [--stride S] [--out report.md] [--panels DIR] [--no-mvtools]
    python -m training.evaluate --config training/configs/cpu.toml --split val \\
        [--data-root ROOT] ...

Protocol (as the paper's code): each triplet (frame i, i+s, i+2s) is cropped to even
sizes; frames 1 and 3 are downscaled 2x with PyTorch bicubic (no antialias,
:func:`training.datasets.downscale`); every method predicts the high-res middle frame
from the two low-res frames, which is compared with the ground-truth middle frame:
PSNR on float RGB in [0, 1] (predictions clamped, no quantisation), SSIM on RGB (11x11
Gaussian, sigma 1.5, averaged over channels; :mod:`training.metrics`). Scores are
averaged over triplets. The network runs on the low-res frames padded (replicate) to a
multiple of ``DSFN.multiple``; its outputs are cropped back.

Rows: the two streams S->T = M_T(M_S(L-), M_S(L+)) and T->S = M_S(M_T(L+, L-)) (with
the shipped weights M_T is the pretrained RIFE: these are "M_S -> RIFE" and "RIFE ->
M_S"), the fused frame F (two-mask model; one-mask from ``--one-mask-weights``, the
paper's ablation), the refined output R, and the baselines "bicubic + frame blend"
(PyTorch bicubic 2x of both low-res frames, averaged), "Spline36 -> RIFE" and "RIFE ->
Spline36" with the model's own RIFE weights (as vs-rife runs it: ``fastmode``, flows at
full size; and with RIFE's refinement), "Spline36 -> FlowFPS" and "FlowFPS -> Spline36"
(VapourSynth resize.Spline36 and mvtools ``Super/Analyse/FlowFPS`` doubling the frame
rate; :mod:`training.mvbaseline`), "Spline36 -> FlowFPS (quarter-pel)" (the mean of
FlowFPS's middle frames under :data:`training.mvbaseline.QUARTER_PEL`), and the hybrid
"M_S -> FlowFPS" (the model's M_S(L-), M_S(L+), then FlowFPS as an off-the-shelf M_T:
compare it with S->T to see how far the model's M_T is from mvtools' on the same frames).

Layouts (``--data DIR --layout ...``):

* ``vimeo``: Vimeo-90K, ``sequences/%05d/%04d/im1..im3.png`` listed in
  ``tri_testlist.txt`` (or the septuplet ``im1..im7`` with ``sep_testlist.txt``: every
  consecutive triplet of each septuplet, or stride ``--stride``);
* ``frames``: a folder of frame images, a folder of such folders (one per sequence,
  video files among them are decoded too), or a single video file; all triplets
  (i, i+s, i+2s) of each sequence;
* ``middlebury``: with ``other-gt-interp/`` next to ``other-data/`` (the Middlebury
  interpolation benchmark), the triplets (frame10, frame10i11, frame11) -- the true
  half-way frame; otherwise the "other" layout ``<name>/frame07.png..frame14.png``,
  where we use *every* consecutive triplet (07-08-09 ... 12-13-14, six per sequence,
  ``--stride`` applies), not only 09-10-11, for more samples per scene;
* ``ucf``: the UCF101 interpolation test set, ``<id>/frame_00.png, frame_01_gt.png,
  frame_02.png``.

``--max N`` keeps N triplets evenly spaced over the list (deterministic). A triplet
whose files cannot be read is skipped with a warning and counted in the report.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import (FolderSequence, VIDEO_EXTS, downscale, list_images, load_image,
                       open_sequence, vimeo_sequences)
from .metrics import psnr, ssim
from .mvbaseline import QUARTER_PEL
from vsdsfn.nets import RIFE as _RIFE
from vsdsfn.options import OptionError, check as check_options
from vsdsfn.precision import autocast, choose as choose_precision, name_of
from vsdsfn.sysinfo import describe_machine

__all__ = ["Triplet", "list_triplets", "config_triplets", "evaluate", "format_report", "main", "ROWS"]

log = logging.getLogger("vsdsfn.training")

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


# ----------------------------------------------------------------------------- triplets
class _Files:
    """A 'sequence' of explicitly listed image files."""

    def __init__(self, files: Sequence[Path], name: str) -> None:
        self.files = [Path(f) for f in files]
        self.name = name

    def __len__(self) -> int:
        return len(self.files)

    def frame(self, i: int) -> np.ndarray:
        return load_image(self.files[i])


@dataclass
class Triplet:
    """Frames ``idx`` of ``seq`` (the middle one is the ground truth)."""

    name: str
    seq: object
    idx: tuple[int, int, int]
    group: str = ""          # sequence name, for the per-sequence table

    def load(self) -> list[np.ndarray]:
        return [self.seq.frame(i) for i in self.idx]


def _seq_triplets(seq, stride: int, group: str, label: str | None = None) -> list[Triplet]:
    label = label or group
    return [Triplet(f"{label}:{i}", seq, (i, i + stride, i + 2 * stride), group)
            for i in range(len(seq) - 2 * stride)]


def _vimeo(root: Path, stride: int) -> list[Triplet]:
    out = []
    for seq in vimeo_sequences(root, "test"):
        name = "/".join(seq.folder.parts[-2:])
        trips = _seq_triplets(seq, stride, "vimeo", name)
        if len(seq) == 3:  # triplet layout: one per folder, named by it
            for t in trips:
                t.name = name
        out += trips
    return out


def _frames(path: Path, stride: int) -> list[Triplet]:
    if path.is_file():
        seq = open_sequence(path)
        return _seq_triplets(seq, stride, path.name)
    if not path.is_dir():
        raise SystemExit(f"evaluate: --data {path}: no such file or folder")
    if list_images(path):
        return _seq_triplets(FolderSequence(path), stride, path.name)
    out = []
    for child in sorted(path.iterdir()):
        if child.is_dir() and list_images(child):
            out += _seq_triplets(FolderSequence(child), stride, child.name)
        elif child.is_file() and child.suffix.lower() in VIDEO_EXTS:
            out += _seq_triplets(open_sequence(child), stride, child.name)
    return out


def _middlebury(root: Path, stride: int) -> list[Triplet]:
    gt_root = next((p for p in (root / "other-gt-interp", root.parent / "other-gt-interp") if p.is_dir()), None)
    data_root = root / "other-data" if (root / "other-data").is_dir() else root
    out = []
    if gt_root is not None:
        for gt_dir in sorted(p for p in gt_root.iterdir() if p.is_dir()):
            files = [data_root / gt_dir.name / "frame10.png", gt_dir / "frame10i11.png",
                     data_root / gt_dir.name / "frame11.png"]
            if all(f.exists() for f in files):
                out.append(Triplet(gt_dir.name, _Files(files, gt_dir.name), (0, 1, 2), gt_dir.name))
        return out
    for d in sorted(p for p in data_root.iterdir() if p.is_dir()):
        files = [d / f"frame{k:02d}.png" for k in range(7, 15)]
        files = [f for f in files if f.exists()]
        if len(files) >= 3:
            seq = _Files(files, d.name)
            for t in _seq_triplets(seq, stride, d.name):
                t.name = f"{d.name}:{files[t.idx[1]].stem}"
                out.append(t)
    return out


def _ucf(root: Path) -> list[Triplet]:
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = [d / "frame_00.png", d / "frame_01_gt.png", d / "frame_02.png"]
        if all(f.exists() for f in files):
            out.append(Triplet(d.name, _Files(files, d.name), (0, 1, 2), "ucf"))
    return out


LAYOUTS: dict[str, Callable[[Path, int], list[Triplet]]] = {
    "vimeo": _vimeo, "frames": _frames, "middlebury": _middlebury, "ucf": lambda p, s: _ucf(p),
}


def list_triplets(data: str | os.PathLike, layout: str, stride: int = 1) -> list[Triplet]:
    """All triplets of a dataset in one of the :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; layouts: {sorted(LAYOUTS)}")
    return LAYOUTS[layout](Path(data), stride)


def config_triplets(config: str, split: str = "val", data_root: str | None = None,
                    stride: int = 1, overrides: Sequence[str] = ()) -> tuple[list[Triplet], str]:
    """The triplets of a training config's split (``val``: ``data.val_sequences`` and the
    Vimeo test list when ``data.vimeo`` is set) and a description of it."""
    from .config import load_config
    from .train import _rel, _sequences

    over = list(overrides)
    if data_root:
        over.append(f"data.root={json.dumps(data_root)}")
    cfg = load_config(config, over)
    d = cfg["data"]
    root = Path(d["root"])
    if not root.is_absolute():
        # data.root in a config file is relative to the current directory, as in training
        root = Path.cwd() / root
    if split != "val":
        raise SystemExit(f"evaluate: --split {split!r}: only 'val' (data.val_sequences) is defined")
    entries = d["val_sequences"]
    out = []
    for e, seq in zip(entries, _sequences(root, entries)):
        out += _seq_triplets(seq, stride, seq.name)
    if d.get("vimeo"):
        out += _vimeo(_rel(root, d["vimeo"]), stride)
    if not out:
        raise SystemExit(f"evaluate: {config}: split {split!r} has no triplets")
    desc = f"`{config}` split `{split}` (`data.val_sequences`: " + ", ".join(
        f"{(e if isinstance(e, str) else e['path'])}"
        + ("" if isinstance(e, str) else f"[{e.get('start', 0)}:{e.get('stop', '') or ''}]")
        for e in entries) + (f"; Vimeo test list of {d['vimeo']}" if d.get("vimeo") else "") + ")"
    return out, desc


def select(triplets: list[Triplet], max_n: int | None) -> list[Triplet]:
    """At most ``max_n`` triplets, evenly spaced over the list."""
    if not max_n or len(triplets) <= max_n:
        return triplets
    idx = np.unique(np.linspace(0, len(triplets) - 1, max_n).round().astype(int))
    return [triplets[i] for i in idx]


# ----------------------------------------------------------------------------- methods
def _mvtools_available() -> str | None:
    """None when mvtools works, else the reason it does not."""
    try:
        import vapoursynth as vs

        if not hasattr(vs.core, "mv"):
            return "vapoursynth-mvtools is not installed"
    except Exception as exc:  # noqa: BLE001
        return f"VapourSynth is not available ({exc})"
    return None


def _np(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).float().cpu().numpy()


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]


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


def evaluate(triplets: Sequence[Triplet], model=None, one_mask_model=None, mvtools: bool = True,
             panels: str | os.PathLike | None = None, progress: bool = True,
             st_scale: float | None = None, ensemble: bool = False, dtype: torch.dtype = torch.float32) -> Result:
    """Score every method on every triplet (one triplet at a time, CPU-friendly);
    ``st_scale`` overrides the models' and ``ensemble`` runs them as
    ``upscale(ensemble=True)`` (see :meth:`vsdsfn.nets.DSFN.run`); the networks (whose
    weights must be in ``dtype``) run under :func:`vsdsfn.precision.autocast`."""
    res = Result()
    mv_reason = None if mvtools else "skipped (--no-mvtools)"
    if mv_reason is None:
        mv_reason = _mvtools_available()
    if mv_reason:
        res.notes.update(dict.fromkeys(MV_ROWS, mv_reason))
    else:
        from . import mvbaseline
    rife = model.temporal if model is not None and isinstance(model.temporal, _RIFE) else None
    if rife is None:
        res.notes.update(dict.fromkeys(RIFE_ROWS, "n/a (the model's M_T is not RIFE)"))
    else:
        from . import mvbaseline as mvb
    if model is None:
        for row in (ST, TS, F1, F2, R, MS_FLOW):
            res.notes[row] = "n/a (no model)"
    else:
        if model.config.fusion_masks == 1:
            res.notes[F2] = "n/a (the weights are a one-mask model)"
        elif one_mask_model is None:
            res.notes[F1] = "n/a (pass --one-mask-weights)"
    t0 = time.time()
    for k, trip in enumerate(triplets):
        try:
            frames = trip.load()
        except Exception as exc:  # noqa: BLE001 -- an unreadable file is skipped, not fatal
            log.warning("skipping triplet %s: %s", trip.name, exc)
            res.skipped.append(trip.name)
            continue
        h, w = frames[0].shape[:2]
        if any(f.shape != frames[0].shape for f in frames):
            log.warning("skipping triplet %s: frames of different sizes", trip.name)
            res.skipped.append(trip.name)
            continue
        h, w = h - h % 2, w - w % 2
        h0, h1, h2 = (_t(f[:h, :w].astype(np.float32) / 255.0) for f in frames)
        l0, l2 = downscale(h0), downscale(h2)
        res.size.add((w, h))
        res.names.append(trip.name)
        g = trip.group
        line = []
        with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
            out = None
            if model is not None:
                out = model.run(l0, l2, st_scale=st_scale, ensemble=ensemble)
                res.add(ST, g, out["st"], h1)
                res.add(TS, g, out["ts"], h1)
                res.add(F1 if model.config.fusion_masks == 1 else F2, g, out["fused"], h1)
                line.append(f"R {res.add(R, g, out['refined'], h1)[0]:.2f}")
            if one_mask_model is not None:
                out1 = one_mask_model.run(l0, l2, st_scale=st_scale, ensemble=ensemble)
                res.add(F1, g, out1["fused"], h1)
                res.add(R1, g, out1["refined"], h1)
            up = lambda x: F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)  # noqa: E731
            line.append(f"blend {res.add(BLEND, g, (up(l0) + up(l2)) / 2, h1)[0]:.2f}")
            if rife is not None:
                s0, s2 = (_t(a) for a in mvb.frames_from_clip(mvb.spline36_2x(mvb.clip_from_frames([_np(l0), _np(l2)]))))
                line.append(f"S36→RIFE {res.add(SPLINE_RIFE, g, rife(s0, s2, fast=True).clamp(0, 1), h1)[0]:.2f}")
                res.add(SPLINE_RIFE_R, g, rife(s0, s2).clamp(0, 1), h1)
                mid = mvb.clip_from_frames([_np(rife(l0, l2, fast=True).clamp(0, 1))])
                res.add(RIFE_SPLINE, g, _t(mvb.frames_from_clip(mvb.spline36_2x(mid))[0]).clamp(0, 1), h1)
            if not mv_reason:
                a0, a2 = _np(l0), _np(l2)
                try:
                    p_sf = mvbaseline.spline36_then_flowfps(a0, a2)
                    p_sfq = np.mean([mvbaseline.spline36_then_flowfps(a0, a2, s) for s in QUARTER_PEL], 0)
                    p_fs = mvbaseline.flowfps_then_spline36(a0, a2)
                    p_mf = None
                    if out is not None:
                        p_mf = mvbaseline.flowfps_of(_np(out["hr0"].clamp(0, 1)), _np(out["hr1"].clamp(0, 1)))
                except ValueError as exc:  # frames too small for mvtools: no mvtools rows at all
                    mv_reason = f"n/a ({exc})"
                    res.notes.update(dict.fromkeys(MV_ROWS, mv_reason))
                    for row in MV_ROWS:
                        res.scores.pop(row, None)
                        for grp in res.groups.values():
                            grp.pop(row, None)
                else:
                    line.append(f"mv {res.add(SPLINE_FLOW, g, _t(p_sf), h1)[0]:.2f}")
                    res.add(SPLINE_FLOW_QP, g, _t(p_sfq), h1)
                    res.add(FLOW_SPLINE, g, _t(p_fs), h1)
                    if p_mf is not None:
                        res.add(MS_FLOW, g, _t(p_mf), h1)
            if panels and out is not None:
                save_panel(Path(panels) / f"{k:04d}_{_safe(trip.name)}.png", h1, out)
        if progress:
            el = time.time() - t0
            n = k + 1
            print(f"[{n}/{len(triplets)}] {trip.name} {w}x{h}: " + " ".join(line)
                  + f"  ({el / n:.1f} s/triplet, eta {(len(triplets) - n) * el / n / 60:.1f} min)",
                  file=sys.stderr, flush=True)
    res.seconds = time.time() - t0
    return res


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]


# ----------------------------------------------------------------------------- panels
def _heat(err: np.ndarray, scale: float = 5.0) -> np.ndarray:
    """|error| (H, W) -> RGB heat map (black -> red -> yellow -> white at err >= 1/scale)."""
    e = np.clip(err * scale, 0, 1) * 3
    return np.stack([np.clip(e, 0, 1), np.clip(e - 1, 0, 1), np.clip(e - 2, 0, 1)], -1)


def save_panel(path: Path, gt: torch.Tensor, out: dict[str, torch.Tensor], max_tile: int = 640) -> None:
    """The paper's Fig. 2/4 for one triplet: GT, S->T, T->S, F, R; the error maps of
    S->T, T->S and R (|pred - GT| averaged over RGB, x5 as a heat map); the masks
    M_S->T and M_T->S (white = 1). PSNRs are written on the tiles."""
    from PIL import Image, ImageDraw

    g = _np(gt)
    tiles = [("GT", g)]
    for key, label in (("st", "S→T"), ("ts", "T→S"), ("fused", "F"), ("refined", "R")):
        p = np.clip(_np(out[key]), 0, 1)
        tiles.append((f"{label} {float(psnr(_t(p), gt)[0]):.2f} dB", p))
    for key, label in (("st", "|S→T − GT|"), ("ts", "|T→S − GT|"), ("refined", "|R − GT|")):
        tiles.append((label, _heat(np.abs(np.clip(_np(out[key]), 0, 1) - g).mean(-1))))
    masks = out["masks"][0].float().cpu().numpy()
    labels = ("M S→T", "M T→S") if len(masks) == 2 else ("M (S→T; T→S gets 1 − M)",)
    maps = list(zip(labels, masks))
    for label, m in maps:
        tiles.append((label, m if m.ndim == 3 else np.repeat(m[..., None], 3, -1)))
    h, w = g.shape[:2]
    s = min(1.0, max_tile / w)
    tw, th = max(1, int(w * s)), max(1, int(h * s))
    cols = 5
    canvas = Image.new("RGB", (cols * tw, -(-len(tiles) // cols) * th), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (label, img) in enumerate(tiles):
        im = Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
        if s < 1:
            im = im.resize((tw, th), Image.BICUBIC)
        x, y = (i % cols) * tw, (i // cols) * th
        canvas.paste(im, (x, y))
        draw.rectangle((x, y, x + 6 * len(label) + 6, y + 13), fill=(0, 0, 0))
        draw.text((x + 3, y + 1), label.replace("→", "->").replace("−", "-"), fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


# ----------------------------------------------------------------------------- report
def _weights_desc(path: Path | None) -> str:
    if path is None:
        return "none"
    from vsdsfn.weights import read_config

    h = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    _, meta = read_config(path)
    info = ", ".join(f"{k} {meta[k]}" for k in ("stage", "step", "val_psnr") if k in meta)
    return f"`{path}` (sha256 {h}{', ' + info if info else ''})"


def _quarter_pel_desc() -> str:
    return ("the mean of FlowFPS's middle frames with "
            + " and with ".join(f"pel={s.pel}, blksize={s.blksize}, overlap={s.overlap}, searchparam={s.searchparam}"
                                for s in QUARTER_PEL))


def format_report(res: Result, dataset: str, command: str, weights: str, one_mask: str,
                  mvtools_note: str = "") -> str:
    rows = [r for r in ROWS if r != R1 or r in res.scores]
    lines = [f"# DSFN evaluation: {dataset}", "",
             "| Method | PSNR (dB) | SSIM |", "|---|---:|---:|"]
    for r in rows:
        m = res.mean(r)
        if m is None:
            note = res.notes.get(r, "n/a")
            lines.append(f"| {r} | {note} | {note} |")
        else:
            lines.append(f"| {r} | {m[0]:.2f} | {m[1]:.4f} |")
    n = len(res.names)
    sizes = ", ".join(f"{w}x{h}" for w, h in sorted(res.size))
    lines += ["", f"- Triplets: {n}" + (f" ({len(res.skipped)} skipped: unreadable)" if res.skipped else "")
              + (f"; ground-truth sizes {sizes}" if sizes else ""),
              "- Protocol: frames 1 and 3 downscaled 2x (PyTorch bicubic, no antialias); "
              "PSNR on float RGB in [0, 1], SSIM (11x11 Gaussian, σ 1.5) on RGB, both on the middle frame, "
              "averaged over triplets",
              f"- Weights: {weights}", f"- One-mask weights: {one_mask}",
              "- mvtools: " + (mvtools_note or "Super(pel=2, sharp=2), Analyse(blksize=16, overlap=8, search=3, "
                               "truemotion) forward+backward, FlowFPS(num=2x fps) on YUV444P16 (BT.709); "
                               f"{SPLINE_FLOW_QP}: {_quarter_pel_desc()}"),
              f"- Command: `{command}`",
              f"- Date: {_dt.date.today().isoformat()}",
              f"- Machine: {describe_machine()}",
              f"- Wall time: {res.seconds:.0f} s"]
    if len(res.groups) > 1:
        cols = [r for r in rows if r in res.scores]
        lines += ["", "PSNR (dB) per sequence:", "",
                  "| Sequence | n | " + " | ".join(cols) + " |",
                  "|---|---:|" + "---:|" * len(cols)]
        for gname, g in res.groups.items():
            cnt = len(next(iter(g.values())))
            lines.append(f"| {gname} | {cnt} | " + " | ".join(
                f"{np.mean(g[c]):.2f}" if c in g else "" for c in cols) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_argument_group("data (either --data/--layout or --config/--split)")
    src.add_argument("--data", help="dataset folder (or a video file for --layout frames)")
    src.add_argument("--layout", choices=sorted(LAYOUTS), default="frames")
    src.add_argument("--config", help="training config whose split to evaluate")
    src.add_argument("--split", default="val", help="config split (val: data.val_sequences)")
    src.add_argument("--data-root", help="folder the config's data paths are relative to")
    ap.add_argument("--weights", help="two-mask model: a .safetensors file (default: the shipped default)")
    ap.add_argument("--one-mask-weights", help="a fusion_masks=1 model for the 'F one-mask' row (ablation)")
    ap.add_argument("--st-scale", type=float,
                    help="override the models' st_scale (S->T flow scale, as upscale(st_scale=...))")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="as upscale(precision=...) on the CPU: auto is bf16 where the CPU computes it natively")
    ap.add_argument("--ensemble", action="store_true",
                    help="run the models with the flip ensemble of upscale(ensemble=True) (twice the time)")
    ap.add_argument("--no-model", action="store_true", help="baselines only")
    ap.add_argument("--max", type=int, help="at most N triplets, evenly spaced")
    ap.add_argument("--stride", type=int, default=1, help="triplets (i, i+s, i+2s)")
    ap.add_argument("--out", help="write the markdown report here")
    ap.add_argument("--json", help="also write the scores here: every row's mean PSNR/SSIM at full "
                    "precision, per sequence and per triplet")
    ap.add_argument("--panels", help="save a picture panel per triplet in this folder")
    ap.add_argument("--no-mvtools", action="store_true", help="skip the mvtools baselines")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--quiet", action="store_true", help="no per-triplet progress lines")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stride < 1:
        ap.error("--stride must be >= 1")
    if args.config:
        triplets, dataset = config_triplets(args.config, args.split, args.data_root, args.stride)
    elif args.data:
        triplets = list_triplets(args.data, args.layout, args.stride)
        dataset = f"`{args.data}` ({args.layout} layout, stride {args.stride})"
    else:
        ap.error("pass --data DIR --layout LAYOUT, or --config FILE --split val")
    if not triplets:
        raise SystemExit(f"evaluate: no triplets found in {args.data or args.config} "
                         f"(layout {args.layout}, stride {args.stride})")
    total = len(triplets)
    triplets = select(triplets, args.max)
    if len(triplets) < total:
        dataset += f", {len(triplets)} of {total} triplets evenly spaced (--max)"

    from vsdsfn.weights import WeightsError, load_model, resolve_weights

    model = one = None
    wpath = opath = None
    try:
        if not args.no_model:
            wpath = resolve_weights(args.weights)
            model = load_model(wpath)
        if args.one_mask_weights:
            opath = resolve_weights(args.one_mask_weights)
            one = load_model(opath)
            if one.config.fusion_masks != 1:
                raise SystemExit(f"evaluate: --one-mask-weights {opath}: the model has "
                                 f"fusion_masks={one.config.fusion_masks}, not 1")
            if model is not None and model.config.fusion_masks == 1:
                raise SystemExit(f"evaluate: --weights {wpath} is a one-mask model too; pass a two-mask "
                                 "model as --weights, or drop --one-mask-weights")
    except WeightsError as exc:
        raise SystemExit(f"evaluate: {exc}") from None
    try:
        check_options({"st_scale": args.st_scale})
    except OptionError as exc:
        ap.error(str(exc))
    dtype = choose_precision(args.precision, torch.device("cpu"))
    model, one = (m.to(dtype) if m is not None else None for m in (model, one))
    res = evaluate(triplets, model, one, mvtools=not args.no_mvtools, panels=args.panels,
                   progress=not args.quiet, st_scale=args.st_scale, ensemble=args.ensemble, dtype=dtype)
    if not res.names:
        raise SystemExit("evaluate: no triplet could be read")
    command = "python -m training.evaluate " + shlex.join(argv)
    tta = (", run with the flip ensemble (--ensemble)" if args.ensemble else "") + f", in {name_of(dtype)}"
    report = format_report(res, dataset, command, _weights_desc(wpath) + tta,
                           _weights_desc(opath) + tta if opath else "none",
                           res.notes.get(SPLINE_FLOW, ""))
    print(report)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"wrote {out}", file=sys.stderr)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result_dict(res, command), indent=1))
        print(f"wrote {out}", file=sys.stderr)
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
