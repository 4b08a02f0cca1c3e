"""Augmentations as pure functions over lists of frames (any number of frames).

Every function takes a list of HxWxC numpy arrays and a ``numpy.random.Generator`` and
returns a new list; the same random decision applies to every frame of the list, so a
triplet stays a consistent piece of video.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> frames = [np.zeros((10, 12, 3), np.float32) for _ in range(3)]
>>> [f.shape for f in random_crop(frames, 8, rng)]
[(8, 8, 3), (8, 8, 3), (8, 8, 3)]
"""

from __future__ import annotations

import numpy as np

__all__ = ["random_crop", "random_flip", "random_rot90", "random_reverse", "augment", "center_crop"]


def random_crop(frames: list[np.ndarray], size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """The same random ``size`` x ``size`` window of every frame (frames smaller are padded)."""
    h, w = frames[0].shape[:2]
    if h < size or w < size:
        ph, pw = max(0, size - h), max(0, size - w)
        frames = [np.pad(f, ((0, ph), (0, pw), (0, 0)), mode="edge") for f in frames]
        h, w = frames[0].shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return [f[y : y + size, x : x + size] for f in frames]


def center_crop(frames: list[np.ndarray], size: int) -> list[np.ndarray]:
    """The central ``size`` x ``size`` window (deterministic, for validation)."""
    h, w = frames[0].shape[:2]
    y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return [f[y : y + size, x : x + size] for f in frames]


def random_flip(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Horizontal and vertical flips, each with probability 1/2."""
    if rng.random() < 0.5:
        frames = [f[:, ::-1] for f in frames]
    if rng.random() < 0.5:
        frames = [f[::-1] for f in frames]
    return frames


def random_rot90(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Rotation by a random multiple of 90 degrees."""
    k = int(rng.integers(0, 4))
    return [np.rot90(f, k) for f in frames] if k else frames


def random_reverse(frames: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Temporal reversal with probability 1/2 (the middle frame stays the middle)."""
    return frames[::-1] if rng.random() < 0.5 else frames


def augment(frames: list[np.ndarray], rng: np.random.Generator, *, flip: bool = True,
            rot90: bool = True, reverse: bool = True) -> list[np.ndarray]:
    """Apply the enabled augmentations; returns contiguous arrays."""
    if flip:
        frames = random_flip(frames, rng)
    if rot90:
        frames = random_rot90(frames, rng)
    if reverse:
        frames = random_reverse(frames, rng)
    return [np.ascontiguousarray(f) for f in frames]
