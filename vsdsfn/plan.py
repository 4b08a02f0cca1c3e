"""A job's output frames cut into chunks, and what N workers make of it (pure Python).

Every output frame is a function of its index alone (the frame contract), so any
contiguous range of output frames can be rendered anywhere and the ranges joined back.

>>> [(c.start, c.stop) for c in chunks(20, 7)]
[(0, 7), (7, 14), (14, 20)]
>>> [(c.start, c.stop) for c in chunks(20, 7, prefer=[6, 15])]   # cuts moved to preferred frames
[(0, 6), (6, 15), (15, 20)]
>>> [(c.start, c.stop) for c in chunks(20, 7, prefer=[6, 15], scenes=[8])]   # a scene change first
[(0, 8), (8, 15), (15, 20)]
>>> round(estimate(frames=1000, workers=2, per_frame_s=0.1, per_chunk_s=1.0, chunk=100, start_s=5.0), 6)
60.0
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Chunk", "DEFAULT_CHUNK", "RAW_CHUNK_BYTES", "MAX_CHUNK", "chunks", "default_size", "estimate"]

#: output frames per chunk by default: long enough that a chunk's fixed costs (a task,
#: one group computed twice at the cut, a fresh encoder) stay small, short enough to
#: spread a short clip over many workers and to lose little to a crash
DEFAULT_CHUNK = 300
#: the most raw (y4m) bytes a chunk holds by default: a chunk travels through the
#: cluster's object store in one piece
RAW_CHUNK_BYTES = 256 << 20
#: the largest chunk length accepted (``--chunk``)
MAX_CHUNK = 100_000


@dataclass(frozen=True)
class Chunk:
    """Output frames ``start`` .. ``stop - 1``, the ``index``-th chunk of the job."""

    index: int
    start: int
    stop: int

    @property
    def frames(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"chunk {self.index} (output frames {self.start}-{self.stop - 1})"


def default_size(frame_bytes: int, raw: bool) -> int:
    """The default chunk length: :data:`DEFAULT_CHUNK`, fewer frames where raw (y4m)
    frames would make a chunk larger than :data:`RAW_CHUNK_BYTES`.

    >>> default_size(3840 * 2160 * 3, raw=True), default_size(3840 * 2160 * 3, raw=False)
    (10, 300)
    """
    if not raw:
        return DEFAULT_CHUNK
    return max(1, min(DEFAULT_CHUNK, RAW_CHUNK_BYTES // max(1, frame_bytes)))


def chunks(length: int, size: int, prefer: Sequence[int] = (), scenes: Sequence[int] = ()) -> list[Chunk]:
    """Cut ``length`` output frames into chunks of about ``size`` frames.

    Each cut is at a multiple of ``size`` unless a frame of ``scenes`` (the first output
    frames of new scenes: the chunk's forced keyframe falls where the encoder wants one),
    or else of ``prefer`` (the first output frame of a work group: nothing computed
    twice), lies within a quarter of ``size`` of it: then the cut moves to the nearest
    such frame. No chunk is empty.
    """
    if length < 1 or size < 1:
        raise ValueError(f"chunks need length >= 1 and size >= 1, not {length} and {size}")
    scenes, prefer = sorted(scenes), sorted(prefer)
    reach = size // 4
    cuts = [0]
    for nominal in range(size, length, size):
        cut = _nearest(scenes, nominal, reach)
        if cut is None:
            cut = _nearest(prefer, nominal, reach)
        cut = nominal if cut is None else cut
        if cuts[-1] < cut < length:
            cuts.append(cut)
    cuts.append(length)
    return [Chunk(i, a, b) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]


def _nearest(frames: Sequence[int], nominal: int, reach: int) -> int | None:
    """The frame of the sorted ``frames`` nearest to ``nominal`` within ``reach`` (ties:
    the earlier), else None."""
    i = bisect.bisect_left(frames, nominal)
    near = [p for p in frames[max(0, i - 1): i + 1] if abs(p - nominal) <= reach]
    return min(near, key=lambda p: (abs(p - nominal), p)) if near else None


def estimate(frames: int, workers: int, per_frame_s: float, per_chunk_s: float, chunk: int,
             start_s: float = 0.0, join_s: float = 0.0) -> float:
    """Seconds to render ``frames`` output frames on ``workers`` equal workers in chunks
    of ``chunk`` frames: ``start_s`` (cluster start, weights loaded), then the chunks
    handed out as workers become free, each costing ``per_chunk_s`` plus ``per_frame_s``
    per frame, then ``join_s``.

    The busiest worker renders ``ceil(chunks / workers)`` chunks; a short last chunk is
    counted as a full one (an upper bound by less than one chunk).
    """
    n_chunks = math.ceil(frames / chunk)
    rounds = math.ceil(n_chunks / workers)
    return start_s + rounds * (per_chunk_s + chunk * per_frame_s) + join_s
