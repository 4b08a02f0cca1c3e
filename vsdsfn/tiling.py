"""Tile plans for running the network on parts of a frame (pure Python, no torch).

A frame (already padded to a multiple ``m`` of :attr:`DSFN.multiple`) is cut into
*cores* that partition it; each core is run inside a *tile* that extends it by
``overlap`` pixels of real image context on every side where the frame has any (more
at the frame's edges, where a tile is shifted inward to keep its full size), and only
the core of each tile's result is kept ("centre crop"). Tile origins, sizes and core
bounds are multiples of ``m``, so every stride-2 / pooling grid inside the network lines
up with the grid of the untiled run; a pixel's result then differs from the untiled one
only by what the network would have seen beyond the tile (at least ``overlap`` pixels
away).

>>> for t in plan_tiles(64, 48, (32, 64), 0, 16): print(t)    # 48 wide: cores 0:16, 16:48
Tile(y0=0, y1=64, x0=0, x1=32, cy0=0, cy1=64, cx0=0, cx1=16)
Tile(y0=0, y1=64, x0=16, x1=48, cy0=0, cy1=64, cx0=16, cx1=48)
>>> plan_tiles(48, 48, (48, 48), 16, 16)           # tile >= frame: one tile, the frame
[Tile(y0=0, y1=48, x0=0, x1=48, cy0=0, cy1=48, cx0=0, cx1=48)]
"""

from __future__ import annotations

from typing import NamedTuple

from .options import spell

__all__ = ["Tile", "parse_tile", "smallest_tile", "aligned", "plan_tiles"]


class Tile(NamedTuple):
    """Rows ``y0:y1`` and columns ``x0:x1`` are run; the result's ``cy0:cy1, cx0:cx1`` is kept
    (all in low-res pixels of the padded frame)."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int


def parse_tile(tile: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """A checked ``tile`` option (:mod:`vsdsfn.options`) as ``(width, height)``; ``None``
    for no tiling (``None`` or ``0``)."""
    if not tile:
        return None
    return (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))


def smallest_tile(overlap: int, multiple: int) -> int:
    """The smallest tile side that keeps ``overlap`` pixels of context (rounded up to
    ``multiple``) on both sides of a ``multiple``-pixel core.

    >>> smallest_tile(192, 64), smallest_tile(20, 16)
    (448, 80)
    """
    return 2 * (-(-overlap // multiple) * multiple) + multiple


def aligned(tile: tuple[int, int], overlap: int, multiple: int) -> tuple[tuple[int, int], int]:
    """Tile sides rounded down and the overlap rounded up to multiples of ``multiple``.

    Raises :class:`ValueError` (naming the options and the smallest valid tile) when a tile
    would have no core left once both overlaps are taken off.
    """
    ov = -(-overlap // multiple) * multiple
    need = smallest_tile(overlap, multiple)
    for side in tile:
        if side < need:
            raise ValueError(
                f"tile {side} is too small for tile_overlap {overlap} (a tile must be larger than 2 x "
                f"tile_overlap, and tiles are cut at multiples of {multiple} px: tile_overlap rounds up to "
                f"{ov}); use tile >= {need} or a smaller tile_overlap, e.g. {spell('tile', need)}")
    return (tile[0] // multiple * multiple, tile[1] // multiple * multiple), ov


def _axis(n: int, t: int, ov: int, m: int) -> list[tuple[int, int, int, int]]:
    """(start, stop, core start, core stop) along one axis of length ``n``."""
    if t >= n:
        return [(0, n, 0, n)]
    nb, cb = n // m, (t - 2 * ov) // m
    k = -(-nb // cb)
    bounds = [(i * nb // k) * m for i in range(k + 1)]
    out = []
    for a, b in zip(bounds, bounds[1:]):
        s = min(max(a - ov, 0), n - t)
        out.append((s, s + t, a, b))
    return out


def plan_tiles(h: int, w: int, tile: tuple[int, int], overlap: int, multiple: int) -> list[Tile]:
    """Tiles covering an ``h`` x ``w`` frame (multiples of ``multiple``).

    ``tile`` is (width, height), ``overlap`` the context kept around each core; both are
    aligned first (see :func:`aligned`). All tiles of a plan have the same size.
    """
    if h % multiple or w % multiple:
        raise ValueError(f"plan_tiles: frame {w}x{h} is not padded to a multiple of {multiple}")
    (tw, th), ov = aligned(tile, overlap, multiple)
    return [Tile(y0, y1, x0, x1, cy0, cy1, cx0, cx1)
            for (y0, y1, cy0, cy1) in _axis(h, th, ov, multiple)
            for (x0, x1, cx0, cx1) in _axis(w, tw, ov, multiple)]
