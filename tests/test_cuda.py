"""vsdsfn.upscale on a CUDA device, through VapourSynth (skipped where there is no GPU).

The same clip through the filter on CUDA and on the CPU: fp32, fp16 (RGBH) and bf16
outputs match the CPU's, batching and tiles change nothing beyond rounding, and frame
props, fps and durations are the same as on the CPU. (Every other test module sees no
GPU: tests/conftest.py hides CUDA from tests not marked ``cuda``.)
"""

from __future__ import annotations

import pytest
import torch

vs = pytest.importorskip("vapoursynth")

from conftest import all_frames, make_clip  # noqa: E402
from training.metrics import psnr  # noqa: E402
from vsdsfn import upscale  # noqa: E402

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture(scope="module")
def cpu_out():
    clip = make_clip(4, 352, 192, props=lambda i: {"Name": f"f{i}"})
    return clip, all_frames(upscale(clip, device="cpu", precision="fp32"))  # shipped default weights


@pytest.mark.parametrize("fmt,precision,batch,tile,min_psnr", [
    ("RGBS", "fp32", 1, None, 60.0), ("RGBS", "fp32", 3, None, 60.0), ("RGBS", "fp32", 1, 320, 55.0),
    ("RGBH", None, 1, None, 45.0), ("RGBH", "fp16", 3, 320, 45.0), ("RGBS", "bf16", 1, None, 40.0),
])
def test_cuda_matches_cpu(cpu_out, fmt, precision, batch, tile, min_psnr):
    clip, ref = cpu_out
    src = clip if fmt == "RGBS" else vs.core.resize.Point(clip, format=vs.RGBH)
    out = upscale(src, device="cuda", precision=precision, batch_size=batch, tile=tile, tile_overlap=128)
    assert out.format.id == getattr(vs, fmt) and out.num_frames == len(ref) and out.fps == clip.fps * 2
    got = all_frames(out)
    worst = min(float(psnr(torch.from_numpy(g), torch.from_numpy(r))) for g, r in zip(got, ref))
    assert worst >= min_psnr, f"{fmt} batch {batch} tile {tile}: worst PSNR vs CPU {worst:.1f} dB"
    for k in range(out.num_frames):
        p = out.get_frame(k).props
        assert p["Src"] == k // 2 and p["Name"] in (f"f{k // 2}", f"f{k // 2}".encode())
        assert (p["_DurationNum"], p["_DurationDen"]) == (1001, 60000)
