"""Shared fixtures: a tiny random DSFN saved as a weights file, synthetic moving clips, a
tiny training data set and the training runs made on it."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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
                          spatial_args={"channels": 8, "layers": 2, "align": 4, "fuse_layers": 1})


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


@pytest.fixture(scope="session", params=[1, 2], ids=["radius1", "radius2"])
def tiny_multiframe_any_radius(request, tmp_path_factory) -> Path:
    """Tiny multi-frame weights with one and with two neighbours on each side."""
    config = replace(TINY_MULTIFRAME, spatial_args={**TINY_MULTIFRAME.spatial_args, "radius": request.param})
    return save_model(tiny_model(config=config), tmp_path_factory.mktemp("weights") / f"tiny-mf{request.param}.safetensors")


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


# ----------------------------------------------------------------------------- training data
def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour texture (uint8, size x size x 3) with some edges."""
    small = rng.random((size // 8, size // 8, 3)) * 255
    img = np.asarray(Image.fromarray(small.astype(np.uint8)).resize((size, size), Image.BICUBIC)).astype(np.float32)
    y, x = np.mgrid[0:size, 0:size]
    img[(x // 12 + y // 12) % 5 == 0] *= 0.5  # blocky edges
    return img.clip(0, 255).astype(np.uint8)


def moving_frames(rng: np.random.Generator, n: int, size: int = 64, step=(2, 1)) -> list[np.ndarray]:
    """n frames of a texture window translating by ``step`` pixels per frame."""
    tex = texture(rng, size + n * max(step) + 8)
    return [tex[4 + k * step[1]: 4 + k * step[1] + size, 4 + k * step[0]: 4 + k * step[0] + size] for k in range(n)]


def save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """root/vimeo (triplet layout, 4 train + 2 test), root/images (4 stills),
    root/frames/seq (6 frames)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    names = [f"00001/{k:04d}" for k in range(1, 7)]
    for k, name in enumerate(names):
        for i, f in enumerate(moving_frames(rng, 3, step=(1 + k % 3, k % 2))):
            save(f, root / "vimeo" / "sequences" / name / f"im{i + 1}.png")
    (root / "vimeo" / "tri_trainlist.txt").write_text("\n".join(names[:4]) + "\n")
    (root / "vimeo" / "tri_testlist.txt").write_text("\n".join(names[4:]) + "\n")
    for k in range(4):
        save(texture(rng, 80), root / "images" / f"img{k}.png")
    for i, f in enumerate(moving_frames(rng, 6, step=(2, 1))):
        save(f, root / "frames" / "seq" / f"{i:03d}.png")
    return root


def tiny_sets(extra=()) -> list[str]:
    """``--set`` values of a tiny model and tiny batches (``extra``: (key, value) pairs)."""
    sets = {
        "model.spatial_args": "{channels=8, layers=2}",
        "model.temporal_args": "{widths=[8, 8, 8, 8], refine=true, large_motion=true}",
        "model.fusion_widths": "[4, 4, 4, 4, 4]",
        "model.refine_channels": "4",
        "model.refine_blocks": "1",
        "data.vimeo": '"vimeo"',
        "data.sr_images": '["images"]',
        "data.sr_val": '["images"]',
        "data.val_crop": "32",
        "data.val_max": "2",
        "data.synthetic_max_shift": "4.0",
        "train.batch": "2",
        "train.crop": "32",
        "stages.spatial.crop": "32",
        "train.val_every": "2",
        "train.ckpt_every": "2",
        "train.log_every": "1",
        "train.threads": "1",
        "train.lr": "1e-3",
    }
    return [f"{k}={v}" for k, v in [*sets.items(), *extra]]


def tiny_args(root: Path, extra=()) -> list[str]:
    # on the CPU also where CUDA exists: the tests compare resumed runs bit for bit, and
    # CUDA's backward kernels are not bitwise deterministic (seen on an H100)
    args = ["--data-root", str(root), "--device", "cpu"]
    for kv in tiny_sets(extra):
        args += ["--set", kv]
    return args


def run_stage(root: Path, stage: str, out: Path, iters: int = 3, extra=(), more=()) -> dict:
    """Train ``stage`` of the tiny model on the :func:`data` set for ``iters`` steps into ``out``;
    its last checkpoint."""
    from training import train as tr

    tr.main([*tiny_args(root, extra), "--stage", stage, "--out", str(out), "--iters", str(iters), *more])
    return tr.load_checkpoint(out / "last.pt")
