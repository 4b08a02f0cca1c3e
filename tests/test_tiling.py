"""Tiling: plans, validation, tiled == untiled (exactly for one tile, within the measured
bound with the default weights), out-of-memory fallback to smaller batches and tiles.

Tiles are cut at multiples of ``Engine.multiple``: 64 low-res pixels for the tiny model
of conftest (RIFE's coarsest block, with its large-motion pass, works at 1/64) and for
the shipped weights, so a tile with ``tile_overlap`` ov is at least 2 * ceil(ov / 64) * 64
+ 64 pixels."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from conftest import pattern, tiny_model
from vsdsfn.engine import DEFAULT_TILE_OVERLAP, Engine, OutOfMemory
from vsdsfn.tiling import aligned, parse_tile, plan_tiles
from vsdsfn.weights import load_model


@pytest.fixture(scope="module")
def net():
    return tiny_model()


def texture_pair(w: int, h: int, dx: int = 5, dy: int = 3):
    """Blocky random texture and the same texture moved by (dx, dy): (H, W, 3) float32."""
    rng = np.random.default_rng(1)
    big = np.kron(rng.random((h // 8 + 4, w // 8 + 4, 3)), np.ones((8, 8, 1))).astype(np.float32)
    return big[:h, :w].copy(), big[dy:h + dy, dx:w + dx].copy()


@pytest.mark.parametrize("h,w,tile,ov,m", [(64, 48, (32, 64), 0, 16), (1088, 1920, (512, 512), 64, 16),
                                            (96, 400, (160, 80), 17, 16), (48, 48, (48, 48), 16, 16),
                                            (272, 16, (100, 37), 0, 16), (1088, 1920, (2000, 2000), 64, 16),
                                            (1088, 1920, (512, 512), 64, 64), (192, 448, (200, 192), 16, 64),
                                            (576, 1024, (640, 448), 192, 64)])
def test_plan_covers_frame_once_aligned(h, w, tile, ov, m):
    (tw, th), ova = aligned(tile, ov, m)
    plan = plan_tiles(h, w, tile, ov, m)
    cover = np.zeros((h, w), np.int32)
    for t in plan:
        cover[t.cy0:t.cy1, t.cx0:t.cx1] += 1
        assert all(v % m == 0 for v in t)
        assert 0 <= t.y0 <= t.cy0 < t.cy1 <= t.y1 <= h and 0 <= t.x0 <= t.cx0 < t.cx1 <= t.x1 <= w
        assert (t.y1 - t.y0, t.x1 - t.x0) == (min(th, h), min(tw, w))  # one tile size per plan
        # at least `overlap` context around the core wherever the frame has it
        assert t.cy0 - t.y0 >= min(ova, t.cy0) and t.y1 - t.cy1 >= min(ova, h - t.cy1)
        assert t.cx0 - t.x0 >= min(ova, t.cx0) and t.x1 - t.cx1 >= min(ova, w - t.cx1)
    assert (cover == 1).all()


def test_parse_and_validate_tile():
    assert parse_tile(None) is None and parse_tile(0) is None
    assert parse_tile(300) == (300, 300) and parse_tile((640, 360)) == (640, 360)
    from vsdsfn.options import check

    for bad in (-1, 1.5, True, "512", (1, 2, 3), (0, 64), (64, None)):
        with pytest.raises(ValueError, match="tile must be"):
            check({"tile": bad})
    assert aligned((300, 200), 20, 16) == ((288, 192), 32)
    assert aligned((300, 200), 20, 64) == ((256, 192), 64)
    with pytest.raises(ValueError, match=r"larger than 2 x tile_overlap.*tile >= 448 \(at most 2x the work"):
        aligned((128, 512), 64, 16)
    with pytest.raises(ValueError, match=r"rounds up to 32.*tile >= 224"):
        aligned((72, 72), 20, 16)  # 72 > 2 * 20, but no 16-px core is left after alignment


def test_engine_rejects_bad_tiling(net):
    with pytest.raises(ValueError, match="tile_overlap"):
        Engine(net, device="cpu", tile=256, tile_overlap=-1)
    with pytest.raises(ValueError, match="tile_overlap"):
        Engine(net, device="cpu", tile_overlap=1.5)
    with pytest.raises(ValueError, match=f"tile 100 is too small for tile_overlap {DEFAULT_TILE_OVERLAP}"):
        Engine(net, device="cpu", tile=100, tile_overlap=DEFAULT_TILE_OVERLAP)
    with pytest.raises(ValueError, match="tile"):
        Engine(net, device="cpu", tile=-16)


def test_filter_rejects_bad_tiling(tiny_weights):
    vs = pytest.importorskip("vapoursynth")
    from conftest import make_clip
    from vsdsfn import upscale

    clip = make_clip(3, 24, 20)
    ov, m = DEFAULT_TILE_OVERLAP, Engine(tiny_weights, device="cpu").multiple
    assert m == 64 and ov % m == 0
    with pytest.raises(vs.Error, match=rf"upscale: tile 128 is too small for tile_overlap {ov}.*tile >= 1344 "
                                       r"\(at most 2x the work of whole frames\), or leave tile_overlap unset"):
        upscale(clip, weights=tiny_weights, tile=128, tile_overlap=ov)
    with pytest.raises(vs.Error, match="upscale: tile_overlap"):
        upscale(clip, weights=tiny_weights, tile=256, tile_overlap=-3)
    with pytest.raises(vs.Error, match="upscale: tile"):
        upscale(clip, weights=tiny_weights, tile="big")


@pytest.mark.parametrize("w,h", [(40, 24), (48, 32)])
def test_one_tile_is_exactly_untiled(net, w, h):
    """tile >= frame (after padding) runs the very same computation as no tiling."""
    a, b = texture_pair(w, h)
    ref = Engine(net, device="cpu")
    m = ref.multiple
    for tile in ((-(-w // m) * m, -(-h // m) * m), 1000):
        eng = Engine(net, device="cpu", tile=tile, tile_overlap=0)
        for out in ("refined", "masks"):
            np.testing.assert_array_equal(eng.interpolate([(a, b)], output=out)[0],
                                          ref.interpolate([(a, b)], output=out)[0])
        np.testing.assert_array_equal(eng.spatial([a])[0], ref.spatial([a])[0])
        assert eng.stats["tiles"] == 0


def test_spatial_context_is_espcns_reach():
    """ESPCN.context() of the shipped 6-layer M_S: an input pixel changes outputs exactly
    that far (in input pixels) and no farther."""
    from vsdsfn.nets import DSFNConfig
    from vsdsfn.nets.espcn import ESPCN

    torch.manual_seed(0)
    net = ESPCN(**DSFNConfig().spatial_args).eval()
    torch.nn.init.normal_(net.tail.weight, 0, 0.05)          # zero-initialised: bicubic only
    x = torch.rand(1, 3, 41, 41)
    y = x.clone()
    y[..., 20, 20] += 0.5
    with torch.no_grad():
        changed = (net(x) - net(y)).abs().amax((0, 1)) > 0
    rows = changed.any(1).nonzero()[:, 0] // 2               # output rows -> input rows
    assert net.context() == 8 == max(20 - int(rows.min()), int(rows.max()) - 20)


def test_tiled_spatial_is_exact_with_the_shipped_weights():
    """M_S tiles keep the context M_S states (10 px for the shipped multi-frame M_S: its
    6-layer single-frame body, fusion, correction and tail), aligned: exactly the untiled M_S."""
    model = load_model(None)
    a, _ = texture_pair(400, 150)
    ref = Engine(model, device="cpu").spatial([a])[0]
    eng = Engine(model, device="cpu", tile=64, tile_overlap=0)
    np.testing.assert_allclose(eng.spatial([a])[0], ref, atol=1e-6)
    assert eng.model.spatial_context() == 10 and eng._tile_now() == (64, 64)


def test_spatial_tiles_keep_the_context_the_network_states(net):
    """A spatial network that states a larger context gets it: 70 px round up to 128 here,
    so tiles of at least 128 + 64 + 128."""
    a, _ = texture_pair(600, 150)
    eng = Engine(net, device="cpu", tile=64, tile_overlap=0)
    eng.model.spatial.context = lambda: 70
    sizes = []
    real = eng.model.spatial.forward
    eng.model.spatial.forward = lambda x: sizes.append(tuple(x.shape[-2:])) or real(x)
    eng.spatial([a])
    assert len(sizes) > 1 and set(sizes) == {(192, 320)}     # padded 640x192: the height is whole


def test_tiled_spatial_is_exact(net):
    """M_S tiles keep M_S's context, aligned: at least 64 + 2 * 64 here."""
    a, _ = texture_pair(400, 150)
    ref = Engine(net, device="cpu").spatial([a])[0]
    eng = Engine(net, device="cpu", tile=64, tile_overlap=0)
    sizes = []
    real = eng.model.spatial.forward
    eng.model.spatial.forward = lambda x: sizes.append(tuple(x.shape[-2:])) or real(x)
    np.testing.assert_allclose(eng.spatial([a])[0], ref, atol=1e-6)
    assert len(sizes) > 1 and set(sizes) == {(192, 192)}     # padded 448x192 in tiles of 192


def test_tiled_every_output_and_batch(net):
    """Every debug view stitches; tiles and batches combine; error shrinks with overlap."""
    frames = [pattern(i, 300, 60).transpose(1, 2, 0).copy() for i in range(3)]
    pairs = [(frames[0], frames[1]), (frames[1], frames[2])]
    ref = Engine(net, device="cpu")
    eng = Engine(net, device="cpu", tile=(192, 1000), tile_overlap=64, batch_size=2)
    for out in ("refined", "st", "ts", "fused", "masks"):
        got, want = eng.interpolate(pairs, output=out), ref.interpolate(pairs, output=out)
        for g, r in zip(got, want):
            assert g.shape == r.shape
            assert np.abs(g - r).max() < 0.01   # measured 6.5e-4 (T->S), 3.6e-4 (refined)
    assert eng.stats["tiles"] == 5 * 5             # padded 320 wide: five 64-px cores, per output
    errs = [np.abs(Engine(net, device="cpu", tile=(2 * ov + 64, 1000), tile_overlap=ov).interpolate(pairs[:1])[0]
                   - ref.interpolate(pairs[:1])[0]).max() for ov in (0, 64)]
    assert errs[1] < errs[0]


def smooth_pair(w: int, h: int, seed: int, dx: int = 5, dy: int = 3):
    """A smooth random colour field with darker blocky bands (edges), and the same moved
    by (dx, dy): (H, W, 3) float32 -- picture-like content, unlike :func:`texture_pair`'s
    random 8x8 blocks, on which every match is ambiguous."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.random((1, 3, h // 8 + 4, w // 8 + 4)).astype(np.float32))
    big = torch.nn.functional.interpolate(small, scale_factor=8, mode="bicubic", align_corners=False)
    big = big[0].permute(1, 2, 0).numpy().copy()
    yy, xx = np.mgrid[0:big.shape[0], 0:big.shape[1]]
    big[(xx // 12 + yy // 12) % 5 == 0] *= 0.5
    big = big.clip(0, 1).astype(np.float32)
    return big[:h, :w].copy(), big[dy:h + dy, dx:w + dx].copy()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_default_overlap_bound_with_default_weights(seed):
    """Tiles with the default overlap on moving picture-like content, default weights: the
    stitched frame is within 1e-3 (max abs) of the untiled one (measured with the RIFE
    architecture: 4.6e-5 / 1.9e-4 / 1.2e-4 for seeds 1-3; random-block noise is a worse
    case). Three tiles side by side: 640 wide, cores of 256 (tiles are cut at multiples of
    64, the overlap is 192)."""
    a, b = smooth_pair(2 * DEFAULT_TILE_OVERLAP + 3 * 128, 64, seed)
    tile = (2 * DEFAULT_TILE_OVERLAP + 256, 1000)
    ref = Engine(None, device="cpu").interpolate([(a, b)])[0]
    eng = Engine(None, device="cpu", tile=tile, tile_overlap=DEFAULT_TILE_OVERLAP)
    out = eng.interpolate([(a, b)])[0]
    assert eng.stats["tiles"] == 3
    assert np.abs(out - ref).max() <= 1e-3


def moving_apart(w: int, h: int, seed: int = 1):
    """:func:`smooth_pair` whose left 200 columns move by 60 px and the rest by (5, 3): RIFE's
    second block finds far more motion on the left than on the right."""
    a, b = smooth_pair(w, h, seed)
    fa, fb = smooth_pair(w, h, seed + 1, dx=60, dy=0)
    a[:, :200], b[:, :200] = fa[:, :200], fb[:, :200]
    return a, b


def _second_block_motion(eng: Engine, pair) -> list[float]:
    """Per call of RIFE's second block while ``eng`` interpolates ``pair``: the motion
    the large-motion rule compares with LARGE_MOTION (the smaller of both flows' largest update)."""
    seen = []
    hook = eng.model.temporal.blocks[1].register_forward_hook(
        lambda m, i, o: seen.append(min(float(o[0][:, :2].abs().amax()), float(o[0][:, 2:4].abs().amax()))))
    eng.interpolate([pair])
    hook.remove()
    return seen


def _threshold_between_frame_and_tile(model, pair, tile, ov) -> float:
    """A LARGE_MOTION that the whole frame exceeds (both streams) and some tile does not,
    so that a tile deciding for itself would skip the second pass."""
    whole = min(_second_block_motion(Engine(model, device="cpu"), pair))
    least = min(_second_block_motion(Engine(model, device="cpu", tile=tile, tile_overlap=ov), pair))
    assert least < whole
    return (least + whole) / 2


def _check_large_motion_pass(monkeypatch, model, ov: int, tol: float) -> None:
    """RIFE's second (large-motion) pass is decided on the whole frame and taken by every
    tile, also when the out-of-memory fallback turns tiling on mid-render; the tiled frame
    is the untiled one within ``tol``. Synthetic pairs this small do not reach the 32 px
    of LARGE_MOTION (the shipped weights' second block finds ~20 px on this pair's left,
    ~3 px on its right), so the threshold is set between the whole frame's motion and the
    stillest tile's. The half-resolution pass sees twice as far: the tiles of a frame that
    takes it keep twice the overlap."""
    from vsdsfn.nets import rife

    pair = moving_apart(4 * ov + 3 * 128, 64)
    tile = (4 * ov + 256, 1000)       # three tiles with twice the overlap
    monkeypatch.setattr(rife, "LARGE_MOTION", float("inf"))
    one_pass = Engine(model, device="cpu").interpolate([pair])[0]
    monkeypatch.setattr(rife, "LARGE_MOTION", _threshold_between_frame_and_tile(model, pair, tile, ov))
    ref = Engine(model, device="cpu").interpolate([pair])[0]
    assert np.abs(ref - one_pass).max() > 1e-2               # the second pass changes this frame
    eng = Engine(model, device="cpu", tile=tile, tile_overlap=ov)
    first_block, in_pairs = [], []
    eng.model.temporal.blocks[0].register_forward_hook(lambda *a: first_block.append(1) if in_pairs else None)
    real_run = eng._pairs_run

    def pairs_run(*a, **k):      # counted there only (a multi-frame M_S's flows use M_T too)
        in_pairs.append(1)
        try:
            return real_run(*a, **k)
        finally:
            in_pairs.pop()

    eng._pairs_run = pairs_run
    out = eng.interpolate([pair])[0]
    # the whole frame's decision (2 streams), then every tile: both passes of both streams
    assert eng.stats["tiles"] > 1 and len(first_block) == 2 + 4 * eng.stats["tiles"]
    assert np.abs(out - ref).max() <= tol
    # the out-of-memory fallback turns tiling on (its overlap lowered to stay within 2x the
    # work): the frame is the one those tiles give when asked for, whole-frame decision and all
    eng = Engine(model, device="cpu", tile_overlap=ov)
    _oom_above(eng.model, 3 * 64 * (tile[0] + 64))
    fallen = eng.interpolate([pair])[0]
    assert eng._auto_tile is not None and eng.stats["tiles"] > 1
    asked = Engine(model, device="cpu", tile=eng._auto_tile, tile_overlap=eng.tile_overlap)
    np.testing.assert_allclose(fallen, asked.interpolate([pair])[0], atol=1e-4)   # M_S tiled or not: rounding


def test_large_motion_pass_is_decided_once_per_frame(monkeypatch):
    """The tiny random model (measured 1.7e-3; 0.36 with tiles deciding alone)."""
    _check_large_motion_pass(monkeypatch, tiny_model(), 64, 0.01)


@pytest.mark.slow
def test_large_motion_pass_tiled_within_tolerance_with_default_weights(monkeypatch):
    """The shipped weights, the default overlap: within the tile tolerance of
    test_default_overlap_bound_with_default_weights (measured 4.8e-5; 0.18 with tiles
    deciding alone)."""
    _check_large_motion_pass(monkeypatch, load_model(None), DEFAULT_TILE_OVERLAP, 1e-3)


# ------------------------------------------------------------------ out-of-memory fallback

def _oom_above(model, max_numel: int, kind: str = "cuda"):
    """Make model.forward raise an out-of-memory error for inputs larger than max_numel."""
    real = model.forward
    calls = []

    def forward(l0, l1, hr0=None, hr1=None, **kw):
        calls.append(tuple(l0.shape))
        if l0.numel() > max_numel:
            if kind == "cuda":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                               "can't allocate memory: you tried to allocate 123456789 bytes.")
        return real(l0, l1, hr0, hr1, **kw)

    model.forward = forward
    return calls


def test_oom_falls_back_to_smaller_batches(caplog):
    net = tiny_model()
    frames = [pattern(i, 40, 24).transpose(1, 2, 0).copy() for i in range(5)]
    pairs = list(zip(frames, frames[1:]))
    ref = Engine(net, device="cpu", batch_size=1).interpolate(pairs)
    eng = Engine(net, device="cpu", batch_size=4)
    calls = _oom_above(eng.model, 3 * 64 * 64)  # only batch 1 fits (40x24 padded to 64x64)
    with caplog.at_level(logging.INFO, logger="vsdsfn"):
        out = eng.interpolate(pairs)
    for o, r in zip(out, ref):
        np.testing.assert_allclose(o, r, atol=1e-5)
    assert eng._auto_batch == 1 and eng._auto_tile is None
    assert [r.levelname for r in caplog.records].count("WARNING") == 1
    assert "out of memory" in caplog.text and "batches of 2" in caplog.text
    n = len(calls)
    eng.interpolate(pairs[:2])  # sticky: no new failing attempt
    assert calls[n:] == [(1, 3, 64, 64)] * 2


def test_overlap_is_fitted_to_the_tile(net, caplog):
    """Unset, tile_overlap is the largest (up to the default) that keeps a tile within 2x
    the work of whole frames; a given one that costs more is warned about with the numbers."""
    from vsdsfn.tiling import overhead

    for tile, ov in ((100, 0), (384, 0), (448, 64), (512, 64), (1024, 128), (2048, DEFAULT_TILE_OVERLAP)):
        eng = Engine(net, device="cpu", tile=tile)
        assert eng.tile_overlap == ov and overhead(tile, ov, eng.multiple) <= 2, tile
    a, b = texture_pair(1000, 150)
    with caplog.at_level(logging.WARNING, logger="vsdsfn"):
        Engine(net, device="cpu", tile=448, tile_overlap=192).interpolate([(a, b)])
        Engine(net, device="cpu", tile=(512, 192), tile_overlap=64).interpolate([(a, b)])   # 1.5x: no warning
    assert caplog.text.count("WARNING") == 1, caplog.text
    assert "tiles of 448x448 with tile_overlap 192 run 7.0x the work of whole 1024x192 frames" in caplog.text
    assert "use tile >= 1344" in caplog.text


@pytest.mark.parametrize("kind", ["cuda", "cpu"])
@pytest.mark.parametrize("ov", [0, 16])
def test_oom_falls_back_to_tiles(kind, ov, caplog):
    """Halved tiles, the overlap lowered to keep them within 2x the work: with tile_overlap
    0 a 128x128 frame goes to 64x64 tiles; with 16 (rounded up to 64) a 1024x192 frame to
    512x192 tiles, its height kept whole."""
    net = tiny_model()
    w, h, tile = (120, 70, (64, 64)) if ov == 0 else (1000, 150, (512, 192))
    a, b = texture_pair(w, h)
    ref = Engine(net, device="cpu", tile=tile, tile_overlap=ov).interpolate([(a, b)])[0]
    eng = Engine(net, device="cpu", tile_overlap=ov)
    _oom_above(eng.model, 3 * tile[0] * tile[1], kind)
    with caplog.at_level(logging.WARNING, logger="vsdsfn"):
        out = eng.interpolate([(a, b)])[0]
    assert eng._auto_tile == tile and eng.tile_overlap == ov
    np.testing.assert_array_equal(out, ref)
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1
    assert eng.stats["oom_retries"] >= 1 and eng.stats["tiles"] > 0


def test_oom_fallback_is_bounded_and_lowers_the_overlap():
    """From batch 8 and whole 1920x1088 frames with the default overlap, every retry runs
    at most 2x the work of whole frames (never 448-pixel tiles with 192 of overlap) and the
    fallback ends after a few steps, with an error that names the configuration and keeps
    the whole inner message."""
    from vsdsfn.tiling import overhead

    net = tiny_model()
    eng = Engine(net, device="cpu", batch_size=8)
    seen = []

    def forward(l0, l1, hr0, hr1, **kw):
        seen.append((eng._auto_batch, eng._tile_now(), eng.tile_overlap))
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory:\nyou tried to allocate 99 bytes (line 2)")

    eng.model.forward = forward
    frames = [np.zeros((1080, 1920, 3), np.float32)] * 9
    with pytest.raises(OutOfMemory) as err:
        eng.interpolate(list(zip(frames, frames[1:])))
    msg = str(err.value)
    assert "\n" not in msg and "you tried to allocate 99 bytes (line 2)" in msg, msg
    assert "even with batch 1 and tiles of 448x448 (tile_overlap 64), the smallest tiling within 2x" in msg, msg
    tiles = [(t, ov) for _, t, ov in seen if t is not None]
    assert tiles and all(overhead(min(t), ov, eng.multiple) <= 2 for t, ov in tiles), tiles
    assert len(seen) <= 4 + 3, seen   # batches 8, 4, 2, 1; then tiles 960x512, 448x448


def test_oom_at_smallest_tile_is_a_clear_error():
    """A frame (padded 256x128) that fits no tiling within 2x the work with tile_overlap 16
    (rounded up to 64): the error says so with the numbers; without the fallback the
    error itself comes through."""
    net = tiny_model()
    a, b = texture_pair(200, 100)
    eng = Engine(net, device="cpu", tile_overlap=16, batch_size=2)
    _oom_above(eng.model, 0)
    with pytest.raises(OutOfMemory, match=r"out of memory on cpu for DSFN of 256x128 frames even with batch 1 "
                                          r"and whole frames, the smallest tiling within 2x the work"):
        eng.interpolate([(a, b), (b, a)])
    off = Engine(net, device="cpu", oom_fallback=False)
    _oom_above(off.model, 0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        off.interpolate([(a, b)])


def test_other_errors_are_not_retried():
    net = tiny_model()
    eng = Engine(net, device="cpu")

    def broken(*args, **kw):
        raise RuntimeError("shape mismatch somewhere")

    eng.model.forward = broken
    a, b = texture_pair(40, 24)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        eng.interpolate([(a, b)])
    assert eng.stats["oom_retries"] == 0


def test_oom_in_spatial_tiles_it():
    """M_S tiles are at least 192 (16 px of context, cut at multiples of 64)."""
    net = tiny_model()
    a, _ = texture_pair(400, 150)
    ref = Engine(net, device="cpu").spatial([a])[0]
    eng = Engine(net, device="cpu", tile_overlap=0)
    real = eng.model.spatial.forward

    def forward(x):
        if x.shape[-1] * x.shape[-2] > 192 * 192:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return real(x)

    eng.model.spatial.forward = forward
    np.testing.assert_allclose(eng.spatial([a])[0], ref, atol=1e-6)
    assert eng._auto_tile is not None
