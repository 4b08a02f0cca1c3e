"""VapourSynth glue: ``vsdsfn.upscale(clip)`` doubles frame rate, width and height.

Frame-numbering contract (N source frames L_0 .. L_{N-1}, 2N output frames):

* frame ``2n``   = M_S(L_n), the spatially upscaled source frame;
* frame ``2n+1`` = the DSFN frame between L_n and L_{n+1}; where there is a scene cut
  after n (``_SceneChangeNext`` on n, ``_SceneChangePrev`` on n+1, or the built-in
  detector) it is M_S(L_n) instead; the last one (2N-1) repeats frame 2N-2.

All tensor work lives in :mod:`vsdsfn.engine`; this module maps frames and props.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from fractions import Fraction

import numpy as np
import vapoursynth as vs

from . import options
from .engine import DEFAULT_TILE_OVERLAP, Engine, scene_score, select_device
from .weights import WeightsError, load_model

__all__ = ["upscale", "OPTIONS"]

log = logging.getLogger("vsdsfn")
if not log.handlers:  # stderr only: stdout may carry video (vspipe)
    _h = logging.StreamHandler()  # defaults to sys.stderr
    _h.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    log.addHandler(_h)
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)
    log.propagate = False

#: upscale's options (besides the clip): the names of :data:`vsdsfn.options.OPTIONS`
OPTIONS = options.NAMES

_PROP_INTERP = "DSFNInterpolated"
_PROP_SCORE = "DSFNSceneScore"


def _err(msg: str) -> vs.Error:
    return vs.Error("upscale: " + msg)


def _conversion_hint(clip: vs.VideoNode) -> str:
    fmt = clip.format
    if fmt.color_family == vs.YUV:
        matrix = "709" if clip.width >= 1280 or clip.height >= 720 else "170m"
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


class _Upscaler:
    """State of one ``upscale`` call: the engine and a bounded cache of batch groups."""

    def __init__(self, clip: vs.VideoNode, engine: Engine, batch_size: int, output: str,
                 scene_detect: bool, scene_threshold: float, max_groups: int) -> None:
        self.n = clip.num_frames
        self.engine = engine
        self.b = batch_size
        self.output = output
        self.scene_detect = scene_detect
        self.scene_threshold = scene_threshold
        self.max_groups = max_groups
        self._lock = threading.Lock()
        self._groups: OrderedDict[int, tuple] = OrderedDict()
        self._pending: dict[int, threading.Event] = {}

    def _compute(self, g: int, f: list[vs.VideoFrame]) -> tuple:
        """Output frames of group g: f[1 + j] is source frame min(g*B + j, N-1), j = 0..B."""
        first = g * self.b
        count = min(self.b, self.n - first)            # pairs (= even frames) in this group
        have = min(self.b + 1, self.n - first)         # distinct source frames available
        srcs = [f[1 + j] for j in range(have)]
        frames = [np.stack([np.asarray(s[p]) for p in range(3)]) for s in srcs]
        interp, scores, cuts = [], [], []
        for j in range(count):
            n = first + j
            if n + 1 >= self.n:
                interp.append(False), scores.append(None), cuts.append(False)
                continue
            cut = bool(srcs[j].props.get("_SceneChangeNext", 0)) or bool(srcs[j + 1].props.get("_SceneChangePrev", 0))
            score = None
            if self.scene_detect:
                score = scene_score(frames[j], frames[j + 1], "chw")
                if score > self.scene_threshold:
                    cut = True
                    log.info("scene cut detected after source frame %d (score %.3f)", n, score)
            interp.append(not cut), scores.append(score), cuts.append(cut)
        evens, odds = self.engine.upscale_group(frames, list(range(first, first + have)), interp, self.output)
        return evens, odds, interp, scores, cuts, set()

    def _group(self, g: int, f) -> tuple:
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

    def _delivered(self, g: int, r: int, res: tuple) -> None:
        """Drop a group from the cache once each of its output frames was delivered once
        (VapourSynth caches frames itself; a later re-request recomputes identically)."""
        with self._lock:
            done = res[-1]
            done.add(r)
            if len(done) == 2 * len(res[2]) and self._groups.get(g) is res:
                del self._groups[g]

    def __call__(self, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        g, r = divmod(n, 2 * self.b)
        j, odd = divmod(r, 2)
        res = self._group(g, f)
        evens, odds, interp, scores, cuts, _ = res
        arr = odds[j] if odd else evens[j]
        src = f[1 + j]
        out = f[0].copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), arr[p], casting="unsafe")
        props = out.props
        props.clear()
        props.update(src.props)
        num, den = src.props.get("_DurationNum"), src.props.get("_DurationDen")
        if num is not None and den:
            half = Fraction(int(num), int(den)) / 2
            props["_DurationNum"], props["_DurationDen"] = half.numerator, half.denominator
        # the cut after source frame n now lies between output frames 2n+1 and 2n+2
        if odd:
            if "_SceneChangePrev" in props:
                props["_SceneChangePrev"] = 0
            if cuts[j]:
                props["_SceneChangeNext"] = 1
            props[_PROP_INTERP] = int(interp[j])
            if scores[j] is not None:
                props[_PROP_SCORE] = float(scores[j])
        else:
            if "_SceneChangeNext" in props:
                props["_SceneChangeNext"] = 0
            props[_PROP_INTERP] = 0
        self._delivered(g, r, res)
        return out


def upscale(
    clip: vs.VideoNode,
    *,
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
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    channels_last: bool | None = None,
    compile: bool = False,
    st_scale: float | None = None,
    ensemble: bool = False,
    **unknown,
) -> vs.VideoNode:
    """Double the frame rate, width and height of an RGBS/RGBH clip with DSFN.

    Output: same format, 2x width and height, 2N frames, fps doubled, each frame's
    duration halved and its source frame's props kept. Frame 2n = M_S(L_n); frame 2n+1 =
    the fused, refined frame between L_n and L_{n+1} (M_S(L_n) at scene cuts and for the
    last frame).

    weights: None/"default" (the shipped weights), or a .safetensors file from training/.
    device: "auto"/None (CUDA if available), "cpu", "cuda" or "cuda:N".
    precision: None/"auto" (bf16 on CPUs that compute it natively, fp16 on CUDA, fp32
        otherwise), "fp32", "fp16" (CUDA) or "bf16".
    batch_size: frame pairs per forward pass (output is the same for every value).
    scene_detect: also detect cuts (mean abs luma difference > scene_threshold, 0..1).
    debug: None, or "st" / "ts" / "fused" / "masks" to put that intermediate in the odd
        frames instead of the result (masks: R = M_S->T, G = M_T->S, B = 0).
    num_threads: torch CPU threads (process-wide). cache_size: batch groups kept.
    tile: None/0 (whole frames), or the longest tile side in input pixels, or (width,
        height): run the network on overlapping tiles to bound memory (also used
        automatically, with smaller batches first, when memory runs out).
    tile_overlap: context in input pixels kept around the used part of each tile.
    channels_last: NHWC memory format (None: on). compile: use torch.compile.
    st_scale: None (the weights file's), 1, 0.5 or 0.25: the scale at which the S->T
        stream estimates its flows on the high-res frames; smaller is faster.
    ensemble: also run M_S and the network on the frames flipped upside down and average
        (a test-time ensemble), for twice the work.

    >>> import vapoursynth as vs
    >>> clip = vs.core.std.BlankClip(format=vs.RGBS, width=64, height=48, length=3)
    >>> up = upscale(clip)
    >>> up.num_frames, up.width, up.height
    (6, 128, 96)
    """
    if unknown:
        raise _err(options.unknown(unknown))
    _check_clip(clip)
    try:
        opts = options.check(locals())   # the parameters (locals() holds nothing else yet)
        dev = select_device(device or "auto")
    except ValueError as exc:
        raise _err(str(exc)) from None
    is_half = clip.format.id == vs.RGBH
    batch_size = opts["batch_size"]
    try:
        model = load_model(weights)
    except WeightsError as exc:
        raise _err(f"{exc}; for the shipped weights use {options.spell('weights', None)}") from None
    try:
        engine = Engine(model, device=dev, precision=opts["precision"], batch_size=batch_size, layout="chw",
                        out_dtype=np.float16 if is_half else np.float32, num_threads=opts["num_threads"],
                        spatial_cache=2 * batch_size + 4, tile=opts["tile"], tile_overlap=opts["tile_overlap"],
                        channels_last=opts["channels_last"], compile=opts["compile"], st_scale=opts["st_scale"],
                        ensemble=opts["ensemble"])
    except ValueError as exc:
        raise _err(str(exc)) from None
    log.info("DSFN on %s (%s), batch %d, %dx%d -> %dx%d, %d -> %d frames", engine.device,
             str(engine.dtype).replace("torch.", ""), batch_size, clip.width, clip.height,
             2 * clip.width, 2 * clip.height, clip.num_frames, 2 * clip.num_frames)

    core = vs.core
    n, b = clip.num_frames, batch_size
    groups = -(-n // b)
    fps = Fraction(clip.fps_num, clip.fps_den) * 2 if clip.fps_num else Fraction(0, 1)
    template = core.std.BlankClip(clip, width=2 * clip.width, height=2 * clip.height, length=2 * n,
                                  fpsnum=fps.numerator, fpsden=fps.denominator, keep=True)
    # src_j frame k = source frame min((k // 2B) * B + j, N - 1): the B+1 frames of k's group
    padded = clip + clip[-1] * (b + 1)
    srcs = []
    for j in range(b + 1):
        sel = padded[j:] if b == 1 else core.std.SelectEvery(padded[j:], cycle=b, offsets=[0], modify_duration=False)
        sel = sel[:groups]
        rep = core.std.Interleave([sel] * (2 * b), modify_duration=False)[: 2 * n]
        srcs.append(rep)
    max_groups = opts["cache_size"] or max(4, 2 * core.num_threads)
    state = _Upscaler(clip, engine, b, debug or "refined", scene_detect, opts["scene_threshold"], max_groups)
    return core.std.ModifyFrame(template, [template] + srcs, state)
