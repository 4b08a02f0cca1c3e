"""Small building blocks shared by the networks (pure PyTorch)."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PADDINGS", "PReLU", "Conv2d", "check_padding", "conv", "replicate_pad", "conv_input", "backwarp", "resize_flow", "bicubic_up2",
           "time_plane", "pad_to", "GridCache", "grid_cache"]


def replicate_pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """``F.pad(x, pad, mode="replicate")`` (``pad`` = left, right, top, bottom) in ``x``'s
    own dtype and memory format: CPU autocast runs ``replication_pad2d`` in float32, two
    casts of the whole tensor per call.

    >>> x = torch.arange(6.0).view(1, 1, 2, 3)
    >>> torch.equal(replicate_pad(x, (1, 2, 1, 0)), F.pad(x, (1, 2, 1, 0), mode="replicate"))
    True
    >>> y = torch.rand(1, 5, 4, 6).to(memory_format=torch.channels_last)
    >>> p = replicate_pad(y, (2, 1, 0, 3))
    >>> torch.equal(p, F.pad(y, (2, 1, 0, 3), mode="replicate")), p.is_contiguous(memory_format=torch.channels_last)
    (True, True)
    """
    left, right, top, bottom = pad
    if not any(pad):
        return x
    h, w = x.shape[-2:]
    shape = (*x.shape[:-2], top + h + bottom, left + w + right)
    last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    out = torch.empty(shape, dtype=x.dtype, device=x.device,
                      memory_format=torch.channels_last if last else torch.contiguous_format)   # one allocation
    out[..., top:top + h, left:left + w] = x
    out[..., :top, left:left + w] = x[..., :1, :]
    out[..., top + h:, left:left + w] = x[..., -1:, :]
    out[..., :left] = out[..., left:left + 1]
    out[..., left + w:] = out[..., left + w - 1:left + w]
    return out


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` whose ``padding_mode="replicate"`` pads with :func:`replicate_pad`
    (the same values, without autocast's float32 round trip)."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.padding_mode != "replicate":
            return super()._conv_forward(input, weight, bias)
        return F.conv2d(replicate_pad(input, self._reversed_padding_repeated_twice), weight, bias, self.stride,
                        0, self.dilation, self.groups)


#: the ways M_S's and R's convolutions may pad a frame's edges (``nn.Conv2d``'s
#: ``padding_mode``; :attr:`DSFNConfig.spatial_padding`, :attr:`DSFNConfig.refine_padding`):
#: ``"replicate"`` continues the edge, so a flat frame stays flat up to its border
PADDINGS = ("zeros", "replicate")


def check_padding(owner: str, padding: str) -> str:
    """``padding`` if it is one of :data:`PADDINGS`, else a :class:`ValueError` naming ``owner``."""
    if padding not in PADDINGS:
        raise ValueError(f"{owner}: padding must be one of {PADDINGS}, not {padding!r}")
    return padding


def conv(cin: int, cout: int, k: int = 3, stride: int = 1, act: bool = True, padding_mode: str = "zeros") -> nn.Module:
    """A ``k x k`` convolution with 'same' padding (``padding_mode`` as ``nn.Conv2d``'s),
    optionally followed by LeakyReLU(0.1)."""
    layer = Conv2d(cin, cout, k, stride, padding=k // 2, padding_mode=padding_mode)
    if not act:
        return layer
    return nn.Sequential(layer, nn.LeakyReLU(0.1, inplace=True))


class PReLU(nn.PReLU):
    """``nn.PReLU`` with one weight per channel, the same results computed faster for a
    channels-last CPU tensor with fewer than 64 channels: its pixels viewed as 64 channels
    of a narrower image (PyTorch's CPU kernel is up to 5x slower with 16 bf16 channels).

    >>> act = PReLU(16)
    >>> x = torch.randn(1, 16, 4, 8).contiguous(memory_format=torch.channels_last)
    >>> torch.equal(act(x), nn.functional.prelu(x, act.weight))
    True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.device.type != "cpu" or self.num_parameters != x.shape[1] or x.is_contiguous() \
                or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        n, c, h, w = x.shape
        r = 64 // c if 64 % c == 0 else 1
        if r == 1 or w % r:
            return super().forward(x)
        packed = x.permute(0, 2, 3, 1).reshape(n, h, w // r, c * r).permute(0, 3, 1, 2)
        out = F.prelu(packed, self.weight.repeat(r))
        return out.permute(0, 2, 3, 1).reshape(n, h, w, c).permute(0, 3, 1, 2)


def conv_input(parts: list[torch.Tensor], layer: nn.Module, space_to_depth: bool = False) -> torch.Tensor:
    """``torch.cat(parts, 1)`` as the input of ``layer`` (a convolution, or a module that
    starts with one); with ``space_to_depth``, each part goes through
    ``F.pixel_unshuffle(part, 2)`` first.

    Without gradients the parts are copied once each into a tensor already in the dtype
    (the autocast one, else the weight's) and memory format the convolution computes in:
    the same values as the concatenation it replaces, without the mixed-format concatenation,
    space-to-depth and casts that would each copy the whole input again.

    >>> x, y = torch.rand(2, 1, 3, 8, 6)
    >>> layer = nn.Conv2d(24, 4, 3)
    >>> with torch.no_grad():
    ...     fast = conv_input([x, y], layer, space_to_depth=True)
    >>> torch.equal(fast, F.pixel_unshuffle(torch.cat([x, y], 1), 2))
    True
    """
    if torch.is_grad_enabled():
        if space_to_depth:
            parts = [F.pixel_unshuffle(p, 2) for p in parts]
        return torch.cat(parts, 1)
    weight = next(p for p in layer.parameters() if p.dim() == 4)
    kind = weight.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype
    fmt = torch.channels_last if weight.is_contiguous(memory_format=torch.channels_last) and not \
        weight.is_contiguous() else torch.contiguous_format
    b, _, h, w = parts[0].shape
    k = 4 if space_to_depth else 1
    if space_to_depth:
        h, w = h // 2, w // 2
    out = torch.empty((b, k * sum(p.shape[1] for p in parts), h, w), dtype=dtype, device=weight.device,
                      memory_format=fmt)
    at = 0
    for p in parts:
        n = p.shape[1]
        if space_to_depth:   # a constant plane (a timestep) stays a broadcast, never a full-size tensor
            p = (p[:, :, :1, :1].repeat_interleave(4, 1) if p.stride(-1) == p.stride(-2) == 0
                 else F.pixel_unshuffle(p, 2))
        out[:, at:at + k * n].copy_(p)
        at += k * n
    return out


class GridCache:
    """Pixel-coordinate grids (1, 2, H, W) by size and device: at most ``size`` of them, the
    least recently used dropped. An engine keeps one and runs its networks under
    :func:`grid_cache`; elsewhere :func:`backwarp` builds its grid on every call.

    >>> cache = GridCache(size=1)
    >>> cache.get(2, 3, torch.device("cpu"))[0, :, 1, 2].tolist()    # (x, y) of row 1, column 2
    [2.0, 1.0]
    >>> _ = cache.get(4, 4, torch.device("cpu")); len(cache)
    1
    """

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._grids: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._grids)

    def get(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, str(device))
        grid = self._grids.get(key)
        if grid is None:
            grid = self._grids[key] = _grid(h, w, device)
            while len(self._grids) > self.size:
                self._grids.popitem(last=False)
        else:
            self._grids.move_to_end(key)
        return grid

    def clear(self) -> None:
        self._grids.clear()


_CACHE: ContextVar[GridCache | None] = ContextVar("vsdsfn_grid_cache", default=None)


@contextlib.contextmanager
def grid_cache(cache: GridCache):
    """:func:`backwarp` in this context (this thread) takes its grids from ``cache``."""
    token = _CACHE.set(cache)
    try:
        yield cache
    finally:
        _CACHE.reset(token)


def _grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Pixel-coordinate grid (1, 2, H, W) in float32."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                            torch.arange(w, dtype=torch.float32, device=device), indexing="ij")
    return torch.stack((xs, ys)).unsqueeze(0)


def _base_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """The grid from the current :func:`grid_cache`; built afresh outside one, or while
    torch.compile traces (the graph then builds it)."""
    cache = None if torch.compiler.is_compiling() else _CACHE.get()
    return _grid(h, w, device) if cache is None else cache.get(h, w, device)


def backwarp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``img`` (B, C, H, W) by ``flow`` (B, 2, H, W) given in pixels.

    Output pixel ``p`` samples ``img`` at ``p + flow(p)``. The sampling grid is built and
    used in float32 whatever the dtype of ``img`` (fp16 grids lose sub-pixel precision
    on large frames); the result is returned in ``img``'s dtype.
    """
    b, _, h, w = flow.shape
    coords = _base_grid(h, w, flow.device) + flow.float()
    gx = coords[:, 0] * (2.0 / max(w - 1, 1)) - 1.0
    gy = coords[:, 1] * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    out = F.grid_sample(img.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.to(img.dtype)


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize flow fields (B, 2k, H, W) in pixels to ``size``, scaling the vectors per axis."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    sx, sy = size[1] / w, size[0] / h
    scale = torch.tensor([sx, sy], dtype=out.dtype, device=out.device)
    return out * scale.repeat(out.shape[1] // 2).view(1, -1, 1, 1)


def bicubic_up2(x: torch.Tensor) -> torch.Tensor:
    """2x bicubic upscaling (PyTorch, ``align_corners=False``; computed on a contiguous
    copy: PyTorch's CPU kernel takes twice as long on channels-last input)."""
    return F.interpolate(x.contiguous(), scale_factor=2, mode="bicubic", align_corners=False)


def time_plane(t: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The timestep ``t`` (a number, or one per batch item) as a (B, 1, H, W) plane shaped
    and typed like ``like``."""
    b, _, h, w = like.shape
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device).reshape(-1, 1, 1, 1)
    return t.expand(b, 1, h, w)


def pad_to(x: torch.Tensor, multiple: int, size: tuple[int, int] | None = None) -> torch.Tensor:
    """``x`` replicate-padded at the bottom and right so that its height and width become
    multiples of ``multiple`` (``size``: pad as a frame of that (h, w) would be, scaled to
    ``x``'s size, e.g. a high-res frame padded like its low-res one).

    >>> pad_to(torch.zeros(1, 3, 5, 7), 4).shape, pad_to(torch.zeros(1, 3, 10, 14), 4, (5, 7)).shape
    (torch.Size([1, 3, 8, 8]), torch.Size([1, 3, 16, 16]))
    """
    h, w = size or x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return x
    sy, sx = x.shape[-2] // h, x.shape[-1] // w
    return F.pad(x, (0, pw * sx, 0, ph * sy), mode="replicate")
