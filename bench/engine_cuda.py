"""The inference engine on a GPU without VapourSynth (:class:`vsdsfn.engine.Engine`
directly): its output against the CPU's, its FLOPs per output frame and its speed.

For each size, precision and batch size: a warm-up, then ``--runs`` runs of ``--pairs``
pairs as ``vsdsfn.upscale`` sends them (median seconds per output frame, peak device
memory, TFLOP/s and, on a GPU of :data:`FP16_DENSE_PEAK_TFLOPS`, the share of its fp16
peak). The markdown report is rewritten after every measurement; ``--json PATH`` merges
the rows (path ``"engine"``) into a results file (:func:`bench.common.merge_json_rows`).
From the repository root:

    python -m bench.engine_cuda --out bench/CUDA.md --json bench/gpu.json
    python -m bench.engine_cuda --device cpu --sizes 64x48 --pairs 2 --runs 1 --out /tmp/e.md
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import merge_json_rows, peak_rss_mb, report_header, result_row, texture_frames
from training.metrics import psnr
from vsdsfn import tiling
from vsdsfn.engine import DEFAULT_TILE_OVERLAP, Engine, select_device
from vsdsfn.precision import runs_on
from vsdsfn.nets import DSFN
from vsdsfn.weights import load_model

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["FP16_DENSE_PEAK_TFLOPS", "check_against_cpu", "flops_per_output_frame", "fp16_dense_peak", "main",
           "run_pairs", "smallest_tile", "sync", "time_engine"]

#: dense (no sparsity) fp16 tensor-core peak in TFLOP/s, by a substring of
#: ``torch.cuda.get_device_name``; the first match wins, so specific names come first
FP16_DENSE_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0),
)


def fp16_dense_peak(device_name: str) -> float | None:
    """The dense fp16 peak (TFLOP/s) of a device named ``device_name``, ``None`` if not known.

    >>> fp16_dense_peak("NVIDIA H200"), fp16_dense_peak("NVIDIA H100 PCIe"), fp16_dense_peak("cpu")
    (989.0, 756.0, None)
    """
    return next((v for k, v in FP16_DENSE_PEAK_TFLOPS if k in device_name), None)


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA; nothing to wait for on the CPU)."""
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
        evens, odds = engine.upscale_group(group, [first_key + s + k for k in range(p + 1)], p,
                                           [(k, 0.5) for k in range(p)])
        for e, o in zip(evens, odds):
            out += [e, o]
    return out


def smallest_tile(model: DSFN) -> int:
    """The smallest tile side the engine accepts for ``model`` at ``tile_overlap`` 192
    (:data:`DEFAULT_TILE_OVERLAP`, what an unset overlap starts from)."""
    return tiling.smallest_tile(DEFAULT_TILE_OVERLAP, model.multiple_for(model.config.st_scale))


def check_against_cpu(model: DSFN, device: str, size: tuple[int, int]) -> list[str]:
    w, h = size
    frames = texture_frames(w, h, 3)
    ref = run_pairs(Engine(model, device="cpu", batch_size=2), frames, 0)
    rows = []
    least = smallest_tile(model)
    for precision in runs_on(select_device(device)):
        for tile in (None, least) if max(w, h) > least else (None,):
            eng = Engine(model, device=device, precision=precision, batch_size=2, tile=tile,
                         tile_overlap=DEFAULT_TILE_OVERLAP)
            got = run_pairs(eng, frames, 0)
            diff = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
            worst = min(float(psnr(torch.from_numpy(g), torch.from_numpy(r))) for g, r in zip(got, ref))
            rows.append(f"| {w}x{h} | {precision} | {tile or '-'} | {diff:.2e} | {worst:.1f} |")
    return rows


def flops_per_output_frame(model: DSFN, device: str, size: tuple[int, int]) -> float:
    """FLOPs per output frame once the filter runs steadily: one source frame's M_S and one
    pair's DSFN make two output frames. Counted by ``FlopCounterMode`` on real tensors on
    ``device`` (RIFE's large-motion retry depends on the data, so meta tensors cannot run
    it); convolutions and matrix products only (warps and resizes are not counted)."""
    w, h = size
    eng = Engine(model, device=device, batch_size=1)
    a, b, c = texture_frames(w, h, 3)
    eng.spatial([a, b], keys=[0, 1])      # both M_S cached: the pair below runs DSFN alone

    def flops(job) -> int:   # counted on the engine's thread: the mode sees its own thread only
        def counted():
            with FlopCounterMode(display=False) as counter:
                job()
            return counter.get_total_flops()
        return eng.call(counted)

    return (flops(lambda: eng.interpolate([(a, b)], keys=[(0, 1)])) + flops(lambda: eng.spatial([c]))) / 2


def time_engine(model: DSFN, device: str, size: tuple[int, int], precision: str, batch: int, pairs: int,
                runs: int) -> tuple[float, float]:
    """Median seconds per output frame and peak device memory (MB; 0 on CPU)."""
    w, h = size
    dev = torch.device(device)
    eng = Engine(model, device=device, precision=precision, batch_size=batch)
    frames = texture_frames(w, h, (runs + 1) * pairs + 1)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for r in range(runs + 1):  # run 0 warms up (cuDNN autotuning, allocator)
        chunk = frames[r * pairs:(r + 1) * pairs + 1]
        sync(dev)
        t0 = time.perf_counter()
        run_pairs(eng, chunk, r * pairs)
        sync(dev)
        if r:
            times.append((time.perf_counter() - t0) / (2 * pairs))
    peak = torch.cuda.max_memory_allocated(dev) / 2 ** 20 if dev.type == "cuda" else 0.0
    return statistics.median(times), peak


def _device_name(device: str) -> str:
    dev = torch.device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type


def _speed_row(size: tuple[int, int], precision: str, batch: int, sec: float, peak: float, flops: float | None,
               peak_tflops: float | None) -> str:
    w, h = size
    tflops = flops / sec / 1e12 if flops else None
    share = f"{100 * tflops / peak_tflops:.1f}%" if tflops and peak_tflops and precision != "fp32" else "-"
    return (f"| {w}x{h} -> {2 * w}x{2 * h} | {precision} | {batch} | {sec:.4f} | {1 / sec:.1f} | "
            f"{peak:.0f} | {f'{tflops:.2f}' if tflops else '-'} | {share} |")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="weights file (default: the shipped default)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sizes", default="960x540,1920x1080", help="input sizes WxH, comma-separated")
    ap.add_argument("--batches", default="1,4", help="batch sizes (pairs per forward pass)")
    ap.add_argument("--pairs", type=int, default=8, help="pairs per timed run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--check-size", default="640x360", help="input size of the CPU comparison")
    ap.add_argument("--out", default=str(ROOT / "bench" / "CUDA.md"))
    ap.add_argument("--json", metavar="PATH", help="also merge the speed rows (path \"engine\") into this "
                    "results file, e.g. bench/gpu.json (see bench.common)")
    return ap


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.split("x"))
    return w, h


def _check_section(model: DSFN, args: argparse.Namespace) -> list[str]:
    """The report's comparison of the device's output with the CPU's."""
    return ["", f"## Output against the CPU's ({args.check_size} input, 2 pairs; tile = longest tile side)", "",
            "| input | precision | tile | max abs diff | worst PSNR vs CPU (dB, 100 = identical) |",
            "|---|---|---|---|---|", *check_against_cpu(model, args.device, _size(args.check_size))]


def _count_flops(model: DSFN, device: str, sizes: list[tuple[int, int]]) -> dict[tuple[int, int], float | None]:
    """:func:`flops_per_output_frame` of each size (``None`` where counting failed)."""
    flops: dict[tuple[int, int], float | None] = {}
    for size in sizes:
        try:
            flops[size] = flops_per_output_frame(model, device, size)
        except Exception as exc:  # noqa: BLE001 -- the speed rows do not need it
            print(f"FLOPs of {size[0]}x{size[1]} not counted: {type(exc).__name__}: {exc}", file=sys.stderr)
            flops[size] = None
    return flops


def _flops_section(flops: dict[tuple[int, int], float | None], peak_tflops: float | None) -> list[str]:
    lines = ["", "## FLOPs per output frame", "",
             "Counted by `torch.utils.flop_counter.FlopCounterMode` on one pair's DSFN and one frame's M_S "
             "(two output frames) on the device's own tensors; convolutions and matrix products only. "
             + (f"Dense fp16 peak of this device: {peak_tflops:.0f} TFLOP/s." if peak_tflops
                else "This device's fp16 peak is not in the table: no share of peak."), "",
             "| input -> output | GFLOP per output frame |", "|---|---|"]
    return lines + [f"| {w}x{h} -> {2 * w}x{2 * h} | {f'{f / 1e9:.1f}' if f else '-'} |"
                    for (w, h), f in flops.items()]


def _measure_speed(model: DSFN, args: argparse.Namespace, lines: list[str], flops: dict, peak_tflops: float | None,
                   name: str, command: str) -> None:
    """Time every size, precision and batch, appending each row to ``lines`` and rewriting the
    report (and the ``--json`` file) after each, so that a timeout keeps what was measured."""
    cuda = torch.device(args.device).type == "cuda"
    for w, h in (_size(s) for s in args.sizes.split(",")):
        for precision in runs_on(select_device(args.device)):
            for b in (int(b) for b in args.batches.split(",")):
                sec, peak = time_engine(model, args.device, (w, h), precision, b, args.pairs, args.runs)
                row = _speed_row((w, h), precision, b, sec, peak, flops[(w, h)], peak_tflops)
                lines.append(row)
                print(row, file=sys.stderr, flush=True)
                Path(args.out).write_text("\n".join(lines) + "\n")
                if args.json:
                    merge_json_rows(args.json, [result_row(w, h, precision, b, "engine", 1 / sec,
                                                           peak if cuda else peak_rss_mb())],
                                    device=name, command=command)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    model = load_model(args.weights)
    name = _device_name(args.device)
    peak_tflops = fp16_dense_peak(name) if torch.device(args.device).type == "cuda" else None
    command = f"python -m bench.engine_cuda {' '.join(shlex.quote(a) for a in (argv or sys.argv[1:]))}".strip()
    lines = report_header("vsdsfn engine on a GPU (bench.engine_cuda)", name, command,
                          f"Weights: {args.weights or 'shipped default'}")
    lines += _check_section(model, args)
    print("\n".join(lines), file=sys.stderr, flush=True)
    flops = _count_flops(model, args.device, [_size(s) for s in args.sizes.split(",")])
    lines += _flops_section(flops, peak_tflops)
    lines += ["", f"## Speed (median of {args.runs} runs of {args.pairs} pairs, after a warm-up)", "",
              "| input -> output | precision | batch | s per output frame | output fps | peak memory (MB) | "
              "TFLOP/s | share of fp16 dense peak |", "|---|---|---|---|---|---|---|---|"]
    Path(args.out).write_text("\n".join(lines) + "\n")
    _measure_speed(model, args, lines, flops, peak_tflops, name, command)
    print(f"wrote {args.out}" + (f" and {args.json}" if args.json else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
