"""What the benchmarks share: the moving texture they feed in, and how they read peak memory."""

from __future__ import annotations

import resource

import numpy as np

__all__ = ["peak_rss_mb", "texture_frames"]


def texture_frames(w: int, h: int, n: int) -> list[np.ndarray]:
    """``n`` (H, W, 3) float32 frames in [0, 1] of smooth noise in 8x8 blocks (trackable
    motion) panning diagonally by (3, 5) pixels a frame: views into one texture (no memory
    per frame)."""
    rng = np.random.default_rng(0)
    big = np.kron(rng.random((h // 8 + 8 + n, w // 8 + 8 + n, 3), dtype=np.float32), np.ones((8, 8, 1), np.float32))
    return [big[3 * i:3 * i + h, 5 * i:5 * i + w] for i in range(n)]


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): Linux's ``VmHWM``, which starts afresh in a
    new program (``ru_maxrss``, the fallback elsewhere, keeps the peak of the parent that
    started it, e.g. one that had loaded PyTorch)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
