"""Any output frame rate: factor_num/factor_den and fps_num/fps_den (vs-rife's names).

Output frame n shows source position n / factor: source frame k = floor(p) at timestep
t = p - k (M_S(L_k) at t = 0, the network's frame at t otherwise)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np
import pytest
import torch
import vapoursynth as vs

from conftest import TINY, all_frames, make_clip, pattern, tiny_model
from vsdsfn import upscale
from vsdsfn.engine import Engine
from vsdsfn.nets import DSFN, DSFNConfig
from vsdsfn.weights import save_model

FACTORS = [(2, 1), (3, 1), (4, 1), (5, 2), (5, 4)]


@pytest.mark.parametrize("num,den", FACTORS)
def test_positions_counts_fps_durations_props(tiny_weights, num, den):
    n, f = 5, Fraction(num, den)
    clip = make_clip(n, 24, 20, fps=(24000, 1001), props=lambda i: {"Name": f"f{i}"})
    out = upscale(clip, weights=tiny_weights, factor_num=num, factor_den=den)
    assert out.num_frames == n * num // den and out.fps == Fraction(24000, 1001) * f
    eng = Engine(tiny_weights, device="cpu", layout="chw")
    src = [pattern(i, 24, 20) for i in range(n)]
    for i, frame in enumerate(out.frames()):
        k, t = divmod(Fraction(i) / f, 1)
        p = frame.props
        assert (p["Src"], p["DSFNTimestep"]) == (k, float(t)) and p["Name"] in (f"f{k}", f"f{k}".encode())
        assert Fraction(p["_DurationNum"], p["_DurationDen"]) == Fraction(1001, 24000) / f
        got = np.stack([np.asarray(frame[c]) for c in range(3)])
        if t == 0 or k + 1 == n:        # the source frame, also in the tail after the last one
            want = eng.spatial([src[k]])[0]
        else:
            want = eng.interpolate([(src[k], src[k + 1])], timesteps=[float(t)])[0]
        assert p["DSFNInterpolated"] == int(t != 0 and k + 1 < n)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_fps_form_is_the_factor(tiny_weights):
    clip = make_clip(4, 16, 16, fps=(24000, 1001))
    by_fps = upscale(clip, weights=tiny_weights, fps_num=60000, fps_den=1001)
    assert by_fps.fps == Fraction(60000, 1001) and by_fps.num_frames == 10
    by_factor = upscale(clip, weights=tiny_weights, factor_num=5, factor_den=2)
    for a, b in zip(all_frames(by_fps), all_frames(by_factor)):
        np.testing.assert_array_equal(a, b)
    assert upscale(make_clip(4, 16, 16, fps=(25, 1)), weights=tiny_weights, fps_num=60).num_frames == 9


def test_vfr_durations_at_any_factor(tiny_weights):
    durs = [(1, 24), (1, 30), (1001, 30000), (3, 50)]
    clip = make_clip(4, 16, 16, fps=(0, 1), props=lambda i: {"_DurationNum": durs[i][0], "_DurationDen": durs[i][1]})
    out = upscale(clip, weights=tiny_weights, factor_num=3)
    assert out.fps_num == 0 and out.num_frames == 12
    for i in range(12):
        p = out.get_frame(i).props
        assert Fraction(p["_DurationNum"], p["_DurationDen"]) == Fraction(*durs[i // 3]) / 3


def test_scene_cuts_at_every_timestep(tiny_weights):
    clip = make_clip(5, 16, 16, props=lambda i: {"_SceneChangeNext": int(i == 1)})
    out = upscale(clip, weights=tiny_weights, factor_num=5, factor_den=2)   # source 1: outputs 3, 4; source 2: 5, 6, 7
    fr, props = all_frames(out), [out.get_frame(i).props for i in range(out.num_frames)]
    for i in (3, 4):                                      # every t between sources 1 and 2: M_S(L_1)
        np.testing.assert_array_equal(fr[i], fr[3])
        assert props[i]["DSFNInterpolated"] == 0
    assert [props[i]["_SceneChangeNext"] for i in (3, 4)] == [0, 1]      # the cut now lies between 4 and 5
    assert not np.array_equal(fr[1], fr[0]) and props[1]["DSFNInterpolated"] == 1


@pytest.mark.parametrize("bs", [1, 3])
def test_any_order_and_threads_give_the_same_frames(tiny_weights, bs):
    clip = make_clip(6, 24, 20)
    ref = all_frames(upscale(clip, weights=tiny_weights, factor_num=5, factor_den=2, batch_size=bs))
    out = upscale(clip, weights=tiny_weights, factor_num=5, factor_den=2, batch_size=bs, cache_size=1)
    order = list(range(out.num_frames))
    random.Random(1).shuffle(order)
    with ThreadPoolExecutor(4) as pool:
        got = dict(zip(order, pool.map(lambda i: np.stack([np.asarray(out.get_frame(i)[c]) for c in range(3)]),
                                       order)))
    for i, want in enumerate(ref):
        np.testing.assert_allclose(got[i], want, atol=1e-5)


def test_refusals(tiny_weights):
    clip = make_clip(3, 16, 16)
    cases = [({"factor_num": 1}, r"factor in \(1, 16\].*not 1 "), ({"factor_num": 3, "factor_den": 4}, "not 3/4"),
             ({"factor_num": 17}, "not 17 "), ({"factor_num": 5, "factor_den": 2, "fps_num": 60}, "not both"),
             ({"fps_den": 1001}, "fps_den needs fps_num"), ({"factor_num": 0}, "factor_num must be an integer"),
             ({"fps_num": 30000, "fps_den": 1001}, r"not 1 \(1\); e.g. factor_num=5, factor_den=2")]
    for kw, text in cases:
        with pytest.raises(vs.Error, match="upscale: .*" + text):
            upscale(clip, weights=tiny_weights, **kw)
    vfr = make_clip(3, 16, 16, fps=(0, 1))
    with pytest.raises(vs.Error, match="needs a clip with a frame rate"):
        upscale(vfr, weights=tiny_weights, fps_num=60)


def test_weights_without_t_refuse_other_factors_and_keep_2x(tmp_path):
    """A file trained for t = 1/2 only (no ``time_input``, e.g. 1.2.0's) gives its 2x
    frames as before and refuses 5/2 with the fix; widened with zero weights for t it
    gives the same 2x frames."""
    from training.train import widened

    torch.manual_seed(0)
    old = DSFN(DSFNConfig.from_dict({**TINY.to_dict(), "time_input": False})).eval()
    with torch.no_grad():
        for p in old.parameters():
            p.normal_(0.0, 0.05)
    path = save_model(old, tmp_path / "middle_only.safetensors")
    clip = make_clip(4, 24, 20)
    with pytest.raises(vs.Error, match=r"trained for the middle frame only \(factor 2\), not factor 5/2; .*"
                                       r"factor_num=2, factor_den=1"):
        upscale(clip, weights=path, factor_num=5, factor_den=2)
    new = tiny_model()
    new.load_state_dict(widened(old.state_dict(), new.state_dict()))
    widened = save_model(new, tmp_path / "widened.safetensors")
    for a, b in zip(all_frames(upscale(clip, weights=path)), all_frames(upscale(clip, weights=widened))):
        np.testing.assert_allclose(a, b, atol=1e-6)
