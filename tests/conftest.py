"""Shared fixtures: a tiny random DSFN saved as a weights file, synthetic moving clips."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from training.flowfps import clip_from_frames
from vsdsfn.nets import DSFN, DSFNConfig
from vsdsfn.weights import save_model

ROOT = Path(__file__).resolve().parent.parent

torch.set_num_threads(min(2, os.cpu_count() or 1))

@pytest.fixture(autouse=True)
def _no_gpu_unless_marked(request, monkeypatch):
    """Tests compare ``upscale()`` (device "auto") with CPU references: outside tests
    marked ``cuda`` (tests/test_cuda.py), CUDA is hidden so that "auto" means the CPU
    on a GPU machine too (there, "auto" would otherwise pick the GPU and its rounding)."""
    if request.node.get_closest_marker("cuda") is None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(autouse=True)
def _fp32_unless_asked(monkeypatch):
    """``precision="auto"`` means fp32 in tests, whatever the CPU: their references are
    fp32. Tests of the bf16 choice set the detection hook themselves."""
    from vsdsfn import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)


@pytest.fixture
def one_thread():
    """One torch thread while a test runs (the trainer sets the count process-wide)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY = DSFNConfig(
    spatial_args={"channels": 8, "layers": 2},
    temporal_args={"widths": [8, 8, 8, 8], "refine": True, "large_motion": True},
    fusion_widths=(4, 4, 4, 4, 4),
    refine_channels=4,
    refine_blocks=1,
)


#: :data:`TINY` with a multi-frame M_S (one neighbour on each side)
TINY_MULTIFRAME = replace(TINY, spatial="multiframe",
                          spatial_args={"channels": 8, "layers": 2, "features": 8, "fuse_layers": 1})


def tiny_model(seed: int = 0, config: DSFNConfig = TINY) -> DSFN:
    """A tiny DSFN with every weight random (no zero-initialised heads), so all streams matter."""
    torch.manual_seed(seed)
    net = DSFN(config)
    with torch.no_grad():
        for p in net.parameters():
            if not p.abs().sum():
                p.normal_(0.0, 0.05)
    return net.eval()


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    return save_model(tiny_model(), tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="session")
def tiny_multiframe_weights(tmp_path_factory) -> Path:
    return save_model(tiny_model(config=TINY_MULTIFRAME), tmp_path_factory.mktemp("weights") / "tiny-mf.safetensors")


def pattern(n: int, w: int, h: int, shift: float = 1.5, kind: int = 0) -> np.ndarray:
    """A smooth colour pattern moving right/down with time n: (3, H, W) float32 in [0, 1]."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    c = np.arange(3, dtype=np.float32)[:, None, None]
    if kind == 0:
        img = 0.5 + 0.35 * np.sin((x[None] - shift * n) * 0.35 + c) * np.cos((y[None] - 0.5 * shift * n) * 0.25 + 0.5 * c)
    else:  # a different "scene": dark, diagonal stripes
        img = 0.15 + 0.1 * np.sin((x[None] + y[None]) * 0.9 + 2 * c + 0.2 * n)
    return np.clip(img, 0, 1).astype(np.float32)


def make_clip(n=5, w=24, h=20, fmt=None, fps=(30000, 1001), frames=None, props=None):
    """A clip whose frame i is ``frames(i)`` (a (3, H, W) array; default: moving pattern)
    with props ``props(i)``.

    Every frame also gets prop ``Src`` = i.
    """
    import vapoursynth as vs

    get = frames or (lambda i: pattern(i, w, h))
    clip = clip_from_frames([get(i).transpose(1, 2, 0) for i in range(n)], fps, fmt)

    def tag(n, f):
        out = f.copy()
        out.props["Src"] = n
        out.props.update(props(n) if props else {})
        return out

    return vs.core.std.ModifyFrame(clip, clip, tag)


def default_signals() -> None:
    """``preexec_fn`` of a child that a test signals: the default dispositions, as in a
    foreground terminal (a run in the background or under nohup ignores SIGINT/SIGHUP,
    and children inherit that)."""
    import signal

    for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(s, signal.SIG_DFL)


def planes(frame) -> np.ndarray:
    """A VapourSynth frame as a (3, H, W) float32 array."""
    return np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)]).astype(np.float32)


def all_frames(clip) -> list[np.ndarray]:
    return [planes(clip.get_frame(i)) for i in range(clip.num_frames)]
