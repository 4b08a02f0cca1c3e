"""Host <-> device transfers of frames for :class:`vsdsfn.engine.Engine` (no VapourSynth).

numpy frames (RGB, HWC or planar CHW, float32/float16) become padded (B, 3, Hp, Wp)
tensors on the device and back; on CUDA through reused pinned buffers on their own
streams, so uploads and downloads overlap the compute queued beside them.

>>> io = Transfer(torch.device("cpu"), "hwc", np.float32, multiple=8)
>>> x = io.upload([np.full((5, 7, 3), 2.0, np.float32)])     # clamped to [0, 1], padded
>>> x.shape, float(x.max())
(torch.Size([1, 3, 8, 8]), 1.0)
>>> io.download_async(torch.zeros(1, 3, 16, 16), 5, 7)()[0].shape
(10, 14, 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from .nets.common import pad_to
from .options import spell

__all__ = ["Layout", "Transfer", "select_device"]

Layout = Literal["hwc", "chw"]


class _PinnedPool:
    """Reusable page-locked host buffers (CUDA only), keyed by shape and dtype.

    A buffer handed out is returned with :meth:`release` together with the CUDA event
    after which it is free again; it is reused only once that event has completed.
    """

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._free: dict[tuple, list[torch.Tensor]] = {}
        self._busy: list[tuple[torch.cuda.Event, torch.Tensor]] = []

    def get(self, shape, dtype: torch.dtype) -> torch.Tensor:
        still = []
        for ev, buf in self._busy:
            if ev.query():
                self._put(buf)
            else:
                still.append((ev, buf))
        self._busy = still
        lst = self._free.get((tuple(shape), dtype))
        if lst:
            return lst.pop()
        return torch.empty(tuple(shape), dtype=dtype, pin_memory=True)

    def _put(self, buf: torch.Tensor) -> None:
        lst = self._free.setdefault((tuple(buf.shape), buf.dtype), [])
        if len(lst) < self.keep:
            lst.append(buf)

    def release(self, buf: torch.Tensor, event: torch.cuda.Event | None = None) -> None:
        if event is None:
            self._put(buf)
        else:
            self._busy.append((event, buf))


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
                raise ValueError(f"device {device!r} is not valid; use {spell('device', 'cuda')} or 'cuda:N' with N "
                                 "a GPU number")
            index = int(tail)
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but CUDA is not available "
                             f"(no NVIDIA GPU/driver, or a CPU-only torch build); use {spell('device', 'cpu')}")
        count = torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"device {device!r} does not exist: this machine has {count} CUDA device(s) "
                             f"(cuda:0 .. cuda:{count - 1})")
        return torch.device("cuda", index)
    raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N', "
                     f"e.g. {spell('device', 'cpu')}")


class Transfer:
    """Frames to ``device`` as float32 (padded to ``multiple``) and high-res results back
    as ``out_dtype`` arrays in ``layout``."""

    def __init__(self, device: torch.device, layout: Layout, out_dtype, multiple: int) -> None:
        self.device, self.layout, self.multiple = device, layout, multiple
        self.out_dtype = np.dtype(out_dtype)
        if device.type == "cuda":
            self._up_stream = torch.cuda.Stream(device)
            self._down_stream = torch.cuda.Stream(device)
            self._pinned = _PinnedPool()

    def check(self, frames: Sequence[np.ndarray]) -> tuple[int, int]:
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

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        """Host tensor -> device. On CUDA: through a reused pinned buffer, copied on the
        upload stream (so it overlaps compute already queued), then handed to the
        compute stream."""
        if self.device.type != "cuda":
            return x.to(self.device)
        buf = self._pinned.get(x.shape, x.dtype)
        buf.copy_(x)
        main = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._up_stream):
            d = buf.to(self.device, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(self._up_stream)
        main.wait_event(ev)
        d.record_stream(main)
        self._pinned.release(buf, ev)
        return d

    def upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """numpy frames -> (B, 3, Hp, Wp) on the device, sanitised, clamped and padded."""
        h, w = self.check(frames)
        x = self._to_device(torch.from_numpy(np.stack([np.asarray(f) for f in frames])))
        if self.layout == "hwc":
            x = x.permute(0, 3, 1, 2)
        x = x.to(torch.float32)
        x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
        return pad_to(x, self.multiple).contiguous()

    def download_async(self, x: torch.Tensor, h: int, w: int):
        """Start copying a (B, C, Hp, Wp) high-res tensor to the host (cropped, clamped, in
        the output layout and dtype); returns a function that waits and gives the frames.

        On CUDA the copy runs on the download stream into a pinned buffer, so it overlaps
        the compute queued after it; the returned arrays never alias a reused buffer."""
        x = x[..., : 2 * h, : 2 * w].float().clamp(0.0, 1.0)
        x = torch.nan_to_num(x, nan=0.0)
        if self.layout == "hwc":
            x = x.permute(0, 2, 3, 1)
        x = x.to(torch.float16 if self.out_dtype == np.float16 else torch.float32).contiguous()
        if self.device.type != "cuda":
            return lambda: list(x.numpy())
        buf = self._pinned.get(x.shape, x.dtype)
        self._down_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._down_stream):
            buf.copy_(x, non_blocking=True)
            ev = torch.cuda.Event()
            ev.record(self._down_stream)
        x.record_stream(self._down_stream)

        def finish() -> list[np.ndarray]:
            ev.synchronize()
            arr = buf.numpy().copy()
            self._pinned.release(buf)
            return list(arr)

        return finish
