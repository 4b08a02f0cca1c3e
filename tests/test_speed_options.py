"""Speed options: channels_last, torch.compile and TensorRT (and their fallback), threads, CLI flags."""

from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest
import torch

from conftest import pattern, tiny_model
from vsdsfn.engine import DEFAULT_TILE_OVERLAP, Engine
from vsdsfn import trt
from vsdsfn.nets import DSFN


def frames(n=3, w=40, h=24):
    return [pattern(i, w, h).transpose(1, 2, 0).copy() for i in range(n)]


def test_channels_last_matches():
    f = frames()
    pairs = [(f[0], f[1]), (f[1], f[2])]
    ref = Engine(tiny_model(), device="cpu", batch_size=2, channels_last=False)
    eng = Engine(tiny_model(), device="cpu", batch_size=2)
    assert eng.channels_last is True  # the default, on CPU too
    assert ref.model.fusion.inc[0].weight.is_contiguous()
    assert eng.model.fusion.inc[0].weight.is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(eng.interpolate(pairs), ref.interpolate(pairs)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(eng.spatial(f)[0], ref.spatial(f)[0], atol=1e-5)


def test_bad_flags():
    for name in ("channels_last", "compile", "oom_fallback"):
        with pytest.raises(ValueError, match=name):
            Engine(tiny_model(), device="cpu", **{name: "yes"})


@pytest.mark.parametrize("option, error, warning", [
    ({"compile": True}, "inductor: no working C++ compiler", "torch.compile failed (RuntimeError: inductor"),
    ({"trt": True}, "TensorRT: no converter for aten.grid_sampler_2d",
     "torch.compile failed (TensorRT, RuntimeError: TensorRT"),
])
def test_compile_failure_falls_back(monkeypatch, caplog, option, error, warning):
    """A compiled function that fails when first run: warning once, eager results. trt=True
    compiles with torch-tensorrt's backend and its options (replaced here: they need CUDA)."""
    trt_options = {"engine_cache_dir": "x"}
    monkeypatch.setattr("vsdsfn.engine.trt_compile_arguments",
                        lambda device: {"backend": "torch_tensorrt", "options": trt_options})
    given, runs = [], []

    def fake_compile(fn, **kw):
        given.append(kw)

        def compiled(*args):
            runs.append(fn)
            raise RuntimeError(error)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    f = frames()
    ref = Engine(tiny_model(), device="cpu")
    eng = Engine(tiny_model(), device="cpu", **option)
    assert eng.compile is True
    with caplog.at_level(logging.WARNING, logger="vsdsfn"):
        np.testing.assert_array_equal(eng.interpolate([(f[0], f[1])])[0], ref.interpolate([(f[0], f[1])])[0])
        np.testing.assert_array_equal(eng.spatial([f[2]])[0], ref.spatial([f[2]])[0])
    assert len(runs) == 1 and eng.compile is False
    assert caplog.text.count(warning) == 1
    backend = {"backend": "torch_tensorrt", "options": trt_options} if "trt" in option else {}
    assert given == [{"dynamic": False, **backend}]


def test_compile_unavailable_falls_back(monkeypatch, caplog):
    def no_compile(fn, **kw):
        raise RuntimeError("torch.compile is not supported on this Python")

    monkeypatch.setattr(torch, "compile", no_compile)
    eng = Engine(tiny_model(), device="cpu", compile=True)
    f = frames()
    with caplog.at_level(logging.WARNING, logger="vsdsfn"):
        out = eng.interpolate([(f[0], f[1])])[0]
    assert out.shape == (48, 80, 3) and "torch.compile failed" in caplog.text


def test_compile_wraps_without_touching_the_model(monkeypatch):
    """compile=True compiles (once each, lazily, with fixed shapes) the two functions the
    engine runs, DSFN.upscale (M_S: one frame) and DSFN.run (a pair with its M_S frames),
    and uses what torch.compile returns."""
    seen, used, given = [], [], []

    def fake_compile(fn, **kw):
        seen.append(kw.get("dynamic"))
        given.append(fn)

        def compiled(*args):
            used.append(len(args))
            return fn(*args)   # "compiled" = the eager function: results must be the eager ones
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    net = tiny_model()
    eng = Engine(net, device="cpu", compile=True)
    assert not seen  # lazily, at first use
    f = frames()
    ref = Engine(tiny_model(), device="cpu")
    np.testing.assert_array_equal(eng.interpolate([(f[0], f[1])])[0], ref.interpolate([(f[0], f[1])])[0])
    np.testing.assert_array_equal(eng.spatial([f[2]])[0], ref.spatial([f[2]])[0])
    assert seen == [False, False] and sorted(used) == [1, 1, 1, 5]   # M_S of 3 frames; one pair (l0, l1, h0, h1, t)
    assert eng.compile is True
    # functions were compiled, never the model: it stays a plain DSFN with its own weights
    assert not any(isinstance(fn, torch.nn.Module) for fn in given)
    assert type(eng.model) is DSFN
    fresh = tiny_model().state_dict()
    assert eng.model.state_dict().keys() == fresh.keys()
    assert all(torch.equal(v, fresh[k]) for k, v in eng.model.state_dict().items())


def test_trt_runs_on_cuda_only():
    with pytest.raises(ValueError, match=r"trt=True runs on CUDA devices only, not cpu; e.g. device='cuda'"):
        Engine(tiny_model(), device="cpu", trt=True)


def test_trt_without_torch_tensorrt_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)   # import torch_tensorrt: ImportError
    with pytest.raises(ValueError, match=r'needs torch-tensorrt, .*: pip install "torch-tensorrt==2\.\d+\.\*" .*; or trt=False'):
        trt.compile_arguments(torch.device("cuda"))


def test_trt_keeps_engines_in_its_own_folder(monkeypatch, tmp_path):
    """torch-tensorrt's backend, on the engine's device, with built engines cached in a
    folder of vsdsfn's (torch-tensorrt evicts entries of that folder); nothing is created yet."""
    monkeypatch.setitem(sys.modules, "torch_tensorrt", types.ModuleType("torch_tensorrt"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    args = trt.compile_arguments(torch.device("cuda", 1))
    assert args.keys() == {"backend", "options"} and args["backend"] == "torch_tensorrt"
    opts = args["options"]
    assert opts["device"] == torch.device("cuda", 1)
    assert opts["cache_built_engines"] and opts["reuse_cached_engines"]
    assert opts["engine_cache_dir"] == str(tmp_path / "vsdsfn" / "tensorrt" / "engines")
    assert opts["timing_cache_path"] == str(tmp_path / "vsdsfn" / "tensorrt" / "timing.cache")
    assert not any(tmp_path.iterdir())


def test_num_threads_is_applied():
    before = torch.get_num_threads()
    try:
        Engine(tiny_model(), device="cpu", num_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_cli_tile_options():
    from vsdsfn.cli import _parser

    a = _parser().parse_args(["x.mkv", "--tile", "512", "--tile-overlap", "32", "--compile", "--trt"])
    assert (a.tile, a.tile_overlap, a.compile, a.trt) == (512, 32, True, True)
    assert _parser().parse_args(["x.mkv", "--tile", "640x360"]).tile == (640, 360)
    assert _parser().parse_args(["x.mkv"]).tile_overlap is None   # unset: upscale's default (fitted to the tile)
    with pytest.raises(SystemExit):
        _parser().parse_args(["x.mkv", "--tile", "big"])


_MMAPPED = """
import ctypes, ctypes.util, json, sys
import numpy as np
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
if sys.argv[1] == "engine":
    import torch
    from vsdsfn.engine import Engine
    sys.path.insert(0, "tests")
    from conftest import tiny_model
    Engine(tiny_model(), device="cpu")
before = libc.mallinfo2().hblkhd
buf = np.ones(16 * 2**20, np.uint8)      # 16 MB: above glibc's default mmap threshold
print(json.dumps({"mmapped": libc.mallinfo2().hblkhd - before}))
"""


@pytest.mark.skipif(not hasattr(__import__("ctypes").CDLL(None), "mallinfo2"), reason="needs glibc >= 2.33")
@pytest.mark.parametrize("case", ["plain", "engine", "user_env"])
def test_cpu_engine_tunes_glibc_unless_the_user_did(case):
    """A CPU engine raises glibc's mmap threshold to 32 MB (a 16 MB buffer then comes from
    the heap, not a fresh mapping); a ``MALLOC_*`` variable set by the user keeps glibc as
    the user set it."""
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    if case == "user_env":
        env["MALLOC_ARENA_MAX"] = "4"
    proc = subprocess.run([sys.executable, "-c", _MMAPPED, "plain" if case == "plain" else "engine"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    mmapped = json.loads(proc.stdout.strip().splitlines()[-1])["mmapped"]
    assert (mmapped == 0) == (case == "engine"), (case, mmapped)
