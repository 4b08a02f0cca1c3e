"""Speed and memory of vsdsfn.upscale against the pipelines users would pick instead.

Every measurement pulls frames from the output clip through VapourSynth, as vspipe does,
in a fresh worker process (so peak memory belongs to one configuration): a warm-up, then
``--runs`` timed runs of ``--frames`` output frames each (each run on source frames not
seen before, so no cache helps); the report gives medians. Methods:

* ``dsfn`` -- ``vsdsfn.upscale`` (default weights);
* ``dsfn-mvtools`` -- ``vsdsfn.upscale(mvtools=True)`` (FlowFPS mixed in);
* ``mvtools`` -- Spline36 2x resize, then mvtools FlowFPS to twice the frame rate;
* ``blend`` -- bicubic 2x resize and frame blending (each new frame the mean of its
  neighbours).

It also counts DSFN's FLOPs per output frame (convolutions and matrix products, traced
by ``bench/estimate.py``) and compares the achieved FLOP rate with a measured matmul peak
of the device. Writes ``bench/RESULTS.md``.

    python bench/benchmark.py                      # CPU sizes; adds 1080p->4K on CUDA
    python bench/benchmark.py --sizes 480x270 --frames 4 --runs 3 --out /tmp/r.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

METHODS = ("dsfn", "dsfn-mvtools", "mvtools", "blend")


# ----------------------------------------------------------------------------- worker
def _source(core, w: int, h: int, length: int, fmt):
    """A moving-texture RGBS clip (smooth noise panning diagonally) of ``length`` frames."""
    import numpy as np
    import vapoursynth as vs

    rng = np.random.default_rng(0)
    big = rng.random((h // 8 + 40, w // 8 + 40, 3)).astype(np.float32)
    big = np.kron(big, np.ones((8, 8, 1), np.float32))  # 8x8 blocks: trackable texture
    blank = core.std.BlankClip(width=w, height=h, format=vs.RGBS, length=length, fpsnum=24000, fpsden=1001)

    def fill(n, f):
        out = f.copy()
        dy, dx = (3 * n) % 160, (5 * n) % 160
        for p in range(3):
            np.copyto(np.asarray(out[p]), big[dy:dy + h, dx:dx + w, p])
        return out

    clip = core.std.ModifyFrame(blank, blank, fill)
    return clip if fmt == vs.RGBS else core.resize.Point(clip, format=fmt)


def _pipeline(method: str, clip, args):
    import vapoursynth as vs

    core = vs.core
    w, h = clip.width * 2, clip.height * 2
    if method in ("dsfn", "dsfn-mvtools"):
        import vsdsfn

        return vsdsfn.upscale(clip, weights=args.weights, device=args.device, batch_size=args.batch_size,
                              num_threads=args.threads or None, fp16=args.fp16 or None,
                              st_scale=args.st_scale, channels_last=_flag(args.channels_last),
                              mvtools=method == "dsfn-mvtools", ensemble=args.ensemble)
    if method == "blend":
        up = core.resize.Bicubic(clip, w, h)
        mid = core.std.Merge(up, up[1:] + up[-1], 0.5)
        return core.std.Interleave([up, mid])
    if method == "mvtools":
        up = core.resize.Spline36(clip, w, h, format=vs.YUV444P16, matrix_s="709")
        sup = core.mv.Super(up, pel=2)
        bv = core.mv.Analyse(sup, isb=True, blksize=16, overlap=8)
        fv = core.mv.Analyse(sup, isb=False, blksize=16, overlap=8)
        out = core.mv.FlowFPS(up, sup, bv, fv, num=clip.fps_num * 2, den=clip.fps_den)
        return core.resize.Spline36(out, format=vs.RGBS, matrix_in_s="709")
    raise ValueError(method)


def _traced_model(st_scale: float | None, weights: str | None = None):
    """The model as ``upscale(weights=weights, st_scale=st_scale)`` runs it (for the FLOP count)."""
    from estimate import model_factory

    model = model_factory(weights or "default")()
    if st_scale is not None:
        model.config.st_scale = st_scale
        model.multiple = model.multiple_for(st_scale)
    return model


def _flag(value: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[value]


def worker(args) -> dict:
    import vapoursynth as vs

    core = vs.core
    if args.vs_threads:
        core.num_threads = args.vs_threads
    w, h = (int(v) for v in args.size.split("x"))
    per_run = args.frames
    total_src = (args.runs + 1) * (per_run // 2 + 2) + 2
    fmt = vs.RGBH if args.fp16 else vs.RGBS
    src = _source(core, w, h, total_src, fmt)
    out = _pipeline(args.method, src, args)
    times = []
    start = 0
    for r in range(args.runs + 1):  # run 0 is the warm-up
        t0 = time.perf_counter()
        futures = [out.get_frame_async(start + i) for i in range(per_run)]
        for fu in futures:
            fu.result()
        dt = time.perf_counter() - t0
        if r:
            times.append(dt)
        start += per_run + 4
    res = {"method": args.method, "size": args.size, "frames": per_run, "runs": args.runs,
           "times": times, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        import torch

        if torch.cuda.is_available() and args.method.startswith("dsfn"):
            res["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    return res


# ----------------------------------------------------------------------------- matmul peak
def matmul_peak(device: str, threads: int) -> float:
    """Measured FLOP/s of a large matrix product (fp32 on CPU, fp16 on CUDA)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")
    n = 2048 if dev.type == "cpu" else 8192
    dt = torch.float32 if dev.type == "cpu" else torch.float16
    a = torch.rand(n, n, device=dev, dtype=dt)
    b = torch.rand(n, n, device=dev, dtype=dt)
    best = float("inf")
    for _ in range(5):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# ----------------------------------------------------------------------------- driver
def run_worker(method: str, size: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--size", size, "--frames", str(args.frames),
           "--runs", str(args.runs), "--device", args.device, "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--vs-threads", str(args.vs_threads)]
    if args.fp16:
        cmd.append("--fp16")
    if args.st_scale is not None:
        cmd += ["--st-scale", str(args.st_scale)]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.ensemble:
        cmd.append("--ensemble")
    cmd += ["--channels-last", args.channels_last]
    print(f"bench: {method} {size} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return {"method": method, "size": size, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measured_cuda(path: Path) -> list[str]:
    """The speed rows of an earlier GPU measurement (``bench/engine_cuda.py``'s report), to
    print beside the estimate: the roofline model leaves out per-kernel host overhead and
    has overstated the measured speed. Empty when there is no such report."""
    if not path.is_file():
        return []
    text = path.read_text().splitlines()
    head = [ln for ln in text if ln.startswith(("- Date:", "- Device:", "- Weights:", "- Command:"))]
    try:
        start = next(i for i, ln in enumerate(text) if ln.startswith("## Speed"))
    except StopIteration:
        return []
    table = []
    for ln in text[start + 1:]:
        if ln.startswith("## "):
            break
        if ln.startswith("|"):
            table.append(ln)
    if len(table) < 3:
        return []
    return ["## CUDA: measured earlier (bench/" + path.name + ", engine without VapourSynth)", "",
            "Not re-measured by this run; compare with the estimate above.", "", *head, "", *table, ""]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", help="comma-separated input sizes WxH (default: 480x270,960x540, "
                                    "plus 1920x1080 on CUDA)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--frames", type=int, default=4, help="output frames per timed run")
    ap.add_argument("--runs", type=int, default=3, help="timed runs (after one warm-up)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--vs-threads", type=int, default=0, help="core.num_threads (0: VapourSynth's default)")
    ap.add_argument("--fp16", action="store_true", help="RGBH input (fp16 on CUDA)")
    ap.add_argument("--weights", help="upscale(weights=...) for dsfn: default, quality or a .safetensors file "
                    "(default: the shipped default)")
    ap.add_argument("--ensemble", action="store_true", help="upscale(ensemble=True) for dsfn (the flip ensemble)")
    ap.add_argument("--st-scale", type=float, help="upscale(st_scale=...) for dsfn (default: the weights file's)")
    ap.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                    help="upscale(channels_last=...) for dsfn (auto: the engine's default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--no-estimate", action="store_true",
                    help="without a GPU, skip the profile-based CUDA estimate (bench/estimate.py)")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        args.method = args.worker
        print(json.dumps(worker(args)))
        return

    import torch

    from vsdsfn.sysinfo import describe_machine

    from estimate import flops_per_frame, model_factory, report

    cuda = torch.cuda.is_available() and args.device != "cpu"
    sizes = args.sizes.split(",") if args.sizes else ["480x270", "960x540"] + (["1920x1080"] if cuda else [])
    methods = args.methods.split(",")
    rows = []
    for size in sizes:
        results = {m: run_worker(m, size, args) for m in methods}
        w, h = (int(v) for v in size.split("x"))
        flops = None
        if "dsfn" in methods:   # the flip ensemble runs every network call twice
            flops = flops_per_frame(_traced_model(args.st_scale, args.weights), w, h) * (2 if args.ensemble else 1)
        rows.append((size, results, flops))
    peak = matmul_peak(args.device, args.threads)

    cmd = "python bench/benchmark.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    lines = [
        "# vsdsfn benchmark", "",
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {describe_machine()}",
        f"- device: {'cuda' if cuda else 'cpu'}; batch_size {args.batch_size}; "
        f"{'RGBH/fp16' if args.fp16 else 'RGBS/fp32'}; torch threads {args.threads or 'default'}",
        f"- command: `{cmd.strip()}`",
        f"- weights (dsfn methods): {args.weights or 'default'}{', flip ensemble (ensemble=True)' if args.ensemble else ''}",
        f"- method: frames pulled from the output clip through VapourSynth (as vspipe does), "
        f"{args.frames} output frames per run, median of {args.runs} runs after a warm-up run; "
        "each configuration in its own process. Peak memory: process RSS high-water mark "
        "(CPU) or torch.cuda.max_memory_allocated (CUDA).",
        f"- measured matmul peak of the device: {peak / 1e9:.1f} GFLOP/s", "",
        "| input → output | method | output frames/s | s per output frame | peak RSS (MB) | CUDA peak (MB) | speed vs dsfn | DSFN GFLOP per frame | % of matmul peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, results, flops in rows:
        w, h = (int(v) for v in size.split("x"))
        base = results.get("dsfn")
        base_fps = None
        if base and "times" in base:
            base_fps = base["frames"] / statistics.median(base["times"])
        for m in methods:
            r = results[m]
            label = f"{w}x{h} → {2 * w}x{2 * h}"
            if "error" in r:
                lines.append(f"| {label} | {m} | error: {' '.join(r['error'])[:80]} | | | | | | |")
                continue
            med = statistics.median(r["times"])
            fps = r["frames"] / med
            ratio = f"{fps / base_fps:.2f}x" if base_fps else ""
            fl = f"{flops / 1e9:.1f}" if (m == "dsfn" and flops) else ""
            util = f"{100 * flops * fps / peak:.1f}%" if (m == "dsfn" and flops) else ""
            cmb = f"{r['cuda_mb']:.0f}" if "cuda_mb" in r else ""
            lines.append(f"| {label} | {m} | {fps:.3f} | {med / r['frames']:.3f} | {r['rss_mb']:.0f} | {cmb} | {ratio} | {fl} | {util} |")
    lines += ["", "FLOPs count convolutions and matrix products (a meta-device trace, bench/estimate.py; "
              "the same count as torch.utils.flop_counter); warping, resizing and activations are not "
              "counted. Speed ratios are output frames/s of the method divided by DSFN's on the same "
              "input size.", ""]
    if not cuda and not args.no_estimate:
        lines += ["## CUDA: estimate (no GPU on this machine)", "",
                  "`python bench/estimate.py --size 1920x1080 --tile 960x544 --gpu h100-sxm` "
                  "(see its docstring for the model):", ""]
        lines += report(1920, 1080, (960, 544), "h100-sxm", 0.25, 0.7, 4.0, model_factory("default"))
        lines.append("")
        lines += measured_cuda(ROOT / "bench" / "CUDA.md")
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
