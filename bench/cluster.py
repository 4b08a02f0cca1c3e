"""Rendering on a local Ray cluster: its fixed costs (cluster start, workers ready with
their weights, stop, join), the cost of each chunk, and throughput with 1 and 2 workers
against the single-process render of the same clip; then what N GPUs make of a film.

    python -m bench.cluster --loops 50 --chunk 200 --threads 1 --out bench/CLUSTER.md

The clip is the shipped sample looped ``--loops`` times (12 source frames each), upscaled
2x by the shipped weights in a VapourSynth script, so that the single-process and the
cluster runs render the same script; each run's ``.y4m`` must be byte-identical to the
single-process one. Writes a Markdown report (``--out``; bench/CLUSTER.md keeps one) with
the machine, the date, the command and the load average around the runs (other work on
the machine shows there), else prints it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import tempfile
import textwrap
import time
from fractions import Fraction
from pathlib import Path

from bench.common import report_header
from vsdsfn import cli
from vsdsfn.chunks import script_node
from vsdsfn.plan import estimate

#: a 2-hour film at 24000/1001 fps raised to 60000/1001 fps: its output frames
FILM_FRAMES = math.floor(math.floor(7200 * Fraction(24000, 1001)) * Fraction(5, 2))


def _script(folder: Path, loops: int, threads: int, weights: str | None) -> Path:
    path = folder / "bench.vpy"
    path.write_text(textwrap.dedent(f"""\
        import vapoursynth as vs
        import vsdsfn
        core = vs.core
        clip = core.bs.VideoSource({str(cli.SAMPLE)!r}, cachemode=0) * {loops}
        clip = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="170m")
        clip = vsdsfn.upscale(clip, weights={weights!r}, num_threads={threads})
        clip = core.resize.Bicubic(clip, format=vs.YUV420P10, matrix_s="170m")
        clip.set_output()
    """))
    return path


def _blank_script(folder: Path, frames: int) -> Path:
    """A script whose frames cost nothing to render: what a chunk costs besides its frames."""
    path = folder / "blank.vpy"
    path.write_text("import vapoursynth as vs\n"
                    f"vs.core.std.BlankClip(format=vs.YUV420P10, width=352, height=288, length={frames}).set_output()\n")
    return path


def single(script: Path, out: Path) -> dict[str, float]:
    """The script rendered in this process: seconds to build it (weights loaded) and to
    render it."""
    t0 = time.perf_counter()
    node = script_node(script)
    t1 = time.perf_counter()
    with open(out, "wb") as f:
        node.output(f, y4m=True)
    return {"setup": t1 - t0, "render": time.perf_counter() - t1, "frames": node.num_frames}


class _Timings(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "vsdsfn_timings"):
            self.last = dict(record.vsdsfn_timings)


def on_cluster(script: Path, out: Path, workers: int, chunk: int) -> dict[str, float]:
    """The script rendered by ``vsdsfn --workers N --chunk C -v``: the job's phases in seconds
    (from its log record)."""
    handler, log = _Timings(), logging.getLogger("vsdsfn")
    log.addHandler(handler)
    try:
        t0 = time.perf_counter()
        rc = cli.main([str(script), "-o", str(out), "--workers", str(workers), "--chunk", str(chunk), "-q", "-v"])
        wall = time.perf_counter() - t0
    finally:
        log.removeHandler(handler)
    if rc != 0:
        raise RuntimeError(f"vsdsfn --workers {workers} failed (exit {rc})")
    return {**handler.last, "wall": wall}


def _row(name: str, r: dict[str, float], frames: int) -> str:
    fixed = r.get("cluster", 0) + r.get("workers", 0) + r.get("stop", 0) + r.get("join", 0)
    render = r.get("chunks", r.get("render", 0))
    return (f"| {name} | {r['wall']:.1f} | {fixed:.1f} | {r.get('cluster', 0):.1f} | {r.get('workers', 0):.1f} | "
            f"{render:.1f} | {r.get('join', 0):.2f} | {frames / render:.2f} | {frames / r['wall']:.2f} |")


def report(base: dict[str, float], runs: dict[int, dict[str, float]], chunk: int, gpu_frame_s: float,
           blank: dict[str, float], loops: int) -> list[str]:
    frames = int(base["frames"])
    base = {**base, "wall": base["setup"] + base["render"]}
    n_chunks = math.ceil(frames / chunk)
    one = runs[1]
    per_chunk = blank["chunks"] / blank["chunks_rendered"]
    per_frame = base["render"] / frames
    fixed = one["cluster"] + one["workers"] + one["stop"] + one["join"]
    overhead = fixed + n_chunks * per_chunk
    lines = [f"The shipped sample (176x144) looped {loops} times: {frames} output frames 352x288, chunks of {chunk} "
             f"({n_chunks} chunks); seconds:", "",
             "| run | wall | fixed | cluster start | workers ready | render | join | frames/s (render) | "
             "frames/s (wall) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
             _row("single process", base, frames)]
    lines += [_row(f"{w} worker{'s' if w > 1 else ''}", r, frames) for w, r in sorted(runs.items())]
    lines += ["", f"- per frame (single process): {per_frame:.4f} s; per chunk besides its frames (task, y4m, "
                  f"kept and synced; {int(blank['chunks_rendered'])} one-frame chunks of a blank clip on 1 worker): "
                  f"{per_chunk:.3f} s = {100 * per_chunk / (chunk * per_frame):.2f} % of a {chunk}-frame chunk",
              f"- 1 worker's overhead: fixed {fixed:.1f} s (cluster start, workers ready, stop, join) + {n_chunks} "
              f"chunks x {per_chunk:.3f} s = {overhead:.1f} s, {100 * overhead / one['wall']:.1f} % of its wall; "
              f"its wall over the single process's: {100 * (one['wall'] / base['wall'] - 1):+.1f} %",
              f"- a 2-hour film ({FILM_FRAMES} output frames, 23.976 -> 59.94 fps, chunks of 300) at "
              f"{gpu_frame_s} s per output frame on one GPU (an assumption, not measured here), with this "
              "per-chunk cost and these fixed costs (`vsdsfn.plan.estimate`):", ""]
    start = one["cluster"] + one["workers"]
    for n in (1, 2, 4, 8, 16):
        s = estimate(FILM_FRAMES, n, gpu_frame_s, max(per_chunk, 0.0), 300, start_s=start)
        lines.append(f"  - {n:2d} GPUs: {s / 3600:.2f} h")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loops", type=int, default=17, help="the sample clip looped this many times (12 frames each)")
    p.add_argument("--chunk", type=int, default=200, help="output frames per chunk")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each renderer")
    p.add_argument("--weights", default=None, help="weights file (default: the shipped weights)")
    p.add_argument("--workers", default="1,2", help="worker counts to run")
    p.add_argument("--blank-chunks", type=int, default=200, help="one-frame chunks of a blank clip (per-chunk cost)")
    p.add_argument("--gpu-frame-s", type=float, default=0.05,
                   help="seconds per output frame on one GPU, for the film estimate (an assumption)")
    p.add_argument("--out", help="write the report here (default: print it)")
    a = p.parse_args(argv)
    command = "python -m bench.cluster " + shlex.join(sys.argv[1:] if argv is None else argv)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="vsdsfn-bench-cluster-") as tmp:
        folder = Path(tmp)
        blank = on_cluster(_blank_script(folder, a.blank_chunks), folder / "blank.y4m", 1, 1)
        script = _script(folder, a.loops, a.threads, a.weights)
        base = single(script, folder / "single.y4m")
        load.append(os.getloadavg()[0])
        runs = {}
        for w in map(int, a.workers.split(",")):
            runs[w] = on_cluster(script, folder / f"w{w}.y4m", w, a.chunk)
            load.append(os.getloadavg()[0])
            if (folder / f"w{w}.y4m").read_bytes() != (folder / "single.y4m").read_bytes():
                raise RuntimeError(f"{w} workers: the output differs from the single-process output")
            os.unlink(folder / f"w{w}.y4m")
    import ray

    lines = report_header(
        "Rendering on a local Ray cluster: measured costs", f"cpu; ray {ray.__version__}", command,
        f"Load average (1 min) before and after each run: {', '.join(f'{v:.1f}' for v in load)}",
        f"Renderers: the sample upscaled 2x by {a.weights or 'the shipped weights'} in a `.vpy` script at the "
        f"default precision, torch threads {a.threads} in every renderer; each cluster run's `.y4m` is "
        "byte-identical to the single-process one (checked)")
    text = "\n".join([*lines, "", *report(base, runs, a.chunk, a.gpu_frame_s, blank, a.loops)]) + "\n"
    if a.out:
        Path(a.out).write_text(text)
    else:
        print(text, end="")

if __name__ == "__main__":
    main()
