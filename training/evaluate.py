"""Evaluate DSFN and the classic baselines on triplets (the paper's Table 1/2 protocol).

    python -m training.evaluate --data DIR --layout vimeo|frames|middlebury|ucf \\
        [--weights W.safetensors] [--one-mask-weights W1.safetensors] [--max N] \\
        [--stride S] [--out report.md] [--panels DIR] [--no-mvtools]
    python -m training.evaluate --config training/configs/cpu.toml --split val \\
        [--data-root ROOT] ...

Protocol: each triplet (frame i, i+s, i+2s) is cropped to even sizes; frames 1 and 3 are
downscaled 2x (:func:`training.datasets.downscale`), every method predicts the high-res
middle frame from them, scored by PSNR (float RGB in [0, 1]) and SSIM
(:mod:`training.metrics`), averaged over triplets. The rows (:data:`ROWS`): the model's
streams S->T and T->S, F (two-mask; one-mask from ``--one-mask-weights``) and R; bicubic
+ frame blend; Spline36 and the model's RIFE in both orders; Spline36 and mvtools FlowFPS
in both orders (:mod:`training.mvbaseline`); M_S -> FlowFPS.

Layouts: ``vimeo`` (Vimeo-90K's ``tri_testlist.txt``, or every triplet of the septuplets
of ``sep_testlist.txt``); ``frames`` (a folder of frames, a folder of such folders or of
videos, or a video file); ``middlebury`` (frame10, frame10i11, frame11 with
``other-gt-interp/``, else every triplet of frame07..frame14); ``ucf`` (UCF101's
``frame_00.png, frame_01_gt.png, frame_02.png``).

``--max N`` keeps N triplets evenly spaced; unreadable triplets are skipped and counted.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import hashlib
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import mvbaseline
from .datasets import downscale
from .flowfps import clip_from_frames
from .metrics import psnr
from .timesteps import evaluate_timesteps, format_timesteps
from .results import (BLEND, F1, F2, FLOW_SPLINE, MS_FLOW, MV_ROWS, R, R1, RIFE_ROWS, RIFE_SPLINE, ROWS, SPLINE_FLOW,
                      SPLINE_FLOW_QP, SPLINE_RIFE, SPLINE_RIFE_R, ST, TS, Result, result_dict, write_report)
from .triplets import (LAYOUTS, EvaluateError, Triplet, config_triplets, list_triplets, load_triplets,
                       outer_low_res, select, to_array, to_tensor)
from vsdsfn.nets import RIFE as _RIFE
from vsdsfn.options import OptionError, check as check_options
from vsdsfn.precision import autocast, choose as choose_precision, name_of
from vsdsfn.sysinfo import describe_machine

__all__ = ["Triplet", "list_triplets", "config_triplets", "select", "evaluate", "format_report", "main", "ROWS",
           "EvaluateError", "result_dict"]


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


def _not_run(model, one_mask_model, mvtools: bool) -> dict[str, str]:
    """The rows :func:`evaluate` cannot fill, with why (what the report shows instead)."""
    notes: dict[str, str] = {}
    mv_reason = _mvtools_available() if mvtools else "skipped (--no-mvtools)"
    if mv_reason:
        notes.update(dict.fromkeys(MV_ROWS, mv_reason))
    if _rife(model) is None:
        notes.update(dict.fromkeys(RIFE_ROWS, "n/a (the model's M_T is not RIFE)"))
    if model is None:
        notes.update(dict.fromkeys((ST, TS, F1, F2, R, MS_FLOW), "n/a (no model)"))
    elif model.config.fusion_masks == 1:
        notes[F2] = "n/a (the weights are a one-mask model)"
    elif one_mask_model is None:
        notes[F1] = "n/a (pass --one-mask-weights)"
    return notes


def _rife(model) -> _RIFE | None:
    """The model's M_T when it is RIFE (the RIFE cascades' interpolator)."""
    return model.temporal if model is not None and isinstance(model.temporal, _RIFE) else None


def _model_rows(res: Result, g: str, model, one_mask_model, l0, l2, h1, st_scale, ensemble,
                outer=(None, None)) -> tuple[dict, list[str]]:
    """S->T, T->S, F and R of the model (and of the one-mask model): its outputs and the
    progress line's part; ``outer``: the low-res frames before ``l0`` and after ``l2``
    (a multi-frame M_S sees them)."""
    out = model.run(l0, l2, st_scale=st_scale, ensemble=ensemble, before=outer[0], after=outer[1])
    res.add(ST, g, out["st"], h1)
    res.add(TS, g, out["ts"], h1)
    res.add(F1 if model.config.fusion_masks == 1 else F2, g, out["fused"], h1)
    line = [f"R {res.add(R, g, out['refined'], h1)[0]:.2f}"]
    if one_mask_model is not None:
        out1 = one_mask_model.run(l0, l2, st_scale=st_scale, ensemble=ensemble)
        res.add(F1, g, out1["fused"], h1)
        res.add(R1, g, out1["refined"], h1)
    return out, line


def _blend_row(res: Result, g: str, l0, l2, h1) -> list[str]:
    """Bicubic 2x of both low-res frames, averaged."""
    up = [F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1) for x in (l0, l2)]
    return [f"blend {res.add(BLEND, g, (up[0] + up[1]) / 2, h1)[0]:.2f}"]


def _rife_rows(res: Result, g: str, rife: _RIFE, l0, l2, h1) -> list[str]:
    """The cascades with the model's RIFE: Spline36 then RIFE (fast, as vs-rife, and
    refined), RIFE then Spline36."""
    up = mvbaseline.spline36_2x(clip_from_frames([to_array(l0), to_array(l2)]))
    s0, s2 = (to_tensor(a) for a in mvbaseline.frames_from_clip(up))
    line = [f"S36→RIFE {res.add(SPLINE_RIFE, g, rife(s0, s2, fast=True).clamp(0, 1), h1)[0]:.2f}"]
    res.add(SPLINE_RIFE_R, g, rife(s0, s2).clamp(0, 1), h1)
    mid = clip_from_frames([to_array(rife(l0, l2, fast=True).clamp(0, 1))])
    res.add(RIFE_SPLINE, g, to_tensor(mvbaseline.frames_from_clip(mvbaseline.spline36_2x(mid))[0]).clamp(0, 1), h1)
    return line


def _mvtools_rows(res: Result, g: str, l0, l2, out: dict | None, h1) -> list[str]:
    """The mvtools baselines (and M_S -> FlowFPS on the model's ``out``). Frames too small for
    mvtools end these rows for the whole evaluation: their scores so far are dropped."""
    a0, a2 = to_array(l0), to_array(l2)
    try:
        p_sf = mvbaseline.spline36_then_flowfps(a0, a2)
        p_sfq = np.mean([mvbaseline.spline36_then_flowfps(a0, a2, s) for s in mvbaseline.QUARTER_PEL], 0)
        p_fs = mvbaseline.flowfps_then_spline36(a0, a2)
        p_mf = None if out is None else mvbaseline.flowfps_of(*(to_array(out[k].clamp(0, 1)) for k in ("hr0", "hr1")))
    except ValueError as exc:
        res.notes.update(dict.fromkeys(MV_ROWS, f"n/a ({exc})"))
        for row in MV_ROWS:
            res.scores.pop(row, None)
            for grp in res.groups.values():
                grp.pop(row, None)
        return []
    line = [f"mv {res.add(SPLINE_FLOW, g, to_tensor(p_sf), h1)[0]:.2f}"]
    res.add(SPLINE_FLOW_QP, g, to_tensor(p_sfq), h1)
    res.add(FLOW_SPLINE, g, to_tensor(p_fs), h1)
    if p_mf is not None:
        res.add(MS_FLOW, g, to_tensor(p_mf), h1)
    return line


def evaluate(triplets: Sequence[Triplet], model=None, one_mask_model=None, mvtools: bool = True,
             panels: str | os.PathLike | None = None, progress: bool = True,
             st_scale: float | None = None, ensemble: bool = False, dtype: torch.dtype = torch.float32) -> Result:
    """Score every method on every triplet (one triplet at a time, CPU-friendly);
    ``st_scale`` overrides the models' and ``ensemble`` runs them as
    ``upscale(ensemble=True)`` (see :meth:`vsdsfn.nets.DSFN.run`); the networks (whose
    weights must be in ``dtype``) run under :func:`vsdsfn.precision.autocast`."""
    res = Result(notes=_not_run(model, one_mask_model, mvtools))
    rife = _rife(model)
    t0 = time.time()
    for k, trip, (h0, h1, h2) in load_triplets(triplets, res.skipped):
        l0, l2 = downscale(h0), downscale(h2)
        res.size.add((h1.shape[-1], h1.shape[-2]))
        res.names.append(trip.name)
        g, out, line = trip.group, None, []
        with torch.inference_mode(), autocast(torch.device("cpu"), dtype):
            if model is not None:
                outer = outer_low_res(trip, h1) if model.radius else (None, None)
                out, line = _model_rows(res, g, model, one_mask_model, l0, l2, h1, st_scale, ensemble, outer)
            line += _blend_row(res, g, l0, l2, h1)
            if rife is not None:
                line += _rife_rows(res, g, rife, l0, l2, h1)
            if SPLINE_FLOW not in res.notes:
                line += _mvtools_rows(res, g, l0, l2, out, h1)
            if panels and out is not None:
                save_panel(Path(panels) / f"{k:04d}_{_safe(trip.name)}.png", h1, out)
        if progress:
            _print_progress(k + 1, len(triplets), trip.name, h1, line, time.time() - t0)
    res.seconds = time.time() - t0
    return res


def _print_progress(n: int, total: int, name: str, gt: torch.Tensor, line: list[str], elapsed: float) -> None:
    print(f"[{n}/{total}] {name} {gt.shape[-1]}x{gt.shape[-2]}: " + " ".join(line)
          + f"  ({elapsed / n:.1f} s/triplet, eta {(total - n) * elapsed / n / 60:.1f} min)",
          file=sys.stderr, flush=True)


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

    g = to_array(gt)
    tiles = [("GT", g)]
    for key, label in (("st", "S→T"), ("ts", "T→S"), ("fused", "F"), ("refined", "R")):
        p = np.clip(to_array(out[key]), 0, 1)
        tiles.append((f"{label} {float(psnr(to_tensor(p), gt)[0]):.2f} dB", p))
    for key, label in (("st", "|S→T − GT|"), ("ts", "|T→S − GT|"), ("refined", "|R − GT|")):
        tiles.append((label, _heat(np.abs(np.clip(to_array(out[key]), 0, 1) - g).mean(-1))))
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
                                for s in mvbaseline.QUARTER_PEL))


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
def _parser() -> argparse.ArgumentParser:
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
    ap.add_argument("--t", action="store_true", help="evaluate at t = 1/4, 1/3, 1/2, 2/3, 3/4 instead "
                    "(training.timesteps; --max applies per timestep)")
    ap.add_argument("--sequences", action="store_true", help="whole-sequence mode instead (training.sequences): "
                    "every other frame in, every output frame of the 2x clip scored, and tPSNR")
    ap.add_argument("--compare", nargs="+", default=[], metavar="WEIGHTS",
                    help="with --sequences: more weights files as rows (e.g. an earlier release's)")
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
    return ap


def _triplets(args: argparse.Namespace) -> tuple[list[Triplet], str]:
    if args.stride < 1:
        raise EvaluateError("--stride must be >= 1")
    if args.config:
        triplets, dataset = config_triplets(args.config, args.split, args.data_root, args.stride)
    elif args.data:
        triplets = list_triplets(args.data, args.layout, args.stride)
        dataset = f"`{args.data}` ({args.layout} layout, stride {args.stride})"
    else:
        raise EvaluateError("pass --data DIR --layout LAYOUT, or --config FILE --split val")
    if not triplets:
        raise EvaluateError(f"no triplets found in {args.data or args.config} (layout {args.layout}, "
                            f"stride {args.stride})")
    if args.t:
        return triplets, dataset
    total = len(triplets)
    triplets = select(triplets, args.max)
    if len(triplets) < total:
        dataset += f", {len(triplets)} of {total} triplets evenly spaced (--max)"
    return triplets, dataset


def _models(args: argparse.Namespace, dtype: torch.dtype):
    """(model, one-mask model, their paths), the weights in ``dtype``."""
    from vsdsfn.weights import WeightsError, load_model, resolve_weights

    try:
        check_options({"st_scale": args.st_scale})
        wpath = None if args.no_model else resolve_weights(args.weights)
        opath = resolve_weights(args.one_mask_weights) if args.one_mask_weights else None
        model, one = (load_model(p).to(dtype) if p else None for p in (wpath, opath))
    except (WeightsError, OptionError) as exc:
        raise EvaluateError(str(exc)) from None
    if one is not None and one.config.fusion_masks != 1:
        raise EvaluateError(f"--one-mask-weights {opath}: the model has fusion_masks={one.config.fusion_masks}, "
                            "not 1")
    if one is not None and model is not None and model.config.fusion_masks == 1:
        raise EvaluateError(f"--weights {wpath} is a one-mask model too; pass a two-mask model as --weights, "
                            "or drop --one-mask-weights")
    return model, one, wpath, opath


def run(args: argparse.Namespace, command: str) -> None:
    """The evaluation ``args`` ask for: the report on stdout, and ``--out``/``--json``."""
    if args.t:
        _refuse_with_t(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sequences:
        return _run_sequences(args, command)
    triplets, dataset = _triplets(args)
    dtype = choose_precision(args.precision, torch.device("cpu"))
    model, one, wpath, opath = _models(args, dtype)
    desc = (", run with the flip ensemble (--ensemble)" if args.ensemble else "") + f", in {name_of(dtype)}"
    if args.t:
        results = evaluate_timesteps(triplets, model, args.max, dtype, not args.quiet, args.st_scale, args.ensemble)
        report = format_timesteps(results, dataset, command, _weights_desc(wpath) + desc)
        scores = {"command": command, "timesteps": {f"{j}/{m}": result_dict(r) for (j, m), r in results.items()}}
    else:
        res = evaluate(triplets, model, one, mvtools=not args.no_mvtools, panels=args.panels,
                       progress=not args.quiet, st_scale=args.st_scale, ensemble=args.ensemble, dtype=dtype)
        if not res.names:
            raise EvaluateError("no triplet could be read")
        report = format_report(res, dataset, command, _weights_desc(wpath) + desc,
                               _weights_desc(opath) + desc if opath else "none", res.notes.get(SPLINE_FLOW, ""))
        scores = result_dict(res, command)
    print(report)
    write_report(args.out, report)
    write_report(args.json, json.dumps(scores, indent=1))


def _refuse_with_t(args: argparse.Namespace) -> None:
    """The options of the main table that ``--t`` (the model at other timesteps) has no use for."""
    for flag, given in (("--no-model", args.no_model), ("--one-mask-weights", args.one_mask_weights),
                        ("--panels", args.panels)):
        if given:
            raise EvaluateError(f"--t does not take {flag}: drop {flag} or --t")


def _run_sequences(args: argparse.Namespace, command: str) -> None:
    """``--sequences``: the config split's sequences rendered whole (:mod:`training.sequences`)."""
    from vsdsfn.engine import Engine
    from vsdsfn.weights import WeightsError

    from .config import data_section
    from .sequences import evaluate_sequences, format_sequences, method_name, render_blend, render_engine, \
        render_spline_rife
    from .datasets import config_sequences

    if not args.config:
        raise EvaluateError("--sequences needs --config FILE --split val")
    data, root = data_section(args.config, args.data_root)
    seqs = config_sequences(root, data["val_sequences"])
    precision = None if args.precision == "auto" else args.precision
    methods, rife = {}, None
    for path in [args.weights] + list(args.compare):
        try:
            engine = Engine(path, device="cpu", precision=precision, ensemble=args.ensemble, st_scale=args.st_scale)
        except (WeightsError, ValueError) as exc:
            raise EvaluateError(str(exc)) from None
        methods[method_name(path)] = render_engine(engine)
        if path is args.weights:
            methods[method_name(path, "S→T stream")] = render_engine(engine, "st")
        rife = rife or _rife(engine.model)
    if rife is not None:
        methods["Spline36 → RIFE (as vs-rife)"] = render_spline_rife(copy.deepcopy(rife).float())
    methods["bicubic + frame blend"] = render_blend
    total, per_seq, seconds = evaluate_sequences(seqs, methods, progress=not args.quiet)
    report = format_sequences(total, per_seq, f"`{args.config}` split `val` (data.val_sequences)", command, seconds)
    print(report)
    write_report(args.out, report)
    write_report(args.json, json.dumps({"command": command, "rows": {k: v.means() for k, v in total.items()},
                                  "per_sequence": per_seq}, indent=1))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        run(args, "python -m training.evaluate " + shlex.join(argv))
    except EvaluateError as exc:
        raise SystemExit(f"evaluate: {exc}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
