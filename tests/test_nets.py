"""The networks themselves: cost volume, M_T, F's space-to-depth variant, DSFN config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vsdsfn.nets import DSFN, DSFNConfig, FusionUNet
from vsdsfn.nets.common import backwarp
from vsdsfn.nets import costflow
from vsdsfn.nets.costflow import CostFlow, _cost_forward, bilateral_cost
from vsdsfn.nets.dsfn import register_temporal, TEMPORAL
from vsdsfn.nets.flowinterp import FlowInterp


@pytest.mark.parametrize("block_bytes", [1 << 20, 4 * (2 * 3 * 7 * 4)])
def test_bilateral_cost_matches_brute_force(monkeypatch, block_bytes):
    """Whole frame in one block, and in blocks of 4 rows (then 2: the last one shorter)."""
    monkeypatch.setattr(costflow, "_BLOCK_BYTES", block_bytes)
    torch.manual_seed(0)
    f0, f1 = torch.randn(2, 2, 3, 6, 7)
    r = 2
    cost = bilateral_cost(f0, f1, r)
    assert cost.shape == (2, 25, 6, 7)

    def at(f, y, x):
        if 0 <= y < 6 and 0 <= x < 7:
            return f[:, :, y, x]
        return torch.zeros(2, 3)

    k = 0
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            for y in range(6):
                for x in range(7):
                    want = (at(f0, y - dy, x - dx) * at(f1, y + dy, x + dx)).mean(1)
                    torch.testing.assert_close(cost[:, k, y, x], want)
            k += 1


def test_bilateral_cost_finds_symmetric_motion():
    """A pattern moving by +4 px between the frames peaks at d = +2 (half of it)."""
    torch.manual_seed(1)
    base = torch.randn(1, 4, 16, 24)
    f0 = base[:, :, :, 2:18]
    f1 = base[:, :, :, 6:22]  # content of f0 at x appears at x - 4 in f1: motion -4
    cost = bilateral_cost(f0, f1, 2)
    k = int(cost[0, :, 8, 8].argmax())
    dy, dx = divmod(k, 5)
    assert (dy - 2, dx - 2) == (0, -2)


def test_costflow_untrained_is_the_frame_blend():
    """Zero-initialised heads: zero flows, mask 0.5 — the net starts as frame averaging."""
    torch.manual_seed(0)
    net = CostFlow(widths=(8, 8), decoders=(8, 8), radii=(1, 2)).eval()
    a, b = torch.rand(2, 1, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(a, b), (a + b) / 2)
        torch.testing.assert_close(net(a, b, scale=0.5), (a + b) / 2)


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (17, 31), (40, 24)])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_costflow_any_size(size, scale):
    torch.manual_seed(0)
    net = CostFlow(widths=(4, 4, 4), decoders=(4, 4, 4), radii=(1, 1, 2))
    for p in net.parameters():  # non-zero heads so every path runs for real
        nn.init.normal_(p, std=0.1)
    a, b = torch.rand(2, 2, 3, *size)
    out, flow, mask = net(a, b, return_flow=True, scale=scale)
    assert out.shape == a.shape and flow.shape == (2, 4, *size) and mask.shape == (2, 1, *size)
    assert torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_costflow_warps_by_its_flows():
    """The output is exactly the mask blend of both inputs warped by the returned flows."""
    torch.manual_seed(0)
    net = CostFlow(widths=(4, 4), decoders=(4, 4), radii=(1, 1))
    for p in net.parameters():
        nn.init.normal_(p, std=0.2)
    a, b = torch.rand(2, 1, 3, 24, 32)
    out, flow, mask = net(a, b, return_flow=True)
    assert flow.abs().max() > 0.01
    want = mask * backwarp(a, flow[:, :2]) + (1 - mask) * backwarp(b, flow[:, 2:])
    torch.testing.assert_close(out, want)


def test_costflow_level_lists_must_agree():
    with pytest.raises(ValueError, match="one entry per level"):
        CostFlow(widths=(8, 8), decoders=(8,), radii=(1, 1))


def test_fusion_unshuffle_masks_are_per_pixel():
    torch.manual_seed(0)
    f = FusionUNet(widths=(4, 4, 4), unshuffle=True)
    assert f.multiple == 8
    nn.init.normal_(f.head.weight)
    st, ts = torch.rand(2, 1, 3, 16, 24)
    fused, m = f(st, ts)
    assert m.shape == (1, 2, 16, 24)
    # the four pixels of a 2x2 block get their own mask values
    block = m[0, 0, :2, :2].flatten()
    assert len(set(block.tolist())) == 4
    torch.testing.assert_close(fused, m[:, :1] * st + m[:, 1:] * ts)


def test_fusion_split_logits_are_common_plus_difference():
    f = FusionUNet(widths=(4, 4, 4), split=True)
    st, ts = torch.rand(2, 1, 3, 16, 16)
    fused, m = f(st, ts)                        # zero-initialised head: both masks 0.5
    torch.testing.assert_close(m, torch.full_like(m, 0.5))
    with torch.no_grad():
        f.head.bias.copy_(torch.tensor([0.5, 1.0]))     # c = 0.5, d = 1
    fused, m = f(st, ts)
    torch.testing.assert_close(m[:, 0], torch.full_like(m[:, 0], torch.sigmoid(torch.tensor(1.5)).item()))
    torch.testing.assert_close(m[:, 1], torch.full_like(m[:, 1], torch.sigmoid(torch.tensor(-0.5)).item()))
    torch.testing.assert_close(fused, m[:, :1] * st + m[:, 1:] * ts)
    with pytest.raises(ValueError, match="split needs masks=2"):
        FusionUNet(widths=(4, 4, 4), masks=1, split=True)
    assert DSFN(DSFNConfig(fusion_split=True, fusion_widths=(4, 4, 4, 4, 4))).fusion.split
    # the one-mask ablation of a split model: split is ignored, one logit
    one = DSFN(DSFNConfig(fusion_split=True, fusion_masks=1, fusion_widths=(4, 4, 4, 4, 4)))
    assert not one.fusion.split and one.fusion.masks == 1


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
    assert f.inc[0].in_channels == 13 * 1
    st, ts, h0, h1 = torch.rand(4, 1, 3, 16, 16)
    with pytest.raises(ValueError, match="context=True needs hr0 and hr1"):
        f(st, ts)
    with torch.no_grad():
        f.head.weight.normal_()
    a = f(st, ts, h0, h1)[1]
    assert not torch.allclose(a, f(st, ts, h0, torch.zeros_like(h1))[1])   # the masks see hr1
    net = DSFN(DSFNConfig(fusion_split=True, fusion_context=True, fusion_widths=(4, 4, 4, 4, 4),
                          spatial_args={"channels": 4, "layers": 1},
                          temporal_args={"widths": [4], "decoders": [4], "radii": [1]}, refine_channels=4))
    assert net.fusion.context and net(st[..., :8, :8], ts[..., :8, :8])["refined"].shape == st.shape


def test_refine_context_inputs():
    net = DSFN(DSFNConfig(refine_context=True, fusion_widths=(4, 4, 4, 4, 4), spatial_args={"channels": 4, "layers": 1},
                          temporal_args={"widths": [4], "decoders": [4], "radii": [1]}, refine_channels=4))
    assert net.refine.head[0].in_channels == 4 * 15     # H_F, S->T, T->S, M_S(L-), M_S(L+), unshuffled
    l0, l1 = torch.rand(2, 1, 3, 16, 16)
    out = net(l0, l1)
    assert torch.equal(out["refined"], out["fused"])    # untrained R is the identity
    with torch.no_grad():
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


@pytest.mark.parametrize("backbone", ["costflow", "flowinterp"])
def test_temporal_return_warps(backbone):
    """return_warps gives the two warped neighbours that the output blends (per pixel
    between them) and that the returned flows make."""
    torch.manual_seed(0)
    net = (CostFlow(widths=(4, 4), decoders=(4, 4), radii=(1, 1)) if backbone == "costflow"
           else FlowInterp(channels=(4, 4), scales=(2, 1), depth=1))
    for p in net.parameters():
        nn.init.normal_(p, std=0.2)
    a, b = torch.rand(2, 1, 3, 24, 32)
    out, w0, w1 = net(a, b, return_warps=True)
    _, flow, mask = net(a, b, return_flow=True)
    torch.testing.assert_close(w0, backwarp(a, flow[:, :2]))
    torch.testing.assert_close(w1, backwarp(b, flow[:, 2:]))
    torch.testing.assert_close(out, mask * w0 + (1 - mask) * w1)
    with pytest.raises(ValueError, match="exclusive"):
        net(a, b, return_flow=True, return_warps=True)


def test_fusion_cues():
    f = FusionUNet(widths=(4, 4, 4), context=True, cues=2)
    assert f.inc[0].in_channels == 15
    st, ts, h0, h1 = torch.rand(4, 1, 3, 16, 16)
    with pytest.raises(ValueError, match="cues=2 needs"):
        f(st, ts, h0, h1)
    with torch.no_grad():
        f.head.weight.normal_()
    c = torch.rand(1, 2, 16, 16)
    assert not torch.allclose(f(st, ts, h0, h1, cues=c)[1], f(st, ts, h0, h1, cues=c * 0)[1])
    args = dict(fusion_split=True, fusion_context=True, fusion_cues=True, fusion_widths=(4, 4, 4, 4, 4),
                spatial_args={"channels": 4, "layers": 1}, refine_channels=4, st_scale=0.75,
                temporal_args={"widths": [4], "decoders": [4], "radii": [1]})
    net = DSFN(DSFNConfig(**args))
    assert net.fusion.cues == 2
    l0, l1 = torch.rand(2, 1, 3, 16, 16)
    with torch.no_grad():
        net.fusion.head.weight.normal_()
        for p in net.temporal.parameters():
            p.normal_(std=0.2)
    seen = {}
    net.fusion.register_forward_hook(lambda m, inp, kw, out: seen.update(kw), with_kwargs=True)
    out = net(l0, l1)
    assert out["refined"].shape == (1, 3, 32, 32)
    cues = seen["cues"]
    assert cues.shape == (1, 2, 32, 32) and cues.abs().sum() > 0
    assert out["cues"] is cues  # returned for panels and analysis
    _, b0, b1 = net.temporal(net.spatial(l0), net.spatial(l1), return_warps=True, scale=0.75)
    torch.testing.assert_close(cues[:, :1], (b0 - b1).abs().mean(1, keepdim=True))

    class NoWarps(nn.Module):
        def forward(self, i0, i1):
            return (i0 + i1) / 2

    register_temporal("nowarps_test", NoWarps)
    try:
        with pytest.raises(ValueError, match="no return_warps"):
            DSFN(DSFNConfig(**{**args, "temporal": "nowarps_test", "temporal_args": {}, "st_scale": 1.0}))
    finally:
        TEMPORAL.pop("nowarps_test")


def test_default_config_roundtrip_and_legacy_files():
    d = DSFNConfig().to_dict()
    assert DSFNConfig.from_dict(d) == DSFNConfig()
    # a config written before fusion_unshuffle / st_scale existed keeps its old meaning
    old = {k: v for k, v in d.items() if k not in ("fusion_unshuffle", "st_scale")}
    old.update(temporal="flowinterp", temporal_args={}, fusion_widths=[16, 32, 48, 64, 96, 128])
    cfg = DSFNConfig.from_dict(old, legacy=True)
    assert cfg.fusion_unshuffle is False and cfg.st_scale == 1.0
    # a training config (not a stored one) gets today's defaults
    assert DSFNConfig.from_dict({}) == DSFNConfig()
    net = DSFN(cfg)
    assert net.multiple == 16
    with pytest.raises(ValueError, match="unknown architecture fields"):
        DSFNConfig.from_dict({**d, "colour": "blue"})


def test_costflow_normalize_is_stored_and_old_files_keep_raw_matching():
    # every config names it (a stored file never depends on the code's default) ...
    assert DSFNConfig().to_dict()["temporal_args"]["normalize"] is True
    partial = DSFNConfig(temporal_args={"widths": [8], "decoders": [8], "radii": [1]})
    assert partial.temporal_args["normalize"] is True
    # ... and a costflow file written before it existed loads with the raw products
    d = DSFNConfig().to_dict()
    d["temporal_args"] = {k: v for k, v in d["temporal_args"].items() if k != "normalize"}
    old = DSFNConfig.from_dict(d, legacy=True)
    assert old.temporal_args["normalize"] is False
    assert DSFN(old).temporal.decoders[0].normalize is False
    assert DSFNConfig.from_dict({}, legacy=True).temporal_args["normalize"] is False
    # stored new files keep theirs
    assert DSFNConfig.from_dict(DSFNConfig().to_dict(), legacy=True) == DSFNConfig()


class _Recorder(nn.Module):
    """A plug-in M_T without a ``scale`` argument: the blend, recording its input sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, i0, i1):
        self.sizes.append(tuple(i0.shape[-2:]))
        return (i0 + i1) / 2


def test_plugin_temporal_backbone_without_scale():
    register_temporal("recorder", _Recorder)
    try:
        cfg = DSFNConfig(spatial_args={"channels": 4, "layers": 1}, temporal="recorder", temporal_args={},
                         fusion_widths=(4, 4, 4, 4, 4), refine_channels=4, refine_blocks=1, st_scale=1.0)
        net = DSFN(cfg)
        out = net(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
        assert out["refined"].shape == (1, 3, 32, 32)
        assert net.temporal.sizes == [(16, 16), (32, 32)]
    finally:
        TEMPORAL.pop("recorder")


def test_st_scale_reaches_the_temporal_backbone(monkeypatch):
    cfg = DSFNConfig(spatial_args={"channels": 4, "layers": 1},
                     temporal_args={"widths": [4], "decoders": [4], "radii": [1]},
                     fusion_widths=(4, 4, 4, 4, 4), refine_channels=4, refine_blocks=1, st_scale=0.5)
    net = DSFN(cfg)
    seen = []
    orig = net.temporal.flows
    monkeypatch.setattr(net.temporal, "flows", lambda a, b: seen.append(tuple(a.shape[-2:])) or orig(a, b))
    net(torch.rand(1, 3, 16, 32), torch.rand(1, 3, 16, 32))
    assert seen == [(16, 32), (16, 32)]  # L at full size, M_S(L) (32x64) at half


def test_bilateral_cost_gradient():
    torch.manual_seed(0)
    f0, f1 = torch.randn(2, 2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: bilateral_cost(a, b, 2), (f0, f1))
    # and it equals autograd through the plain loop
    g = torch.randn(2, 25, 5, 6, dtype=torch.float64)
    want = torch.autograd.grad((_cost_forward(F.pad(f0, (2,) * 4), F.pad(f1, (2,) * 4), 2, 5, 6) * g).sum(), (f0, f1))
    got = torch.autograd.grad((bilateral_cost(f0, f1, 2) * g).sum(), (f0, f1))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_costflow_matching_sees_motion_at_any_feature_scale():
    # untrained features of a texture moved 4 px right: on the 1/2 level the bilateral
    # match is d = (+1, 0) cells, and the soft-argmax (sharpened, as training does) finds
    # it however small the features are
    torch.manual_seed(0)
    net = CostFlow(widths=(16, 16), decoders=(8, 8), radii=(2, 2)).eval()
    old = CostFlow(widths=(16, 16), decoders=(8, 8), radii=(2, 2), normalize=False).eval()
    for n in (net, old):
        n.decoders[0].log_temp.data.fill_(math.log(30.0))
    tex = torch.rand(1, 3, 72, 88)
    a, b = tex[..., 4:68, 4:76], tex[..., 4:68, 0:72]  # a(x) = b(x + 4)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    with torch.no_grad():
        f0, f1 = (net._pyramid(x)[0] for x in (a, b))
        for scale in (1.0, 1e-3):
            cost, cand = net.decoders[0].match(f0 * scale, f1 * scale)
            assert int(cost[inner].mean((0, 2, 3)).argmax()) == 13  # d = (dx=1, dy=0)
            dx, dy = (float(cand[inner][:, k].mean()) for k in range(2))
            assert abs(dx - 1.0) < 0.1 and abs(dy) < 0.1, (scale, dx, dy)
        # the first shipped files' raw products: blind on small features (kept for them)
        _, cand = old.decoders[0].match(f0 * 1e-3, f1 * 1e-3)
        assert float(cand[inner].abs().max()) < 0.05
