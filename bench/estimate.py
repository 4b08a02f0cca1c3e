"""Profile-based GPU estimate for machines without one: time and memory of a DSFN pair.

The network runs on PyTorch's ``meta`` device (shapes only, nothing is computed), under a
dispatch mode that records, for every ATen kernel: its FLOPs (torch's FLOP counter
formulas), the bytes it reads and writes, and the bytes of tensors alive at that moment.
A roofline then turns the trace into time on a named GPU:

    time(kernel) = max(FLOPs / (peak * compute_eff), bytes / (bandwidth * memory_eff),
                       launch_floor)

with the efficiencies stated in the report (``--compute-eff``/``--memory-eff``); the
result is an *estimate*, not a measurement, and is labelled so wherever it is written.
Memory is the peak of live tensor bytes (weights included) for one tile of the given
size, plus the full-size frame buffers the engine keeps (inputs, the two cached M_S
frames, the output), which is what ``torch.cuda.max_memory_allocated`` would count,
allocator rounding aside.

    python bench/estimate.py                                 # 1920x1080 -> 3840x2160, H100 SXM
    python bench/estimate.py --size 1920x1080 --tile 960x544 --gpu h100-pcie
"""

from __future__ import annotations

import argparse
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["GPUS", "Trace", "trace_pair", "flops_per_frame", "estimate", "model_factory", "report"]

#: name -> (dense fp16 tensor-core FLOP/s, memory bandwidth B/s), from NVIDIA's data sheets
GPUS = {
    "h100-sxm": (989.4e12, 3.35e12),
    "h100-pcie": (756.0e12, 2.0e12),
    "h200": (989.4e12, 4.8e12),
    "a100": (312.0e12, 2.04e12),
    "rtx4090": (165.2e12, 1.01e12),
}


@dataclass
class Kernel:
    name: str
    flops: float
    bytes: float


@dataclass
class Trace(TorchDispatchMode):
    """Records kernels and the peak of live tensor bytes while a model runs on ``meta``."""

    kernels: list[Kernel] = field(default_factory=list)
    live: int = 0
    peak: int = 0
    _storages: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()

    def _hold(self, t: torch.Tensor) -> None:
        key = t.untyped_storage()._cdata
        ent = self._storages.get(key)
        if ent is None:
            ent = self._storages[key] = [t.untyped_storage().nbytes(), 0]
            self.live += ent[0]
            self.peak = max(self.peak, self.live)
        ent[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key) -> None:
        ent = self._storages.get(key)
        if ent is None:
            return
        ent[1] -= 1
        if ent[1] <= 0:
            self.live -= ent[0]
            del self._storages[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        for t in outs:
            self._hold(t)
        is_view = any(r.alias_info is not None for r in func._schema.returns)
        if is_view or func._overloadpacket in (torch.ops.aten.detach, torch.ops.aten.empty):
            return out
        ins = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        moved = sum(t.numel() * t.element_size() for t in ins + outs)
        flops = _flops(func, args, kwargs, out)
        self.kernels.append(Kernel(str(func._overloadpacket).split(".")[-1], flops, float(moved)))
        return out


def _flops(func, args, kwargs, out) -> float:
    """FLOPs of one kernel: torch's formulas, plus the composite ops that reach a dispatch
    mode unexpanded under inference mode (conv2d, einsum)."""
    packet = func._overloadpacket
    if packet is torch.ops.aten.conv2d:
        weight = args[1]
        return 2.0 * out.numel() * weight[0].numel()
    if packet is torch.ops.aten.einsum:
        spec, ops = args[0], args[1]
        sizes = {}
        for sub, t in zip(spec.split("->")[0].split(","), ops):
            sizes.update(zip(sub.strip(), t.shape))
        n = 1
        for v in sizes.values():
            n *= v
        return 2.0 * n
    fn = flop_registry.get(packet)
    return float(fn(*args, **kwargs, out_val=out)) if fn is not None else 0.0


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def trace_pair(model, w: int, h: int, dtype: torch.dtype) -> tuple[Trace, Trace]:
    """Traces of M_S on one w x h frame and of the whole pair (with M_S passed in)."""
    model = model.to("meta", dtype).eval()
    x = torch.empty(1, 3, h, w, device="meta", dtype=dtype)
    with torch.inference_mode():
        with Trace() as ts:
            hr = model.spatial(x)
        with Trace() as tp:
            model(x, x, hr, hr)
    return ts, tp


def flops_per_frame(model, w: int, h: int) -> float:
    """FLOPs per output frame at input size w x h (half a pair + one M_S), input padded
    to the model's multiple as the engine does. ``model`` is moved to the meta device."""
    m = model.multiple
    ts, tp = trace_pair(model, -(-w // m) * m, -(-h // m) * m, torch.float32)
    return sum(k.flops for k in ts.kernels + tp.kernels) / 2


def estimate(trace: Trace, gpu: str, compute_eff: float, memory_eff: float, launch_us: float) -> float:
    """Seconds for the traced kernels on ``gpu`` by the roofline in the module docstring."""
    peak, bw = GPUS[gpu]
    total = 0.0
    for k in trace.kernels:
        total += max(k.flops / (peak * compute_eff), k.bytes / (bw * memory_eff), launch_us * 1e-6)
    return total


def model_factory(weights: str | None):
    """``weights``: a weights file, ``"default"`` (the shipped one) or ``"arch"`` (the current
    default architecture, untrained: timing and memory do not depend on weight values)."""
    def make():
        if weights == "arch":
            from vsdsfn.nets import DSFN
            return DSFN()
        from vsdsfn.weights import load_model
        return load_model(None if weights == "default" else weights)
    return make


def report(w: int, h: int, tile: tuple[int, int] | None, gpu: str, compute_eff: float, memory_eff: float,
           launch_us: float, make_model, overlap: int | None = None) -> list[str]:
    """Markdown lines: estimated output frames/s and peak memory at w x h -> 2w x 2h.

    ``tile`` is (width, height) in input pixels, ``make_model()`` returns a fresh DSFN.
    ``overlap`` defaults to the engine's ``DEFAULT_TILE_OVERLAP``.
    """
    from vsdsfn.engine import DEFAULT_TILE_OVERLAP
    from vsdsfn.tiling import plan_tiles

    overlap = DEFAULT_TILE_OVERLAP if overlap is None else overlap

    model = make_model()
    params = _params(model.half())
    m = model.multiple
    hp, wp = -(-h // m) * m, -(-w // m) * m
    ts, tp = trace_pair(model, wp, hp, torch.float16)
    lines = []
    # (label, compute efficiency, memory efficiency, launch floor)
    cases = (("pessimistic", compute_eff / 2, memory_eff / 1.5, launch_us * 2),
             ("central", compute_eff, memory_eff, launch_us),
             ("optimistic", min(1.0, compute_eff * 2), min(1.0, memory_eff * 1.3), launch_us / 2))
    for label, ce, me, lu in cases:
        per_frame = (estimate(ts, gpu, ce, me, lu) + estimate(tp, gpu, ce, me, lu)) / 2
        lines.append(f"| {w}x{h} → {2 * w}x{2 * h} | {gpu} | fp16 | {label} (compute {ce:.0%}, memory {me:.0%}, "
                     f"{lu:g} µs/kernel) | **estimate** {1 / per_frame:.1f} | {1000 * per_frame:.1f} |")
    frame_bytes = 2 * (3 * h * w) + 3 * (3 * 4 * h * w) * 2  # two LR inputs + 2 cached M_S + output, fp16
    mem = [("untiled", ts.peak, tp.peak)]
    if tile is not None:
        plan = plan_tiles(hp, wp, tile, overlap, m)
        th = max(t.y1 - t.y0 for t in plan)
        tw = max(t.x1 - t.x0 for t in plan)
        ts2, tp2 = trace_pair(make_model(), tw, th, torch.float16)
        mem.append((f"tiles of {tw}x{th} (overlap {overlap}, {len(plan)} tiles)", ts2.peak, tp2.peak))
    mem_lines = []
    for label, ps, pp in mem:
        peak = params + max(ps, pp) + frame_bytes
        mem_lines.append(f"| {w}x{h} → {2 * w}x{2 * h} | {label} | **estimate** {peak / 2**20:.0f} MB |")
    flops = sum(k.flops for k in ts.kernels + tp.kernels) / 2
    head = [
        f"Profile-based estimate (no GPU was available to measure): {len(tp.kernels) + len(ts.kernels)} "
        f"kernels, {flops / 1e9:.0f} GFLOP per output frame at {2 * w}x{2 * h}; roofline on {gpu} "
        f"({GPUS[gpu][0] / 1e12:.0f} TFLOP/s fp16 dense, {GPUS[gpu][1] / 1e12:.2f} TB/s). GPU work only: "
        "host-side frame conversion and PCIe transfers (overlapped on copy streams) are not included. "
        "Not a measurement.", "",
        "| input → output | GPU | dtype | assumption | output frames/s | ms per output frame |",
        "|---|---|---|---|---|---|",
    ]
    return head + lines + ["", "| input → output | tiling | peak GPU memory |", "|---|---|---|"] + mem_lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1920x1080", help="input size WxH")
    ap.add_argument("--tile", default="960x544", help="input tile WxH for the memory estimate ('' for none)")
    ap.add_argument("--gpu", default="h100-sxm", choices=sorted(GPUS))
    ap.add_argument("--compute-eff", type=float, default=0.25, help="fraction of tensor-core peak reached by convolutions")
    ap.add_argument("--memory-eff", type=float, default=0.7, help="fraction of memory bandwidth reached")
    ap.add_argument("--launch-us", type=float, default=4.0, help="minimum time per kernel")
    ap.add_argument("--weights", default="default",
                    help="a weights file, 'default' (shipped) or 'arch' (default architecture, untrained)")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    tile = tuple(int(v) for v in args.tile.split("x")) if args.tile else None
    print("\n".join(report(w, h, tile, args.gpu, args.compute_eff, args.memory_eff, args.launch_us,
                           model_factory(args.weights))))


if __name__ == "__main__":
    main()
