"""Tiled vs untiled inference: output difference per tile_overlap, and peak memory.

Run from the repository root:

    python -m bench.tiling error [--weights W|--checkpoint CK|--random] [--size 480x256]
                                 [--overlaps 0,16,32,64,96,128] [--core 96]
    python -m bench.tiling memory [--size 1920x1080] [--tile 256] [--overlap 64]
    python -m bench.tiling oom [--size 480x272] [--batch 8] [--limits 0.5,0.25,0.1]

``error`` runs the engine on two consecutive real frames (``--frames DIR``, default
``../shared/data/frames/cafe``, box-downscaled to ``--size``; the moving texture of
:func:`bench.common.texture_frames` when the folder does not exist) once untiled and
once per overlap with tiles of ``2 * overlap + core`` pixels, and prints max / 99.99th
percentile / mean absolute differences of the interpolated (refined) frame and of M_S.
``--random`` fills every weight of the default architecture (including the
zero-initialised heads) with random values: a stress case in which every part of the
network (fusion U-Net, refinement) spreads information as far as it can.

``memory`` measures the peak RSS (:func:`bench.common.peak_rss_mb`, in a fresh
subprocess per configuration) for one interpolated frame, untiled and tiled.

``oom`` runs one batch of ``--batch`` interpolated frames (default weights, fp32) in a
fresh subprocess per memory limit: none, then each of ``--limits`` (the largest forward
pass that fits, as a fraction of the whole batch untiled; larger passes raise the CPU
allocator's out-of-memory error: a cap on the address space makes oneDNN's convolutions
crash instead of failing), so that the out-of-memory fallback must find a smaller batch
or tiling. It prints the seconds (and the ratio to the unlimited run), the retries and
the configuration the fallback ended with, or its one-line error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.common import peak_rss_mb, texture_frames

if TYPE_CHECKING:
    from vsdsfn.nets import DSFN

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["error", "main", "memory"]


def _model(args: argparse.Namespace) -> DSFN:
    import torch

    from training.train import load_checkpoint
    from vsdsfn.nets import DSFN, DSFNConfig
    from vsdsfn.weights import load_model

    if args.checkpoint:
        ck = load_checkpoint(args.checkpoint)
        cfg = ck.get("config") or {}
        cfg = json.loads(cfg) if isinstance(cfg, str) else cfg
        net = DSFN(DSFNConfig.from_dict(cfg.get("model") or {}))
        net.load_state_dict(ck["model"])
        return net
    if args.random:
        torch.manual_seed(0)
        net = DSFN(DSFNConfig())
        with torch.no_grad():
            for p in net.parameters():
                if not p.abs().sum():
                    p.normal_(0.0, 0.02)
        return net
    return load_model(args.weights)


def _frames(args: argparse.Namespace, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    folder = Path(args.frames)
    files = sorted(folder.glob("*.png"))[:2] if folder.is_dir() else []
    if len(files) == 2:
        from PIL import Image

        out = []
        for f in files:
            im = np.asarray(Image.open(f).convert("RGB"), np.float32) / 255
            s = max(1, min(im.shape[0] // h, im.shape[1] // w))
            hh, ww = im.shape[0] // s * s, im.shape[1] // s * s
            im = im[:hh, :ww].reshape(hh // s, s, ww // s, s, 3).mean(axis=(1, 3))
            out.append(np.ascontiguousarray(im[:h, :w]))
        if out[0].shape[:2] == (h, w):
            return out[0], out[1]
    a, b = texture_frames(w, h, 2)
    return a, b


def error(args: argparse.Namespace) -> None:
    from vsdsfn.engine import Engine

    w, h = (int(v) for v in args.size.split("x"))
    a, b = _frames(args, w, h)
    net = _model(args)
    ref_eng = Engine(net, device="cpu")
    t0 = time.perf_counter()
    ref = ref_eng.interpolate([(a, b)])[0]
    ref_s = ref_eng.spatial([a])[0]
    print(f"{w}x{h} frames, untiled in {time.perf_counter() - t0:.1f} s", flush=True)
    print("| overlap | tile | tiles | max abs | 99.99th pct | mean abs | M_S max abs |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for ov in (int(v) for v in args.overlaps.split(",")):
        tile = 2 * ov + args.core
        eng = Engine(net, device="cpu", tile=tile, tile_overlap=ov)
        out = eng.interpolate([(a, b)])[0]
        d = np.abs(out - ref)
        ds = np.abs(eng.spatial([a])[0] - ref_s).max()
        print(f"| {ov} | {tile} | {eng.stats['tiles']} | {d.max():.2e} | {np.quantile(d, 0.9999):.2e} | "
              f"{d.mean():.2e} | {ds:.1e} |", flush=True)


def _memory_worker(args: argparse.Namespace) -> None:
    import torch

    from vsdsfn.engine import Engine

    w, h = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    a, b = rng.random((2, h, w, 3), dtype=np.float32)
    eng = Engine(args.weights, device="cpu", tile=args.tile or None, tile_overlap=args.overlap)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    with torch.inference_mode():
        eng.interpolate([(a, b)])
    print(json.dumps({"tile": args.tile, "overlap": args.overlap, "size": args.size,
                      "peak_rss_mb": peak_rss_mb(),
                      "rss_before_mb": base, "seconds": time.perf_counter() - t0,
                      "tiles": eng.stats["tiles"]}))


def _oom_worker(args: argparse.Namespace) -> None:
    import torch

    from vsdsfn.engine import Engine, OutOfMemory

    w, h = (int(v) for v in args.size.split("x"))
    frames = list(np.random.default_rng(0).random((args.batch + 1, h, w, 3), dtype=np.float32))
    eng = Engine(args.weights, device="cpu", precision="fp32", batch_size=args.batch)
    m = eng.multiple
    budget = args.limit * args.batch * (-(-h // m) * m) * (-(-w // m) * m)   # of the padded frames
    real = eng.model.forward

    def forward(l0, *rest, **kw):   # the allocator's error for calls above the budget
        if budget and l0.shape[0] * l0.shape[-2] * l0.shape[-1] > budget:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                               f"{l0.numel() * 4000} bytes (simulated limit)")
        return real(l0, *rest, **kw)

    eng.model.forward = forward
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            eng.interpolate(list(zip(frames, frames[1:])))
        end = f"batch {eng._auto_batch or args.batch}, " + (
            f"tiles {eng._tile_now()} overlap {eng.tile_overlap}" if eng._tile_now() else "whole frames")
    except OutOfMemory as exc:
        end = str(exc)
    print(json.dumps({"limit": args.limit, "seconds": time.perf_counter() - t0, "retries": eng.stats["oom_retries"],
                      "end": end}))


def oom(args: argparse.Namespace) -> None:
    print(f"{args.size}, batch {args.batch}, fp32; limit: the largest forward pass that fits, as a fraction of the "
          "whole batch untiled")
    print("| limit | seconds | x unlimited | retries | ended with |")
    print("|---:|---:|---:|---:|---|")
    base = None
    for limit in [0.0] + [float(v) for v in args.limits.split(",")]:
        cmd = [sys.executable, "-m", "bench.tiling", "oom-worker", "--size", args.size, "--batch", str(args.batch),
               "--limit", str(limit)] + (["--weights", args.weights] if args.weights else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            print(f"| {limit} | failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]} |||", flush=True)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        base = base or r["seconds"]
        print(f"| {limit or 'none'} | {r['seconds']:.1f} | {r['seconds'] / base:.2f} | {r['retries']} | "
              f"{r['end']} |", flush=True)


def memory(args: argparse.Namespace) -> None:
    print("| size | tile | overlap | tiles | peak RSS (MB) | RSS before (MB) | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for tile in (0, args.tile):
        cmd = [sys.executable, "-m", "bench.tiling", "memory-worker", "--size", args.size, "--tile", str(tile),
               "--overlap", str(args.overlap)] + (["--weights", args.weights] if args.weights else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {r['size']} | {tile or 'none'} | {args.overlap if tile else '-'} | {r['tiles']} | "
              f"{r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} | {r['seconds']:.1f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["error", "memory", "memory-worker", "oom", "oom-worker"])
    ap.add_argument("--weights")
    ap.add_argument("--checkpoint", help="a training checkpoint (.pt) instead of a weights file")
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--frames", default="../shared/data/frames/cafe")
    ap.add_argument("--size", default=None)
    ap.add_argument("--overlaps", default="0,16,32,64,96,128")
    ap.add_argument("--core", type=int, default=96)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--limits", default="0.5,0.25,0.1")
    ap.add_argument("--limit", type=float, default=0.0)
    args = ap.parse_args()
    if args.mode == "error":
        args.size = args.size or "480x256"
        error(args)
    elif args.mode.startswith("oom"):
        args.size = args.size or "480x272"
        (oom if args.mode == "oom" else _oom_worker)(args)
    else:
        args.size = args.size or "1920x1080"
        (memory if args.mode == "memory" else _memory_worker)(args)


if __name__ == "__main__":
    main()
