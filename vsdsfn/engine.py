"""Inference engine: device, dtype, padding, batching and caching around a :class:`DSFN`.

This module does not import VapourSynth; it takes and returns numpy frames (RGB in
[0, 1], float32 or float16), so benchmarks, evaluation and other hosts can use it too.

>>> from vsdsfn.nets import DSFN, DSFNConfig
>>> net = DSFN(DSFNConfig(spatial_args={"channels": 4, "layers": 1},
...                       temporal_args={"widths": [4, 4, 4, 4], "refine": False},
...                       fusion_widths=(4, 4, 4, 4, 4), refine_channels=4, refine_blocks=1))
>>> eng = Engine(net, device="cpu")
>>> a, b = np.random.rand(2, 5, 7, 3).astype(np.float32)     # two 7x5 RGB frames (HWC)
>>> eng.spatial([a])[0].shape, eng.interpolate([(a, b)])[0].shape
((10, 14, 3), (10, 14, 3))
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import torch

from . import allocator, options
from .nets import DSFN
from .nets.multiframe import replicate_window
from .nets.common import GridCache, grid_cache
from .precision import autocast, choose as choose_precision
from .tiling import (MAX_OVERHEAD, aligned, fallback, fitting_overlap, parse_tile, plan_tiles, smallest_fair_tile,
                     smallest_tile, work)
from .transfer import Layout, Transfer, select_device
from .trt import compile_arguments as trt_compile_arguments
from .weights import load_model

__all__ = ["Engine", "DEBUG_OUTPUTS", "DEFAULT_TILE_OVERLAP", "OutOfMemory", "select_device", "scene_score",
           "windows"]

log = logging.getLogger("vsdsfn")

#: Intermediate outputs :meth:`Engine.interpolate` can return instead of the refined frame.
DEBUG_OUTPUTS = ("st", "ts", "fused", "masks")
_OUTPUTS = ("refined",) + DEBUG_OUTPUTS

#: Default context (low-res pixels) kept around each tile's core; see README (tiling).
DEFAULT_TILE_OVERLAP = 192
#: Pixel-coordinate grids (RIFE's warps) an engine keeps: the sizes of one frame size's
#: streams, context levels and tiles
GRID_CACHE_SIZE = 24


T = TypeVar("T")


def _fingerprint(frame: np.ndarray) -> tuple:
    """What a frame's M_S depends on, compactly: its shape, dtype and the sums (wrapping)
    of the bits of every run of 4096 values, so that frames that differ anywhere differ."""
    a = np.ascontiguousarray(frame)
    bits = a.reshape(-1).view(f"u{a.dtype.itemsize}")
    sums = np.add.reduceat(bits, np.arange(0, bits.size, 4096), dtype=np.uint64) if bits.size else bits
    return a.shape, a.dtype.str, sums.tobytes()


def _thread_count(n: int) -> None:
    """Fix this thread's torch CPU thread count at ``n``. torch sets a thread's count from
    the process-wide one when the thread first asks for it: asked first, so that a later
    ``torch.set_num_threads`` elsewhere does not replace ``n`` here."""
    torch.get_num_threads()
    torch.set_num_threads(n)


class OutOfMemory(RuntimeError):
    """The network did not fit in memory even with batch 1 and the smallest tiles."""


def _is_oom(exc: BaseException) -> bool:
    """CUDA OOM, or a CPU allocation failure (torch's RuntimeError, or MemoryError)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc)
        return "out of memory" in msg or "DefaultCPUAllocator: can't allocate" in msg
    return False


def _luma_small(frame: np.ndarray, layout: Layout, size: int = 64) -> np.ndarray:
    """Luma (BT.709 weights) of a frame, box-downscaled so its longer side is <= ``size``."""
    x = np.asarray(frame, dtype=np.float32)
    if layout == "hwc":
        y = x[..., 0] * 0.2126 + x[..., 1] * 0.7152 + x[..., 2] * 0.0722
    else:
        y = x[0] * 0.2126 + x[1] * 0.7152 + x[2] * 0.0722
    y = np.nan_to_num(y, nan=0.0, posinf=1.0, neginf=0.0)
    h, w = y.shape
    s = max(1, math.ceil(max(h, w) / size))
    hh, ww = (h // s) * s, (w // s) * s
    if s > 1 and hh and ww:
        y = y[:hh, :ww].reshape(hh // s, s, ww // s, s).mean(axis=(1, 3))
    return y


def scene_score(a: np.ndarray, b: np.ndarray, layout: Layout = "hwc") -> float:
    """Scene-change score of two frames: mean absolute luma difference (0..1) of small copies.

    Downscaling first makes the score insensitive to noise and small motion; cuts between
    different shots typically score above 0.1, continuous motion well below.
    """
    return float(np.mean(np.abs(_luma_small(a, layout) - _luma_small(b, layout))))


def windows(count: int, radius: int, links: Sequence[bool] | None = None) -> list[tuple[int | None, ...]]:
    """Each frame's window of ``2 * radius + 1`` indices into ``count`` consecutive frames:
    its neighbours as far as the sequence and ``links`` (``links[i]``: frames i and i + 1
    belong together; False at a scene cut) reach, None beyond.

    >>> windows(4, 1, [True, False, True])
    [(None, 0, 1), (0, 1, None), (None, 2, 3), (2, 3, None)]
    >>> windows(3, 0)
    [(0,), (1,), (2,)]
    """
    links = [True] * max(0, count - 1) if links is None else list(links)
    if len(links) != max(0, count - 1):
        raise ValueError("links must have one entry per pair of consecutive frames")
    out = []
    for i in range(count):
        win: list[int | None] = [None] * (2 * radius + 1)
        win[radius] = i
        for side in (-1, 1):
            j = i
            for d in range(1, radius + 1):
                nxt = j + side
                if not 0 <= nxt < count or not links[min(j, nxt)]:
                    break
                win[radius + side * d] = j = nxt
        out.append(tuple(win))
    return out


class Engine:
    """Runs a DSFN on numpy frames (RGB in [0, 1], ``layout`` "hwc" or planar "chw").

    ``model``: a :class:`DSFN` (run as a copy), a weights file, ``"default"`` or ``None``.
    The options shared with ``upscale`` (device, batch_size, tile, ...) mean what the
    README's options table says and are checked by :func:`vsdsfn.options.check`.
    ``spatial_cache``: source frames whose M_S result is kept (LRU, by the caller's key and
    the frame's content: a key given with another frame is computed afresh).
    ``oom_fallback``: on out-of-memory retry with smaller batches, then halving tiles.

    Frames of any size are replicate-padded to :meth:`DSFN.multiple_for` and cropped
    back; NaN becomes 0, +-Inf 1/0, inputs and outputs are clamped to [0, 1]. Methods are
    thread-safe (they run one at a time on the engine's own thread), and results do not
    depend on the order of requests. :meth:`close` (or ``with Engine(...) as eng:``) ends
    the thread and frees the network and caches.
    """

    def __init__(
        self,
        model: DSFN | str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = "auto",
        precision: str | None = None,
        batch_size: int = 1,
        spatial_cache: int | None = None,
        layout: Layout = "hwc",
        out_dtype=np.float32,
        num_threads: int | None = None,
        tile: int | tuple[int, int] | None = None,
        tile_overlap: int | None = None,
        oom_fallback: bool = True,
        channels_last: bool | None = None,
        compile: bool = False,
        trt: bool = False,
        st_scale: float | None = None,
        ensemble: bool = False,
    ) -> None:
        opts = options.check(dict(precision=precision, batch_size=batch_size, num_threads=num_threads, tile=tile,
                                  tile_overlap=tile_overlap, channels_last=channels_last, compile=compile,
                                  trt=trt, st_scale=st_scale, ensemble=ensemble))
        self._check_engine_arguments(layout, spatial_cache, oom_fallback, out_dtype)
        model = self._network(model)
        #: scale of the S->T stream's flow estimation (the file's unless overridden)
        self.st_scale = float(model.config.st_scale if opts["st_scale"] is None else opts["st_scale"])
        self.multiple = model.multiple_for(self.st_scale)
        self.tile = parse_tile(opts["tile"])
        self.tile_overlap, self._overlap_cap = self._overlap(self.tile, opts["tile_overlap"])
        if opts["num_threads"] is not None:
            torch.set_num_threads(opts["num_threads"])     # process-wide, and below on the compute thread
        self.device = select_device(device)
        if self.device.type == "cpu":
            allocator.tune()
        self.dtype = choose_precision(opts["precision"], self.device)
        #: torch.compile's backend and its options: TensorRT's (trt=True), else the default
        self._backend = trt_compile_arguments(self.device) if opts["trt"] else {}
        self.batch_size = opts["batch_size"]
        self.io = Transfer(self.device, layout, out_dtype, self.multiple)
        #: source frames whose padded input and M_S result are kept (LRU)
        self.spatial_cache = spatial_cache if spatial_cache is not None else 2 * self.batch_size + 4
        self.oom_fallback = oom_fallback
        self.channels_last = True if opts["channels_last"] is None else opts["channels_last"]
        self._fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self._prepared(model)
        self.ensemble, self.compile = opts["ensemble"], opts["compile"] or opts["trt"]
        self._compiled: dict[str, torch.nn.Module] = {}
        self._auto_batch: int | None = None              # sub-batch limit after an OOM
        self._auto_tile: tuple[int, int] | None = None   # tile size after an OOM
        self._oom_warned = False
        self._costs_seen: set[tuple[int, int]] = set()   # frame sizes whose tiling cost was checked
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True        # fixed shapes: pick the fastest kernels once
        #: pixel-coordinate grids of this engine's warps (freed by :meth:`close`)
        self._grids = GridCache(GRID_CACHE_SIZE)
        self._start_worker(opts["num_threads"])
        self._cache, self._flows = OrderedDict(), OrderedDict()   # M_S by window, M_T's flows by pair (LRU)
        self.stats = {"spatial": 0, "pairs": 0, "cache_hits": 0, "tiles": 0, "oom_retries": 0, "flows": 0}

    @property
    def radius(self) -> int:
        """Neighbours on each side the multi-frame M_S takes (0: a single-frame M_S)."""
        return self.model.radius

    def _start_worker(self, threads: int | None) -> None:
        """One compute thread whichever threads call: one glibc arena holds the tensors and
        one OpenMP team computes, not one of each per calling thread."""
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="vsdsfn",
                                          initializer=None if threads is None else _thread_count,
                                          initargs=() if threads is None else (threads,))
        self._worker_id = self._worker.submit(threading.get_ident).result()
        self._closed = False

    @staticmethod
    def _check_engine_arguments(layout, spatial_cache, oom_fallback, out_dtype) -> None:
        """The arguments of :class:`Engine` that are not user options (those are checked by
        :func:`vsdsfn.options.check`)."""
        if layout not in ("hwc", "chw"):
            raise ValueError(f"layout must be 'hwc' or 'chw', not {layout!r}")
        if spatial_cache is not None and not (isinstance(spatial_cache, int) and spatial_cache >= 2):
            raise ValueError(f"spatial_cache must be an integer >= 2, not {spatial_cache!r}")
        if not isinstance(oom_fallback, bool):
            raise ValueError(f"oom_fallback must be True or False, not {oom_fallback!r}")
        if np.dtype(out_dtype) not in (np.float32, np.float16):
            raise ValueError(f"out_dtype must be float32 or float16, not {np.dtype(out_dtype)}")

    def _overlap(self, tile: tuple[int, int] | None, given: int | None) -> tuple[int, int]:
        """The tile overlap used and the most any fallback tiling may use: the given one,
        or (None) :data:`DEFAULT_TILE_OVERLAP` lowered to keep ``tile`` within
        :data:`vsdsfn.tiling.MAX_OVERHEAD`."""
        cap = DEFAULT_TILE_OVERLAP if given is None else given
        if tile is None:
            return cap, cap
        aligned(tile, cap if given is not None else 0, self.multiple)   # a tile too small for its overlap
        if given is None:
            return fitting_overlap(min(tile), self.multiple, cap), cap
        return given, cap

    def _warn_costly_tiles(self, shape: tuple[int, ...]) -> None:
        """Once per frame size: warn when the given tile and tile_overlap run more than
        :data:`vsdsfn.tiling.MAX_OVERHEAD` x the work of whole frames."""
        tile, hp, wp = self._tile_now(), shape[-2], shape[-1]
        if tile is None or (hp, wp) in self._costs_seen:
            return
        self._costs_seen.add((hp, wp))
        cost = work(hp, wp, tile, self.tile_overlap, self.multiple)
        if cost > MAX_OVERHEAD:
            log.warning("tiles of %dx%d with tile_overlap %d run %.1fx the work of whole %dx%d frames; leave "
                        "tile_overlap unset (it is then fitted to the tile) or use tile >= %d", *tile,
                        self.tile_overlap, cost, wp, hp, smallest_fair_tile(self.tile_overlap, self.multiple))

    @staticmethod
    def _network(model: DSFN | str | os.PathLike | None) -> DSFN:
        """The network to run: a copy of a given one (the caller's stays as it is), or loaded."""
        if model is None or isinstance(model, (str, os.PathLike)):
            return load_model(model)
        if not isinstance(model, DSFN):
            raise ValueError(f"model must be a DSFN, a weights path or None, not {type(model).__name__}")
        return copy.deepcopy(model)

    def _prepared(self, model: DSFN) -> DSFN:
        """``model`` on the device, in eval mode, without gradients, its weights in the
        precision's dtype (run under :func:`vsdsfn.precision.autocast`) and memory format."""
        model = model.eval().to(self.device, self.dtype)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    # ------------------------------------------------------------------ running the networks

    def _compile_failed(self, exc: BaseException) -> None:
        first_line = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        log.warning("torch.compile failed (%s%s: %s); continuing without compile",
                    "TensorRT, " if self._backend else "", type(exc).__name__, first_line)
        self.compile = False
        self._compiled.clear()

    def _call(self, which: str, *args: torch.Tensor | None):
        """Run ``"spatial"`` (:meth:`DSFN.upscale`: the frames, and for a multi-frame M_S
        their windows and flows), ``"flows"`` (:meth:`DSFN.pair_flows`) or ``"pair"``
        (:meth:`DSFN.run`: the frames, their M_S, the timesteps and M_T's plans), compiled
        when asked."""
        if which == "spatial":
            eager = lambda lr, window=None, flows=None: self.model.upscale(  # noqa: E731
                lr, ensemble=self.ensemble, window=window, flows=flows)
        elif which == "flows":
            eager = self.model.pair_flows
        else:
            eager = lambda l0, l1, h0, h1, t, plans: self.model.run(  # noqa: E731
                l0, l1, h0, h1, st_scale=self.st_scale, ensemble=self.ensemble, t=t, plans=plans)
        fn = eager
        if self.compile:
            fn = self._compiled.get(which)
            if fn is None:
                try:
                    fn = self._compiled[which] = torch.compile(eager, dynamic=False, **self._backend)
                except Exception as exc:  # torch.compile unavailable on this platform
                    self._compile_failed(exc)
                    fn = eager
        with autocast(self.device, self.dtype):
            if fn is eager:
                return eager(*args)
            try:
                return fn(*args)
            except Exception as exc:
                if _is_oom(exc):
                    raise
                self._compile_failed(exc)
            return eager(*args)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self._fmt)

    def _tile_now(self) -> tuple[int, int] | None:
        return self._auto_tile or self.tile

    def _stitched(self, plan, shape: tuple[int, ...], run_tile) -> torch.Tensor:
        """The high-res result of a (B, C, Hp, Wp) low-res input run tile by tile:
        ``run_tile(tile)`` gives a tile's result, of which each core is kept."""
        out = None
        for tile in plan:
            part = run_tile(tile)
            if out is None:
                out = part.new_empty((shape[0], part.shape[1], 2 * shape[-2], 2 * shape[-1]))
            out[..., 2 * tile.cy0:2 * tile.cy1, 2 * tile.cx0:2 * tile.cx1] = part[
                ..., 2 * (tile.cy0 - tile.y0):2 * (tile.cy1 - tile.y0), 2 * (tile.cx0 - tile.x0):2 * (tile.cx1 - tile.x0)]
        return out

    def _spatial_run(self, lr: torch.Tensor, tile: tuple[int, int] | None, window: torch.Tensor | None = None,
                     flows: torch.Tensor | None = None) -> torch.Tensor:
        """M_S of (B, 3, Hp, Wp) (with its ``window`` and ``flows`` for a multi-frame M_S),
        in tiles of ``tile`` (with M_S's whole context, the flows' reach included, so exact)
        when given and M_S states its context."""
        hp, wp = lr.shape[-2:]
        plan, context = None, self.model.spatial_context()
        if tile is not None and context is not None:
            if flows is not None:
                context += math.ceil(float(flows.abs().max())) + 2
            least = smallest_tile(context, self.multiple)
            plan = plan_tiles(hp, wp, (max(tile[0], least), max(tile[1], least)), context, self.multiple)

        def run(cut=(...,)):
            neighbours = () if window is None else (window[cut], flows[cut])    # a multi-frame M_S's
            return self._call("spatial", self._layout(lr[cut]), *neighbours)

        if plan is None or len(plan) == 1:
            return run()

        def run_tile(p):
            return run((..., slice(p.y0, p.y1), slice(p.x0, p.x1)))

        return self._stitched(plan, lr.shape, run_tile)

    def _pair_forward(self, l0, l1, h0, h1, timesteps, output: str, plans=None) -> torch.Tensor:
        frame = self._call("pair", *(self._layout(x) for x in (l0, l1, h0, h1)), timesteps, plans)[output]
        if output == "masks":
            frame = torch.cat((frame, torch.zeros_like(frame[:, :1])), 1)
        return frame

    def _pairs_run(self, l0, l1, h0, h1, timesteps, output: str, tile: tuple[int, int] | None,
                   bmax: int | None) -> torch.Tensor:
        """The ``output`` view of DSFN on padded (B, 3, Hp, Wp) pairs (and their M_S) at
        ``timesteps`` (B,), in sub-batches of at most ``bmax`` and tiles of ``tile``."""
        count, (hp, wp) = l0.shape[0], l0.shape[-2:]
        if bmax is not None and count > bmax:
            return torch.cat([self._pairs_run(l0[s:s + bmax], l1[s:s + bmax], h0[s:s + bmax], h1[s:s + bmax],
                                              timesteps[s:s + bmax], output, tile, None)
                              for s in range(0, count, bmax)])
        plan = plan_tiles(hp, wp, tile, self.tile_overlap, self.multiple) if tile is not None else None
        tiled = plan is not None and len(plan) > 1
        # M_T's decisions (RIFE's large-motion pass) are taken on the whole frames and given
        # to every tile: a frame takes the same pass tiled or not. Untiled, the network takes
        # them itself, alike; compiled, they are always given (the same eager computation).
        plans = self._plans(l0, l1, h0, h1, timesteps) if tiled or self.compile else None
        if tiled:
            plan = self._far_plan(hp, wp, tile, plans) or plan
            tiled = len(plan) > 1
        if not tiled:
            return self._pair_forward(l0, l1, h0, h1, timesteps, output, plans)
        self.stats["tiles"] += len(plan)

        def run_tile(p):
            ys, xs, ys2, xs2 = slice(p.y0, p.y1), slice(p.x0, p.x1), slice(2 * p.y0, 2 * p.y1), slice(2 * p.x0, 2 * p.x1)
            return self._pair_forward(l0[..., ys, xs], l1[..., ys, xs], h0[..., ys2, xs2], h1[..., ys2, xs2],
                                      timesteps, output, plans)

        return self._stitched(plan, l0.shape, run_tile)

    def _far_plan(self, hp: int, wp: int, tile: tuple[int, int], plans: dict | None):
        """The tiles for frames whose M_T sees ``reach`` times farther with ``plans``
        (:meth:`DSFN.tile_reach`; RIFE's half-resolution pass: 2): that many times the
        overlap, in tiles grown to hold it where needed; ``None`` for the usual tiles."""
        reach = self.model.tile_reach(plans)
        if reach == 1:
            return None
        overlap = reach * self.tile_overlap
        least = smallest_tile(overlap, self.multiple)
        return plan_tiles(hp, wp, (max(tile[0], least), max(tile[1], least)), overlap, self.multiple)

    def _plans(self, l0, l1, h0, h1, timesteps) -> dict | None:
        """:meth:`DSFN.temporal_plans` of whole padded frames, computed as the untiled
        network computes them (same memory format, precision and timesteps)."""
        with autocast(self.device, self.dtype):
            return self.model.temporal_plans(*(self._layout(x) for x in (l0, l1, h0, h1)), self.st_scale,
                                             timesteps)

    def _with_oom_fallback(self, run, shape: tuple[int, ...], what: str) -> torch.Tensor:
        """``run(tile, bmax)``; on out-of-memory, retry smaller (see :meth:`_shrink`)."""
        self._warn_costly_tiles(shape)
        while True:
            tile, bmax = self._tile_now(), self._auto_batch
            msg = None
            try:
                return run(tile, bmax)
            except Exception as exc:
                if not (self.oom_fallback and _is_oom(exc)):
                    raise
                msg = f"{type(exc).__name__}: {' '.join(str(exc).split())}"   # the whole message, one line
            # here the exception and its traceback (holding the failed tensors) are gone
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.stats["oom_retries"] += 1
            if not self._shrink(shape, tile, bmax, what, msg):
                now = self._tile_now()
                tiles = f"tiles of {now[0]}x{now[1]} (tile_overlap {self.tile_overlap})" if now else "whole frames"
                raise OutOfMemory(
                    f"out of memory on {self.device} for {what} of {shape[-1]}x{shape[-2]} frames even with batch 1 "
                    f"and {tiles}, the smallest tiling within {MAX_OVERHEAD:g}x the work ({msg}); free memory, use "
                    "precision='fp16' (CUDA) or another device")

    def _shrink(self, shape, tile, bmax, what: str, msg: str) -> bool:
        """Halve the sub-batch, else the tile size (down to the smallest valid tile)."""
        count, hp, wp = shape[0], shape[-2], shape[-1]
        if count > 1 and (bmax is None or bmax > 1):
            self._auto_batch = max(1, (bmax or count) // 2)
            change = f"batches of {self._auto_batch}"
        else:
            # halved tiles, the overlap lowered with them: each retry at most MAX_OVERHEAD x the work
            step = fallback((wp, hp), tile, self.multiple, self._overlap_cap)
            if step is None:
                return False
            self._auto_tile, self.tile_overlap = step
            change = f"tiles of {step[0][0]}x{step[0][1]} (tile_overlap {step[1]})"
        (log.info if self._oom_warned else log.warning)(
            "out of memory on %s (%s of %dx%d frames, %s); retrying with %s. Set batch_size/tile "
            "lower to avoid this retry.", self.device, what, wp, hp, msg, change)
        self._oom_warned = True
        return True

    @staticmethod
    def _cache_keys(frames: Sequence[np.ndarray], keys: Sequence[Hashable] | None) -> list[Hashable] | None:
        """The M_S cache's keys of ``frames``: each caller's key with the frame's
        :func:`_fingerprint` (computed on the caller's thread)."""
        if keys is None:
            return None
        if len(keys) != len(frames):
            raise ValueError("keys must have one entry per frame")
        return [(key, _fingerprint(frame)) for key, frame in zip(keys, frames)]

    def _spatial_tensors(self, frames: Sequence[np.ndarray], keys: Sequence[Hashable] | None,
                         links: Sequence[bool] | None = None, wanted: Sequence[int] | None = None):
        """Padded (L, M_S(L)) tensors of the ``wanted`` frames (default all; the others'
        entries are None); cached entries (by :meth:`_cache_keys`, of every frame of the
        window) are reused. A multi-frame M_S sees each frame's neighbours in ``frames`` as
        far as ``links`` (one per consecutive pair: False at a scene cut) joins them, else
        none (see :func:`windows`)."""
        n = len(frames)
        wins = windows(n, self.radius, links)
        # a multi-frame M_S's result depends on its whole window: keyed by the window's keys
        cache_keys = None if keys is None else [
            keys[i] if not self.radius else tuple(None if w is None else keys[w] for w in win)
            for i, win in enumerate(wins)]
        out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n
        todo: list[int] = []            # frames to compute (first occurrence of each key)
        same: dict[int, int] = {}       # later occurrence -> first occurrence
        first: dict[Hashable, int] = {}
        for i in (range(n) if wanted is None else sorted(set(wanted))):
            if keys is None:
                todo.append(i)
                continue
            key = cache_keys[i]
            if key in first:
                same[i] = first[key]
                continue
            first[key] = i
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                out[i] = hit
                self.stats["cache_hits"] += 1
            else:
                todo.append(i)
        # M_S runs one frame at a time: a frame's M_S then never depends on which other
        # frames happened to be uncached with it, so results are bit-identical whatever
        # order (and from however many threads) frames are requested. M_S is the light
        # part of the network; the pair batches (fixed per group) carry the heavy work.
        uploads: dict[int, torch.Tensor] = {}
        for i in todo:
            lr, window, flows = self._window_tensors(frames, keys, wins[i], uploads)
            hr = self._with_oom_fallback(lambda tile, bmax: self._spatial_run(lr, tile, window, flows),
                                         tuple(lr.shape), "M_S")
            out[i] = (lr, hr)
            self.stats["spatial"] += 1
            if keys is not None:
                self._cache[cache_keys[i]] = out[i]
        for i, i0 in same.items():
            out[i] = out[i0]
        while len(self._cache) > self.spatial_cache:
            self._cache.popitem(last=False)
        return out

    def _window_tensors(self, frames, keys, window: tuple[int | None, ...], uploads: dict):
        """A frame's padded tensor and, for a multi-frame M_S, its window (replicated where
        it has no neighbour) and the flows from it to its neighbours; None for a frame
        without neighbours (on its own between two scene cuts, or a clip of one frame).
        ``uploads``: this call's padded frames by index (and, without keys, its flows)."""
        r = self.radius
        for w in window:
            if w is not None and w not in uploads:
                uploads[w] = self.io.upload([frames[w]])
        lr = uploads[window[r]]
        filled, real = replicate_window(window)   # a missing neighbour repeats the one nearer the centre
        if not any(real[:r] + real[r + 1:]):         # no neighbour (or a single-frame M_S): the frame alone
            return lr, None, None
        tensors = torch.stack([uploads[w] for w in filled], 1)
        flows = self.model.window_flows(tensors, torch.tensor([real]),
                                        lambda a, b: self._step_flow(filled, keys, uploads, a, b))
        return lr, tensors, flows

    def _step_flow(self, filled, keys, uploads, a: int, b: int) -> torch.Tensor:
        """The flow from window entry ``a`` to the adjacent entry ``b``: one M_T estimate per
        pair of frames, both directions kept (by the frames' keys; without keys, for this
        call only)."""
        ia, ib = filled[a], filled[b]
        if ia == ib:
            return torch.zeros_like(uploads[ia][:, :2], dtype=torch.float32)
        lo, hi = min(ia, ib), max(ia, ib)
        cache, key = (self._flows, (keys[lo], keys[hi])) if keys is not None else (uploads, ("flows", lo, hi))
        both = cache.get(key)
        if both is None:
            both = cache[key] = self._call("flows", self._layout(uploads[lo]), self._layout(uploads[hi]))
            self.stats["flows"] += 1
            while len(self._flows) > self.spatial_cache:
                self._flows.popitem(last=False)
        return both[0] if ia == lo else both[1]

    # ------------------------------------------------------------------ public API

    def call(self, job: Callable[[], T]) -> T:
        """``job()`` on the engine's compute thread, in inference mode, one job at a time.
        The methods below are jobs, and a job may call them: tools that watch only their
        own thread (``torch.profiler``, ``FlopCounterMode``) are entered inside one."""
        if threading.get_ident() == self._worker_id:
            return job()
        if self._closed:
            raise RuntimeError("the engine is closed")
        return self._worker.submit(self._job, job).result()

    def _job(self, job: Callable[[], T]) -> T:
        with torch.inference_mode(), grid_cache(self._grids):
            return job()

    def close(self) -> None:
        """End the compute thread (after the jobs already asked for) and free the network,
        the caches and compiled code; later calls raise :class:`RuntimeError`."""
        if self._closed:
            return
        self._closed = True
        self._worker.shutdown(wait=True)
        self._cache.clear()
        self._flows.clear()
        self._grids.clear()
        self._compiled.clear()
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        else:
            allocator.release()   # the heap's freed top, kept for reuse while the engine ran

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def spatial(self, frames: Sequence[np.ndarray], keys: Sequence[Hashable] | None = None) -> list[np.ndarray]:
        """M_S: each frame upscaled x2 on its own (a multi-frame M_S without neighbours).
        With ``keys`` (one per frame, naming it), results are cached and reused for the
        same key and frame."""
        keys = self._cache_keys(frames, keys)
        return self.call(lambda: self._spatial_async(frames, keys)())

    def _spatial_async(self, frames, keys):
        h, w = self.io.check(frames)
        tensors = self._spatial_tensors(frames, keys, [False] * (len(frames) - 1))   # each frame on its own
        return self.io.download_async(torch.cat([e[1] for e in tensors]), h, w)

    def interpolate(
        self,
        pairs: Sequence[tuple[np.ndarray, np.ndarray]],
        keys: Sequence[tuple[Hashable, Hashable]] | None = None,
        output: str = "refined",
        timesteps: Sequence[float] | None = None,
    ) -> list[np.ndarray]:
        """The high-res frame at each timestep (default 1/2) between each pair
        (``batch_size`` frames per pass).

        ``keys``: one (key0, key1) per pair to reuse cached M_S results (see
        :meth:`spatial`). ``output``: ``"refined"`` (H_R, the result) or an intermediate:
        ``"st"``, ``"ts"``, ``"fused"`` or ``"masks"`` (an RGB image with R = M_S->T,
        G = M_T->S, B = 0). ``timesteps``: one per pair, each in (0, 1).
        """
        if keys is not None and len(keys) != len(pairs):
            raise ValueError("keys must have one (key0, key1) per pair")
        flat_keys = self._cache_keys([f for p in pairs for f in p], None if keys is None else
                                     [key for pair in keys for key in pair])
        return self.call(lambda: [a for fin in self._interpolate_async(pairs, flat_keys, output, timesteps)
                                  for a in fin()])

    def _interpolate_async(self, pairs, flat_keys, output, timesteps=None):
        """Queue the batches (``flat_keys``: :meth:`_cache_keys` of the pairs' frames);
        returns one function per batch that waits for its frames (on CUDA each batch's
        download overlaps the next batch's compute)."""
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, not {output!r}")
        if not len(pairs):
            return []
        steps = torch.as_tensor([0.5] * len(pairs) if timesteps is None else [float(t) for t in timesteps])
        if steps.shape != (len(pairs),):
            raise ValueError("timesteps must have one timestep per pair")
        frames = [f for p in pairs for f in p]
        h, w = self.io.check(frames)
        # each pair is a clip of two frames: a multi-frame M_S sees the pair's other frame
        tensors = self._spatial_tensors(frames, flat_keys, [i % 2 == 0 for i in range(len(frames) - 1)])
        return self._pairs_async(tensors[0::2], tensors[1::2], steps, output, h, w)

    def _pairs_async(self, firsts, seconds, steps: torch.Tensor, output: str, h: int, w: int):
        """The batches of pairs given as their (L, M_S(L)) tensors (see :meth:`_interpolate_async`)."""
        pending = []
        for start in range(0, len(firsts), self.batch_size):
            stop = min(start + self.batch_size, len(firsts))
            l0, l1 = torch.cat([e[0] for e in firsts[start:stop]]), torch.cat([e[0] for e in seconds[start:stop]])
            h0, h1 = torch.cat([e[1] for e in firsts[start:stop]]), torch.cat([e[1] for e in seconds[start:stop]])
            # timesteps stay on the CPU: the network checks them there and moves them
            run = functools.partial(self._pairs_run, l0, l1, h0, h1, steps[start:stop], output)   # run(tile, bmax)
            y = self._with_oom_fallback(run, tuple(l0.shape), "DSFN")
            self.stats["pairs"] += stop - start
            pending.append(self.io.download_async(y, h, w))
            del run, y, l0, l1, h0, h1   # free this batch's tensors before the next one
        return pending

    def upscale_group(
        self,
        frames: Sequence[np.ndarray],
        keys: Sequence[Hashable],
        count: int,
        requests: Sequence[tuple[int, float]],
        output: str = "refined",
        *,
        first: int = 0,
        links: Sequence[bool] | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """M_S of the ``count`` frames from ``frames[first]``, and for each request
        ``(j, t)`` the frame at timestep ``t`` between ``frames[first + j]`` and the next;
        every M_S is computed once (``keys`` name the frames for the cache).

        ``frames`` may reach beyond the group on both sides: a multi-frame M_S takes its
        neighbours from them as far as ``links`` joins consecutive frames (False at a
        scene cut or past the clip's ends; see :func:`windows`)."""
        if not 0 <= first or not 1 <= count <= len(frames) - first or len(keys) != len(frames):
            raise ValueError("upscale_group: need len(keys) == len(frames) >= first + count, count >= 1")
        if any(not 0 <= first + j < len(frames) - 1 for j, _ in requests):
            raise ValueError("upscale_group: an interpolated pair needs its next frame")
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, not {output!r}")

        keys = self._cache_keys(frames, keys)

        def job():
            h, w = self.io.check(frames)
            wanted = [first + i for i in range(count)] + [first + j + d for j, _ in requests for d in (0, 1)]
            tensors = self._spatial_tensors(frames, keys, links, wanted)
            # the evens' download (CUDA) overlaps the pairs' compute
            even_fin = self.io.download_async(torch.cat([tensors[first + i][1] for i in range(count)]), h, w)
            steps = torch.as_tensor([float(t) for _, t in requests])
            mid_fins = self._pairs_async([tensors[first + j] for j, _ in requests],
                                         [tensors[first + j + 1] for j, _ in requests], steps, output, h, w)
            return even_fin(), [a for fin in mid_fins for a in fin()]

        return self.call(job)
