"""Where the engine's time goes: a ``torch.profiler`` trace of a few frame pairs, summarised.

After ``--warmup`` pairs, ``--pairs`` pairs run without the profiler (the wall time), then
as many new ones under it. The summary (``--out``) gives the wall time and, on a GPU, its
busy time and idle share; the top ops (and kernels); host syncs; dtype conversions; and
host/device memory copies. ``--trace DIR`` also writes the Chrome trace (gzipped; open in
https://ui.perfetto.dev). From the repository root:

    python -m bench.profile_cuda                                 # 1920x1080 -> 4K, auto precision (fp16), batch 1
    python -m bench.profile_cuda --precision fp32 --batch 4 --trace /tmp/traces
    python -m bench.profile_cuda --device cpu --size 64x48 --pairs 1 --warmup 1 --out /tmp/p.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from bench.common import report_header, texture_frames
from bench.engine_cuda import run_pairs, sync
from vsdsfn.engine import Engine
from vsdsfn.precision import name_of
from vsdsfn.weights import load_model

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["CONVERSIONS", "HOST_SYNCS", "busy_us", "main", "profile_run", "summarize"]

#: ops and runtime calls that make the host wait for the device
HOST_SYNCS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "cudaStreamSynchronize",
              "cudaDeviceSynchronize", "cudaEventSynchronize")
#: ops that convert dtypes (or copy: ``aten::copy_`` also serves uploads and layout changes)
CONVERSIONS = ("aten::to", "aten::_to_copy", "aten::copy_")


def busy_us(spans: Iterable[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals.

    >>> busy_us([(0, 2), (1, 3), (5, 6)])
    4
    """
    total, end = 0, None
    for a, b in sorted(spans):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def profile_run(engine: Engine, frames: Sequence, first_key: int, cuda: bool) -> tuple[profile, float]:
    """The profiler after running ``len(frames) - 1`` pairs, and the wall seconds they took."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])

    def job():   # on the engine's thread: the profiler records its own thread's operators
        with profile(activities=activities) as prof:
            sync(engine.device)
            t0 = time.perf_counter()
            run_pairs(engine, list(frames), first_key)
            sync(engine.device)
            wall = time.perf_counter() - t0
        return prof, wall

    return engine.call(job)


def _annotation(event) -> bool:
    """A user range drawn on the device's timeline (spans kernels; not work of its own)."""
    return bool(getattr(event, "is_user_annotation", False)) or "annotation" in str(getattr(event, "activity_type", ""))


def _cell(name: str, width: int = 90) -> str:
    name = name.replace("|", "\\|").replace("`", "'")
    return name if len(name) <= width else name[:width - 3] + "..."


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def _op_rows(names: Iterable[str], by_name: dict, device: bool) -> list[str]:
    """Table rows ``| op | count | CPU total (ms) [| device total (ms)] |`` for ``names``
    (zeros for ops the profile did not record)."""
    rows = []
    for name in names:
        a = by_name.get(name)
        cells = [str(a.count) if a else "0", _ms(a.cpu_time_total) if a else "0.00"]
        if device:
            cells.append(_ms(a.device_time_total) if a else "0.00")
        rows.append(f"| {name} | {' | '.join(cells)} |")
    return rows


def _time_section(dev: list, kernels: list, copies: list, wall_s: float, plain_wall_s: float, out_frames: int,
                  cuda: bool) -> list[str]:
    """Wall times, and on a GPU its busy time and idle share."""
    lines = ["## Time", "",
             f"- Wall time without the profiler: {plain_wall_s * 1000:.1f} ms "
             f"({plain_wall_s / out_frames * 1000:.1f} ms per output frame, {out_frames / plain_wall_s:.2f} fps)",
             f"- Wall time under the profiler: {wall_s * 1000:.1f} ms ({out_frames} output frames)"]
    if not (cuda and dev):
        return lines + ["- No device activity recorded (CPU run): no kernel time or GPU idle share."]
    span = max(e.time_range.end for e in dev) - min(e.time_range.start for e in dev)
    busy = busy_us((e.time_range.start, e.time_range.end) for e in dev)
    ksum = sum(e.time_range.elapsed_us() for e in kernels)
    return lines + [
        f"- Device busy (union of kernels and copies): {_ms(busy)} ms; sum of kernel times: {_ms(ksum)} ms "
        f"({len(kernels)} kernels, {len(copies)} copies/memsets)",
        f"- GPU idle share of the wall time under the profiler: {100 * (1 - busy / (wall_s * 1e6)):.1f}% "
        f"(gaps between its first and last kernel: {100 * (1 - busy / (span or 1)):.1f}% of {_ms(span)} ms)",
        f"- GPU idle share of the wall time without the profiler (same work, busy time as profiled): "
        f"{100 * max(0.0, 1 - busy / (plain_wall_s * 1e6)):.1f}%"]


def _by_name(events: Iterable) -> dict[str, list[float]]:
    """Event name -> the durations (us) of its events, longest total first."""
    per: dict[str, list[float]] = defaultdict(list)
    for e in events:
        per[e.name].append(e.time_range.elapsed_us())
    return dict(sorted(per.items(), key=lambda kv: sum(kv[1]), reverse=True))


def _top_sections(ops: list, kernels: list, cuda: bool, top: int) -> list[str]:
    """The top ops by self time, and on a GPU the top kernels."""
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    lines = ["", f"## Top ops by self {'device' if cuda else 'CPU'} time", "",
             "| op | calls | self device (ms) | self CPU (ms) | CPU total (ms) |", "|---|---|---|---|---|"]
    for a in sorted(ops, key=lambda a: getattr(a, key), reverse=True)[:top]:
        lines.append(f"| {_cell(a.key)} | {a.count} | {_ms(a.self_device_time_total)} | {_ms(a.self_cpu_time_total)} | "
                     f"{_ms(a.cpu_time_total)} |")
    if not (cuda and kernels):
        return lines
    per = _by_name(kernels)
    ksum = sum(map(sum, per.values())) or 1
    lines += ["", "## Top kernels by device time", "", "| kernel | launches | total (ms) | share of kernel time |",
              "|---|---|---|---|"]
    for name, ts in list(per.items())[:top]:
        lines.append(f"| {_cell(name)} | {len(ts)} | {_ms(sum(ts))} | {100 * sum(ts) / ksum:.1f}% |")
    return lines


def _sync_and_conversion_sections(avg) -> list[str]:
    by_name = {a.key: a for a in avg}
    lines = ["", "## Host syncs", "",
             "Calls that make the host wait for the device (the run's own final "
             "`torch.cuda.synchronize` is one `cudaDeviceSynchronize`).", "",
             "| call | count | CPU total (ms) |", "|---|---|---|"]
    lines += _op_rows(HOST_SYNCS, by_name, device=False)
    lines += ["", "## Dtype conversions", "",
              "Totals include children (`aten::to` calls `aten::_to_copy`, which calls `aten::copy_`); "
              "`aten::copy_` also counts uploads and layout copies.", "",
              "| op | count | CPU total (ms) | device total (ms) |", "|---|---|---|---|"]
    return lines + _op_rows(CONVERSIONS, by_name, device=True)


def _copy_section(copies: list, cuda: bool) -> list[str]:
    lines = ["", "## Memory copies", ""]
    if not copies:
        return lines + ["No device copies recorded" + (" (CPU run)." if not cuda else ".")]
    lines += ["| copy | count | device time (ms) |", "|---|---|---|"]
    lines += [f"| {_cell(name)} | {len(ts)} | {_ms(sum(ts))} |" for name, ts in _by_name(copies).items()]
    for kind in ("HtoD", "DtoH", "DtoD"):
        t = sum(e.time_range.elapsed_us() for e in copies if f"Memcpy {kind}" in e.name)
        lines.append(f"- Memcpy {kind}: {_ms(t)} ms")
    return lines


def summarize(prof: profile, wall_s: float, plain_wall_s: float, out_frames: int, cuda: bool,
              top: int) -> list[str]:
    """The markdown sections of the summary (time, top ops, host syncs, conversions, copies)."""
    dev = [e for e in prof.events() if e.device_type != DeviceType.CPU and not _annotation(e)]
    copies = [e for e in dev if e.name.startswith(("Memcpy", "Memset"))]
    kernels = [e for e in dev if not e.name.startswith(("Memcpy", "Memset"))]
    avg = prof.key_averages()
    ops = [a for a in avg if a.device_type == DeviceType.CPU]
    return (_time_section(dev, kernels, copies, wall_s, plain_wall_s, out_frames, cuda)
            + _top_sections(ops, kernels, cuda, top) + _sync_and_conversion_sections(avg)
            + _copy_section(copies, cuda))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", help="weights file (default: the shipped default)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", default="1920x1080", help="input size WxH (output: twice each side)")
    ap.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                    help="upscale(precision=...): auto is fp16 on CUDA, bf16 on CPUs with native bf16")
    ap.add_argument("--batch", type=int, default=1, help="pairs per forward pass")
    ap.add_argument("--pairs", type=int, default=4, help="pairs profiled (and timed without the profiler)")
    ap.add_argument("--warmup", type=int, default=2, help="pairs run first, unmeasured")
    ap.add_argument("--top", type=int, default=25, help="rows of the top-ops tables")
    ap.add_argument("--out", default=str(ROOT / "bench" / "PROFILE.md"))
    ap.add_argument("--trace", metavar="DIR", help="also write the Chrome trace (.json.gz) into DIR")
    return ap


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    engine = Engine(load_model(args.weights), device=args.device, precision=args.precision,
                    batch_size=args.batch)
    cuda = engine.device.type == "cuda"
    frames = texture_frames(w, h, args.warmup + 2 * args.pairs + 1)
    print(f"profile: warm-up ({args.warmup} pairs) ...", file=sys.stderr, flush=True)
    run_pairs(engine, frames[:args.warmup + 1], 0)
    start = args.warmup
    sync(engine.device)
    t0 = time.perf_counter()
    run_pairs(engine, frames[start:start + args.pairs + 1], start)
    sync(engine.device)
    plain = time.perf_counter() - t0
    start += args.pairs
    print(f"profile: {args.pairs} pairs under the profiler ...", file=sys.stderr, flush=True)
    prof, wall = profile_run(engine, frames[start:start + args.pairs + 1], start, cuda)

    precision = name_of(engine.dtype)
    name = torch.cuda.get_device_name(engine.device) if cuda else "cpu"
    given = argv if argv is not None else sys.argv[1:]
    command = f"python -m bench.profile_cuda {' '.join(shlex.quote(a) for a in given)}".strip()
    lines = report_header(
        "vsdsfn engine profile (bench.profile_cuda)", name, command,
        f"Setup: {w}x{h} -> {2 * w}x{2 * h}, {precision}, batch {args.batch}, {args.pairs} pairs "
        f"({2 * args.pairs} output frames) after {args.warmup} warm-up pairs; "
        f"weights {args.weights or 'shipped default'}") + [""]
    lines += summarize(prof, wall, plain, 2 * args.pairs, cuda, args.top)
    if args.trace:
        trace = Path(args.trace) / f"profile_{w}x{h}_{precision}_b{args.batch}.json.gz"
        trace.parent.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace))
        lines += ["", f"Chrome trace: `{trace.name}`"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:20]), file=sys.stderr)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
