"""Inference engine: device, dtype, padding, batching and caching around a :class:`DSFN`.

This module does not import VapourSynth; it takes and returns numpy frames (RGB in
[0, 1], float32 or float16), so benchmarks, evaluation and other hosts can use it too.

>>> from vsdsfn.nets import DSFN, DSFNConfig
>>> net = DSFN(DSFNConfig(spatial_args={"channels": 4, "layers": 1},
...                       temporal_args={"channels": [4], "scales": [1], "depth": 1},
...                       fusion_widths=(4, 4, 4, 4, 4, 4), refine_channels=4, refine_blocks=1))
>>> eng = Engine(net, device="cpu")
>>> a, b = np.random.rand(2, 5, 7, 3).astype(np.float32)     # two 7x5 RGB frames (HWC)
>>> eng.spatial([a])[0].shape, eng.interpolate([(a, b)])[0].shape
((10, 14, 3), (10, 14, 3))
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .nets import DSFN
from .weights import load_model

__all__ = ["Engine", "DEBUG_OUTPUTS", "select_device", "scene_score"]

log = logging.getLogger("vsdsfn")

#: Intermediate outputs :meth:`Engine.interpolate` can return instead of the refined frame.
DEBUG_OUTPUTS = ("st", "ts", "fused", "masks")
_OUTPUTS = ("refined",) + DEBUG_OUTPUTS

Layout = Literal["hwc", "chw"]


def select_device(device: str | torch.device | None = "auto") -> torch.device:
    """Resolve ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Raises :class:`ValueError` for unknown strings and for CUDA devices that do not exist.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'auto', 'cpu', 'cuda' or 'cuda:0', not {device!r}")
    name = device.strip().lower()
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        index = 0
        if name != "cuda":
            tail = name[5:]
            if not tail.isdigit():
                raise ValueError(f"device {device!r} is not valid; use 'cuda' or 'cuda:N' with N a GPU number")
            index = int(tail)
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but CUDA is not available "
                             "(no NVIDIA GPU/driver, or a CPU-only torch build); use device='cpu' or 'auto'")
        count = torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"device {device!r} does not exist: this machine has {count} CUDA device(s) "
                             f"(cuda:0 .. cuda:{count - 1})")
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


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


class Engine:
    """Runs a DSFN on numpy frames.

    ``model``: a :class:`DSFN`, a weights-file path, or ``None`` for the shipped default
    weights. ``device``: see :func:`select_device`. ``fp16``: ``None`` uses fp32 (the
    VapourSynth filter passes ``True`` for RGBH clips on CUDA); fp16 is only used on CUDA
    (asking for it on CPU logs a warning and runs fp32). ``batch_size``: frame pairs per
    forward pass. ``cache_size``: how many source frames' padded input and M_S result
    are kept (LRU, keyed by the caller's key, e.g. the source frame number).
    ``layout``: frames are ``"hwc"`` (H, W, 3) or ``"chw"`` (3, H, W, planar like
    VapourSynth). ``out_dtype``: numpy dtype of returned frames. ``num_threads``: calls
    ``torch.set_num_threads`` (process-wide) when given.

    Inputs may have any size (they are replicate-padded to :attr:`DSFN.multiple` and the
    output cropped back); NaN becomes 0, +Inf 1, -Inf 0, and inputs and outputs are
    clamped to [0, 1]. All methods are thread-safe: the model and caches are guarded by
    one lock, and a cached M_S is computed once however many threads ask for it.
    """

    def __init__(
        self,
        model: DSFN | str | os.PathLike | None = None,
        *,
        device: str | torch.device | None = "auto",
        fp16: bool | None = None,
        batch_size: int = 1,
        cache_size: int | None = None,
        layout: Layout = "hwc",
        out_dtype=np.float32,
        num_threads: int | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
        if layout not in ("hwc", "chw"):
            raise ValueError(f"layout must be 'hwc' or 'chw', not {layout!r}")
        if cache_size is not None and (not isinstance(cache_size, int) or cache_size < 2):
            raise ValueError(f"cache_size must be an integer >= 2, not {cache_size!r}")
        if num_threads is not None:
            if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
                raise ValueError(f"num_threads must be a positive integer, not {num_threads!r}")
            torch.set_num_threads(num_threads)
        self.device = select_device(device)
        if fp16 and self.device.type != "cuda":
            log.warning("vsdsfn: fp16 is only used on CUDA; running in fp32 on %s", self.device)
            fp16 = False
        self.dtype = torch.float16 if fp16 else torch.float32
        self.batch_size = batch_size
        self.layout: Layout = layout
        self.out_dtype = np.dtype(out_dtype)
        if self.out_dtype not in (np.float32, np.float16):
            raise ValueError(f"out_dtype must be float32 or float16, not {self.out_dtype}")
        self.cache_size = cache_size if cache_size is not None else 2 * batch_size + 4
        if model is None or isinstance(model, (str, os.PathLike)):
            model = load_model(model)
        if not isinstance(model, DSFN):
            raise ValueError(f"model must be a DSFN, a weights path or None, not {type(model).__name__}")
        model = model.eval().to(self.device, self.dtype)
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model
        self.multiple = model.multiple
        self._lock = threading.RLock()
        self._cache: OrderedDict[Hashable, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.stats = {"spatial": 0, "pairs": 0, "cache_hits": 0}

    # ------------------------------------------------------------------ tensors

    def _check(self, frames: Sequence[np.ndarray]) -> tuple[int, int]:
        if not len(frames):
            raise ValueError("no frames given")
        shapes = {np.shape(f) for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"all frames of one call must have the same shape, got {sorted(shapes)}")
        shape = shapes.pop()
        if len(shape) != 3 or (shape[-1] if self.layout == "hwc" else shape[0]) != 3:
            want = "(H, W, 3)" if self.layout == "hwc" else "(3, H, W)"
            raise ValueError(f"frames must be RGB arrays of shape {want} (layout {self.layout!r}), got {shape}")
        h, w = (shape[0], shape[1]) if self.layout == "hwc" else (shape[1], shape[2])
        if h < 1 or w < 1:
            raise ValueError(f"frames must be at least 1x1, got {w}x{h}")
        return h, w

    def _upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """numpy frames -> (B, 3, Hp, Wp) on the device, sanitised, clamped and padded."""
        h, w = self._check(frames)
        x = torch.from_numpy(np.stack([np.asarray(f) for f in frames]))
        if self.layout == "hwc":
            x = x.permute(0, 3, 1, 2)
        x = x.to(self.device, torch.float32, non_blocking=True)
        x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x.to(self.dtype).contiguous()

    def _download(self, x: torch.Tensor, h: int, w: int) -> list[np.ndarray]:
        """(B, 3, Hp, Wp) high-res tensor -> list of cropped, clamped numpy frames."""
        x = x[..., : 2 * h, : 2 * w].float().clamp(0.0, 1.0)
        x = torch.nan_to_num(x, nan=0.0)
        if self.layout == "hwc":
            x = x.permute(0, 2, 3, 1)
        x = x.to("cpu", torch.float16 if self.out_dtype == np.float16 else torch.float32).contiguous()
        return list(x.numpy())

    def _spatial_tensors(self, frames: Sequence[np.ndarray], keys: Sequence[Hashable] | None):
        """Padded (L, M_S(L)) tensors per frame; cached entries (by key) are reused."""
        n = len(frames)
        if keys is not None and len(keys) != n:
            raise ValueError("keys must have one entry per frame")
        out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n
        todo: list[int] = []            # frames to compute (first occurrence of each key)
        same: dict[int, int] = {}       # later occurrence -> first occurrence
        first: dict[Hashable, int] = {}
        for i in range(n):
            if keys is None:
                todo.append(i)
                continue
            k = keys[i]
            if k in first:
                same[i] = first[k]
                continue
            first[k] = i
            hit = self._cache.get(k)
            if hit is not None:
                self._cache.move_to_end(k)
                out[i] = hit
                self.stats["cache_hits"] += 1
            else:
                todo.append(i)
        # M_S runs one frame at a time: a frame's M_S then never depends on which other
        # frames happened to be uncached with it, so results are bit-identical whatever
        # order (and from however many threads) frames are requested. M_S is the light
        # part of the network; the pair batches (fixed per group) carry the heavy work.
        for i in todo:
            lr = self._upload([frames[i]])
            out[i] = (lr, self.model.spatial(lr))
            self.stats["spatial"] += 1
            if keys is not None:
                self._cache[keys[i]] = out[i]
        for i, i0 in same.items():
            out[i] = out[i0]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    # ------------------------------------------------------------------ public API

    def clear_cache(self) -> None:
        """Forget all cached M_S results."""
        with self._lock:
            self._cache.clear()

    @torch.inference_mode()
    def spatial(self, frames: Sequence[np.ndarray], keys: Sequence[Hashable] | None = None) -> list[np.ndarray]:
        """M_S: each frame upscaled x2. With ``keys``, results are cached and reused."""
        with self._lock:
            h, w = self._check(frames)
            ent = self._spatial_tensors(frames, keys)
            return self._download(torch.cat([e[1] for e in ent]), h, w)

    @torch.inference_mode()
    def interpolate(
        self,
        pairs: Sequence[tuple[np.ndarray, np.ndarray]],
        keys: Sequence[tuple[Hashable, Hashable]] | None = None,
        output: str = "refined",
    ) -> list[np.ndarray]:
        """The high-res frame halfway between each pair (``batch_size`` pairs per pass).

        ``keys``: one (key0, key1) per pair to reuse cached M_S results (see
        :meth:`spatial`). ``output``: ``"refined"`` (H_R, the result) or an intermediate:
        ``"st"``, ``"ts"``, ``"fused"`` or ``"masks"`` (an RGB image with R = M_S->T,
        G = M_T->S, B = 0).
        """
        if output not in _OUTPUTS:
            raise ValueError(f"output must be one of {_OUTPUTS}, not {output!r}")
        if not len(pairs):
            return []
        if keys is not None and len(keys) != len(pairs):
            raise ValueError("keys must have one (key0, key1) per pair")
        with self._lock:
            frames = [f for p in pairs for f in p]
            h, w = self._check(frames)
            flat_keys = [k for kk in keys for k in kk] if keys is not None else None
            ent = self._spatial_tensors(frames, flat_keys)
            results: list[np.ndarray] = []
            for start in range(0, len(pairs), self.batch_size):
                stop = min(start + self.batch_size, len(pairs))
                e0 = [ent[2 * i] for i in range(start, stop)]
                e1 = [ent[2 * i + 1] for i in range(start, stop)]
                out = self.model(
                    torch.cat([e[0] for e in e0]), torch.cat([e[0] for e in e1]),
                    torch.cat([e[1] for e in e0]), torch.cat([e[1] for e in e1]),
                )
                self.stats["pairs"] += stop - start
                y = out[output]
                if output == "masks":
                    y = torch.cat((y, torch.zeros_like(y[:, :1])), 1)
                results.extend(self._download(y, h, w))
            return results

    def upscale_group(
        self,
        frames: Sequence[np.ndarray],
        keys: Sequence[Hashable],
        interp: Sequence[bool],
        output: str = "refined",
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Both output frames of ``len(interp)`` consecutive source frames.

        For pair ``j``: ``evens[j]`` = M_S(frames[j]); ``odds[j]`` = the frame between
        ``frames[j]`` and ``frames[j+1]`` when ``interp[j]``, else ``evens[j]`` (a scene cut
        or the last frame) -- black in the ``"masks"`` view.
        """
        p = len(interp)
        if p < 1 or p > len(frames) or len(keys) != len(frames):
            raise ValueError("upscale_group: need len(keys) == len(frames) >= len(interp) >= 1")
        with self._lock:
            evens = self.spatial(frames[:p], keys[:p])
            idx = [j for j in range(p) if interp[j]]
            if idx and max(idx) + 1 >= len(frames):
                raise ValueError("upscale_group: an interpolated pair needs its next frame")
            mids = self.interpolate([(frames[j], frames[j + 1]) for j in idx],
                                    [(keys[j], keys[j + 1]) for j in idx], output)
        odds = [e if output != "masks" else np.zeros_like(e) for e in evens]
        for j, m in zip(idx, mids):
            odds[j] = m
        return evens, odds
