"""The inference engine on a GPU, without VapourSynth: correctness against the CPU and speed.

``bench.benchmark`` measures through VapourSynth, as users run vsdsfn; this script
drives :class:`vsdsfn.engine.Engine` directly, so it runs on a machine that has PyTorch
and a GPU but no VapourSynth. It

1. checks the device's output against the CPU's on the same frames (fp32 and fp16, with
   and without tiles): max absolute difference and PSNR against the CPU result;
2. times the filter's work -- ``Engine.upscale_group`` over a moving texture, groups of
   ``batch_size`` pairs as ``vsdsfn.upscale`` sends them, each source frame's M_S computed
   once -- for each size, precision and batch size: a warm-up, then ``--runs`` runs of
   ``--pairs`` pairs (2 output frames each; the report gives the median seconds per output
   frame) and the peak device memory;

and writes a markdown report (machine, date, command, medians). Run from the repository
root:

    python -m bench.engine_cuda --out bench/CUDA.md
    python -m bench.engine_cuda --device cpu --sizes 64x48 --pairs 2 --runs 1 --out /tmp/e.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import texture_frames
from training.metrics import psnr
from vsdsfn.engine import Engine
from vsdsfn.nets import DSFN
from vsdsfn.sysinfo import describe_machine
from vsdsfn.weights import load_model

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["check_against_cpu", "main", "run_pairs", "time_engine"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_pairs(engine: Engine, frames: list[np.ndarray], first_key: int) -> list[np.ndarray]:
    """All output frames of ``len(frames) - 1`` pairs, in groups of the engine's batch size
    (keys continue across groups, so a frame's M_S is computed once, as in the filter)."""
    out: list[np.ndarray] = []
    b, pairs = engine.batch_size, len(frames) - 1
    for s in range(0, pairs, b):
        p = min(b, pairs - s)
        group = frames[s:s + p + 1]
        evens, odds = engine.upscale_group(group, [first_key + s + k for k in range(p + 1)], [True] * p)
        for e, o in zip(evens, odds):
            out += [e, o]
    return out


def check_against_cpu(model: DSFN, device: str, size: tuple[int, int]) -> list[str]:
    w, h = size
    frames = texture_frames(w, h, 3)
    ref = run_pairs(Engine(model, device="cpu", batch_size=2), frames, 0)
    rows = []
    for fp16 in (False, True):
        for tile in (None, 416) if max(w, h) > 416 else (None,):  # 416: the smallest tile at overlap 192
            eng = Engine(model, device=device, fp16=fp16, batch_size=2, tile=tile)
            got = run_pairs(eng, frames, 0)
            diff = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
            worst = min(float(psnr(torch.from_numpy(g), torch.from_numpy(r))) for g, r in zip(got, ref))
            rows.append(f"| {w}x{h} | {'fp16' if fp16 else 'fp32'} | {tile or '-'} | {diff:.2e} | {worst:.1f} |")
    return rows


def time_engine(model: DSFN, device: str, size: tuple[int, int], fp16: bool, batch: int, pairs: int,
                runs: int) -> tuple[float, float]:
    """Median seconds per output frame and peak device memory (MB; 0 on CPU)."""
    w, h = size
    dev = torch.device(device)
    eng = Engine(model, device=device, fp16=fp16, batch_size=batch)
    frames = texture_frames(w, h, (runs + 1) * pairs + 1)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for r in range(runs + 1):  # run 0 warms up (cuDNN autotuning, allocator)
        chunk = frames[r * pairs:(r + 1) * pairs + 1]
        _sync(dev)
        t0 = time.perf_counter()
        run_pairs(eng, chunk, r * pairs)
        _sync(dev)
        if r:
            times.append((time.perf_counter() - t0) / (2 * pairs))
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20 if dev.type == "cuda" else 0.0
    return statistics.median(times), peak


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="weights file (default: the shipped default)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="960x540,1920x1080", help="input sizes WxH, comma-separated")
    ap.add_argument("--batches", default="1,4", help="batch sizes (pairs per forward pass)")
    ap.add_argument("--pairs", type=int, default=8, help="pairs per timed run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--check-size", default="640x360", help="input size of the CPU comparison")
    ap.add_argument("--out", default=str(ROOT / "bench" / "CUDA.md"))
    args = ap.parse_args(argv)
    model = load_model(args.weights)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    cuda = torch.device(args.device).type == "cuda"
    precisions = (False, True) if cuda else (False,)
    lines = [
        "# vsdsfn engine on a GPU (bench.engine_cuda)", "",
        f"- Date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d')}",
        f"- Machine: {describe_machine()}",
        f"- Device: {torch.cuda.get_device_name(torch.device(args.device)) if cuda else args.device}; "
        f"torch {torch.__version__}",
        f"- Weights: {args.weights or 'shipped default'}",
        f"- Command: `python -m bench.engine_cuda {' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))}`",
        "", f"## Output against the CPU's ({args.check_size} input, 2 pairs; tile = longest tile side)", "",
        "| input | precision | tile | max abs diff | worst PSNR vs CPU (dB, 100 = identical) |", "|---|---|---|---|---|",
    ]
    lines += check_against_cpu(model, args.device, tuple(int(v) for v in args.check_size.split("x")))
    print("\n".join(lines), file=sys.stderr, flush=True)
    lines += ["", f"## Speed (median of {args.runs} runs of {args.pairs} pairs, after a warm-up)", "",
              "| input -> output | precision | batch | s per output frame | output fps | peak memory (MB) |",
              "|---|---|---|---|---|---|"]
    for w, h in sizes:
        for fp16 in precisions:
            for b in batches:
                sec, peak = time_engine(model, args.device, (w, h), fp16, b, args.pairs, args.runs)
                row = (f"| {w}x{h} -> {2 * w}x{2 * h} | {'fp16' if fp16 else 'fp32'} | {b} | {sec:.4f} | "
                       f"{1 / sec:.1f} | {peak:.0f} |")
                lines.append(row)
                print(row, file=sys.stderr, flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
