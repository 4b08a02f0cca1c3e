"""Robustness (issue 5): bad input, unsafe or broken weights, concurrency, consumers that
stop early, long runs and training checkpoints.

Most rows of the issue are proved by tests elsewhere; this file fills the gaps. The
table row -> test lives in the final section of this docstring so it stays next to the
tests:

* integer/YUV/GRAY clips with the conversion line: test_filter::test_format_errors_show_the_conversion
* variable format / size: test_filter::test_variable_format_and_size
* 0 frames: VapourSynth makes no such clip, so upscale never sees one;
  1 frame gives its upscaled frame twice: test_filter::test_one_frame_clip, test_one_frame_any_batch
* fps 0 (VFR): test_filter::test_vfr_durations
* 1x1, odd, prime sizes: test_filter::test_tiny_and_odd_sizes, test_prime_and_degenerate_sizes
* NaN/Inf not spreading: test_filter::test_nan_input_does_not_spread, test_engine::test_nan_and_inf_do_not_spread
* weights missing/truncated/corrupt/wrong architecture: test_filter::test_weights_errors, test_more_broken_weights
* pickle refused, never unpickled: test_pickle_weights_never_unpickled (marker file),
  safetensors whose header length looks like a pickle: test_safetensors_with_pickle_like_header_loads
* cuda without CUDA / unknown devices / batch size / unknown options: test_filter::test_cuda_without_cuda,
  test_filter::test_option_errors, test_engine::test_select_device, test_other_option_errors
* tile smaller than its overlap: test_tiling (issue 4)
* threads in random order == sequential: test_filter::test_threads_random_order_equals_sequential
* a failing frame computation does not deadlock waiting threads: test_failed_group_does_not_deadlock
* consumer stops early (pipe closed, SIGINT): test_vspipe_stops_when_the_reader_goes_away
* caches bounded: test_group_and_engine_caches_are_bounded, test_engine::test_spatial_once_per_key_and_cache_is_bounded
* long run, flat memory: test_long_run_memory_is_flat (slow)
* training: killed during a checkpoint write -> test_killed_during_checkpoint_write_resumes;
  corrupt dataset files -> test_training::test_broken_image_is_skipped_and_counted, test_truncated_and_empty_images_are_skipped;
  NaN/Inf loss -> test_training::test_nan_loss_step_is_skipped, test_inf_loss_step_is_skipped_and_logged;
  --resume with another config/stage -> test_training::test_resume_with_different_config_refuses,
  test_resume_with_another_stage_refuses; checkpoints load weights_only -> test_checkpoint_with_an_object_is_refused;
  shipped weights are safetensors -> test_shipped_weights_are_safetensors.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs

from conftest import ROOT, all_frames, default_signals, make_clip, pattern, planes, tiny_model

core = vs.core


class _Marker:
    """Unpickling this object creates the file ``path`` (a stand-in for running any code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bs", [1, 3])
def test_one_frame_any_batch(tiny_weights, bs):
    out = upscale_(make_clip(1, 13, 7), tiny_weights, batch_size=bs)
    assert (out.num_frames, out.width, out.height) == (2, 26, 14)
    a, b = all_frames(out)
    np.testing.assert_array_equal(a, b)
    assert out.get_frame(1).props["DSFNInterpolated"] == 0


@pytest.mark.parametrize("w,h", [(2, 1), (1, 31), (29, 13), (61, 2)])
def test_prime_and_degenerate_sizes(tiny_weights, w, h):
    from vsdsfn.engine import Engine

    out = upscale_(make_clip(2, w, h), tiny_weights)
    assert (out.width, out.height, out.num_frames) == (2 * w, 2 * h, 4)
    fr = all_frames(out)
    ref = Engine(tiny_weights, device="cpu", layout="chw").interpolate([(pattern(0, w, h), pattern(1, w, h))])[0]
    np.testing.assert_allclose(fr[1], ref, atol=1e-6)
    assert all(np.isfinite(f).all() and f.min() >= 0 and f.max() <= 1 for f in fr)


def upscale_(clip, weights, **kw):
    from vsdsfn import upscale

    return upscale(clip, weights=weights, device="cpu", **kw)


def test_other_option_errors(tiny_weights):
    from vsdsfn import upscale

    clip = make_clip(2, 8, 8)
    with pytest.raises(vs.Error, match="precision must be None or one of 'auto', 'fp32', 'fp16', 'bf16'"):
        upscale(clip, weights=tiny_weights, precision="half")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(vs.Error, match=r"cache_size must be None or an integer in \[1, 256\]"):
            upscale(clip, weights=tiny_weights, cache_size=bad)
    for bad in (1.5, float("nan"), -0.1, "0.2"):
        with pytest.raises(vs.Error, match="scene_threshold must be a number in"):
            upscale(clip, weights=tiny_weights, scene_threshold=bad)
    for dev in ("cuda:x", "tpu", "cpu:0:1", "CUDA-0"):
        with pytest.raises(vs.Error, match="upscale: .*device"):
            upscale(clip, weights=tiny_weights, device=dev)
    with pytest.raises(vs.Error, match=r"unknown option\(s\) 'Device' \(did you mean 'device'\?\), 'foo'"):
        upscale(clip, weights=tiny_weights, foo=1, Device="cpu")
    with pytest.raises(vs.Error, match="upscale: weights must be"):
        upscale(clip, weights=5)
    with pytest.raises(vs.Error, match="upscale: expected a VideoNode"):
        upscale(clip.get_frame(0))


# ----------------------------------------------------------------------------- weights
def test_pickle_weights_never_unpickled(tmp_path):
    """Pickles of every protocol and torch.save (zip) files are refused, and their code never
    runs: unpickling them would create a marker file."""
    from vsdsfn import upscale
    from vsdsfn.weights import WeightsError, load_model, read_config

    # the payload is live: unpickling it really creates the marker
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Marker(probe)))
    assert probe.exists()

    marker = tmp_path / "pwned"
    files = []
    for proto in range(0, pickle.HIGHEST_PROTOCOL + 1):
        p = tmp_path / f"p{proto}.safetensors"
        p.write_bytes(pickle.dumps({"model": _Marker(marker)}, protocol=proto))
        files.append(p)
    zipped = tmp_path / "ckpt.pt"
    torch.save({"model": tiny_model().state_dict(), "x": _Marker(marker)}, zipped)
    legacy = tmp_path / "legacy.pth"
    torch.save({"x": _Marker(marker)}, legacy, _use_new_zipfile_serialization=False)
    files += [zipped, legacy]
    for p in files:
        for load in (load_model, read_config):
            with pytest.raises(WeightsError, match=p.name):
                load(p)
        with pytest.raises(vs.Error, match=f"upscale: weights file .*{p.name}"):
            upscale(make_clip(2, 8, 8), weights=p)
        assert not marker.exists(), p
    for p in (zipped, legacy, files[2]):
        with pytest.raises(WeightsError, match="pickle"):
            load_model(p)


def test_safetensors_with_pickle_like_header_loads(tmp_path):
    """A valid safetensors file whose header length is 0x10280 starts with b"\\x80\\x02",
    like a protocol-2 pickle; it must load (it used to be refused as a pickle)."""
    import struct

    from vsdsfn.weights import load_model, save_model

    path = tmp_path / "odd.safetensors"
    target, pad = 0x10280, 0
    for _ in range(10):
        save_model(tiny_model(), path, extra={"pad": "x" * pad})
        n = struct.unpack("<Q", path.read_bytes()[:8])[0]
        if n == target:
            break
        pad += target - n
    assert path.read_bytes()[:2] == b"\x80\x02"
    model = load_model(path)
    from vsdsfn.weights import HALF_PREFIXES

    for k, v in tiny_model().state_dict().items():
        want = v.half().float() if k.startswith(HALF_PREFIXES) else v   # M_T is stored in float16
        assert torch.equal(model.state_dict()[k], want), k


def test_more_broken_weights(tmp_path, tiny_weights):
    from safetensors.torch import load_file, save_file

    from vsdsfn.weights import FORMAT, WeightsError, load_model

    def refused(path, pattern):
        with pytest.raises(WeightsError, match=pattern):
            load_model(path)

    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    refused(empty, "empty.safetensors.*not a valid safetensors")
    refused(tmp_path, "is a folder; give the path of a .safetensors file")
    data = tiny_weights.read_bytes()
    for cut in (4, 8, 100, len(data) - 1):
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        refused(p, f"cut{cut}.safetensors.*(truncated|corrupt)")
    flipped = bytearray(data)
    flipped[8] = ord("[")  # the JSON header no longer parses
    (tmp_path / "flip.safetensors").write_bytes(bytes(flipped))
    refused(tmp_path / "flip.safetensors", "flip.safetensors")
    tensors = load_file(str(tiny_weights))
    foreign = tmp_path / "foreign.safetensors"  # someone else's safetensors: no vsdsfn metadata
    save_file(tensors, str(foreign))
    refused(foreign, "foreign.safetensors' has no vsdsfn architecture metadata")
    badcfg = tmp_path / "badcfg.safetensors"
    save_file(tensors, str(badcfg), metadata={"format": FORMAT, "config": '{"fusion_widths": "many"}'})
    refused(badcfg, "badcfg.safetensors")
    notjson = tmp_path / "notjson.safetensors"
    save_file(tensors, str(notjson), metadata={"format": FORMAT, "config": "{not json"})
    refused(notjson, "notjson.safetensors.*bad architecture config")
    fewer = tmp_path / "fewer.safetensors"
    meta = {"format": FORMAT, "config": json.dumps(tiny_model().config.to_dict())}
    save_file({k: v for i, (k, v) in enumerate(tensors.items()) if i}, str(fewer), metadata=meta)
    refused(fewer, "fewer.safetensors' does not match its architecture: missing 1 tensors")
    old = tmp_path / "old.safetensors"  # written by vsdsfn 0.1 (another M_T)
    save_file(tensors, str(old), metadata={"format": "vsdsfn-1", "config": "{}"})
    refused(old, "old.safetensors' is for vsdsfn 0.1 .*retrain")


def test_shipped_weights_are_safetensors():
    """Everything shipped under models/ (and installed as vsdsfn.models) is safetensors or
    text; no pickle or torch.save file is shipped, and each weights file loads."""
    from vsdsfn.weights import default_weights_path, load_model, read_config

    files = sorted(p for p in (ROOT / "models").iterdir() if p.is_file())
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert default_weights_path().name in {p.name for p in weights}
    for p in files:
        assert p.suffix in (".safetensors", ".md", ".py"), p
        head = p.read_bytes()[:4]
        assert head[:1] != b"\x80" and head != b"PK\x03\x04", p
    for p in weights:
        read_config(p)
        load_model(p)


def test_readme_documents_every_upscale_option():
    """The README's signature line and its option table's first two columns (name, default)
    are vsdsfn/options.py's table (which test_filter::test_options_table_is_upscales_and_the_clis
    holds to upscale's signature and the CLI); the help wording is the README's own."""
    from vsdsfn.options import OPTIONS

    text = (ROOT / "README.md").read_text()
    line = "vsdsfn.upscale(clip, *, " + ", ".join(f"{o.name}={o.default!r}" for o in OPTIONS) + ")"
    assert line in text
    for o in OPTIONS:
        assert f"| `{o.name}` | `{o.default!r}` |" in text, o.name


def test_named_weights_are_shipped_with_cards():
    """Every name upscale(weights=...) accepts is a shipped file with its model card; the
    names resolve before paths."""
    from vsdsfn.weights import (NAMED_WEIGHTS, WeightsError, default_weights_path, load_model,
                                resolve_weights)

    assert resolve_weights(None) == resolve_weights("default") == default_weights_path()
    for name, filename in NAMED_WEIGHTS.items():
        path = resolve_weights(name)
        assert path.name == filename and path.is_file(), name
        assert (ROOT / "models" / filename).with_suffix(".md").is_file(), name
    assert resolve_weights("runs/x.safetensors") == Path("runs/x.safetensors")
    with pytest.raises(WeightsError, match="'default'"):
        resolve_weights("defualt")
    with pytest.raises(WeightsError, match="does not exist"):
        load_model("no/such.safetensors")


# ----------------------------------------------------------------------------- concurrency
def _capture_upscalers(monkeypatch) -> list:
    from vsdsfn import filter as flt

    made = []
    real = flt._Upscaler

    class Spy(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(flt, "_Upscaler", Spy)
    return made


def test_group_and_engine_caches_are_bounded(tiny_weights, monkeypatch):
    """Groups whose frames are only partly requested (here: only even frames, in random
    order, from several threads) are evicted once more than cache_size are held."""
    made = _capture_upscalers(monkeypatch)
    clip = make_clip(40, 16, 16)
    out = upscale_(clip, tiny_weights, batch_size=2, cache_size=3)
    (state,) = made
    order = list(range(0, out.num_frames, 2))
    random.Random(5).shuffle(order)
    peak = [0]

    def get(k):
        f = planes(out.get_frame(k))
        peak[0] = max(peak[0], len(state._groups))
        return k, f

    with ThreadPoolExecutor(4) as pool:
        got = dict(pool.map(get, order))
    assert peak[0] <= 3 and len(state._groups) <= 3 and not state._pending
    assert len(state.engine._cache) <= state.engine.spatial_cache
    seq = all_frames(upscale_(clip, tiny_weights, batch_size=2))
    for k, f in got.items():
        np.testing.assert_array_equal(f, seq[k])
    # default size: max(4, 2 x core threads)
    upscale_(clip, tiny_weights)
    assert made[-1].max_groups == max(4, 2 * core.num_threads)


def test_failed_group_does_not_deadlock(tiny_weights, monkeypatch):
    """If computing a group fails (say, out of memory), every thread waiting for that group
    gets an error or retries itself; nobody hangs, and later requests work."""
    from vsdsfn.engine import Engine

    real = Engine.upscale_group
    fails = {"left": 1}
    lock = threading.Lock()

    def flaky(self, *a, **k):
        with lock:
            fail = fails["left"] > 0
            fails["left"] -= 1
        if fail:
            time.sleep(0.3)  # let the other threads queue up behind this group
            raise RuntimeError("simulated failure")
        return real(self, *a, **k)

    monkeypatch.setattr(Engine, "upscale_group", flaky)
    clip = make_clip(4, 16, 16)
    out = upscale_(clip, tiny_weights, batch_size=2)
    futs = [out.get_frame_async(k) for k in (0, 1, 2, 3, 0, 1)]
    results = []
    for fut in futs:
        try:
            results.append(planes(fut.result(timeout=60)))
        except vs.Error as exc:
            assert "simulated failure" in str(exc)
            results.append(None)
    assert any(r is None for r in results)
    monkeypatch.setattr(Engine, "upscale_group", real)
    seq = all_frames(upscale_(clip, tiny_weights, batch_size=2))
    again = upscale_(clip, tiny_weights, batch_size=2)
    for k in range(8):
        np.testing.assert_array_equal(planes(again.get_frame(k)), seq[k])


def _vspipe_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    conf = subprocess.run([sys.executable, "-m", "vapoursynth", "config"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert conf.returncode == 0, conf.stdout + conf.stderr
    return env


@pytest.mark.slow
@pytest.mark.parametrize("how", ["close", "sigint"])
def test_vspipe_stops_when_the_reader_goes_away(tmp_path, tiny_weights, how):
    """``vspipe -c y4m script.vpy -`` over a long clip, read for a few frames, then the
    reader closes the pipe (``head``, a crashed ffmpeg) or the user presses Ctrl-C.

    Observed exit behaviour with vspipe R81:
    * reader closes the pipe: vspipe stops at its next write and exits with a non-zero
      status (243 here, its "output failed") within a second or so;
    * SIGINT: vspipe stops within about a second and exits with status 0; the stream
      may end inside a frame (vspipe does not complete the frame it was writing), so a
      consumer must not treat status 0 after Ctrl-C as a complete file;
    * (SIGTERM: vspipe R81 keeps going until its whole output is written and only then
      dies of the signal -- the same with a plain BlankClip script without vsdsfn, so it
      is vspipe's behaviour; it is not tested here.)
    In no case does vsdsfn hang or deadlock in the frame requests still in flight.
    """
    exe = Path(sys.executable).with_name("vspipe")
    if not exe.exists():
        pytest.skip("vspipe not found")
    script = tmp_path / "long.vpy"
    script.write_text(textwrap.dedent(f"""
        import vapoursynth as vs
        import vsdsfn
        core = vs.core
        clip = core.std.BlankClip(format=vs.RGBS, width=32, height=24, length=100000, fpsnum=24, fpsden=1,
                                  color=[0.2, 0.5, 0.7])
        clip = vsdsfn.upscale(clip, weights={str(tiny_weights)!r}, batch_size=2, device="cpu", num_threads=1)
        clip = core.resize.Bicubic(clip, format=vs.YUV444P8, matrix_s="709")
        clip.set_output()
    """))
    env = _vspipe_env(tmp_path)
    proc = subprocess.Popen([str(exe), "-c", "y4m", str(script), "-"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path, preexec_fn=default_signals)
    try:
        frame = 64 * 48 * 3 + len(b"FRAME\n")
        head = proc.stdout.readline()
        assert head.startswith(b"YUV4MPEG2") and b" W64 H48 " in head and b"C444" in head, head
        got = proc.stdout.read(5 * frame)
        assert len(got) == 5 * frame
        t0 = time.monotonic()
        if how == "close":
            proc.stdout.close()
        else:
            proc.send_signal(signal.SIGINT)
            rest = proc.stdout.read()  # drains until vspipe closes its end
            # it stopped soon (the frames in flight, not the 200,000 of the clip); the stream
            # may end in the middle of a frame (vspipe does not finish the frame it writes)
            assert len(rest) < 2000 * frame, len(rest)
        rc = proc.wait(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    assert elapsed < 30, elapsed
    if how == "close":
        assert rc != 0 and rc != -signal.SIGKILL, (rc, err)
    else:
        assert rc == 0, (rc, err)
    assert "Traceback" not in err and "deadlock" not in err.lower(), err


@pytest.mark.slow
def test_long_run_memory_is_flat(tmp_path, tiny_weights):
    """2,000 frames of 32x32 (4,000 output frames) in a fresh process: the memory in use
    after the whole clip is within 150 MB of that half-way, and both caches stay within
    their bounds.

    "In use" is RSS after glibc's ``malloc_trim(0)``: without it RSS also counts the free
    memory glibc keeps in its heaps, which moves by hundreds of MB between runs of the
    same code (the networks' transient tensors of a few MB each land in the heap once
    glibc has raised its mmap threshold); after it, it grew 15 MB and then levelled off
    over 10,000 output frames (measured)."""
    code = textwrap.dedent(f"""
        import ctypes, ctypes.util, gc, json, os
        import torch
        torch.set_num_threads(1)
        import vapoursynth as vs
        from tests.conftest import make_clip
        from vsdsfn import filter as flt
        vs.core.max_cache_size = 100   # MB: VapourSynth's own frame caches are the user's setting

        made = []
        class Spy(flt._Upscaler):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                made.append(self)
        flt._Upscaler = Spy
        libc = ctypes.CDLL(ctypes.util.find_library("c"))

        def in_use_mb():
            gc.collect()
            raw = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            if hasattr(libc, "malloc_trim"):
                libc.malloc_trim(0)
            return raw, int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

        out = flt.upscale(make_clip(2000, 32, 32), weights={str(tiny_weights)!r}, batch_size=4, device="cpu",
                          precision="fp32")
        (state,) = made
        rss, peak_groups, peak_ms = {{}}, 0, 0
        for k, f in enumerate(out.frames()):
            assert f.props["Src"] == k // 2
            peak_groups = max(peak_groups, len(state._groups))
            peak_ms = max(peak_ms, len(state.engine._cache))
            if k == 2000:
                rss["warm_raw"], rss["warm"] = in_use_mb()
        rss["end_raw"], rss["end"] = in_use_mb()
        print(json.dumps({{"rss": rss, "frames": k + 1, "groups": peak_groups, "max_groups": state.max_groups,
                          "ms": peak_ms, "ms_max": state.engine.spatial_cache, "pending": len(state._pending),
                          "groups_end": len(state._groups), "ms_end": len(state.engine._cache)}}))
    """)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["frames"] == 4000
    growth = res["rss"]["end"] - res["rss"]["warm"]
    print(f"long run: {res} growth {growth:.1f} MB in {time.monotonic() - t0:.0f} s")
    assert growth < 150, res   # a leak of one 64x48 output frame per frame would add 74 MB; of a pair, 150
    assert res["groups"] <= res["max_groups"] and res["pending"] == 0
    # the M_S cache is trimmed at the end of each engine call: seen from another thread it
    # may briefly hold one call's frames (batch + 1) more than its size
    assert res["ms"] <= res["ms_max"] + 5 and res["ms_end"] <= res["ms_max"], res


# ----------------------------------------------------------------------------- training
def test_checkpoint_with_an_object_is_refused(tmp_path, one_thread):
    """Training checkpoints are read with weights_only=True: one holding an arbitrary object
    is refused (by --resume, --init and export alike) and the object is never built."""
    from training import train as tr
    from training.export import export

    marker = tmp_path / "pwned"
    evil = tmp_path / "last.pt"
    state = {"model": tiny_model().state_dict(), "step": 1, "config": "{}", "stage": "joint",
             "extra": _Marker(marker)}
    torch.save(state, evil)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        tr.load_checkpoint(evil)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        export(evil, tmp_path / "x.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "x.safetensors").exists()
    # a plain checkpoint (tensors, numbers, strings) loads fine
    ok = tmp_path / "ok.pt"
    tr.save_checkpoint(ok, {k: v for k, v in state.items() if k != "extra"})
    assert tr.load_checkpoint(ok)["step"] == 1 and not (tmp_path / "ok.pt.tmp").exists()


def test_killed_during_checkpoint_write_resumes(data, tmp_path, one_thread):
    """A training process killed (os._exit, no clean-up) half-way through writing its second
    last.pt leaves last.pt from the previous checkpoint intact and a partial last.pt.tmp;
    --resume starts from the good checkpoint, overwrites the partial file and finishes
    with exactly the weights of an uninterrupted run."""
    from conftest import run_stage, tiny_args
    from training import train as tr

    out = tmp_path / "cut"
    code = textwrap.dedent(f"""
        import os, sys, json
        import torch
        real = torch.save
        def dying(obj, f, *a, **k):
            if str(f).endswith("last.pt.tmp") and obj.get("step") == 4:
                real(obj, f, *a, **k)
                data = open(f, "rb").read()
                with open(f, "wb") as g:
                    g.write(data[: len(data) // 2])
                os._exit(137)            # killed mid-write: no rename, no clean-up
            return real(obj, f, *a, **k)
        torch.save = dying
        from vsdsfn import precision
        precision.cpu_has_native_bf16 = lambda: False   # fp32, as conftest makes the runs compared with
        from training import train as tr
        tr.main(json.loads(sys.argv[1]))
    """)
    args = [*tiny_args(data), "--stage", "temporal", "--out", str(out), "--iters", "4"]
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 137, proc.stdout + proc.stderr
    assert tr.load_checkpoint(out / "last.pt")["step"] == 2
    partial = out / "last.pt.tmp"
    assert partial.exists()
    with pytest.raises(Exception):
        tr.load_checkpoint(partial)
    resumed = run_stage(data, "temporal", out, iters=4, more=["--resume"])
    assert resumed["step"] == 4 and not partial.exists()
    full = run_stage(data, "temporal", tmp_path / "full", iters=4)
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k


def test_resume_with_another_stage_refuses(data, tmp_path, one_thread):
    from conftest import run_stage

    run_stage(data, "temporal", tmp_path / "t", iters=1)
    with pytest.raises(SystemExit, match="different config or stage"):
        run_stage(data, "spatial", tmp_path / "t", iters=1, more=["--resume"])


def test_inf_loss_step_is_skipped_and_logged(data, tmp_path, monkeypatch, caplog, one_thread):
    from conftest import tiny_sets
    from training import train as tr
    from training.config import load_config

    cfg = load_config(None, tiny_sets() + [f"data.root={json.dumps(str(data))}"])
    t = tr.Trainer(cfg, "temporal", tmp_path / "x", device="cpu")
    t.train_set, t.val = tr.build_datasets(cfg, "temporal", 32)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    real_total = tr.total_loss
    monkeypatch.setattr(tr, "total_loss", lambda losses, names: real_total(losses, names) + float("inf"))
    with caplog.at_level("WARNING", logger="vsdsfn.training"):
        stats = t.train_step()
    assert stats["loss"] != stats["loss"] or not np.isfinite(stats["loss"])
    assert t.skipped_steps == 1 and t.step == 1
    assert "non-finite loss" in caplog.text and "step skipped" in caplog.text
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_truncated_and_empty_images_are_skipped(data, tmp_path, caplog):
    """SR stills that are truncated, empty or not images are skipped and counted."""
    from training.datasets import SRSet

    good = sorted((data / "images").iterdir())
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(good[0].read_bytes()[:200])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("hello")
    ds = SRSet([trunc, empty, text, *good], crop=32)
    rng = np.random.default_rng(0)
    with caplog.at_level("WARNING", logger="vsdsfn.training"):
        samples = [ds.get(i, rng) for i in (0, 1, 2)]
    assert all(s[0].shape == (32, 32, 3) and np.isfinite(s[0]).all() for s in samples)
    assert ds.skipped >= 3
    assert caplog.text.count("skipping unreadable sample") == ds.skipped


def test_default_pytest_run_includes_the_slow_tests():
    """A plain ``pytest`` run (the README's and CI's command) collects the tests marked slow."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/test_robustness.py"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tests/test_robustness.py::test_long_run_memory_is_flat" in proc.stdout
    assert "deselected" not in proc.stdout


@pytest.mark.parametrize("pytest_rc, ci_rc", [(0, 0), (1, 1), (5, 1)])
def test_ci_runs_every_test_and_fails_on_failures_or_none(tmp_path, pytest_rc, ci_rc):
    """.ci/run (copied, run with a stub venv python that records its arguments) installs the
    project, then runs ``pytest -q`` without deselecting anything; failing tests fail it, and
    so does collecting none (pytest's status 5)."""
    (tmp_path / ".ci").mkdir()
    script = tmp_path / ".ci" / "run"
    script.write_text((ROOT / ".ci" / "run").read_text())
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    calls = tmp_path / "calls.jsonl"
    stub = textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        args = sys.argv[1:]
        open({str(calls)!r}, "a").write(json.dumps(args) + "\\n")
        sys.exit({pytest_rc} if args[:2] == ["-m", "pytest"] else 0)
    """)
    for name in ("python", "ffmpeg", "mkvmerge"):   # present, so CI does not try to install them
        (venv_bin / name).write_text(stub)
        (venv_bin / name).chmod(0o755)
    env = {**os.environ, "VENV": str(tmp_path / "venv"), "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == ci_rc, proc.stdout + proc.stderr
    runs = [json.loads(ln) for ln in calls.read_text().splitlines()]
    assert runs[0][:3] == ["-m", "pip", "install"] and runs[0][-1] == ".[test,ray]"
    assert runs[-1] == ["-m", "pytest", "-q"]
