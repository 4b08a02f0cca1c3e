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

__all__ = ["Tile", "MAX_OVERHEAD", "parse_tile", "smallest_tile", "aligned", "plan_tiles", "overhead",
           "work", "fitting_overlap", "smallest_fair_tile", "fallback"]

#: the most work a tiling the engine chooses (the overlap fitted to a tile, the tiles of
#: the out-of-memory fallback, a suggested tile) may cost, as a multiple of whole frames:
#: a tile of side t keeping ov pixels of context computes (t / (t - 2 ov))^2 pixels per
#: pixel it delivers
MAX_OVERHEAD = 2.0


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


def overhead(side: int, overlap: int, multiple: int) -> float:
    """The work of tiles of ``side`` keeping ``overlap`` (both aligned to ``multiple``)
    per pixel they deliver, away from the frame's edges (``inf``: no core left).

    >>> round(overhead(448, 192, 64), 2), round(overhead(448, 64, 64), 2), round(overhead(1344, 192, 64), 2)
    (49.0, 1.96, 1.96)
    """
    t, ov = side // multiple * multiple, -(-overlap // multiple) * multiple
    return (t / (t - 2 * ov)) ** 2 if t > 2 * ov else float("inf")


def smallest_fair_tile(overlap: int, multiple: int) -> int:
    """The smallest tile side whose ``overlap`` costs at most :data:`MAX_OVERHEAD`.

    >>> smallest_fair_tile(192, 64), smallest_fair_tile(64, 64), smallest_fair_tile(0, 64)
    (1344, 448, 64)
    """
    side = smallest_tile(overlap, multiple)
    while overhead(side, overlap, multiple) > MAX_OVERHEAD:
        side += multiple
    return side


def fitting_overlap(side: int, multiple: int, most: int) -> int:
    """The largest overlap up to ``most`` (``most`` itself, or a smaller multiple of
    ``multiple``) whose tiles of ``side`` cost at most :data:`MAX_OVERHEAD`.

    >>> fitting_overlap(512, 64, 192), fitting_overlap(2048, 64, 192), fitting_overlap(256, 64, 192)
    (64, 192, 0)
    """
    for ov in [most] + list(range((most - 1) // multiple * multiple, -1, -multiple)):
        if ov <= most and overhead(side, ov, multiple) <= MAX_OVERHEAD:
            return ov
    return 0


def aligned(tile: tuple[int, int], overlap: int, multiple: int) -> tuple[tuple[int, int], int]:
    """Tile sides rounded down and the overlap rounded up to multiples of ``multiple``.

    Raises :class:`ValueError` (naming the options and a tile that costs at most
    :data:`MAX_OVERHEAD`) when a tile would have no core left once both overlaps are
    taken off.
    """
    ov = -(-overlap // multiple) * multiple
    need = smallest_tile(overlap, multiple)
    for side in tile:
        if side < need:
            fair = smallest_fair_tile(overlap, multiple)
            raise ValueError(
                f"tile {side} is too small for tile_overlap {overlap} (a tile must be larger than 2 x "
                f"tile_overlap, and tiles are cut at multiples of {multiple} px: tile_overlap rounds up to "
                f"{ov}); use tile >= {fair} (at most {MAX_OVERHEAD:g}x the work of whole frames), or leave "
                f"tile_overlap unset to fit it to the tile, e.g. {spell('tile', fair)}")
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


def work(h: int, w: int, tile: tuple[int, int], overlap: int, multiple: int) -> float:
    """The pixels a plan runs per pixel of the ``h`` x ``w`` frame (1.0: untiled)."""
    return sum((t.y1 - t.y0) * (t.x1 - t.x0) for t in plan_tiles(h, w, tile, overlap, multiple)) / (h * w)


def fallback(frame: tuple[int, int], tile: tuple[int, int] | None, multiple: int,
             most_overlap: int) -> tuple[tuple[int, int], int] | None:
    """The next smaller tiling after running out of memory on a ``frame`` (width, height;
    padded) with ``tile`` (None: whole frames): halved tile sides and the largest overlap
    up to ``most_overlap`` that keeps the tiles within :data:`MAX_OVERHEAD`; sides stop at
    :func:`smallest_fair_tile` with one ``multiple`` of context (with ``most_overlap`` 0:
    at ``multiple``). None when the tiles are that small already.

    >>> fallback((1920, 1088), None, 64, 192), fallback((960, 512), (960, 512), 64, 192)
    (((960, 512), 64), ((448, 448), 64))
    >>> fallback((448, 448), (448, 448), 64, 192) is None, fallback((2048, 192), None, 64, 192)
    (True, ((1024, 320), 128))
    """
    floor = smallest_fair_tile(min(most_overlap, multiple), multiple) if most_overlap else multiple
    cur = tuple(min(t, f) for t, f in zip(tile, frame)) if tile else frame
    new = tuple(max(floor, side // 2 // multiple * multiple) if side > floor else side for side in cur)
    if new == cur:
        return None
    split = [s for s, f in zip(new, frame) if s < f]
    ov = fitting_overlap(min(split), multiple, most_overlap)
    # a side that spans the frame stays one tile: at least a valid tile for the overlap
    return tuple(max(side, smallest_tile(ov, multiple)) for side in new), ov
