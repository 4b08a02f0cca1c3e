"""Speed and memory of vsdsfn.upscale against the pipelines users would pick instead.

Frames are pulled from the output clip through VapourSynth (as vspipe does), each method
and size in a fresh worker process: a warm-up, then ``--runs`` timed runs of ``--frames``
new output frames; the report gives medians. Methods: ``dsfn`` (``vsdsfn.upscale``, once
per ``--precisions`` entry), ``mvtools`` (the evaluation's "Spline36 -> FlowFPS") and
``blend`` (bicubic 2x and frame blending). ``--json PATH`` also merges dsfn's rows (path
``"vapoursynth"``) into a results file (:func:`bench.common.merge_json_rows`). From the
repository root:

    python -m bench.benchmark                      # CPU sizes; adds 1920x1080 on CUDA
    python -m bench.benchmark --sizes 480x270 --frames 4 --runs 3 --out /tmp/r.md
    python -m bench.benchmark --device cuda --methods dsfn --precisions fp16 --batch-size 4 --json bench/gpu.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import vapoursynth as vs

import vsdsfn
from bench.common import merge_json_rows, peak_rss_mb, report_header, result_row, texture_frames
from training.mvbaseline import spline36_2x
from training.flowfps import clip_from_frames, flowfps

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["METHODS", "main", "worker"]

METHODS = ("dsfn", "mvtools", "blend")


# ----------------------------------------------------------------------------- worker
def _pipeline(method: str, clip: vs.VideoNode, args: argparse.Namespace) -> vs.VideoNode:
    core = vs.core
    if method == "dsfn":
        num, _, den = args.factor.partition("/")
        return vsdsfn.upscale(clip, factor_num=int(num), factor_den=int(den or 1), weights=args.weights,
                              device=args.device, batch_size=args.batch_size,
                              num_threads=args.threads or None, precision=args.precision,
                              st_scale=args.st_scale, channels_last=_flag(args.channels_last),
                              ensemble=args.ensemble, tile=args.tile or None, trt=args.trt)
    if method == "blend":
        up = core.resize.Bicubic(clip, clip.width * 2, clip.height * 2)
        mid = core.std.Merge(up, up[1:] + up[-1], 0.5)
        return core.std.Interleave([up, mid])
    if method == "mvtools":
        return flowfps(spline36_2x(clip))
    raise ValueError(method)


def _flag(value: str) -> bool | None:
    return {"auto": None, "on": True, "off": False}[value]


def worker(args: argparse.Namespace) -> dict:
    """Times one method at one size (run in a fresh process by :func:`run_worker`)."""
    if args.vs_threads:
        vs.core.num_threads = args.vs_threads
    w, h = (int(v) for v in args.size.split("x"))
    num = int(args.factor.partition("/")[0]) if args.method == "dsfn" else 2
    per_run = -(-args.frames // num) * num   # whole cycles of the factor: each run computes what it shows
    total_src = (args.runs + 1) * (per_run + num) + 2     # enough for any factor > 1
    src = clip_from_frames(texture_frames(w, h, total_src), fps=(24000, 1001), fmt=vs.RGBH if args.rgbh else vs.RGBS)
    out = _pipeline(args.method, src, args)
    times, synthesised = [], []
    start = 0
    for r in range(args.runs + 1):  # run 0 is the warm-up
        t0 = time.perf_counter()
        futures = [out.get_frame_async(start + i) for i in range(per_run)]
        frames = [fu.result() for fu in futures]
        dt = time.perf_counter() - t0
        if r:
            times.append(dt)
            synthesised.append(sum(int(f.props.get("DSFNInterpolated", (start + i) % 2)) for i, f in enumerate(frames)))
        start += per_run + num   # a cycle apart: the next run starts on source frames not computed yet
    res = {"method": args.method, "size": args.size, "frames": per_run, "runs": args.runs,
           "times": times, "synthesised": synthesised, "rss_mb": peak_rss_mb()}
    if args.method == "dsfn":
        import torch  # the filter has loaded it

        from vsdsfn.precision import choose, name_of
        from vsdsfn.transfer import select_device

        res["precision"] = name_of(choose(args.precision, select_device(args.device)))
        res["factor"] = args.factor
        if torch.cuda.is_available():
            res["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


# ----------------------------------------------------------------------------- driver
def run_worker(method: str, size: str, args: argparse.Namespace, precision: str = "auto", factor: str = "2",
               weights: str | None = None) -> dict:
    """:func:`worker`'s result, from a fresh process (its error line if it failed);
    ``weights``: dsfn's (default ``--weights``)."""
    weights = weights or args.weights
    cmd = [sys.executable, "-m", "bench.benchmark", "--worker", method, "--size", size, "--frames", str(args.frames),
           "--runs", str(args.runs), "--device", args.device, "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--vs-threads", str(args.vs_threads), "--precision", precision,
           "--factor", factor]
    if args.rgbh:
        cmd.append("--rgbh")
    if args.st_scale is not None:
        cmd += ["--st-scale", str(args.st_scale)]
    if weights:
        cmd += ["--weights", weights]
    if args.ensemble:
        cmd.append("--ensemble")
    if args.tile:
        cmd += ["--tile", str(args.tile)]
    if args.trt:
        cmd.append("--trt")
    cmd += ["--channels-last", args.channels_last]
    print(f"bench: {method} {size} {f'{precision} x{factor}' if method == 'dsfn' else ''} ...", file=sys.stderr,
          flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    label = {"label": f"{method} ({Path(weights).name})"} if weights != args.weights else {}
    if proc.returncode:
        return {"method": method, "size": size, "precision": precision, "factor": factor,
                "error": proc.stderr.strip().splitlines()[-1:] or ["failed"], **label}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), **label}


def _runs(size: str, methods: list[str], precisions: list[str], args: argparse.Namespace) -> list[dict]:
    """Every method at one size; dsfn once per weights file, precision and factor, back to
    back; all of it ``--rounds`` times in turn (A B A B ...), so that a machine whose speed
    drifts slows every row alike. A row's times are those of all its rounds; ``rounds``
    keeps each round's median."""
    jobs = []
    for m in methods:
        if m != "dsfn":
            jobs.append((m, "auto", "2", None))
            continue
        jobs += [(m, p, f, w) for w in [args.weights] + args.compare_weights
                 for p in precisions for f in args.factors.split(",")]
    rows: list[dict | None] = [None] * len(jobs)
    for _ in range(args.rounds):
        for i, (m, p, f, w) in enumerate(jobs):
            r = run_worker(m, size, args, p, f, w)
            if "times" in r:
                r["rounds"] = [statistics.median(r["times"])]
            prev = rows[i]
            if prev is None or "error" in r:
                rows[i] = r
            elif "times" in prev:
                prev["times"] += r["times"]
                prev["synthesised"] += r["synthesised"]
                prev["rounds"] += r["rounds"]
                prev["rss_mb"] = max(prev["rss_mb"], r["rss_mb"])
                if "cuda_mb" in r:
                    prev["cuda_mb"] = max(prev.get("cuda_mb", 0), r["cuda_mb"])
    return rows


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", help="comma-separated input sizes WxH (default: 480x270,960x540, "
                                    "plus 1920x1080 on CUDA)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--frames", type=int, default=4, help="output frames per timed run")
    ap.add_argument("--runs", type=int, default=3, help="timed runs (after one warm-up)")
    ap.add_argument("--rounds", type=int, default=1, help="all rows this many times in turn (in fresh processes): "
                    "medians over every round, and each dsfn row against the first weights file's as the median "
                    "of the rounds' ratios")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--vs-threads", type=int, default=0, help="core.num_threads (0: VapourSynth's default)")
    ap.add_argument("--precisions", help="dsfn's upscale(precision=...) values, comma-separated (default: every "
                    "precision the device runs, then auto)")
    ap.add_argument("--rgbh", action="store_true", help="RGBH input clips (default RGBS)")
    ap.add_argument("--weights", help="upscale(weights=...) for dsfn: a name such as default, or a .safetensors "
                    "file (default: the shipped default)")
    ap.add_argument("--compare-weights", nargs="+", default=[], metavar="W",
                    help="also time dsfn with these weights files (rows 'dsfn (W)', back to back with the others)")
    ap.add_argument("--ensemble", action="store_true", help="upscale(ensemble=True) for dsfn (the flip ensemble)")
    ap.add_argument("--trt", action="store_true", help="upscale(trt=True) for dsfn (TensorRT; needs torch-tensorrt)")
    ap.add_argument("--st-scale", type=float, help="upscale(st_scale=...) for dsfn (default: the weights file's)")
    ap.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                    help="upscale(channels_last=...) for dsfn (auto: the engine's default)")
    ap.add_argument("--tile", type=int, default=0, help="upscale(tile=N) for dsfn: longest tile side in input "
                    "pixels (0: whole frames)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    ap.add_argument("--json", metavar="PATH", help="also merge dsfn's rows (path \"vapoursynth\") into this "
                    "results file, e.g. bench/gpu.json (see bench.common)")
    ap.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--factor", default="2", help=argparse.SUPPRESS)
    ap.add_argument("--factors", default="2", help="dsfn's frame-rate factors N or N/D, comma-separated (e.g. 2,5/2)")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.worker:
        args.method = args.worker
        print(json.dumps(worker(args)))
        return

    from vsdsfn.precision import runs_on
    from vsdsfn.transfer import select_device

    device = select_device(args.device)
    cuda = device.type == "cuda"
    sizes = args.sizes.split(",") if args.sizes else ["480x270", "960x540"] + (["1920x1080"] if cuda else [])
    precisions = args.precisions.split(",") if args.precisions else [*runs_on(device), "auto"]
    rows = [(size, _runs(size, args.methods.split(","), precisions, args)) for size in sizes]
    cmd = ("python -m bench.benchmark " + shlex.join(argv if argv is not None else sys.argv[1:])).strip()
    lines = _report(rows, args, device, cmd)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.json:
        _write_json(args.json, rows, args, cuda, cmd)


def _report(rows: list[tuple[str, list[dict]]], args: argparse.Namespace, device, cmd: str) -> list[str]:
    """The markdown report: the header (machine, setup, method) and a table row per measurement."""
    import torch

    from vsdsfn.precision import choose, name_of

    lines = report_header(
        "vsdsfn benchmark", f"{device}; batch_size {args.batch_size}; {'RGBH' if args.rgbh else 'RGBS'} clips; "
        f"torch threads {args.threads or torch.get_num_threads()}; tile {args.tile or 'none'}", cmd,
        f"Default precision here (auto): {name_of(choose(None, device))}",
        f"Weights (dsfn): {args.weights or 'default'}{', flip ensemble (ensemble=True)' if args.ensemble else ''}"
        f"{', TensorRT (trt=True)' if args.trt else ''}",
        f"Method: frames pulled from the output clip through VapourSynth (as vspipe does), {args.frames} output "
        f"frames per run rounded up to whole cycles of the factor (5 at 5/2; source and interpolated frames alike), median of {args.runs} runs after a warm-up run "
        f"(x {args.rounds} rounds, every row in turn each round); each row in "
        "its own process, the rows of one size back to back. vs first weights: the median over the rounds of "
        "the row's time per output frame over the first weights file's (same precision and factor). Peak memory: the process's RSS high-water mark "
        "(VmHWM) or torch.cuda.max_memory_allocated (CUDA). vs dsfn fp32: the row's output frames/s divided by "
        "dsfn's at fp32 (same size and factor). s per synthesised frame: a run's time over its interpolated frames.")
    lines += ["", "| input → output | method | precision | factor | output frames/s | s per output frame "
              "| s per synthesised frame | peak RSS (MB) | CUDA peak (MB) | vs dsfn fp32 | time vs first weights |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for size, results in rows:
        lines += _table_rows(size, results)
    return lines


def _table_rows(size: str, results: list[dict]) -> list[str]:
    w, h = (int(v) for v in size.split("x"))
    label = f"{w}x{h} → {2 * w}x{2 * h}"
    fps = {id(r): r["frames"] / statistics.median(r["times"]) for r in results if "times" in r}
    base = {r.get("factor"): fps[id(r)] for r in results
            if r["method"] == "dsfn" and "label" not in r and r.get("precision") == "fp32" and id(r) in fps}
    first = {(r.get("precision"), r.get("factor")): r for r in reversed(results)
             if r["method"] == "dsfn" and "label" not in r and "rounds" in r}
    lines = []
    for r in results:
        prec, fct = (r.get("precision", ""), r.get("factor", "")) if r["method"] == "dsfn" else ("", "2")
        name = r.get("label", r["method"])
        if "error" in r:
            lines.append(f"| {label} | {name} | {prec} | {fct} | error: {' '.join(r['error'])[:80]} | | | | | | |")
            continue
        f = fps[id(r)]
        per_synth = statistics.median(t / max(n, 1) for t, n in zip(r["times"], r["synthesised"]))
        cmb = f"{r['cuda_mb']:.0f}" if "cuda_mb" in r else ""
        ratio = f"{f / base[fct]:.2f}x" if r["method"] == "dsfn" and fct in base else ""
        ref = first.get((prec, fct)) if r["method"] == "dsfn" else None
        vs_first = (f"{statistics.median(a / b for a, b in zip(r['rounds'], ref['rounds'])):.2f}x"
                    if ref is not None and ref is not r and "label" in r else "")
        lines.append(f"| {label} | {name} | {prec} | {fct} | {f:.3f} | {1 / f:.3f} | {per_synth:.3f} "
                     f"| {r['rss_mb']:.0f} | {cmb} | {ratio} | {vs_first} |")
    return lines


def _write_json(path: str, rows: list[tuple[str, dict]], args: argparse.Namespace, cuda: bool, command: str) -> None:
    """dsfn's measured rows into the results file (peak_mb: CUDA's peak on CUDA, else the RSS peak)."""
    import torch

    out = []
    for size, results in rows:
        w, h = (int(v) for v in size.split("x"))
        for r in results:
            if r["method"] != "dsfn" or "label" in r or "times" not in r or r.get("factor") != "2":   # 2x rates
                continue
            peak = r["cuda_mb"] if cuda and "cuda_mb" in r else r["rss_mb"]
            out.append(result_row(w, h, r["precision"], args.batch_size, "vapoursynth",
                                  r["frames"] / statistics.median(r["times"]), peak))
    device = torch.cuda.get_device_name() if cuda else "cpu"
    merge_json_rows(path, out, device=device, command=command)
    print(f"merged {len(out)} rows into {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
