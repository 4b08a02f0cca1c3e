"""The one table of :func:`vsdsfn.upscale`'s options: name, default, help, CLI flag and check.

``upscale`` validates its keyword options with :func:`check`, the command line builds
its option flags, defaults and help from :data:`OPTIONS`, and a test holds the README's
option table to it. Standard library only: imports neither VapourSynth nor torch.

>>> [o.name for o in OPTIONS][:4]
['weights', 'device', 'fp16', 'batch_size']
>>> check({"batch_size": 0})
Traceback (most recent call last):
ValueError: batch_size must be a positive integer, not 0; e.g. batch_size=4
>>> check({"batch_size": 0}, cli=True)
Traceback (most recent call last):
ValueError: --batch-size must be a positive integer, not 0; e.g. --batch-size 4
>>> print(unknown(["batchsize"]))  # doctest: +ELLIPSIS
unknown option(s) 'batchsize' (did you mean 'batch_size'?); valid options: weights, device, ..., ensemble
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "OPTIONS", "NAMES", "check", "unknown"]


@dataclass(frozen=True)
class Option:
    """One keyword option of ``upscale``; a bad value's error reads
    ``<name> must be <must>, not <value>; e.g. <name>=<example>``."""

    name: str
    default: Any
    help: str                                   # one line
    flag: str | None                            # the CLI's flag; None: the CLI has none
    type: Callable[[str], Any]                  # the CLI's text -> value (bool: --flag/--no-flag)
    must: str = ""                              # what a valid value is
    valid: Callable[[Any], bool] | None = None  # None: checked where it is used (device: select_device)
    example: Any = None                         # a valid value, for the error's fix
    choices: tuple[str, ...] = ()               # the CLI's choices


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _int(least: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not _bool(v) and v >= least


def _unit(v: Any, open_low: bool = False) -> bool:
    """A number in [0, 1] (``open_low``: in (0, 1])."""
    return isinstance(v, (int, float)) and not _bool(v) and (0 < v if open_low else 0 <= v) and v <= 1


def _or_none(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or ok(v)


def _tile_ok(v: Any) -> bool:
    return _int(0)(v) or (isinstance(v, (tuple, list)) and len(v) == 2 and all(map(_int(1), v)))


def _tile_text(text: str) -> int | tuple[int, int]:
    """``"512"`` -> 512, ``"640x360"`` -> (640, 360)."""
    try:
        sides = [int(v) for v in text.lower().split("x")]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected N or WxH (e.g. 512 or 640x360), not {text!r}")
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


# literals, to import neither torch nor numpy; a test holds them equal to engine.DEBUG_OUTPUTS
# and engine.DEFAULT_TILE_OVERLAP
_DEBUG = ("st", "ts", "fused", "masks")
_ON_OFF, _MAYBE = "True or False", "True, False or None"

#: upscale's keyword options, in its signature's order
OPTIONS: tuple[Option, ...] = (
    Option("weights", None, 'None/"default": the shipped weights; or a path to a .safetensors file', "--weights",
           str, "None/'default' (the shipped weights) or a path to a .safetensors file",
           _or_none(lambda v: isinstance(v, (str, os.PathLike))), "my.safetensors"),
    Option("device", None, 'None/"auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N"', "--device",
           str, example="cpu"),
    Option("fp16", None, "half precision on CUDA (None: fp16 for RGBH clips on CUDA, fp32 otherwise)", "--fp16",
           bool, _MAYBE, _or_none(_bool), True),
    Option("batch_size", 1, "frame pairs per forward pass (the output is the same for every value)",
           "--batch-size", int, "a positive integer", _int(1), 4),
    Option("scene_detect", False, "also detect scene cuts (no blending across them)", "--scene-detect", bool,
           _ON_OFF, _bool, True),
    Option("scene_threshold", 0.1, "the cut detector's threshold in (0, 1]: mean absolute luma difference",
           "--scene-threshold", float, "a number in (0, 1]", lambda v: _unit(v, open_low=True), 0.1),
    Option("debug", None, "put this intermediate in the odd frames instead of the result", "--debug", str,
           f"None or one of {', '.join(map(repr, _DEBUG))}", lambda v: v is None or v in _DEBUG, "masks", _DEBUG),
    Option("num_threads", None, "torch CPU threads (process-wide)", "--threads", int,
           "a positive integer or None", _or_none(_int(1)), 2),
    Option("cache_size", None, "batch groups kept in memory (None: max(4, 2 x core.num_threads))", None, int,
           "a positive integer (batch groups kept) or None", _or_none(_int(1)), 8),
    Option("tile", None, "None/0: whole frames; N or (W, H) (on the CLI: N or WxH): run the network on tiles of "
           "at most N x N (W x H) input pixels, to bound memory", "--tile", _tile_text,
           "None, 0 (no tiling), a positive integer (the longest tile side in input pixels) or a (width, height) "
           "pair", _or_none(_tile_ok), 512),
    Option("tile_overlap", 192, "context in input pixels kept around the used part of each tile",
           "--tile-overlap", int, "an integer >= 0 (input pixels)", _int(0), 192),
    Option("channels_last", None, "NHWC memory format (None: on)", None, bool, _MAYBE, _or_none(_bool), False),
    Option("compile", False, "use torch.compile (falls back to eager if compiling fails)", "--compile", bool,
           _ON_OFF, _bool, True),
    Option("st_scale", None, "the scale at which the S->T stream estimates its flows on the high-res frames: 1, "
           "0.5 or 0.25 (None: the weights file's; smaller is faster)", "--st-scale", float,
           "None (the weights file's), 1, 0.5 or 0.25",
           _or_none(lambda v: not isinstance(v, bool) and v in (1, 0.5, 0.25)), 0.5),
    Option("ensemble", False, "average with a pass on the frames flipped upside down: a little better, twice the "
           "time", "--ensemble", bool, _ON_OFF, _bool, True),
)
NAMES: tuple[str, ...] = tuple(o.name for o in OPTIONS)


def check(values: Mapping[str, Any], cli: bool = False) -> None:
    """Raise :class:`ValueError` ("<problem>; <fix>") for the first option in ``values``
    with a bad value; names not in the table are ignored. ``cli``: name the CLI's flags."""
    for o in OPTIONS:
        if o.name in values and o.valid is not None and not o.valid(v := values[o.name]):
            name, fix = (o.flag, f"{o.flag} {o.example}") if cli and o.flag else (o.name, f"{o.name}={o.example!r}")
            raise ValueError(f"{name} must be {o.must}, not {v!r}; e.g. {fix}")


def unknown(names: Iterable[str]) -> str:
    """The error for unknown option names, with a "did you mean" hint where one is close."""
    hints = [f"{u!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, NAMES, 1)) else repr(u)
             for u in sorted(names)]
    return f"unknown option(s) {', '.join(hints)}; valid options: {', '.join(NAMES)}"
