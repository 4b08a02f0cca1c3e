"""Property-based: any clip (1-300 px each way, 1-6 frames, RGBS/RGBH, scene-cut props)
with any option values, valid or not. Every call either returns a clip that keeps the frame
contract or raises ``vs.Error`` naming a bad option and its fix, quickly."""

from __future__ import annotations

from datetime import timedelta
from fractions import Fraction

import numpy as np
import pytest
import torch
import vapoursynth as vs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_clip, pattern, planes
from vsdsfn.nets import RIFE
from vsdsfn.options import MAX_BATCH, MAX_CACHE, MAX_THREADS, OPTIONS
from vsdsfn.precision import cpu_capabilities, native_bf16
from vsdsfn.schedule import Schedule

DEBUG = (None, "st", "ts", "fused", "masks")
_junk = st.text(max_size=3) | st.lists(st.integers(), max_size=2)

#: bf16 only on a CPU that computes it natively: emulated, a frame takes several times as long
#: as in fp32 (test_engine checks bf16's frames on every CPU)
_PRECISIONS = [None, "auto", "fp32"] + (["bf16"] if native_bf16(cpu_capabilities()) else [])

#: option -> (valid values, invalid values); compile and trt are never switched on (minutes
#: per graph; trt needs CUDA)
STRATEGIES = {
    "factor_num": (st.integers(2, 6), st.integers(max_value=0) | st.floats() | _junk),
    "factor_den": (st.integers(1, 3), st.integers(max_value=0) | st.integers(min_value=1_000_001) | st.booleans()),
    "fps_num": (st.sampled_from([None, 60000, 120000]), st.integers(max_value=0) | st.floats() | _junk),
    "fps_den": (st.sampled_from([None, 1001]), st.integers(max_value=0) | st.floats()),
    "device": (st.sampled_from([None, "auto", "cpu", "CPU"]), st.sampled_from(["gpu", "cuda:x", "tpu", "cuda", ""])),
    "precision": (st.sampled_from(_PRECISIONS), st.sampled_from(["fp16", "half", "FP32", ""])
                  | st.integers() | st.booleans()),
    "batch_size": (st.integers(1, MAX_BATCH) | st.integers(1, 8).map(np.int64),
                   st.integers(max_value=0) | st.integers(min_value=MAX_BATCH + 1) | st.floats() | st.booleans()),
    "scene_detect": (st.booleans(), st.integers() | st.none()),
    "scene_threshold": (st.floats(0.001, 1.0) | st.just(Fraction(1, 2)) | st.just(np.float32(0.25)),
                        st.floats().filter(lambda v: not 0 < v <= 1) | _junk | st.booleans()),
    "debug": (st.sampled_from(DEBUG), st.text(max_size=5).filter(lambda v: v not in DEBUG)),
    "num_threads": (st.none() | st.integers(1, 2), st.integers(max_value=0) | st.integers(min_value=MAX_THREADS + 1)
                    | st.floats()),
    "cache_size": (st.none() | st.integers(1, MAX_CACHE),
                   st.integers(max_value=0) | st.integers(min_value=MAX_CACHE + 1) | st.floats()),
    "tile": (st.none() | st.just(0) | st.integers(1, 1024) | st.tuples(st.integers(1, 1024), st.integers(1, 1024)),
             st.integers(max_value=-1) | st.floats() | st.tuples(st.integers(max_value=0), st.integers(1, 9)) | _junk),
    "tile_overlap": (st.none() | st.integers(0, 300), st.integers(max_value=-1) | st.floats() | _junk),
    "channels_last": (st.none() | st.booleans(), st.integers() | _junk),
    "compile": (st.just(False), st.none() | st.integers() | _junk),
    "trt": (st.just(False), st.none() | st.integers() | _junk),
    "st_scale": (st.sampled_from((None, *RIFE.SCALES, np.float32(0.5), Fraction(1, 4))),
                 st.floats().filter(lambda v: v not in RIFE.SCALES) | _junk | st.booleans()),
    "ensemble": (st.booleans(), st.none() | st.integers()),
}


@st.composite
def calls(draw):
    """(clip arguments, options, names of the options given a bad value)."""
    w, h, n = draw(st.integers(1, 300)), draw(st.integers(1, 300)), draw(st.integers(1, 6))
    fmt = draw(st.sampled_from([vs.RGBS, vs.RGBH]))
    cuts = draw(st.lists(st.sampled_from(["", "next", "prev"]), min_size=n, max_size=n))
    bad = draw(st.lists(st.sampled_from(sorted(STRATEGIES)), min_size=1, max_size=2, unique=True)) \
        if draw(st.booleans()) else []
    opts = {}
    for name, (valid, invalid) in STRATEGIES.items():
        if name in bad:
            opts[name] = draw(invalid)
        elif draw(st.booleans()):
            opts[name] = draw(valid)
    return (w, h, n, fmt, cuts), opts, bad


def _cut_props(cuts):
    return lambda i: {"_SceneChangeNext": int(cuts[i] == "next"), "_SceneChangePrev": int(cuts[i] == "prev")}


def _check_contract(out: vs.VideoNode, clip: vs.VideoNode, cuts: list[str], opts: dict) -> None:
    n = clip.num_frames
    if opts.get("fps_num") is not None:
        factor = Fraction(opts["fps_num"], opts.get("fps_den") or 1) / clip.fps
    else:
        factor = Fraction(opts.get("factor_num", 2), opts.get("factor_den", 1))
    s = Schedule(n, factor)
    assert (out.num_frames, out.width, out.height) == (s.length, 2 * clip.width, 2 * clip.height)
    assert out.format.id == clip.format.id and out.fps == clip.fps * factor
    for i in sorted({0, 1, s.length - 1}):
        f = out.get_frame(i)
        k, t = s.position(i)
        assert f.props["Src"] == k and f.props["DSFNTimestep"] == float(t)
        x = planes(f)
        assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
        cut = cuts[k] == "next" or (k + 1 < n and cuts[k + 1] == "prev")
        if t == 0 or k + 1 == n or cut:
            assert f.props["DSFNInterpolated"] == 0
            if t and opts.get("debug") != "masks":     # not interpolated: the source frame's M_S
                np.testing.assert_array_equal(x, planes(out.get_frame(s.first_output(k))))


@settings(max_examples=60, deadline=timedelta(seconds=30), derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(calls())
def test_any_clip_any_options(tiny_weights, call):
    from vsdsfn import upscale

    (w, h, n, fmt, cuts), opts, bad = call
    clip = make_clip(n, w, h, fmt=fmt, frames=lambda i: pattern(i, w, h, shift=3.0), props=_cut_props(cuts))
    threads = torch.get_num_threads()
    try:
        out = upscale(clip, weights=tiny_weights, **opts)
        assert not bad, f"accepted bad values for {bad}"
        _check_contract(out, clip, cuts, opts)
    except vs.Error as exc:
        msg = str(exc)
        named = [o.name for o in OPTIONS if o.name in msg or (o.name == "tile" and "tile" in msg)]
        assert msg.startswith("upscale: ") and "; " in msg, msg
        if bad:
            assert any(b in named for b in bad), (bad, msg)
        else:   # valid values that do not go together: a tile too small for its overlap, a factor <= 1
            assert ("tile" in named and "tile_overlap" in msg) or "factor" in msg or "fps_" in msg, msg
    finally:
        torch.set_num_threads(threads)


def test_strategies_cover_every_option():
    assert set(STRATEGIES) | {"weights"} == {o.name for o in OPTIONS}


@pytest.mark.parametrize("weights", ["", "   ", 5, "no/such.safetensors"])
def test_bad_weights_values(weights):
    from vsdsfn import upscale

    with pytest.raises(vs.Error, match=r"upscale: weights .*; .*weights"):
        upscale(make_clip(2, 8, 8), weights=weights)
