"""mvtools ``FlowFPS``, the classic interpolator of the evaluation's and the benchmark's
baselines: :func:`flowfps` doubles a clip's frame rate; :func:`clip_from_frames` makes a
clip of numpy frames.

mvtools takes integer GRAY/YUV clips only, so frames travel RGB -> YUV444P16 (BT.709,
limited range) -> mvtools -> RGB; the round trip loses well under 0.001 dB. VapourSynth is
imported on first use only.

>>> import numpy as np
>>> clip = clip_from_frames([np.full((96, 128, 3), v, np.float32) for v in (0.2, 0.4, 0.6)], fps=(24, 1))
>>> out = flowfps(clip)
>>> out.num_frames, out.format.name, out.fps
(6, 'RGBS', Fraction(48, 1))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import vapoursynth as vs

__all__ = ["MVSettings", "available", "clip_from_frames", "flowfps"]


@dataclass(frozen=True)
class MVSettings:
    """mvtools parameters (``blksize`` is halved for frames narrower than 6 blocks).

    The defaults are the classic pipeline's (the evaluation's baselines); see
    :data:`training.mvbaseline.QUARTER_PEL` for the evaluation's quarter-pel ones.
    """

    pel: int = 2
    sharp: int = 2
    blksize: int = 16
    overlap: int = 8
    search: int = 3
    searchparam: int = 2
    truemotion: bool = True
    mask: int = 2       # FlowFPS occlusion mask mode (the default)
    ml: float = 100.0   # FlowFPS mask scale (the default)


def _vs():
    import vapoursynth

    return vapoursynth


def clip_from_frames(frames: Sequence[np.ndarray], fps: tuple[int, int] = (1, 1),
                     fmt: int | None = None) -> vs.VideoNode:
    """A clip (RGBS, or the RGB format ``fmt``) whose frame ``n`` is ``frames[n]``, an
    (H, W, 3) array; frames are copied in when VapourSynth asks for them, so views of one
    larger array cost no memory. ``fps`` (0, 1) makes a variable-frame-rate clip."""
    vs = _vs()
    h, w = np.shape(frames[0])[:2] if len(frames) else (0, 0)
    if not h or any(np.shape(f) != (h, w, 3) for f in frames):
        raise ValueError("clip_from_frames: need one or more (H, W, 3) frames of one size")
    blank = vs.core.std.BlankClip(format=fmt or vs.RGBS, width=w, height=h, length=len(frames),
                                  fpsnum=fps[0], fpsden=fps[1], keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), frames[n][:, :, p], casting="unsafe")
        return out

    return vs.core.std.ModifyFrame(blank, blank, fill)


def available() -> bool:
    """Whether vapoursynth-mvtools is loaded (``core.mv``)."""
    return hasattr(_vs().core, "mv")


def _to_yuv(clip: vs.VideoNode) -> vs.VideoNode:
    vs = _vs()
    if not available():
        raise vs.Error("flowfps: vapoursynth-mvtools is not loaded; install it with "
                       "'pip install vapoursynth-mvtools'")
    yuv = vs.core.resize.Point(clip, format=vs.YUV444P16, matrix_s="709", range_s="limited")
    return yuv if yuv.fps.numerator else vs.core.std.AssumeFPS(yuv, fpsnum=1, fpsden=1)


def _double(yuv: vs.VideoNode, fmt: int, s: MVSettings) -> vs.VideoNode:
    """FlowFPS to twice ``yuv``'s frame rate, back in format ``fmt``."""
    core = _vs().core
    # mvtools (R81-era, v29) crashes (segfault) on frames only a few blocks wide, e.g.
    # 64 px with 16-px blocks: use smaller blocks for narrow frames, refuse tiny ones
    blk = s.blksize
    while blk > 4 and yuv.width < 6 * blk:
        blk //= 2
    if yuv.width < 6 * blk:
        raise ValueError(f"mvtools: frames {yuv.width} px wide are too narrow (need >= {6 * blk})")
    ovl = min(s.overlap, blk // 2)
    sup = core.mv.Super(yuv, pel=s.pel, sharp=s.sharp)
    common = dict(blksize=blk, overlap=ovl, search=s.search, searchparam=s.searchparam,
                  truemotion=int(s.truemotion))
    bv = core.mv.Analyse(sup, isb=True, **common)
    fv = core.mv.Analyse(sup, isb=False, **common)
    out = core.mv.FlowFPS(yuv, sup, bv, fv, num=2 * yuv.fps.numerator, den=yuv.fps.denominator,
                          mask=s.mask, ml=s.ml)
    return core.resize.Point(out, format=fmt, matrix_in_s="709", range_in_s="limited")


def flowfps(clip: vs.VideoNode, settings: MVSettings = MVSettings()) -> vs.VideoNode:
    """Double an RGB clip's frame rate with mvtools FlowFPS: output frame 2n is source frame
    n, frame 2n+1 lies half-way between n and n+1 (the last repeats n). The clip's format
    is kept; a clip without a frame rate is treated as 1 fps."""
    return _double(_to_yuv(clip), clip.format.id, settings)
