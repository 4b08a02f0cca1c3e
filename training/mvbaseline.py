"""The classic VapourSynth baselines of the evaluation: Spline36 resizing and mvtools
``FlowFPS`` frame-rate doubling, in both orders, on numpy frames (clips made by
:func:`training.flowfps.clip_from_frames`).

FlowFPS is :func:`training.flowfps.flowfps` (RGB -> YUV444P16 -> mvtools -> RGB);
resizing is done in float RGB.

>>> import numpy as np
>>> from training.flowfps import clip_from_frames
>>> a = np.random.default_rng(0).random((48, 64, 3), dtype=np.float32)
>>> b = frames_from_clip(clip_from_frames([a, a]))
>>> len(b), b[0].shape, bool(np.abs(b[1] - a).max() == 0)
(2, (48, 64, 3), True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .flowfps import MVSettings, clip_from_frames, flowfps

if TYPE_CHECKING:
    import vapoursynth as vs

__all__ = ["QUARTER_PEL", "frames_from_clip", "flowfps_middle",
           "spline36_then_flowfps", "flowfps_then_spline36", "spline36_2x", "flowfps_of"]

#: quarter-pel FlowFPS settings with 16- and 8-pixel blocks: the evaluation's "Spline36 ->
#: FlowFPS (quarter-pel)" row, the better mvtools baseline, averages their middle frames
QUARTER_PEL: tuple[MVSettings, ...] = (MVSettings(pel=4, searchparam=4), MVSettings(pel=4, blksize=8, overlap=4))


def _vs():
    import vapoursynth

    return vapoursynth, vapoursynth.core


def frames_from_clip(clip: vs.VideoNode) -> list[np.ndarray]:
    """Every frame of an RGB clip (converted to RGBS if needed) as (H, W, 3) float32 arrays."""
    vs, core = _vs()
    if clip.format.id != vs.RGBS:
        clip = core.resize.Point(clip, format=vs.RGBS)
    return [np.stack([np.asarray(f[p]) for p in range(3)], -1).copy() for f in clip.frames()]


def spline36_2x(clip: vs.VideoNode) -> vs.VideoNode:
    """2x Spline36 resize (centre-aligned, like PyTorch's ``align_corners=False``)."""
    _, core = _vs()
    return core.resize.Spline36(clip, clip.width * 2, clip.height * 2)


def flowfps_middle(clip: vs.VideoNode, settings: MVSettings = MVSettings()) -> vs.VideoNode:
    """The frame FlowFPS interpolates half-way between the two frames of an RGBS clip
    (returned as a one-frame RGBS clip)."""
    return flowfps(clip, settings)[1]


def spline36_then_flowfps(l0: np.ndarray, l1: np.ndarray, settings: MVSettings = MVSettings()) -> np.ndarray:
    """"Spline36 -> FlowFPS": upscale both low-res frames, then interpolate the middle."""
    clip = spline36_2x(clip_from_frames([l0, l1]))
    return np.clip(frames_from_clip(flowfps_middle(clip, settings))[0], 0, 1)


def flowfps_of(h0: np.ndarray, h1: np.ndarray, settings: MVSettings = MVSettings()) -> np.ndarray:
    """FlowFPS's middle frame of two given frames, e.g. of DSFN's M_S(L-), M_S(L+): mvtools
    as an off-the-shelf M_T on our M_S's output (the evaluation's "M_S → FlowFPS" row)."""
    return np.clip(frames_from_clip(flowfps_middle(clip_from_frames([h0, h1]), settings))[0], 0, 1)


def flowfps_then_spline36(l0: np.ndarray, l1: np.ndarray, settings: MVSettings = MVSettings()) -> np.ndarray:
    """"FlowFPS -> Spline36": interpolate the low-res middle frame, then upscale it."""
    mid = flowfps_middle(clip_from_frames([l0, l1]), settings)
    return np.clip(frames_from_clip(spline36_2x(mid))[0], 0, 1)
