"""bench/: runs as modules from the repository root, and its report holds measurements only."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest

vs = pytest.importorskip("vapoursynth")

from bench import benchmark  # noqa: E402
from conftest import ROOT  # noqa: E402
from bench.common import peak_rss_mb, texture_frames  # noqa: E402
from training.mvbaseline import frames_from_clip, spline36_then_flowfps  # noqa: E402
from vsdsfn.flowfps import available, clip_from_frames  # noqa: E402

needs_mvtools = pytest.mark.skipif(not available(), reason="vapoursynth-mvtools is not installed")


def test_texture_frames_pan_over_one_texture():
    a, b = texture_frames(40, 24, 2)
    assert a.shape == b.shape == (24, 40, 3) and a.dtype == np.float32
    assert np.shares_memory(a, b)                        # views: no memory per frame
    np.testing.assert_array_equal(b[:-3, :-5], a[3:, 5:])  # moved by (3, 5) pixels


def test_peak_rss_is_the_programs_own():
    """A new program's peak memory is its own, not that of the (larger) process that started it."""
    code = "from bench.common import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 cwd=ROOT).stdout)
    assert 0 < child < peak_rss_mb() / 2   # this process has loaded PyTorch and VapourSynth


def test_clip_from_frames_of_views_in_rgbh():
    frames = texture_frames(40, 24, 3)
    clip = clip_from_frames(frames, fps=(24000, 1001), fmt=vs.RGBH)
    assert (clip.width, clip.height, clip.num_frames, clip.format.id) == (40, 24, 3, vs.RGBH)
    assert (clip.fps_num, clip.fps_den) == (24000, 1001)
    got = frames_from_clip(clip)
    for g, f in zip(got, frames):
        np.testing.assert_allclose(g, f, atol=1e-3)      # fp16 rounding
    with pytest.raises(ValueError, match="H, W, 3"):
        clip_from_frames([frames[0], frames[0][:, :20]])


@needs_mvtools
def test_mvtools_method_is_the_evaluations_baseline():
    """bench's ``mvtools`` method is the evaluation's "Spline36 -> FlowFPS": the same middle frame."""
    frames = texture_frames(96, 64, 2)
    out = benchmark._pipeline("mvtools", clip_from_frames(frames, fps=(24, 1)), argparse.Namespace())
    assert (out.width, out.height, out.num_frames) == (192, 128, 4)
    np.testing.assert_array_equal(np.clip(frames_from_clip(out[1])[0], 0, 1), spline36_then_flowfps(*frames))


@needs_mvtools
def test_benchmark_report_holds_measurements(tmp_path):
    """A tiny run (each method in its own ``python -m bench.benchmark --worker`` process):
    machine, date, command and one row of medians per method; no estimates."""
    out = tmp_path / "r.md"
    benchmark.main(["--sizes", "96x64", "--methods", "mvtools,blend", "--frames", "2", "--runs", "1",
                    "--out", str(out)])
    text = out.read_text()
    for head in ("- date: ", "- machine: ", "- command: `python -m bench.benchmark --sizes 96x64"):
        assert head in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| 96x64 → 192x128 |")]
    assert [r.split(" | ")[1] for r in rows] == ["mvtools", "blend"]
    assert all(float(r.split(" | ")[2]) > 0 for r in rows), rows   # output frames/s, not an error
    assert "estimate" not in text.lower() and "FLOP" not in text
