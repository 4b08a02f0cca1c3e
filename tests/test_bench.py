"""bench/: runs as modules from the repository root, and its report holds measurements only."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

vs = pytest.importorskip("vapoursynth")

from torch.autograd import DeviceType  # noqa: E402
from torch.autograd.profiler_util import Interval  # noqa: E402

from bench import benchmark, engine_cuda, profile_cuda  # noqa: E402
from conftest import ROOT, tiny_model  # noqa: E402
from bench.common import (JSON_KEYS, ROW_KEYS, merge_json_rows, peak_rss_mb, result_row,  # noqa: E402
                          texture_frames)
from vsdsfn.engine import DEFAULT_TILE_OVERLAP, Engine  # noqa: E402
from training.mvbaseline import frames_from_clip, spline36_then_flowfps  # noqa: E402
from training.flowfps import available, clip_from_frames  # noqa: E402

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
    for head in ("- Date: ", "- Machine: ", "- CPU flags: ", "- Command: `python -m bench.benchmark --sizes 96x64"):
        assert head in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| 96x64 → 192x128 |")]
    assert [r.split(" | ")[1] for r in rows] == ["mvtools", "blend"]
    assert all(float(r.split(" | ")[4]) > 0 for r in rows), rows   # output frames/s, not an error
    assert "estimate" not in text.lower() and "FLOP" not in text


def test_json_rows_merge_by_configuration(tmp_path):
    """Rows with the same input/output/precision/batch/path replace older ones in place; others
    are added; the file keeps exactly the schema's keys."""
    p = tmp_path / "gpu.json"
    merge_json_rows(p, [result_row(960, 540, "fp16", 1, "engine", 10.0, 900.0),
                        result_row(960, 540, "fp16", 1, "vapoursynth", 8.0, 950.0)], device="GPU A", command="one")
    doc = merge_json_rows(p, [result_row(960, 540, "fp16", 1, "engine", 12.5, 901.0),
                              result_row(1920, 1080, "fp16", 4, "engine", 3.0, 4000.0)], device="GPU A", command="two")
    assert doc == json.loads(p.read_text())
    assert tuple(doc) == JSON_KEYS and all(tuple(r) == ROW_KEYS for r in doc["rows"])
    assert [(r["input"], r["output"], r["batch"], r["path"], r["fps"]) for r in doc["rows"]] == [
        ("960x540", "1920x1080", 1, "engine", 12.5), ("960x540", "1920x1080", 1, "vapoursynth", 8.0),
        ("1920x1080", "3840x2160", 4, "engine", 3.0)]
    assert doc["device"] == "GPU A" and doc["command"] == "one; two"
    assert merge_json_rows(p, [], device="GPU A", command="one")["command"] == "one; two"   # no repeats
    with pytest.raises(ValueError, match="keys"):
        merge_json_rows(p, [{"input": "1x1"}], device="GPU A", command="three")
    with pytest.raises(ValueError, match="path"):
        result_row(8, 8, "fp16", 1, "vspipe", 1.0, 1.0)


@pytest.mark.parametrize("module, options", [
    (benchmark, ["--json", "--tile", "--trt"]),
    (engine_cuda, ["--json", "--sizes", "--batches"]),
    (profile_cuda, ["--size", "--precision", "--batch", "--pairs", "--trace", "--out", "--device"]),
])
def test_help_names_the_options(module, options, capsys):
    with pytest.raises(SystemExit) as exc:
        module.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert [o for o in options if o not in text] == []


_STUB = """#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STUB_CALLS"], "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0]), *args]) + "\\n")
if "--out" in args:   # what the bench modules write
    out = args[args.index("--out") + 1]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    open(out, "w").write("report\\n")
sys.exit(3 if os.environ.get("STUB_FAIL") in args else 0)
"""


def _run_gpu_sh(tmp_path, fail: str = "", budget: int = 470):
    """bench/gpu.sh (copied, so it writes in ``tmp_path``) with ``python`` and ``nvidia-smi``
    stubs that record their arguments and fail (status 3) when ``fail`` is one of them."""
    (tmp_path / "bench").mkdir(parents=True)
    script = tmp_path / "bench" / "gpu.sh"
    script.write_text((ROOT / "bench" / "gpu.sh").read_text())
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("python", "nvidia-smi"):
        (stubs / name).write_text(_STUB.format(python=sys.executable))
        (stubs / name).chmod(0o755)
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "PYTHON": str(stubs / "python"),
           "OUT": str(tmp_path / "out"), "BUDGET_S": str(budget), "STUB_CALLS": str(calls), "STUB_FAIL": fail}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    recorded = [json.loads(ln) for ln in calls.read_text().splitlines()] if calls.exists() else []
    return proc, recorded


def test_gpu_script_runs_every_step_and_goes_on_after_a_failure(tmp_path):
    """Each step's command is one the bench module accepts, with the sizes, precisions and
    batches the script promises; a failing step (the first profile) does not stop the next
    ones but makes the exit status 1; the reports written so far are copied into $OUT."""
    proc, calls = _run_gpu_sh(tmp_path, fail="bench/PROFILE.md")
    assert proc.returncode == 1, proc.stderr
    assert [c[0] for c in calls] == ["python", "nvidia-smi"] + ["python"] * 9
    versions = subprocess.run([sys.executable, *calls[0][1:]], capture_output=True, text=True, timeout=120)
    assert versions.returncode == 0 and "torch " in versions.stdout, versions.stderr
    assert calls[5][1:] == ["-c", "import vapoursynth"]
    modules = {"bench.profile_cuda": profile_cuda, "bench.engine_cuda": engine_cuda, "bench.benchmark": benchmark}
    steps = [c for c in calls if c[1] == "-m"]
    assert calls[-2][1:] == ["-c", "import torch_tensorrt"]
    assert [c[2] for c in steps] == ["bench.profile_cuda"] * 2 + ["bench.engine_cuda"] + ["bench.benchmark"] * 4
    args = [modules[c[2]]._parser().parse_args(c[3:]) for c in steps]
    assert [(a.size, a.precision, a.batch, a.out) for a in args[:2]] == [
        ("1920x1080", "fp16", 1, "bench/PROFILE.md"), ("1920x1080", "bf16", 1, "bench/PROFILE_bf16.md")]
    assert args[0].trace == "bench/traces"
    assert (args[2].sizes, args[2].batches, args[2].json) == ("960x540,1920x1080", "1,4", "bench/gpu.json")
    assert [(a.device, a.methods, a.sizes, a.precisions, a.batch_size, a.tile, a.rgbh, a.trt, a.json)
            for a in args[3:]] == [
        ("cuda", "dsfn", "960x540,1920x1080", "fp16,bf16", 1, 0, True, False, "bench/gpu.json"),
        ("cuda", "dsfn", "960x540,1920x1080", "fp16,bf16", 4, 0, True, False, "bench/gpu.json"),
        ("cuda", "dsfn", "1920x1080", "fp16", 1, 960, True, False, "bench/gpu_tiled.json"),
        ("cuda", "dsfn", "1920x1080", "fp16", 1, 0, True, True, "bench/gpu_trt.json")]
    log = (tmp_path / "bench" / "gpu_sh.log").read_text()
    assert "profile: exit 3" in log and "profile-bf16: exit 0" in log and "(exit 1)" in log
    assert sorted(p.name for p in (tmp_path / "out" / "bench").iterdir()) == [
        "CUDA.md", "GPU_VS_TILED.md", "GPU_VS_TRT.md", "GPU_VS_b1.md", "GPU_VS_b4.md", "PROFILE.md", "PROFILE_bf16.md",
        "gpu_sh.log"]


def test_gpu_script_skips_tensorrt_where_it_does_not_import(tmp_path):
    """Without torch-tensorrt the TensorRT step is skipped and says so; the rest pass (exit 0)."""
    proc, calls = _run_gpu_sh(tmp_path, fail="import torch_tensorrt")
    assert proc.returncode == 0, proc.stderr
    assert not any("--trt" in c for c in calls) and "the TensorRT step is skipped" in proc.stderr


def test_gpu_script_without_vapoursynth_or_budget(tmp_path):
    """Without VapourSynth the VapourSynth steps are skipped (exit 1); with a budget too small
    for any step, none runs (exit 1)."""
    proc, calls = _run_gpu_sh(tmp_path / "novs", fail="import vapoursynth")
    assert proc.returncode == 1
    assert [c[2] for c in calls if c[1] == "-m"] == ["bench.profile_cuda"] * 2 + ["bench.engine_cuda"]
    proc, calls = _run_gpu_sh(tmp_path / "short", budget=10)
    assert proc.returncode == 1 and [c[1:] for c in calls] == [["-c", "import vapoursynth"],
                                                               ["-c", "import torch_tensorrt"]]   # the probes only
    assert "skipped (budget spent)" in proc.stderr


def test_smallest_tile_is_the_engines():
    """The CPU comparison's tile is the smallest the engine accepts with tile_overlap 192
    (one multiple less is refused)."""
    net = tiny_model()
    t = engine_cuda.smallest_tile(net)
    assert Engine(net, device="cpu", tile=t, tile_overlap=DEFAULT_TILE_OVERLAP).tile == (t, t)
    with pytest.raises(ValueError, match="too small"):
        Engine(net, device="cpu", tile=t - net.multiple_for(net.config.st_scale), tile_overlap=DEFAULT_TILE_OVERLAP)


def test_profile_on_cpu_writes_the_summary(tiny_weights, tmp_path):
    out = tmp_path / "p.md"
    profile_cuda.main(["--device", "cpu", "--size", "64x48", "--pairs", "1", "--warmup", "1", "--weights",
                       str(tiny_weights), "--out", str(out), "--trace", str(tmp_path / "tr")])
    text = out.read_text()
    for head in ("- Date: ", "- Machine: ", "- Command: `python -m bench.profile_cuda --device cpu --size 64x48",
                 "- Setup: 64x48 -> 128x96, fp32, batch 1", "## Time", "## Top ops by self CPU time",
                 "## Host syncs", "## Dtype conversions", "## Memory copies", "No device activity recorded"):
        assert head in text, head
    ops = [ln.split(" | ")[0][2:] for ln in text.split("## Top ops")[1].split("##")[0].splitlines()
           if ln.startswith("| aten::")]
    assert "aten::convolution" in ops or "aten::_convolution" in ops
    for name in profile_cuda.HOST_SYNCS + profile_cuda.CONVERSIONS:
        assert f"| {name} | " in text, name
    trace = json.loads(gzip.decompress((tmp_path / "tr" / "profile_64x48_fp32_b1.json.gz").read_bytes()))
    assert trace["traceEvents"]


def _event(name, start, end, device=DeviceType.CUDA):
    return SimpleNamespace(name=name, time_range=Interval(start, end), device_type=device, is_user_annotation=False)


def test_profile_summary_of_device_events():
    """Busy time is the union of kernels and copies; idle share = 1 - busy / wall."""
    avg = [SimpleNamespace(key="aten::convolution", count=3, device_type=DeviceType.CPU, self_device_time_total=20.0,
                           self_cpu_time_total=5.0, cpu_time_total=9.0, device_time_total=20.0),
           SimpleNamespace(key="aten::item", count=2, device_type=DeviceType.CPU, self_device_time_total=0.0,
                           self_cpu_time_total=1.0, cpu_time_total=1.0, device_time_total=0.0)]
    events = [_event("aten::convolution", 0, 40, DeviceType.CPU), _event("conv_kernel", 0, 10),
              _event("conv_kernel", 5, 15), _event("relu_kernel", 20, 30),
              _event("Memcpy HtoD (Pageable -> Device)", 30, 35)]
    prof = SimpleNamespace(events=lambda: events, key_averages=lambda: avg)
    text = "\n".join(profile_cuda.summarize(prof, 60e-6, 50e-6, 2, True, 10))
    assert "busy (union of kernels and copies): 0.03 ms; sum of kernel times: 0.03 ms (3 kernels, 1 copies" in text
    assert "idle share of the wall time under the profiler: 50.0%" in text   # 30 of 60 us busy
    assert "(gaps between its first and last kernel: 14.3% of 0.04 ms)" in text   # 30 of 35 us
    assert "idle share of the wall time without the profiler (same work, busy time as profiled): 40.0%" in text
    assert "| conv_kernel | 2 | 0.02 | 66.7% |" in text
    assert "| aten::item | 2 | 0.00 |" in text and "| aten::nonzero | 0 | 0.00 |" in text
    assert "- Memcpy HtoD: 0.01 ms" in text and "- Memcpy DtoH: 0.00 ms" in text


def test_engine_report_and_json_on_cpu(tiny_weights, tmp_path):
    out, js = tmp_path / "e.md", tmp_path / "gpu.json"
    engine_cuda.main(["--device", "cpu", "--weights", str(tiny_weights), "--sizes", "32x24", "--batches", "1,2",
                      "--pairs", "1", "--runs", "1", "--check-size", "32x24", "--out", str(out), "--json", str(js)])
    text = out.read_text()
    assert "## FLOPs per output frame" in text and "fp16 peak is not in the table" in text
    flop_row = next(ln for ln in text.splitlines() if ln.startswith("| 32x24 -> 64x48 | ") and ln.count("|") == 3)
    assert float(flop_row.split(" | ")[1].strip(" |")) > 0
    doc = json.loads(js.read_text())
    assert tuple(doc) == JSON_KEYS and doc["device"] == "cpu"
    assert [(r["input"], r["output"], r["precision"], r["batch"], r["path"]) for r in doc["rows"]] == [
        ("32x24", "64x48", p, b, "engine") for p in ("fp32", "bf16") for b in (1, 2)]   # every precision the CPU runs
    assert all(r["fps"] > 0 and r["peak_mb"] > 0 for r in doc["rows"])
    assert engine_cuda.fp16_dense_peak("NVIDIA H200") == 989.0 and engine_cuda.fp16_dense_peak("Tesla T4") is None


def test_benchmark_json_rows_are_dsfns(tiny_weights, tmp_path):
    """``--json``: dsfn's row (path "vapoursynth"), measured through VapourSynth with ``--tile``."""
    js = tmp_path / "gpu.json"
    benchmark.main(["--sizes", "64x48", "--methods", "dsfn,blend", "--frames", "2", "--runs", "1", "--device", "cpu",
                    "--weights", str(tiny_weights), "--tile", "448", "--precisions", "fp32", "--out", str(tmp_path / "r.md"),
                    "--json", str(js)])
    assert "tile 448" in (tmp_path / "r.md").read_text()
    doc = json.loads(js.read_text())
    assert [(r["input"], r["precision"], r["batch"], r["path"]) for r in doc["rows"]] == [
        ("64x48", "fp32", 1, "vapoursynth")]
    assert doc["rows"][0]["fps"] > 0


def test_benchmark_compares_weights_files_back_to_back(tiny_weights, tiny_multiframe_weights, tmp_path):
    """``--compare-weights``: dsfn timed with each file, rows named by it; --json keeps only --weights' rows."""
    js = tmp_path / "r.json"
    benchmark.main(["--sizes", "64x48", "--methods", "dsfn", "--frames", "2", "--runs", "1", "--device", "cpu",
                    "--weights", str(tiny_multiframe_weights), "--compare-weights", str(tiny_weights),
                    "--precisions", "fp32", "--rounds", "2", "--out", str(tmp_path / "r.md"), "--json", str(js)])
    report = (tmp_path / "r.md").read_text()
    rows = [line.split("|") for line in report.splitlines() if line.startswith("| 64x48")]
    assert [r[2].strip() for r in rows] == ["dsfn", "dsfn (tiny.safetensors)"]
    assert all("error" not in "|".join(r) for r in rows)
    assert "(x 2 rounds, every row in turn each round)" in report
    assert rows[0][11].strip() == "" and rows[1][11].strip().endswith("x")   # time vs the first weights file
    assert len(json.loads(js.read_text())["rows"]) == 1
