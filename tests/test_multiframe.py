"""The multi-frame M_S: its network, flows, ensemble and training transforms."""

import numpy as np
import pytest
import torch

from training.multiframe import transform
from vsdsfn.nets import DSFN, DSFNConfig, MultiFrameSR
from vsdsfn.nets.common import backwarp, pad_to


def _textured(h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h // 4, w // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def _trained_like(seed=0, padding="zeros") -> MultiFrameSR:
    """A small network whose zero-initialised parts are random (as after training)."""
    torch.manual_seed(seed)
    net = MultiFrameSR(channels=8, layers=2, align=4, fuse_layers=1, padding=padding)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def _dsfn(spatial_net: MultiFrameSR | None = None) -> DSFN:
    net = DSFN(DSFNConfig(spatial="multiframe",
                          spatial_args={"channels": 8, "layers": 2, "align": 4, "fuse_layers": 1},
                          temporal_args={"widths": [8, 8, 8, 8], "refine": False},
                          fusion_widths=(4, 4, 4, 4, 4), refine_channels=4, refine_blocks=1))
    if spatial_net is not None:
        net.spatial.load_state_dict(spatial_net.state_dict())
    return net.eval()


def test_untrained_network_is_its_single_frame_network_for_any_window():
    net = MultiFrameSR(channels=8, layers=2, align=4, fuse_layers=1).eval()
    window = torch.rand(2, 3, 3, 16, 20)
    flows = torch.randn(2, 2, 2, 16, 20)
    with torch.no_grad():
        assert torch.allclose(net(window, flows), net.single(window[:, 1]), atol=1e-6)


def test_neighbours_change_the_trained_output_and_alone_means_single_frame():
    net = _trained_like()
    window = torch.rand(1, 3, 3, 16, 20)
    flows = torch.zeros(1, 2, 2, 16, 20)
    with torch.no_grad():
        alone = net(window[:, 1])
        replicated = net(window[:, 1:2].expand(-1, 3, -1, -1, -1), flows)
        with_neighbours = net(window, flows)
    assert torch.equal(alone, net.single(window[:, 1]))     # a frame without neighbours: the single-frame net
    assert (with_neighbours - replicated).abs().max() > 1e-3


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_replicate_padding_keeps_a_flat_window_flat_to_its_border(padding):
    """With ``padding="replicate"`` a flat window (still: its flows are zero) gives the same
    output everywhere up to the border (each of the pixel shuffle's 2x2 phases flat), with
    and without neighbours; zero padding bends the border."""
    net = _trained_like(padding=padding)
    window = torch.full((1, 3, 3, 18, 22), 0.4)
    with torch.no_grad():
        for out in (net(window, torch.zeros(1, 2, 2, 18, 22)), net(window[:, 1])):
            phases = out.unfold(-2, 2, 2).unfold(-2, 2, 2)       # (1, 3, 18, 22, 2, 2)
            spread = float((phases.amax((2, 3)) - phases.amin((2, 3))).max())
            assert (spread < 1e-5) == (padding == "replicate"), spread
    with pytest.raises(ValueError, match="MultiFrameSR: padding must be one of"):
        MultiFrameSR(padding="reflect")


@pytest.mark.parametrize("op", range(8))
def test_training_transform_keeps_flows_and_frames_consistent(op):
    b = _textured()
    flow = torch.stack((torch.full((24, 32), 1.5), torch.linspace(-2, 2, 24)[:, None].expand(24, 32)))[None]
    warped = backwarp(b, flow)
    lr = torch.stack((b[0], b[0], b[0]))             # (3 frames, 3, H, W)
    _, t_warped, _ = transform(lr, warped[0], flow.expand(2, -1, -1, -1).clone(), op, False)
    t_lr, _, t_flows = transform(lr, b[0], flow.expand(2, -1, -1, -1).clone(), op, False)
    again = backwarp(t_lr[2:3], t_flows[1:2])[0]
    inner = (slice(None), slice(4, -4), slice(4, -4))
    assert torch.allclose(again[inner], t_warped[inner], atol=1e-4)


def test_transform_reverses_the_window_and_its_flows():
    lr = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 3, 4, 4)
    flows = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 2, 4, 4)
    t_lr, _, t_flows = transform(lr, torch.zeros(3, 8, 8), flows, 0, True)
    assert t_lr[:, 0, 0, 0].tolist() == [2.0, 1.0, 0.0]
    assert t_flows[:, 0, 0, 0].tolist() == [1.0, 0.0]


def test_window_flows_are_zero_for_replicated_neighbours():
    net = _dsfn()
    a, b = _textured(64, 64, 1), _textured(64, 64, 2)
    window = torch.stack((a[0], b[0], a[0]))[None]
    with torch.no_grad():
        flows = net.window_flows(window, torch.tensor([[True, True, False]]))
        both = net.window_flows(window)
    assert flows.shape == (1, 2, 2, 64, 64)
    assert torch.equal(flows[:, 1], torch.zeros_like(flows[:, 1]))
    assert torch.equal(flows[:, 0], both[:, 0])


def test_flip_ensemble_of_a_window_is_symmetric_under_the_flip():
    net = _dsfn(_trained_like(3))
    window = torch.rand(1, 3, 3, 16, 20)
    flows = torch.randn(1, 2, 2, 16, 20)
    down = torch.stack((flows[:, :, 0], -flows[:, :, 1]), 2).flip(-2)
    with torch.no_grad():
        one = net.upscale(window[:, 1], window=window, flows=flows, ensemble=True)
        other = net.upscale(window[:, 1].flip(-2), window=window.flip(-2), flows=down, ensemble=True)
        plain = net.upscale(window[:, 1], window=window, flows=flows)
    assert torch.allclose(one, other.flip(-2), atol=1e-5)
    assert not torch.allclose(one, plain, atol=1e-4)


# ----------------------------------------------------------------------------- engine and filter

from conftest import TINY_MULTIFRAME, all_frames, make_clip, pattern, tiny_model  # noqa: E402
from vsdsfn.engine import Engine  # noqa: E402


def _hwc(i, w=40, h=24, kind=0):
    return pattern(i, w, h, kind=kind).transpose(1, 2, 0).copy()


def test_engine_computes_each_m_s_and_each_pair_flow_once():
    eng = Engine(tiny_model(config=TINY_MULTIFRAME), device="cpu")
    frames = [_hwc(i) for i in range(5)]
    evens, mids = eng.upscale_group(frames, list(range(5)), 3, [(0, 0.5), (1, 0.5), (2, 0.5)], first=1)
    assert len(evens) == 3 and len(mids) == 3 and evens[0].shape == (48, 80, 3)
    # M_S of sources 1..4 (4 is the last pair's second frame); flows of pairs 0-1 .. 4-5 within reach
    assert eng.stats["spatial"] == 4 and eng.stats["flows"] == 4


def test_engine_windows_stop_at_links():
    eng = Engine(tiny_model(config=TINY_MULTIFRAME), device="cpu")
    frames = [_hwc(i) for i in range(3)]
    other = [_hwc(9, kind=1)] + frames[1:]
    cut = [False, True]
    a, _ = eng.upscale_group(frames, ["a0", "a1", "a2"], 2, [], first=1, links=cut)
    b, _ = eng.upscale_group(other, ["b0", "a1", "a2"], 2, [], first=1, links=cut)
    joined, _ = eng.upscale_group(other, ["b0", "a1", "a2"], 2, [], first=1)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.abs(joined[0] - a[0]).max() > 1e-4      # the neighbour matters where linked


def test_a_frame_between_two_cuts_is_the_single_frame_m_s():
    net = tiny_model(config=TINY_MULTIFRAME)
    eng = Engine(net, device="cpu")
    frames = [_hwc(i) for i in range(3)]
    alone, _ = eng.upscale_group(frames, [0, 1, 2], 2, [], first=1, links=[False, False])
    h, w = frames[1].shape[:2]
    with torch.no_grad():   # on the frame padded as the engine pads it
        single = net.spatial.single(pad_to(torch.from_numpy(frames[1]).permute(2, 0, 1)[None], eng.multiple))
    np.testing.assert_allclose(alone[0], single[0, :, :2 * h, :2 * w].permute(1, 2, 0).numpy(), atol=1e-6)
    assert eng.stats["flows"] == 0


def test_tiled_multiframe_m_s_equals_untiled():
    net = tiny_model(config=TINY_MULTIFRAME)
    frames = [pattern(i, 420, 200, shift=6.0).transpose(1, 2, 0).copy() for i in range(3)]
    whole, _ = Engine(net, device="cpu").upscale_group(frames, [0, 1, 2], 1, [], first=1)
    tiled_engine = Engine(net, device="cpu", tile=192, tile_overlap=64)
    calls = []
    real = tiled_engine._call
    tiled_engine._call = lambda which, *a: calls.append(which) or real(which, *a)
    tiled, _ = tiled_engine.upscale_group(frames, [0, 1, 2], 1, [], first=1)
    assert calls.count("spatial") > 1                      # M_S ran in tiles
    np.testing.assert_allclose(tiled[0], whole[0], atol=1e-5)


@pytest.mark.parametrize("detect", [False, True])
def test_frames_after_a_cut_do_not_depend_on_what_lies_before_it(tiny_multiframe_any_radius, detect):
    import vsdsfn

    tiny_multiframe_weights = tiny_multiframe_any_radius
    def clip(before_kind):
        frames = lambda i: pattern(i, 24, 20, kind=before_kind if i < 2 else 0)  # noqa: E731
        props = None if detect else (lambda i: {"_SceneChangePrev": int(i == 2)})
        return make_clip(5, 24, 20, frames=frames, props=props)

    kw = dict(weights=tiny_multiframe_weights, scene_detect=detect, scene_threshold=0.05)
    a = all_frames(vsdsfn.upscale(clip(1), **kw))
    b = all_frames(vsdsfn.upscale(make_clip(5, 24, 20, frames=lambda i: pattern(i, 24, 20, kind=1) * 0.5
                                            if i < 2 else pattern(i, 24, 20), props=None if detect else
                                            (lambda i: {"_SceneChangePrev": int(i == 2)})), **kw))
    for n in range(4, 10):          # output 4 shows source 2, the first after the cut
        np.testing.assert_array_equal(a[n], b[n])
    assert np.abs(a[1] - b[1]).max() > 1e-3


def test_a_neighbour_changes_the_source_position_frame(tiny_multiframe_weights):
    import vsdsfn

    plain = all_frames(vsdsfn.upscale(make_clip(3, 24, 20), weights=tiny_multiframe_weights))
    changed = all_frames(vsdsfn.upscale(make_clip(3, 24, 20, frames=lambda i: pattern(i, 24, 20, kind=int(i == 2))),
                                        weights=tiny_multiframe_weights))
    assert np.abs(plain[2] - changed[2]).max() > 1e-4     # M_S(L_1) sees L_2


@pytest.mark.parametrize("batch,num,den", [(1, 2, 1), (3, 5, 2), (2, 3, 1)])
def test_multiframe_output_is_the_same_for_any_batch_and_each_m_s_runs_once(tiny_multiframe_any_radius, monkeypatch,
                                                                          batch, num, den):
    import vsdsfn

    tiny_multiframe_weights = tiny_multiframe_any_radius
    engines = []
    real = Engine.upscale_group

    def spy(self, *a, **kw):
        engines.append(self) if self not in engines else None
        return real(self, *a, **kw)

    monkeypatch.setattr(Engine, "upscale_group", spy)
    clip = make_clip(6, 24, 20, props=lambda i: {"_SceneChangePrev": int(i == 4)})
    one = all_frames(vsdsfn.upscale(clip, weights=tiny_multiframe_weights, factor_num=num, factor_den=den))
    got = vsdsfn.upscale(clip, weights=tiny_multiframe_weights, factor_num=num, factor_den=den, batch_size=batch)
    for n, frame in enumerate(all_frames(got)):
        np.testing.assert_allclose(frame, one[n], atol=1e-5)
    assert engines[-1].stats["spatial"] == 6      # M_S once per source frame, neighbours and all


@pytest.mark.parametrize("opts", [{"debug": "masks"}, {"debug": "st"}, {"ensemble": True}, {"precision": "bf16"}])
def test_multiframe_weights_take_every_option(tiny_multiframe_weights, opts):
    import vsdsfn

    out = vsdsfn.upscale(make_clip(3, 24, 20), weights=tiny_multiframe_weights, **opts)
    frames = all_frames(out)
    assert len(frames) == 6 and all(np.isfinite(f).all() for f in frames)


def test_network_run_with_outer_frames_is_the_engines_group():
    """DSFN.run(l0, l1, before=, after=) (evaluation) and the engine's group of the same four
    frames (the filter) give the same frame."""
    net = tiny_model(config=TINY_MULTIFRAME)
    frames = [_hwc(i) for i in range(4)]
    _, (mid,) = Engine(net, device="cpu").upscale_group(frames, [0, 1, 2, 3], 1, [(0, 0.5)], first=1)
    t = [torch.from_numpy(f).permute(2, 0, 1)[None] for f in frames]
    with torch.no_grad():
        out = net.run(t[1], t[2], before=t[0], after=t[3])["refined"].clamp(0, 1)
        alone = net.run(t[1], t[2])["refined"].clamp(0, 1)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), mid, atol=2e-5)
    assert (out - alone).abs().max() > 1e-4


def test_triplet_evaluation_gives_a_multiframe_model_the_outer_frames(monkeypatch):
    from training import evaluate
    from training.triplets import Triplet

    class Seq:
        def __len__(self):
            return 7

        def frame(self, i):
            return (pattern(i, 64, 64).transpose(1, 2, 0) * 255).astype(np.uint8)

    seen = []
    net = tiny_model(config=TINY_MULTIFRAME)
    real = net.run
    monkeypatch.setattr(net, "run", lambda *a, **k: seen.append((k["before"] is None, k["after"] is None))
                        or real(*a, **k))
    trips = [Triplet(f"s:{i}", Seq(), (i, i + 1, i + 2), "s") for i in (0, 2, 4)]
    evaluate.evaluate(trips, net, mvtools=False, progress=False)
    assert seen == [(True, False), (False, False), (False, True)]   # frames i - 2, i + 4 where they exist


def test_ts_stream_is_made_by_the_single_frame_network():
    """T->S's low-res frame has no neighbours: the multi-frame M_S's own single-frame network
    upscales it (not the multi-frame network on a replicated window)."""
    net = tiny_model(config=TINY_MULTIFRAME)
    a, b = (torch.from_numpy(_hwc(i, 64, 64)).permute(2, 0, 1)[None] for i in (0, 1))
    with torch.no_grad():
        out = net(a, b)
        assert torch.equal(out["ts"], net.spatial.single(out["lt"]))
        replicated = out["lt"][:, None].expand(-1, 3, -1, -1, -1)
        assert not torch.allclose(out["ts"], net.spatial(replicated, torch.zeros(1, 2, 2, 64, 64)), atol=1e-4)


def test_lucas_kanade_steps_bring_flows_closer_to_a_known_shift():
    """RIFE's flows between two small frames of a textured still and a copy moved by a
    known sub-pixel shift: the Lucas-Kanade steps take them closer to it."""
    from vsdsfn.nets.multiframe import pair_flows
    from vsdsfn.weights import load_model

    rife = load_model(None).temporal.eval().float()
    g = torch.Generator().manual_seed(0)
    big = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 24, generator=g), size=(192, 192), mode="bicubic",
                                          align_corners=False).clamp(0, 1)
    a = torch.nn.functional.avg_pool2d(big[..., 8:168, 8:168], 2)          # b: the scene moved 1.5 px right, 1 px down
    b = torch.nn.functional.avg_pool2d(big[..., 6:166, 5:165], 2)
    truth = torch.tensor([1.5, 1.0]).view(1, 2, 1, 1)
    inner = (..., slice(12, -12), slice(12, -12))
    with torch.no_grad():
        errors = [float((pair_flows(rife.estimate, a, b, steps)[0] - truth)[inner].norm(dim=1).mean()) for steps in (0, 2)]
    assert errors[1] < 0.6 * errors[0], errors


def test_lk_steps_refine_the_pair_flows_and_the_file_keeps_them(tmp_path):
    from vsdsfn.nets.multiframe import lucas_kanade, luma, pair_flows
    from vsdsfn.weights import load_model, save_model

    base = _dsfn()
    net = DSFN(DSFNConfig(**{**base.config.__dict__, "spatial_args": {**base.config.spatial_args, "lk_steps": 2}}))
    net.load_state_dict(base.state_dict())
    net = load_model(save_model(net, tmp_path / "lk.safetensors")).eval().float()
    assert net.spatial.lk_steps == 2 and base.spatial.lk_steps == 0
    a, b = _textured(32, 48, 1), _textured(32, 48, 2)
    with torch.no_grad():
        ab, ba = net.pair_flows(a, b)
        plain_ab, plain_ba = pair_flows(net.temporal.estimate, a, b)
    assert torch.allclose(ab, lucas_kanade(luma(a), luma(b), plain_ab, 2), atol=1e-5)
    assert torch.allclose(ba, lucas_kanade(luma(b), luma(a), plain_ba, 2), atol=1e-5)
    assert not torch.allclose(ab, plain_ab)
