"""The networks around M_T: F (space-to-depth, split logits, context inputs), R, the DSFN
config and backbone registries, and DSFN's inference path ``run`` (padding, given M_S
frames, the flip ensemble) and ``upscale``. M_T itself (RIFE) is tests/test_rife.py's."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY, tiny_model
from vsdsfn import nets
from vsdsfn.nets import DSFN, SPATIAL, TEMPORAL, DSFNConfig, FusionUNet, flip_ensemble


def small_config(**kw) -> DSFNConfig:
    """A small DSFN (RIFE without its refinement); ``kw`` overrides fields."""
    args = dict(spatial_args={"channels": 4, "layers": 1}, temporal_args={"widths": [4, 4, 4, 4], "refine": False},
                fusion_widths=(4, 4, 4, 4, 4), refine_channels=4, refine_blocks=1)
    return DSFNConfig(**{**args, **kw})


def smooth(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, h, w) smooth random frames in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, h // 4 + 2, w // 4 + 2, generator=g)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------- F and R
def test_fusion_masks_are_per_pixel():
    """The first stage is a 2x space-to-depth and the head a depth-to-space of masks * 4
    channels: no convolution at full size, yet a mask value per pixel."""
    torch.manual_seed(0)
    f = FusionUNet(widths=(4, 4, 4))
    assert f.multiple == 8                       # 2 ** len(widths): the unshuffle + two strided stages
    assert f.inc[0].in_channels == 6 * 4 and f.head.out_channels == 2 * 4
    nn.init.normal_(f.head.weight)
    st, ts = torch.rand(2, 1, 3, 16, 24)
    fused, m = f(st, ts)
    assert m.shape == (1, 2, 16, 24)
    block = m[0, 0, :2, :2].flatten()            # the four pixels of a 2x2 block differ
    assert len(set(block.tolist())) == 4
    torch.testing.assert_close(fused, m[:, :1] * st + m[:, 1:] * ts)
    with pytest.raises(ValueError):
        FusionUNet(widths=(4,))
    assert FusionUNet().multiple == 32 and DSFN(small_config()).fusion.multiple == 32


def test_fusion_split_logits_are_common_plus_difference():
    f = FusionUNet(widths=(4, 4, 4), split=True)
    st, ts = torch.rand(2, 1, 3, 16, 16)
    fused, m = f(st, ts)                        # zero-initialised head: both masks 0.5
    torch.testing.assert_close(m, torch.full_like(m, 0.5))
    with torch.no_grad():                       # head channels 0-3 -> logit c, 4-7 -> d (pixel shuffle)
        f.head.bias.copy_(torch.tensor([0.5] * 4 + [1.0] * 4))     # c = 0.5, d = 1
    fused, m = f(st, ts)
    torch.testing.assert_close(m[:, 0], torch.full_like(m[:, 0], torch.sigmoid(torch.tensor(1.5)).item()))
    torch.testing.assert_close(m[:, 1], torch.full_like(m[:, 1], torch.sigmoid(torch.tensor(-0.5)).item()))
    torch.testing.assert_close(fused, m[:, :1] * st + m[:, 1:] * ts)
    with pytest.raises(ValueError, match="split needs masks=2"):
        FusionUNet(widths=(4, 4, 4), masks=1, split=True)
    assert DSFN(small_config(fusion_split=True)).fusion.split
    # the one-mask ablation of a split model: split is ignored, one logit
    one = DSFN(small_config(fusion_split=True, fusion_masks=1))
    assert not one.fusion.split and one.fusion.masks == 1 and one.fusion.head.out_channels == 4
    m1 = one.fusion(st, ts, st, ts)[1]            # (context=True by default)
    torch.testing.assert_close(m1[:, 1], 1 - m1[:, 0])


def test_fusion_split_learns_to_prefer_the_better_stream():
    """Two streams with a large shared error and different own noise: F moves its masks
    towards the better stream (L1 on the fused frame, as stage 2)."""
    torch.manual_seed(0)
    f = FusionUNet(widths=(4, 4, 4), split=True)
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(60):
        gt = torch.rand(4, 3, 16, 16, generator=g)
        common = 0.1 * torch.randn(4, 1, 16, 16, generator=g)
        st = gt + common + 0.01 * torch.randn(4, 3, 16, 16, generator=g)
        ts = gt + common + 0.05 * torch.randn(4, 3, 16, 16, generator=g)
        fused, m = f(st, ts)
        loss = F.l1_loss(fused, gt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m_st, m_ts = m.detach().mean((0, 2, 3)).tolist()
    assert m_st > 0.75 and m_ts < 0.25


def test_fusion_context_inputs():
    f = FusionUNet(widths=(4, 4, 4), split=True, context=True)
    assert f.inc[0].in_channels == 13 * 4         # st, ts, hr0, hr1, |st - ts|, space-to-depth
    st, ts, h0, h1 = torch.rand(4, 1, 3, 16, 16)
    with pytest.raises(ValueError, match="context=True needs hr0 and hr1"):
        f(st, ts)
    with torch.no_grad():
        f.head.weight.normal_()
    a = f(st, ts, h0, h1)[1]
    assert not torch.allclose(a, f(st, ts, h0, torch.zeros_like(h1))[1])   # the masks see hr1
    net = DSFN(small_config(fusion_split=True, fusion_context=True))
    assert net.fusion.context
    assert net.run(st[..., :8, :8], ts[..., :8, :8])["refined"].shape == st.shape


def test_refine_context_inputs():
    net = DSFN(small_config(refine_context=True, time_input=False))
    assert net.refine.head[0].in_channels == 4 * 15     # H_F, S->T, T->S, M_S(L-), M_S(L+), unshuffled
    l0, l1 = smooth(2, 16, 16).chunk(2)
    with torch.no_grad():
        out = net(l0, l1)
        assert torch.equal(out["refined"], out["fused"])    # untrained R is the identity
        net.refine.tail.weight.normal_()
        r = net.refine
        x, extra = out["fused"], torch.cat((out["st"], out["ts"], out["hr0"], out["hr1"]), 1)
        assert torch.allclose(net(l0, l1)["refined"], x + r(x, extra))
        assert torch.equal(r(x, extra), r(x, (out["st"], out["ts"], out["hr0"], out["hr1"])))  # a stack or its parts
        moved = extra.clone()
        moved[:, 9:] = 0                                     # R sees M_S(L+)
        assert not torch.allclose(r(x, extra), r(x, moved))
    with pytest.raises(ValueError, match="extra=12 needs"):
        r(x)
    with pytest.raises(ValueError, match="extra=12 needs"):
        r(x, (out["st"], out["ts"]))
    assert DSFNConfig.from_dict(net.config.to_dict()).refine_context


def test_timestep_reaches_every_part():
    """S->T = M_T(M_S(L-), M_S(L+), t); T->S = M_S(M_T(L+, L-, 1 - t)); F and R see t."""
    torch.manual_seed(0)
    net = DSFN(small_config(fusion_context=True, refine_context=True)).eval()
    assert net.fusion.inc[0].in_channels == 14 * 4 and net.refine.head[0].in_channels == 4 * 16
    with torch.no_grad():
        net.fusion.head.weight.normal_()
        net.refine.tail.weight.normal_()
    l0, l1 = smooth(2, 16, 16).chunk(2)
    with torch.no_grad():
        out = net(l0, l1, t=0.25)
        hr0, hr1 = net.spatial(torch.cat((l0, l1))).chunk(2)
        torch.testing.assert_close(out["st"], net.temporal(hr0, hr1, timestep=0.25))
        torch.testing.assert_close(out["ts"], net.spatial(net.temporal(l1, l0, timestep=0.75)))
        fused, masks = net.fusion(out["st"], out["ts"], hr0, hr1, 0.25)
        assert not torch.allclose(masks, net.fusion(out["st"], out["ts"], hr0, hr1, 0.5)[1])   # F sees t
        r25 = net.refine(fused, [out["st"], out["ts"], hr0, hr1, torch.full_like(fused[:, :1], 0.25)])
        r50 = net.refine(fused, [out["st"], out["ts"], hr0, hr1, torch.full_like(fused[:, :1], 0.5)])
        assert not torch.allclose(r25, r50)                                                    # R sees t
        torch.testing.assert_close(out["refined"], fused + r25)
        both = net(torch.cat((l0, l0)), torch.cat((l1, l1)), t=torch.tensor([0.25, 0.5]))["refined"]
        torch.testing.assert_close(both[:1], out["refined"])               # one timestep per batch item
        for bad in (0.0, 1.0, 1.5):
            with pytest.raises(ValueError, match="timesteps must lie in"):
                net(l0, l1, t=bad)


def test_a_network_without_t_refuses_other_timesteps_and_widens_exactly():
    """A t = 1/2 network (a file without ``time_input``) refuses other t; its F and R,
    widened with zero weights for t (training's --init), compute the same frames."""
    from training.train import widened

    torch.manual_seed(0)
    old = DSFN(small_config(fusion_context=True, refine_context=True, time_input=False)).eval()
    with torch.no_grad():
        for p in old.parameters():
            p.normal_(0, 0.1)
    l0, l1 = smooth(2, 16, 16).chunk(2)
    with pytest.raises(ValueError, match=r"trained for the middle frame \(t = 1/2\) only"):
        old(l0, l1, t=0.25)
    new = DSFN(small_config(fusion_context=True, refine_context=True)).eval()
    new.load_state_dict(widened(old.state_dict(), new.state_dict()))
    with torch.no_grad():
        torch.testing.assert_close(new(l0, l1)["refined"], old(l0, l1)["refined"])


# ----------------------------------------------------------------------------- config
def test_config_roundtrip_and_unknown_fields():
    d = DSFNConfig().to_dict()
    assert DSFNConfig.from_dict(d) == DSFNConfig()
    assert DSFNConfig.from_dict(json.loads(json.dumps(d))) == DSFNConfig()    # as stored in a file
    assert DSFNConfig.from_dict({}) == DSFNConfig()          # a training config gets the defaults
    assert DSFNConfig.from_dict(TINY.to_dict()) == TINY
    for field in ("colour", "fusion_unshuffle", "fusion_cues"):   # removed fields are unknown now
        with pytest.raises(ValueError, match=rf"unknown architecture fields \['{field}'\]"):
            DSFNConfig.from_dict({**d, field: True})
    with pytest.raises(TypeError):
        DSFNConfig.from_dict(d, legacy=True)                  # no legacy defaults any more


def test_defaults_are_the_shipped_architecture_with_a_single_frame_m_s():
    from dataclasses import replace

    from vsdsfn.weights import read_config

    cfg = DSFNConfig()
    assert cfg.temporal == "rife"
    assert cfg.temporal_args == {"widths": [192, 128, 96, 64], "refine": True, "large_motion": True}
    shipped = read_config("default")[0]
    assert shipped.spatial == "multiframe" and shipped.spatial_args["radius"] == 1
    single = {k: shipped.spatial_args[k] for k in ("channels", "layers")}
    assert replace(shipped, spatial="espcn", spatial_args=single) == cfg


def test_backbone_registries():
    assert set(TEMPORAL) == {"rife"} and set(SPATIAL) == {"espcn", "multiframe"}
    assert not hasattr(nets, "register_temporal") and not hasattr(nets, "register_spatial")
    assert not hasattr(DSFN, "inference")
    with pytest.raises(ValueError, match=r"unknown temporal backbone 'costflow'; known: \['rife'\]"):
        DSFN(small_config(temporal="costflow"))
    with pytest.raises(ValueError, match=r"unknown spatial backbone 'edsr'; known: \['espcn', 'multiframe'\]"):
        DSFN(small_config(spatial="edsr"))


class _Recorder(nn.Module):
    """A plug-in M_T: the frame blend, recording its input sizes and ``scale``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, int], float]] = []

    def forward(self, i0, i1, scale=1.0, timestep=0.5):
        self.calls.append((tuple(i0.shape[-2:]), scale))
        return (i0 + i1) / 2


class _RecorderWithMultiple(_Recorder):
    def multiple(self, scale: float = 1.0) -> int:
        return int(8 / scale)


def test_plugin_temporal_backbone():
    """A backbone added to TEMPORAL is built from the config; its ``multiple(scale)``,
    when it has one, joins F's in :meth:`DSFN.multiple_for` (S->T at half its value: it
    runs on the 2x frames)."""
    TEMPORAL["recorder"] = _Recorder
    TEMPORAL["recorder_m"] = _RecorderWithMultiple
    try:
        net = DSFN(small_config(temporal="recorder", temporal_args={}, st_scale=0.5))
        assert [net.multiple_for(s) for s in (1.0, 0.5, 0.125)] == [16, 16, 16]   # F's only
        out = net(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
        assert out["refined"].shape == (1, 3, 32, 32)
        assert net.temporal.calls == [((16, 16), 1.0), ((32, 32), 0.5)]
        net = DSFN(small_config(temporal="recorder_m", temporal_args={}, st_scale=1.0))
        assert [net.multiple_for(s) for s in (1.0, 0.25, 0.125)] == [16, 16, 32]   # lcm(16, 8, 64 / 2)
        out = net.run(torch.rand(1, 3, 20, 20), torch.rand(1, 3, 20, 20), st_scale=0.125)
        assert out["refined"].shape == (1, 3, 40, 40)
        assert net.temporal.calls == [((32, 32), 1.0), ((64, 64), 0.125)]        # padded to 32
    finally:
        TEMPORAL.pop("recorder")
        TEMPORAL.pop("recorder_m")


def test_st_scale_reaches_the_temporal_backbone(monkeypatch):
    net = DSFN(small_config(st_scale=0.5))
    seen = []
    orig = net.temporal.forward

    def forward(a, b, scale=1.0, **kw):
        seen.append((tuple(a.shape[-2:]), scale))
        return orig(a, b, scale, **kw)

    monkeypatch.setattr(net.temporal, "forward", forward)
    with torch.no_grad():
        net(torch.rand(1, 3, 64, 128), torch.rand(1, 3, 64, 128))
        assert seen == [((64, 128), 1.0), ((128, 256), 0.5)]   # T->S on L, S->T on M_S(L) at 0.5
        seen.clear()
        net.run(torch.rand(1, 3, 64, 128), torch.rand(1, 3, 64, 128), st_scale=0.25)   # an override
    assert seen == [((128, 128), 1.0), ((256, 256), 0.25)]       # padded to multiple_for(0.25) = 128


def test_ts_reverse_reaches_the_temporal_backbone():
    """T->S runs M_T on (L+, L-) (the default), or on (L-, L+) without ``ts_reverse``;
    S->T always on (M_S(L-), M_S(L+))."""

    class FirstInput(_Recorder):
        def forward(self, i0, i1, scale=1.0, timestep=0.5):
            self.calls.append((round(float(i0.mean()), 3), scale))
            return i0

    TEMPORAL["first"] = FirstInput
    try:
        l0, l1 = torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)
        hr0, hr1 = torch.zeros(1, 3, 32, 32), torch.ones(1, 3, 32, 32)
        for kw, want in (({}, [(1.0, 1.0), (0.0, 1.0)]), ({"ts_reverse": False}, [(0.0, 1.0), (0.0, 1.0)])):
            net = DSFN(small_config(temporal="first", temporal_args={}, **kw))
            with torch.no_grad():
                net(l0, l1, hr0, hr1)
            assert net.temporal.calls == want, kw
    finally:
        TEMPORAL.pop("first")


def test_stored_config_without_a_field_keeps_the_network_it_was_trained_as(tmp_path):
    """A weights file written before ``ts_reverse``, ``time_input``, ``refine_padding`` and
    ``spatial_padding`` existed ran T->S in order, gave F and R no timestep and padded R and
    M_S with zeros: it loads so, not with today's defaults."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from vsdsfn.weights import ABSENT_FIELDS, read_config, save_model

    path = save_model(tiny_model(), tmp_path / "new.safetensors")
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    assert read_config(path)[0] == TINY and TINY.ts_reverse
    config = json.loads(meta["config"])
    for name in ABSENT_FIELDS:
        del config[name]
    save_file(tensors, str(tmp_path / "old.safetensors"), {**meta, "config": json.dumps(config)})
    old = read_config(tmp_path / "old.safetensors")[0]
    assert old.ts_reverse is False and old.time_input is False and old.refine_padding == "zeros"
    assert old.spatial_padding == "zeros"
    assert dataclasses.replace(old, ts_reverse=True, time_input=True, refine_padding="replicate",
                               spatial_padding="replicate") == TINY
    assert {m.padding_mode for m in DSFN(old).spatial.modules() if isinstance(m, torch.nn.Conv2d)} == {"zeros"}


def test_multiple_for():
    """F's multiple (32 at high res: 16 low-res) and RIFE's on the low-res frames and on
    the 2x frames at ``st_scale``."""
    net = tiny_model()                                   # large_motion: RIFE's multiple is 64 / scale
    assert net.multiple == net.multiple_for(TINY.st_scale) == 64
    assert [net.multiple_for(s) for s in (1.0, 0.5, 0.25, 0.125)] == [64, 64, 128, 256]
    plain = DSFN(small_config(temporal_args={"widths": [4, 4, 4, 4], "large_motion": False}))
    assert [plain.multiple_for(s) for s in (1.0, 0.5, 0.25)] == [32, 32, 64]
    wide = DSFN(small_config(fusion_widths=(4,) * 7))    # F's multiple 128 at high res
    assert wide.multiple_for(1.0) == 64 and wide.fusion.multiple == 128
    with pytest.raises(ValueError, match="scale must be one of 1, 0.5, 0.25, 0.125"):
        net.multiple_for(0.75)


# ----------------------------------------------------------------------------- DSFN.run
@pytest.fixture(scope="module")
def net():
    return tiny_model()


def _pad(x: torch.Tensor, m: int, f: int = 1) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, f * (-(w // f) % m), 0, f * (-(h // f) % m)), mode="replicate")


def test_run_pads_and_crops(net):
    """run = forward on the frames replicate-padded to multiple_for, cropped back; M_S
    given or not, the same (on multiple-sized frames); nothing clamped."""
    l0, l1 = smooth(2, 13, 21).chunk(2)
    with torch.no_grad():
        out = net.run(l0, l1)
        assert set(out) == {"hr0", "hr1", "lt", "st", "ts", "masks", "fused", "refined"}
        assert out["lt"].shape == (1, 3, 13, 21) and out["masks"].shape == (1, 2, 26, 42)
        assert all(out[k].shape == (1, 3, 26, 42) for k in ("hr0", "hr1", "st", "ts", "fused", "refined"))
        want = net(_pad(l0, 64), _pad(l1, 64))
        for k, v in out.items():
            torch.testing.assert_close(v, want[k][..., : v.shape[-2], : v.shape[-1]], rtol=0, atol=0)
        # M_S results passed in (the engine's cache) are padded the same way
        hr0, hr1 = net.upscale(l0), net.upscale(l1)
        given = net.run(l0, l1, hr0, hr1)
        ref = net(_pad(l0, 64), _pad(l1, 64), _pad(hr0, 64, 2), _pad(hr1, 64, 2))
        torch.testing.assert_close(given["refined"], ref["refined"][..., :26, :42], rtol=0, atol=0)
        assert torch.equal(given["hr0"], hr0)
        a, b = smooth(2, 64, 64, seed=1).chunk(2)
        torch.testing.assert_close(net.run(a, b, net.upscale(a), net.upscale(b))["refined"],
                                   net.run(a, b)["refined"], rtol=0, atol=0)
        # outputs are not clamped (callers clamp what they show)
        bright = net.run(l0 * 0 + 1.5, l1 * 0 + 1.5)
        assert bright["hr0"].max() > 1.0
        assert net.run(l0, l1, st_scale=0.25)["st"].shape == (1, 3, 26, 42)


def test_run_ensemble(net):
    """run(..., ensemble=True): the flip-ensembled M_S of both frames, then the
    flip-ensembled network on the (padded) frames and those; different from the plain run."""
    l0, l1 = smooth(2, 13, 21, seed=2).chunk(2)
    with torch.no_grad():
        got = net.run(l0, l1, ensemble=True)
        p0, p1 = _pad(l0, 64), _pad(l1, 64)
        hr0, hr1 = flip_ensemble(net.spatial)(torch.cat((p0, p1))).chunk(2)
        want = flip_ensemble(net)(p0, p1, hr0, hr1)
        for k, v in got.items():
            torch.testing.assert_close(v, want[k][..., : v.shape[-2], : v.shape[-1]])
        plain = net.run(l0, l1)
        assert (got["refined"] - plain["refined"]).abs().max() > 1e-4
        # M_S alone: DSFN.upscale
        x = smooth(1, 13, 21, seed=3)
        torch.testing.assert_close(net.upscale(x, ensemble=True),
                                   (net.spatial(x) + net.spatial(x.flip(-2)).flip(-2)) / 2)
        assert torch.equal(net.upscale(x), net.spatial(x))
