"""bench/estimate.py: the meta-device trace behind the CUDA estimate (no timing here)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from conftest import TINY  # noqa: E402
from estimate import GPUS, Trace, estimate, flops_per_frame, report, trace_pair  # noqa: E402

from vsdsfn.nets import DSFN  # noqa: E402


def test_trace_counts_the_same_flops_as_torch():
    torch.manual_seed(0)
    net = DSFN(TINY).eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        hr = net.spatial(x)
        net(x, x, hr, hr)
    ts, tp = trace_pair(DSFN(TINY), 48, 32, torch.float32)
    ours = sum(k.flops for k in ts.kernels + tp.kernels)
    assert ours > 0
    assert abs(ours - fc.get_total_flops()) / fc.get_total_flops() < 0.02


def test_flops_per_frame_pads_like_the_engine():
    # an odd input size costs what the padded size costs (the engine pads to the multiple)
    net = DSFN(TINY).eval()
    m = net.multiple
    x = torch.rand(1, 3, 2 * m, 3 * m)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        hr = net.spatial(x)
        net(x, x, hr, hr)
    ours = flops_per_frame(DSFN(TINY), 3 * m - 5, m + 1)
    assert abs(ours - fc.get_total_flops() / 2) / ours < 0.02


def test_trace_peak_counts_live_tensors():
    mb = 2**20
    with torch.inference_mode(), Trace() as t:
        a = torch.empty(mb, dtype=torch.uint8, device="meta")
        b = a + 1
        del b
        c = a * 2
        v = c.view(-1)  # a view costs nothing
        del c
        d = v + 1
    assert t.peak == 3 * mb  # a, v's storage, d (b was freed before c)
    assert t.live == 3 * mb
    del a, v, d
    assert t.live == 0


def test_roofline_and_report():
    ts, tp = trace_pair(DSFN(TINY), 64, 32, torch.float16)
    slow = estimate(tp, "h100-sxm", 0.1, 0.5, 4.0)
    fast = estimate(tp, "h100-sxm", 0.5, 0.9, 1.0)
    assert 0 < fast < slow
    assert slow >= len(tp.kernels) * 4e-6 - 1e-12
    assert set(GPUS) >= {"h100-sxm", "h200"}
    lines = report(64, 32, (48, 48), "h100-sxm", 0.25, 0.7, 4.0, lambda: DSFN(TINY), overlap=16)
    text = "\n".join(lines)
    assert "estimate" in text and "64x32 → 128x64" in text and "untiled" in text and "tiles of" in text


def test_measured_cuda_rows_come_from_the_report(tmp_path):
    from benchmark import measured_cuda

    assert measured_cuda(tmp_path / "missing.md") == []
    report = tmp_path / "CUDA.md"
    report.write_text("# t\n\n- Date: 2026-01-01\n- Device: GPU X\n- Other: no\n\n## Output\n\n| a |\n|---|\n| 1 |\n\n"
                      "## Speed (median)\n\n| input | fps |\n|---|---|\n| 1920x1080 -> 3840x2160 | 20.5 |\n\n## Memory\n| m |\n")
    lines = measured_cuda(report)
    assert "- Date: 2026-01-01" in lines and "- Device: GPU X" in lines and "- Other: no" not in lines
    assert "| 1920x1080 -> 3840x2160 | 20.5 |" in lines and "| 1 |" not in lines and "| m |" not in lines
    report.write_text("# t\n\nno speed section\n")
    assert measured_cuda(report) == []


def test_benchmark_weights_option_traces_that_model():
    """`benchmark.py --weights quality` counts the FLOPs of the model it times (the shipped
    quality file's larger M_S), not the default's."""
    from benchmark import _traced_model

    default = flops_per_frame(_traced_model(None), 96, 64)
    quality = flops_per_frame(_traced_model(None, "quality"), 96, 64)
    assert quality > 1.3 * default
    assert flops_per_frame(_traced_model(None, "default"), 96, 64) == default
