"""VapourSynth glue: ``vsdsfn.upscale(clip)`` raises the frame rate and doubles the size.

:class:`vsdsfn.schedule.Schedule` maps each output frame to a source frame and timestep;
:mod:`vsdsfn.engine` does all tensor work; this module maps frames and props.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import vapoursynth as vs

from . import options
from .colour import BT601, BT709, guess_matrix
from .engine import Engine, scene_score, select_device
from .schedule import Schedule
from .weights import WeightsError, load_model

__all__ = ["upscale", "scene_cut", "planes", "OPTIONS"]

log = logging.getLogger("vsdsfn")

#: upscale's options (besides the clip): the names of :data:`vsdsfn.options.OPTIONS`
OPTIONS = options.NAMES

_PROP_INTERP = "DSFNInterpolated"
_PROP_T = "DSFNTimestep"
_PROP_SCORE = "DSFNSceneScore"


def _err(msg: str) -> vs.Error:
    return vs.Error("upscale: " + msg)


def _conversion_hint(clip: vs.VideoNode) -> str:
    fmt = clip.format
    if fmt.color_family == vs.YUV:
        matrix = {BT709: "709", BT601: "170m"}[guess_matrix(clip.width, clip.height)]
        return (f'clip = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="{matrix}")  '
                f"(use your clip's matrix; convert back at the end with "
                f'core.resize.Bicubic(clip, format=vs.YUV420P10, matrix_s="{matrix}"))')
    return "clip = core.resize.Point(clip, format=vs.RGBS)"


def _check_clip(clip) -> None:
    if not isinstance(clip, vs.VideoNode):
        raise _err(f"expected a VideoNode (a video clip), got {type(clip).__name__}; "
                   "pass e.g. core.bs.VideoSource(...) converted to RGBS")
    fmt = clip.format
    if fmt is None or fmt.id == 0 or fmt.color_family == vs.UNDEFINED:
        raise _err("the clip has a variable format; make it constant, e.g. "
                   "clip = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s=\"709\") "
                   "(for YUV sources) or core.resize.Point(clip, format=vs.RGBS) (RGB/GRAY)")
    if clip.width == 0 or clip.height == 0:
        raise _err("the clip has a variable frame size; make it constant, e.g. "
                   "clip = core.resize.Bicubic(clip, width=W, height=H, format=vs.RGBS)")
    if fmt.id not in (vs.RGBS, vs.RGBH):
        kind = {vs.YUV: "YUV", vs.GRAY: "GRAY", vs.RGB: "integer RGB"}.get(fmt.color_family, "non-RGB")
        raise _err(f"input must be RGBS or RGBH (float RGB), not {fmt.name} ({kind}); convert first: "
                   + _conversion_hint(clip))
    if clip.num_frames < 1:
        raise _err("the clip has no frames; give it at least one frame")


@dataclass
class _Group:
    """The computed output of one work group (source frames g*B .. g*B + count - 1)."""

    evens: list[np.ndarray]                        # M_S of each source frame
    mids: dict[tuple[int, Fraction], np.ndarray]   # (j, t) -> the frame at t after source j
    cut: list[bool]                                # no interpolation after source j
    score: list[float | None]                      # the detector's score after source j
    cut_before: bool = False                       # a cut between the group's first source and the one before
    delivered: set[int] = field(default_factory=set)


def scene_cut(a: vs.VideoFrame, b: vs.VideoFrame, pa: np.ndarray | None, pb: np.ndarray | None,
              threshold: float | None) -> tuple[bool, float | None]:
    """Whether ``upscale`` sees a scene cut between consecutive source frames ``a`` and
    ``b``: by their props (``_SceneChangeNext`` on ``a``, ``_SceneChangePrev`` on ``b``),
    or, where a ``threshold`` is given (``scene_detect``), by the detector's score on their
    planar RGB arrays ``pa``, ``pb`` above it; and that score (None without a threshold)."""
    c = bool(a.props.get("_SceneChangeNext", 0)) or bool(b.props.get("_SceneChangePrev", 0))
    sc = scene_score(pa, pb, "chw") if threshold is not None else None
    return c or (sc is not None and sc > threshold), sc


def planes(frame: vs.VideoFrame) -> np.ndarray:
    """An RGB frame's planes as one (3, H, W) array, as ``upscale`` reads them."""
    return np.stack([np.asarray(frame[p]) for p in range(3)])


class _Upscaler:
    """The frame callback of one ``upscale`` call: the engine, the schedule and a bounded
    cache of computed groups."""

    def __init__(self, clip: vs.VideoNode, engine: Engine, schedule: Schedule, output: str,
                 scene_detect: bool, scene_threshold: float, max_groups: int) -> None:
        self.n = clip.num_frames
        self.engine, self.schedule, self.output = engine, schedule, output
        self.scene_detect, self.scene_threshold = scene_detect, scene_threshold
        self.max_groups = max_groups
        self._lock = threading.Lock()
        self._groups: OrderedDict[int, _Group] = OrderedDict()
        self._pending: dict[int, threading.Event] = {}

    def _cut(self, a: vs.VideoFrame, b: vs.VideoFrame, pa: np.ndarray | None, pb: np.ndarray | None,
             where: int, log_it: bool = True) -> tuple[bool, float | None]:
        """:func:`scene_cut` between source frames ``where`` and ``where + 1``, logged."""
        c, sc = scene_cut(a, b, pa, pb, self.scene_threshold if self.scene_detect else None)
        if sc is not None and sc > self.scene_threshold and log_it:
            log.info("scene cut detected after source frame %d (score %.3f)", where, sc)
        return c, sc

    def _cuts(self, lo: int, srcs: list[vs.VideoFrame], frames: list[np.ndarray], group: range):
        """Per consecutive pair of the source frames from ``lo``: whether a scene cut lies
        between them, and the detector's score (detections logged for the ``group``'s)."""
        cut, score = [], []
        for j in range(len(srcs) - 1):
            c, sc = self._cut(srcs[j], srcs[j + 1], frames[j], frames[j + 1], lo + j, lo + j in group)
            cut.append(c)
            score.append(sc)
        return cut, score

    def _compute(self, g: int, f: list[vs.VideoFrame]) -> _Group:
        """Group g: f[1 + i] is source frame g*B + i - L clamped to the clip, i = 0..B + r + L,
        with r the multi-frame M_S's radius and L = max(r, 1): the group's source frames, the
        next one, and neighbours on both sides (the one before also tells a cut before the
        group)."""
        first, r = g * self.schedule.batch, self.engine.radius
        left = max(r, 1)
        count = min(self.schedule.batch, self.n - first)       # source frames of this group
        lo, hi = max(0, first - left), min(self.n, first + count + 1 + r)   # and their neighbours
        srcs = [f[1 + s - first + left] for s in range(lo, hi)]
        frames = [planes(s) for s in srcs]
        cuts, scores = self._cuts(lo, srcs, frames, range(first, first + count))
        # per source j of the group: no interpolation after it (a cut, or the last frame)
        cut = [first + j + 1 >= self.n or cuts[first + j - lo] for j in range(count)]
        score = [None if first + j + 1 >= self.n else scores[first + j - lo] for j in range(count)]
        requests = [(j, t) for j, t in self.schedule.timesteps(g) if not cut[j]]
        evens, mids = self.engine.upscale_group(frames, list(range(lo, hi)), count, requests, self.output,
                                                first=first - lo, links=[not c for c in cuts])
        return _Group(evens, dict(zip(requests, mids)), cut, score, first > 0 and cuts[first - 1 - lo])

    def _group(self, g: int, f) -> _Group:
        while True:
            with self._lock:
                hit = self._groups.get(g)
                if hit is not None:
                    self._groups.move_to_end(g)
                    return hit
                ev = self._pending.get(g)
                owner = ev is None
                if owner:
                    ev = self._pending[g] = threading.Event()
            if not owner:
                ev.wait()
                continue  # cached now, or the owner failed and we try ourselves
            try:
                res = self._compute(g, f)
                with self._lock:
                    self._groups[g] = res
                    while len(self._groups) > self.max_groups:
                        self._groups.popitem(last=False)
                return res
            finally:
                with self._lock:
                    self._pending.pop(g, None)
                ev.set()

    def _delivered(self, g: int, n: int, res: _Group) -> None:
        """Drop a group from the cache once each of its output frames was delivered once
        (VapourSynth caches frames itself; a later re-request recomputes identically)."""
        with self._lock:
            res.delivered.add(n)
            if len(res.delivered) == len(self.schedule.outputs(g)) and self._groups.get(g) is res:
                del self._groups[g]

    def _props(self, out: vs.VideoFrame, src: vs.VideoFrame, n: int, k: int, t: Fraction, res: _Group,
               j: int) -> None:
        """Source frame k's props, durations scaled by 1 / factor, the cut moved to k's last
        output frame, and vsdsfn's own props."""
        props = out.props
        props.clear()
        props.update(src.props)
        num, den = src.props.get("_DurationNum"), src.props.get("_DurationDen")
        if num is not None and den:
            d = Fraction(int(num), int(den)) / self.schedule.factor
            props["_DurationNum"], props["_DurationDen"] = d.numerator, d.denominator
        last = n + 1 == self.schedule.first_output(k + 1)
        first = n == self.schedule.first_output(k)
        cut_before = k > 0 and (res.cut[j - 1] if j else res.cut_before)
        if "_SceneChangePrev" in props or (first and cut_before):
            props["_SceneChangePrev"] = int(first and cut_before)
        if "_SceneChangeNext" in props or (last and res.cut[j] and k + 1 < self.n):
            props["_SceneChangeNext"] = int(last and res.cut[j] and k + 1 < self.n)
        props[_PROP_INTERP] = int(bool(t) and not res.cut[j])
        props[_PROP_T] = float(t)
        if t and res.score[j] is not None:
            props[_PROP_SCORE] = float(res.score[j])

    def __call__(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        k, t = self.schedule.position(n)
        g = k // self.schedule.batch
        j = k - g * self.schedule.batch
        res = self._group(g, f)
        arr = res.mids.get((j, t))
        if arr is None:        # t = 0, a cut or the tail: the source frame (black in the masks view)
            arr = res.evens[j] if t == 0 or self.output != "masks" else np.zeros_like(res.evens[j])
        out = f[0].copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), arr[p], casting="unsafe")
        self._props(out, f[1 + j + max(self.engine.radius, 1)], n, k, t, res, j)
        self._delivered(g, n, res)
        return out


#: the largest frame-rate factor (each source pair gives at most this many frames), and
#: the largest numerator of the reduced factor (the length of the frame map's cycle)
MAX_FACTOR = 16
MAX_FACTOR_NUM = 10_000


def _factor(clip: vs.VideoNode, opts: dict, model) -> Fraction:
    """The frame-rate factor from factor_num/factor_den or fps_num/fps_den; checked
    against the clip and the weights."""
    fps_fix, factor_fix = options.spell_ratio("fps", 60000, 1001), options.spell_ratio("factor", 5, 2)
    if opts["fps_num"] is not None or opts["fps_den"] is not None:
        if (opts["factor_num"], opts["factor_den"]) != (2, 1):
            raise _err(f"give either the factor or the output frame rate, not both; e.g. {fps_fix} alone")
        if opts["fps_num"] is None:
            raise _err(f"fps_den needs fps_num; e.g. {fps_fix}")
        if not clip.fps_num:
            raise _err("an output frame rate needs a clip with a frame rate (this one is variable); give the "
                       f"factor instead, e.g. {factor_fix}")
        factor = Fraction(opts["fps_num"], opts["fps_den"] or 1) / clip.fps
    else:
        factor = Fraction(opts["factor_num"], opts["factor_den"])
    if not 1 < factor <= MAX_FACTOR or factor.numerator > MAX_FACTOR_NUM:
        raise _err(f"the frame rate must rise by a factor in (1, {MAX_FACTOR}] whose reduced numerator is at "
                   f"most {MAX_FACTOR_NUM}, not {factor} ({float(factor):.4g}); e.g. {factor_fix}")
    if factor != 2 and not model.config.time_input:
        raise _err(f"these weights were trained for the middle frame only (factor 2), not factor {factor}; use "
                   f"weights trained for any timestep, e.g. {options.spell('weights', None)}, or "
                   f"{options.spell_ratio('factor', 2, 1)}")
    return factor


def _source_clips(clip: vs.VideoNode, schedule: Schedule, radius: int = 0) -> list[vs.VideoNode]:
    """Clips at the output rate: frame n of clip j is source frame g*B + j - L, clamped to
    the clip, for n's group g and j = 0..B + radius + L, L = max(radius, 1): the group's
    source frames, the next one, ``radius`` neighbours after them for a multi-frame M_S, and
    L before the group (its neighbours; the one before also tells a cut before it)."""
    core, b, n, left = vs.core, schedule.batch, clip.num_frames, max(radius, 1)
    padded = clip[0] * left + clip + clip[-1] * (b + 1 + radius)
    groups = -(-n // b)
    out = []
    for j in range(b + 1 + radius + left):
        sel = padded[j:] if b == 1 else core.std.SelectEvery(padded[j:], cycle=b, offsets=[0], modify_duration=False)
        rep = core.std.Interleave([sel[:groups]] * b, modify_duration=False)[:n] if b > 1 else sel[:n]
        cycle, offsets = schedule.source_map()
        out.append(core.std.SelectEvery(rep + rep[-1] * cycle, cycle=cycle, offsets=offsets,
                                        modify_duration=False)[: schedule.length])
    return out


def upscale(
    clip: vs.VideoNode,
    *,
    factor_num: int = 2,
    factor_den: int = 1,
    fps_num: int | None = None,
    fps_den: int | None = None,
    weights: str | os.PathLike | None = None,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int = 1,
    scene_detect: bool = False,
    scene_threshold: float = 0.1,
    debug: str | None = None,
    num_threads: int | None = None,
    cache_size: int | None = None,
    tile: int | tuple[int, int] | None = None,
    tile_overlap: int | None = None,
    channels_last: bool | None = None,
    compile: bool = False,
    trt: bool = False,
    st_scale: float | None = None,
    ensemble: bool = False,
    **unknown,
) -> vs.VideoNode:
    """Raise the frame rate of an RGBS/RGBH clip by ``factor_num / factor_den`` (or to
    ``fps_num / fps_den``) and double its width and height with DSFN.

    Output frame n shows source position p = n * den / num: M_S(L_k) for k = floor(p)
    when t = p - k is 0, else the frame at t between L_k and L_{k+1} (M_S(L_k) at scene
    cuts and after the last source frame). The options: README's table, vsdsfn/options.py.

    >>> import vapoursynth as vs
    >>> clip = vs.core.std.BlankClip(format=vs.RGBS, width=64, height=48, length=4, fpsnum=24)
    >>> up = upscale(clip, factor_num=5, factor_den=2)
    >>> up.num_frames, up.width, up.height, up.fps
    (10, 128, 96, Fraction(60, 1))
    """
    if unknown:
        raise _err(options.unknown(unknown))
    _check_clip(clip)
    try:
        opts = options.check(locals())   # the parameters (locals() holds nothing else yet)
        dev = select_device(device or "auto")
        model = load_model(weights)
    except WeightsError as exc:
        raise _err(f"{exc}; for the shipped weights use {options.spell('weights', None)}") from None
    except ValueError as exc:
        raise _err(str(exc)) from None
    schedule = Schedule(clip.num_frames, _factor(clip, opts, model), opts["batch_size"])
    engine = _engine(clip, model, dev, opts)
    log.info("DSFN on %s (%s), batch %d, %dx%d -> %dx%d, %d -> %d frames", engine.device,
             str(engine.dtype).replace("torch.", ""), schedule.batch, clip.width, clip.height,
             2 * clip.width, 2 * clip.height, clip.num_frames, schedule.length)
    fps = clip.fps * schedule.factor if clip.fps_num else Fraction(0, 1)
    template = vs.core.std.BlankClip(clip, width=2 * clip.width, height=2 * clip.height, length=schedule.length,
                                     fpsnum=fps.numerator, fpsden=fps.denominator, keep=True)
    max_groups = opts["cache_size"] or max(4, 2 * vs.core.num_threads)
    state = _Upscaler(clip, engine, schedule, debug or "refined", scene_detect, opts["scene_threshold"], max_groups)
    return vs.core.std.ModifyFrame(template, [template] + _source_clips(clip, schedule, engine.radius), state)


def _engine(clip: vs.VideoNode, model, dev, opts: dict) -> Engine:
    b = opts["batch_size"]
    try:
        return Engine(model, device=dev, precision=opts["precision"], batch_size=b, layout="chw",
                      out_dtype=np.float16 if clip.format.id == vs.RGBH else np.float32,
                      num_threads=opts["num_threads"], spatial_cache=2 * b + 4, tile=opts["tile"],
                      tile_overlap=opts["tile_overlap"], channels_last=opts["channels_last"],
                      compile=opts["compile"], trt=opts["trt"], st_scale=opts["st_scale"], ensemble=opts["ensemble"])
    except ValueError as exc:
        raise _err(str(exc)) from None
