"""vsdsfn.upscale: the frame contract, fps/durations, props, scene cuts, formats and errors,
batching, threads, determinism, sizes, NaN, weights and devices."""

from __future__ import annotations

import math
import random
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import pytest
import torch
import vapoursynth as vs

from conftest import all_frames, make_clip, pattern, planes, tiny_model
from vsdsfn import upscale
from vsdsfn.engine import Engine

core = vs.core


def test_size_format_count_fps(tiny_weights):
    for fmt in (vs.RGBS, vs.RGBH):
        clip = make_clip(5, 24, 20, fmt=fmt)
        out = upscale(clip, weights=tiny_weights)
        assert (out.width, out.height, out.num_frames) == (48, 40, 10)
        assert out.format.id == fmt
        assert out.fps == Fraction(60000, 1001)
        f = out.get_frame(9)
        assert f.format.id == fmt and (f.width, f.height) == (48, 40)
    out = upscale(make_clip(3, 8, 8, fps=(25, 1)), weights=tiny_weights)
    assert (out.fps_num, out.fps_den) == (50, 1)


def test_frame_numbering_contract(tiny_weights):
    n = 4
    clip = make_clip(n, 24, 20)
    out = all_frames(upscale(clip, weights=tiny_weights))
    eng = Engine(tiny_weights, device="cpu", layout="chw")
    src = [pattern(i, 24, 20) for i in range(n)]
    for i in range(n):
        np.testing.assert_allclose(out[2 * i], eng.spatial([src[i]])[0], atol=1e-6)
    for i in range(n - 1):
        np.testing.assert_allclose(out[2 * i + 1], eng.interpolate([(src[i], src[i + 1])])[0], atol=1e-6)
        assert not np.array_equal(out[2 * i + 1], out[2 * i])
    np.testing.assert_array_equal(out[2 * n - 1], out[2 * n - 2])  # last odd repeats 2N-2


def test_durations_and_props_cfr(tiny_weights):
    clip = make_clip(3, 16, 16, props=lambda i: {"_Matrix": 1, "_SARNum": 4, "_SARDen": 3, "Name": f"f{i}"})
    out = upscale(clip, weights=tiny_weights)
    for k in range(6):
        p = out.get_frame(k).props
        assert p["Src"] == k // 2
        assert p["Name"] in (f"f{k // 2}", f"f{k // 2}".encode())
        assert (p["_Matrix"], p["_SARNum"], p["_SARDen"]) == (1, 4, 3)
        assert (p["_DurationNum"], p["_DurationDen"]) == (1001, 60000)
        assert p["DSFNInterpolated"] == int(k % 2 == 1 and k < 5)


def test_vfr_durations(tiny_weights):
    durs = [(1, 24), (1, 30), (1001, 30000), (3, 50)]
    clip = make_clip(4, 16, 16, fps=(0, 1), props=lambda i: {"_DurationNum": durs[i][0], "_DurationDen": durs[i][1]})
    assert clip.fps_num == 0
    out = upscale(clip, weights=tiny_weights)
    assert out.fps_num == 0 and (out.fps_num, out.fps_den) == (clip.fps_num, clip.fps_den) and out.num_frames == 8
    total_in = sum(Fraction(*d) for d in durs)
    total_out = Fraction(0)
    for k in range(8):
        p = out.get_frame(k).props
        half = Fraction(*durs[k // 2]) / 2
        assert (p["_DurationNum"], p["_DurationDen"]) == (half.numerator, half.denominator)
        total_out += Fraction(p["_DurationNum"], p["_DurationDen"])
    assert total_out == total_in


def test_scene_change_props(tiny_weights):
    clip = make_clip(6, 16, 16, props=lambda i: {"_SceneChangeNext": int(i == 1), "_SceneChangePrev": int(i == 4)})
    out = upscale(clip, weights=tiny_weights)
    fr = all_frames(out)
    np.testing.assert_array_equal(fr[3], fr[2])   # cut after source 1 (its _SceneChangeNext)
    np.testing.assert_array_equal(fr[7], fr[6])   # cut before source 4 (its _SceneChangePrev)
    assert not np.array_equal(fr[1], fr[0]) and not np.array_equal(fr[5], fr[4])
    p = [out.get_frame(k).props for k in range(12)]
    assert p[3]["DSFNInterpolated"] == 0 and p[1]["DSFNInterpolated"] == 1
    # the cut now lies between output frames 3 and 4, and 7 and 8
    assert p[2]["_SceneChangeNext"] == 0 and p[3]["_SceneChangeNext"] == 1
    assert p[8]["_SceneChangePrev"] == 1 and p[9]["_SceneChangePrev"] == 0


@pytest.mark.parametrize("factor", [(2, 1), (5, 2)])
@pytest.mark.parametrize("batch", [1, 2])
def test_detected_cut_marks_both_sides(tiny_weights, factor, batch):
    """A cut found by scene_detect puts _SceneChangeNext on the last frame before it and
    _SceneChangePrev on the first after it, at any factor and batch size."""
    clip = make_clip(6, 32, 24, frames=lambda i: pattern(i, 32, 24, kind=0 if i < 3 else 1))
    out = upscale(clip, weights=tiny_weights, factor_num=factor[0], factor_den=factor[1], scene_detect=True,
                  batch_size=batch)
    first_after = math.ceil(3 * Fraction(*factor))
    marks = {n: {k: v for k, v in out.get_frame(n).props.items() if k.startswith("_SceneChange") and v}
             for n in range(out.num_frames)}
    assert {n: m for n, m in marks.items() if m} == {first_after - 1: {"_SceneChangeNext": 1},
                                                     first_after: {"_SceneChangePrev": 1}}


def test_builtin_scene_detector(tiny_weights):
    def frames(i):
        return pattern(i, 32, 24, kind=0 if i < 3 else 1)

    clip = make_clip(6, 32, 24, frames=frames)
    det = upscale(clip, weights=tiny_weights, scene_detect=True)
    fr = all_frames(det)
    np.testing.assert_array_equal(fr[5], fr[4])  # cut between source 2 and 3
    for k in (1, 3, 7, 9):
        assert not np.array_equal(fr[k], fr[k - 1])
    p = det.get_frame(5).props
    assert p["DSFNInterpolated"] == 0 and p["DSFNSceneScore"] > 0.1 and p["_SceneChangeNext"] == 1
    assert det.get_frame(3).props["DSFNSceneScore"] < 0.1
    plain = all_frames(upscale(clip, weights=tiny_weights))
    assert not np.array_equal(plain[5], plain[4])  # detector off: blended across the cut
    higher = all_frames(upscale(clip, weights=tiny_weights, scene_detect=True, scene_threshold=0.99))
    assert not np.array_equal(higher[5], higher[4])


@pytest.mark.parametrize("fmt,hint", [
    (vs.YUV420P8, 'core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="170m")'),
    (vs.YUV444PS, 'core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="170m")'),
    (vs.GRAY8, "core.resize.Point(clip, format=vs.RGBS)"),
    (vs.GRAYS, "core.resize.Point(clip, format=vs.RGBS)"),
    (vs.RGB24, "core.resize.Point(clip, format=vs.RGBS)"),
    (vs.RGB48, "core.resize.Point(clip, format=vs.RGBS)"),
])
def test_format_errors_show_the_conversion(tiny_weights, fmt, hint):
    clip = core.std.BlankClip(format=fmt, width=16, height=16, length=2)
    with pytest.raises(vs.Error, match="upscale: ") as err:
        upscale(clip, weights=tiny_weights)
    assert hint in str(err.value) and "RGBS or RGBH" in str(err.value)
    # the line it shows really works
    line = hint.replace("core.", "vs.core.")
    fixed = eval(line, {"vs": vs, "clip": clip})
    assert upscale(fixed, weights=tiny_weights).num_frames == 4


def test_hd_yuv_hint_uses_709(tiny_weights):
    with pytest.raises(vs.Error, match='matrix_in_s="709"'):
        upscale(core.std.BlankClip(format=vs.YUV420P10, width=1280, height=720, length=1), weights=tiny_weights)


def test_variable_format_and_size(tiny_weights):
    a = core.std.BlankClip(format=vs.RGBS, width=16, height=16, length=2)
    varfmt = core.std.Splice([a, core.std.BlankClip(format=vs.RGBH, width=16, height=16, length=2)], mismatch=True)
    with pytest.raises(vs.Error, match="variable format.*core.resize"):
        upscale(varfmt, weights=tiny_weights)
    varsize = core.std.Splice([a, core.std.BlankClip(format=vs.RGBS, width=8, height=16, length=2)], mismatch=True)
    with pytest.raises(vs.Error, match="variable frame size.*width=W, height=H"):
        upscale(varsize, weights=tiny_weights)


def test_not_a_clip():
    with pytest.raises(vs.Error, match="upscale: expected a VideoNode"):
        upscale("video.mkv")


def test_option_errors(tiny_weights):
    clip = make_clip(2, 8, 8)
    with pytest.raises(vs.Error, match=r"unknown option\(s\) 'batchsize' \(did you mean 'batch_size'\?\)"):
        upscale(clip, weights=tiny_weights, batchsize=2)
    with pytest.raises(vs.Error, match="valid options: factor_num, factor_den, fps_num, fps_den, weights, device"):
        upscale(clip, weights=tiny_weights, colour="red")
    for bs in (0, -3, 2.0, "4", 65):
        with pytest.raises(vs.Error, match=r"batch_size must be an integer in \[1, 64\]"):
            upscale(clip, weights=tiny_weights, batch_size=bs)
    with pytest.raises(vs.Error, match="debug must be None or one of"):
        upscale(clip, weights=tiny_weights, debug="flow")
    with pytest.raises(vs.Error, match="scene_threshold"):
        upscale(clip, weights=tiny_weights, scene_threshold=0)
    with pytest.raises(vs.Error, match="upscale: unknown device 'gpu'"):
        upscale(clip, weights=tiny_weights, device="gpu")
    with pytest.raises(vs.Error, match="num_threads"):
        upscale(clip, weights=tiny_weights, num_threads=0)
    with pytest.raises(vs.Error, match=r"upscale: st_scale must be None .*0.125, not 2; e.g. st_scale=0.5"):
        upscale(clip, weights=tiny_weights, st_scale=2)
    with pytest.raises(vs.Error, match=r"upscale: trt=True runs on CUDA devices only, not cpu; e.g. device='cuda'"):
        upscale(clip, weights=tiny_weights, device="cpu", trt=True)
    with pytest.raises(vs.Error, match=r"upscale: trt must be True or False, not 1; e.g. trt=True"):
        upscale(clip, weights=tiny_weights, trt=1)


def test_options_table_is_upscales_and_the_clis():
    """vsdsfn/options.py is the one definition of the options: upscale's signature (names,
    order, defaults), the engine's constants and the CLI's flags agree with it."""
    import doctest
    import inspect

    from vsdsfn import cli, engine, options
    from vsdsfn import filter as flt

    params = [p for p in inspect.signature(upscale).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert [(p.name, p.default) for p in params] == [(o.name, o.default) for o in options.OPTIONS]
    assert flt.OPTIONS == options.NAMES
    by_name = {o.name: o for o in options.OPTIONS}
    assert by_name["debug"].choices == engine.DEBUG_OUTPUTS
    assert by_name["tile_overlap"].default is None and options._TILE_OVERLAP == engine.DEFAULT_TILE_OVERLAP
    for o in options.OPTIONS:   # the default and the error's example pass the check
        assert o.valid is None or (o.valid(o.default) and o.valid(o.example)), o.name
    parser = cli._parser()
    defaults = parser.parse_args([])
    flagged = [o for o in options.OPTIONS if o.flag]
    for o in flagged:
        assert getattr(defaults, o.name) == o.default, o.name
        argv = [o.flag] if o.parse is bool else [o.flag, str(o.example)]
        assert getattr(parser.parse_args(argv), o.name) == o.example, o.name
    group = next(g for g in parser._action_groups if g.title.startswith("upscale options"))
    assert [a.dest for a in group._group_actions] == [o.name for o in flagged]
    assert parser.parse_args(["--tile", "640x360"]).tile == (640, 360)
    assert doctest.testmod(options).failed == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_cuda_without_cuda(tiny_weights):
    with pytest.raises(vs.Error, match="upscale: device 'cuda' was requested but CUDA is not available"):
        upscale(make_clip(2, 8, 8), weights=tiny_weights, device="cuda")


@pytest.mark.parametrize("bs", [1, 3])
def test_threads_random_order_equals_sequential(tiny_weights, bs):
    clip = make_clip(9, 24, 20)
    seq = all_frames(upscale(clip, weights=tiny_weights, batch_size=bs))
    out = upscale(clip, weights=tiny_weights, batch_size=bs, cache_size=1)  # forces recomputation
    order = list(range(out.num_frames)) * 3
    random.Random(1).shuffle(order)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda k: (k, planes(out.get_frame(k))), order))
    for k, arr in got:
        np.testing.assert_array_equal(arr, seq[k])
    # VapourSynth's own threads (get_frame_async)
    out2 = upscale(clip, weights=tiny_weights, batch_size=bs)
    futs = [(k, out2.get_frame_async(k)) for k in reversed(range(out2.num_frames))]
    for k, fut in futs:
        np.testing.assert_array_equal(planes(fut.result()), seq[k])


def test_determinism(tiny_weights):
    clip = make_clip(4, 20, 12)
    a = all_frames(upscale(clip, weights=tiny_weights, batch_size=2))
    b = all_frames(upscale(clip, weights=tiny_weights, batch_size=2))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("w,h", [(1, 1), (3, 1), (17, 11), (33, 7)])
def test_tiny_and_odd_sizes(tiny_weights, w, h):
    out = upscale(make_clip(3, w, h), weights=tiny_weights, batch_size=2)
    assert (out.width, out.height, out.num_frames) == (2 * w, 2 * h, 6)
    fr = all_frames(out)
    assert all(f.shape == (3, 2 * h, 2 * w) and np.isfinite(f).all() for f in fr)


def test_one_frame_clip(tiny_weights):
    out = upscale(make_clip(1, 16, 12), weights=tiny_weights)
    assert out.num_frames == 2
    a, b = all_frames(out)
    np.testing.assert_array_equal(a, b)
    assert out.get_frame(1).props["_DurationDen"] == 60000


def test_nan_input_does_not_spread(tiny_weights):
    def dirty(i):
        f = pattern(i, 24, 20)
        if i == 1:
            f[0, 3:6, 4:9] = np.nan
            f[2, 0, 0] = np.inf
        return f

    clean = all_frames(upscale(make_clip(5, 24, 20), weights=tiny_weights))
    got = all_frames(upscale(make_clip(5, 24, 20, frames=dirty), weights=tiny_weights))
    for k, f in enumerate(got):
        assert np.isfinite(f).all() and f.min() >= 0 and f.max() <= 1
        if k >= 4:  # frames that do not involve source frame 1
            np.testing.assert_array_equal(f, clean[k])


@pytest.mark.parametrize("view", ["st", "ts", "fused", "masks"])
def test_debug_views(tiny_weights, view):
    clip = make_clip(4, 16, 16, props=lambda i: {"_SceneChangeNext": int(i == 1)})
    res = all_frames(upscale(clip, weights=tiny_weights))
    dbg_clip = upscale(clip, weights=tiny_weights, debug=view)
    assert (dbg_clip.num_frames, dbg_clip.width, dbg_clip.height) == (8, 32, 32)
    dbg = all_frames(dbg_clip)
    for k in (0, 2, 4, 6):
        np.testing.assert_allclose(dbg[k], res[k], atol=1e-6)  # even frames: M_S as usual
    assert not np.allclose(dbg[1], res[1], atol=1e-4)
    if view == "masks":
        assert (dbg[1][2] == 0).all() and 0 <= dbg[1].min() and dbg[1].max() <= 1
        assert (dbg[3] == 0).all() and (dbg[7] == 0).all()  # no interpolation there: black
    else:
        np.testing.assert_array_equal(dbg[3], dbg[2])


def test_weights_errors(tmp_path, tiny_weights):
    clip = make_clip(2, 8, 8)
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(vs.Error, match=f"upscale: weights file '{missing}' does not exist"):
        upscale(clip, weights=missing)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(tiny_weights.read_bytes()[:5000])
    with pytest.raises(vs.Error, match="trunc.safetensors.*(truncated|corrupt)"):
        upscale(clip, weights=trunc)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello, this is not a weights file" * 10)
    with pytest.raises(vs.Error, match="junk.safetensors"):
        upscale(clip, weights=junk)
    pkl = tmp_path / "model.pt"
    torch.save(tiny_model().state_dict(), pkl)
    with pytest.raises(vs.Error, match="pickle"):
        upscale(clip, weights=pkl)
    # tensors of the tiny net under the default architecture's config
    import json

    from safetensors.torch import load_file, save_file

    from vsdsfn.nets import DSFNConfig
    from vsdsfn.weights import FORMAT

    wrong = tmp_path / "wrong.safetensors"
    save_file(load_file(str(tiny_weights)), str(wrong),
              metadata={"format": FORMAT, "config": json.dumps(DSFNConfig().to_dict())})
    with pytest.raises(vs.Error, match="wrong.safetensors' does not match its architecture"):
        upscale(clip, weights=wrong)


def test_pickle_is_never_unpickled(tmp_path, monkeypatch):
    import pickle

    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("unpickled!",))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(Boom(), protocol=2))
    with pytest.raises(vs.Error, match="pickle"):
        upscale(make_clip(2, 8, 8), weights=bad)


def test_default_weights_end_to_end():
    from vsdsfn.weights import default_weights_path, read_config

    path = default_weights_path()
    assert path.is_file()
    read_config(path)
    clip = make_clip(2, 20, 12)
    out = upscale(clip)
    fr = all_frames(out)
    assert out.num_frames == 4 and fr[1].shape == (3, 24, 40)
    assert all(np.isfinite(f).all() for f in fr)


def test_flat_clip_stays_flat_to_its_border():
    """A flat-colour clip comes out flat up to its border: every output frame of the
    shipped weights, source and interpolated, within one 8-bit step of the colour, in
    fp32 and at the default precision (M_S and R pad by replicating the edges)."""
    colour = [0.3, 0.55, 0.8]
    clip = core.std.BlankClip(format=vs.RGBS, width=96, height=64, length=3, color=colour)
    for precision in ("fp32", "auto"):
        for n, f in enumerate(all_frames(upscale(clip, precision=precision))):
            dev = np.abs(f - np.array(colour, np.float32)[:, None, None]).max(0)
            assert dev.max() < 1 / 255, (precision, n, float(dev.max()), float(dev[16:-16, 16:-16].max()))


def test_ensemble_option(tiny_weights):
    """ensemble=True: every output frame is the engine's flip ensemble; a bad value is a vs.Error."""
    clip = make_clip(3, 24, 20)
    plain = all_frames(upscale(clip, weights=tiny_weights))
    ens = all_frames(upscale(clip, weights=tiny_weights, ensemble=True))
    eng = Engine(tiny_weights, device="cpu", layout="chw", ensemble=True)
    src = [pattern(i, 24, 20) for i in range(3)]
    np.testing.assert_allclose(ens[0], eng.spatial([src[0]])[0], atol=1e-6)
    np.testing.assert_allclose(ens[1], eng.interpolate([(src[0], src[1])])[0], atol=1e-6)
    assert not np.allclose(ens[1], plain[1], atol=1e-4) and not np.allclose(ens[0], plain[0], atol=1e-4)
    with pytest.raises(vs.Error, match="upscale: ensemble must be True or False"):
        upscale(clip, weights=tiny_weights, ensemble=1)


def test_named_weights_end_to_end():
    """"default" is the same as None; an unknown name is a vs.Error naming the shipped ones."""
    clip = make_clip(3, 20, 12)
    default = all_frames(upscale(clip))
    np.testing.assert_array_equal(all_frames(upscale(clip, weights="default"))[1], default[1])
    with pytest.raises(vs.Error, match="upscale: weights 'defualt' is neither.*'default'"):
        upscale(clip, weights="defualt")


@pytest.mark.parametrize("num,den,groups,interpolated", [
    (2, 1, 3, 6), (5, 2, 3, 12), (5, 4, 2, 6),   # 5/4: 8 output frames, source 6 is only an L+
])
def test_each_group_and_each_ms_computed_once(tiny_weights, monkeypatch, num, den, groups, interpolated):
    """One computation per group and one M_S per source frame, at any factor."""
    engines, calls = [], []
    orig = Engine.upscale_group

    def spy(self, frames, keys, count, requests, output="refined", **kw):
        if self not in engines:
            engines.append(self)
        calls.append(tuple(keys))
        return orig(self, frames, keys, count, requests, output, **kw)

    monkeypatch.setattr(Engine, "upscale_group", spy)
    out = upscale(make_clip(7, 16, 16), weights=tiny_weights, batch_size=3, factor_num=num, factor_den=den)
    order = list(range(out.num_frames))
    random.Random(3).shuffle(order)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda k: out.get_frame(k), order))
    # one computation per group (its source frames, the next one and the one before)
    assert sorted(calls) == [(0, 1, 2, 3), (2, 3, 4, 5, 6), (5, 6)][:groups]
    (eng,) = engines
    assert eng.stats["spatial"] == 7 and eng.stats["pairs"] == interpolated
