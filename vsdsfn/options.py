"""The one table of :func:`vsdsfn.upscale`'s options: name, default, help, CLI flag and check.

``upscale`` and :class:`vsdsfn.engine.Engine` validate their options with :func:`check`,
which also turns any ``numbers.Integral``/``numbers.Real`` (numpy scalars, ``Fraction``)
into plain ``int``/``float``; the command line builds its flags, defaults and help from
:data:`OPTIONS`, and a test holds the README's option table to it. Standard library
only at import time: neither VapourSynth nor torch.

>>> [o.name for o in OPTIONS][:4]
['factor_num', 'factor_den', 'fps_num', 'fps_den']
>>> check({"batch_size": 0})
Traceback (most recent call last):
vsdsfn.options.OptionError: batch_size must be an integer in [1, 64], not 0; e.g. batch_size=4
>>> with cli_terms():
...     check({"batch_size": 0})
Traceback (most recent call last):
vsdsfn.options.OptionError: --batch-size must be an integer in [1, 64], not 0; e.g. --batch-size 4
>>> import fractions
>>> check({"st_scale": fractions.Fraction(1, 2), "batch_size": 2})
{'batch_size': 2, 'st_scale': 0.5}
>>> print(unknown(["batchsize"]))  # doctest: +ELLIPSIS
unknown option(s) 'batchsize' (did you mean 'batch_size'?); valid options: factor_num, ..., ensemble
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import difflib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from numbers import Integral, Real
from typing import Any

__all__ = ["Option", "OptionError", "OPTIONS", "NAMES", "BY_NAME", "MAX_BATCH", "MAX_CACHE", "MAX_THREADS",
           "check", "cli_terms", "spell", "spell_ratio", "unknown"]

#: upper bounds where an option's cost grows with its value (the VapourSynth graph grows
#: with batch_size squared; every cached group holds frames; every thread a stack; the
#: frame-rate factor's numerator is the length of a frame map)
MAX_BATCH = 64
MAX_CACHE = 256
MAX_THREADS = 256
MAX_RATIO_TERM = 1_000_000


class OptionError(ValueError):
    """A bad option value; the text reads ``<name> must be <rule>, not <value>; e.g. <fix>``."""


@dataclass(frozen=True)
class Option:
    """One keyword option of ``upscale``."""

    name: str
    default: Any
    help: str                                     # one line
    must: str = ""                                # what a valid value is
    valid: Callable[[Any], bool] | None = None    # None: checked where it is used (device: select_device)
    convert: Callable[[Any], Any] = lambda v: v   # a valid value -> the plain Python value used
    example: Any = None                           # a valid value, for the error's fix
    flag: str | None = None                       # the CLI's flag; None: the CLI has none
    parse: Callable[[str], Any] = str             # the CLI's text -> value (bool: --flag/--no-flag)
    cli_none: str | None = None                   # what the CLI writes for the value None
    choices: tuple[str, ...] = ()                 # the CLI's choices
    cli: str | None = None                        # the CLI's own spelling where it has no flag of its own


_CLI = contextvars.ContextVar("vsdsfn_cli_terms", default=False)


@contextlib.contextmanager
def cli_terms() -> Iterator[None]:
    """Within this block errors name CLI flags (``--batch-size 4``), not keywords."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def _is_int(v: Any) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _int_in(least: int, most: int | None = None) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and least <= v and (most is None or v <= most)


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _or_none(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or ok(v)


def _int_or_none(v: Any) -> Any:
    return None if v is None else int(v)


def _weights_ok(v: Any) -> bool:
    return v is None or (isinstance(v, (str, os.PathLike)) and os.fspath(v).strip() != "")


def _threshold_ok(v: Any) -> bool:
    return _is_real(v) and 0 < v <= 1


def _tile_ok(v: Any) -> bool:
    return _int_in(0)(v) or (isinstance(v, (tuple, list)) and len(v) == 2 and all(map(_int_in(1), v)))


def _tile_convert(v: Any) -> Any:
    return None if v is None else int(v) if _is_int(v) else (int(v[0]), int(v[1]))


def _st_scale_ok(v: Any) -> bool:
    from .nets.rife import RIFE   # the rule is the network's: the flow scales its M_T takes

    return _is_real(v) and float(v) in RIFE.SCALES


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
_TILE_OVERLAP = 192
_PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_ON_OFF, _MAYBE = "True or False", "True, False or None"

#: upscale's keyword options, in its signature's order
OPTIONS: tuple[Option, ...] = (
    Option("factor_num", 2, "the frame rate is multiplied by factor_num / factor_den (> 1)",
           must=f"an integer in [1, {MAX_RATIO_TERM}]", valid=_int_in(1, MAX_RATIO_TERM), convert=int, example=5,
           cli="--factor"),
    Option("factor_den", 1, "see factor_num", must=f"an integer in [1, {MAX_RATIO_TERM}]",
           valid=_int_in(1, MAX_RATIO_TERM), convert=int, example=2, cli="--factor"),
    Option("fps_num", None, "instead of the factor: the output frame rate fps_num / fps_den",
           must=f"None or an integer in [1, {MAX_RATIO_TERM}]", valid=_or_none(_int_in(1, MAX_RATIO_TERM)),
           convert=_int_or_none, example=60000, cli="--fps"),
    Option("fps_den", None, "see fps_num (None: 1)", must=f"None or an integer in [1, {MAX_RATIO_TERM}]",
           valid=_or_none(_int_in(1, MAX_RATIO_TERM)), convert=_int_or_none, example=1001, cli="--fps"),
    Option("weights", None, '"default" (the shipped weights) or a .safetensors file from training/',
           must="None/'default' (the shipped weights) or the path of a .safetensors file",
           valid=_weights_ok, example="my.safetensors", flag="--weights", cli_none="default"),
    Option("device", None, '"auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N"',
           example="cpu", flag="--device", cli_none="auto"),
    Option("precision", None, '"auto" (bf16 on CPUs with native bf16, fp16 on CUDA, else fp32), "fp32", '
           '"fp16" (CUDA) or "bf16"', must=f"None or one of {', '.join(map(repr, _PRECISIONS))}",
           valid=lambda v: v is None or v in _PRECISIONS, example="fp32", flag="--precision", cli_none="auto",
           choices=_PRECISIONS),
    Option("batch_size", 1, f"interpolated frames per forward pass (and source frames per work group), at most "
           f"{MAX_BATCH}",
           must=f"an integer in [1, {MAX_BATCH}]", valid=_int_in(1, MAX_BATCH), convert=int, example=4,
           flag="--batch-size", parse=int),
    Option("scene_detect", False, "also detect scene cuts (no blending across them)",
           must=_ON_OFF, valid=_bool, example=True, flag="--scene-detect", parse=bool),
    Option("scene_threshold", 0.1, "the cut detector's threshold in (0, 1]: mean absolute luma difference",
           must="a number in (0, 1]", valid=_threshold_ok, convert=float, example=0.1,
           flag="--scene-threshold", parse=float),
    Option("debug", None, "put this intermediate in the interpolated frames instead of the result",
           must=f"None or one of {', '.join(map(repr, _DEBUG))}", valid=lambda v: v is None or v in _DEBUG,
           example="masks", flag="--debug", choices=_DEBUG),
    Option("num_threads", None, f"torch CPU threads, process-wide (at most {MAX_THREADS})",
           must=f"None or an integer in [1, {MAX_THREADS}]", valid=_or_none(_int_in(1, MAX_THREADS)),
           convert=_int_or_none, example=2, flag="--threads", parse=int),
    Option("cache_size", None, f"batch groups kept in memory, at most {MAX_CACHE} (None: max(4, 2 x "
           "core.num_threads))", must=f"None or an integer in [1, {MAX_CACHE}] (batch groups kept)",
           valid=_or_none(_int_in(1, MAX_CACHE)), convert=_int_or_none, example=8),
    Option("tile", None, "0: whole frames; N or WxH: run the network on tiles of at most N x N (W x H) input "
           "pixels, to bound memory", must="None, 0 (no tiling), a positive integer (the longest tile side in "
           "input pixels) or a (width, height) pair", valid=_or_none(_tile_ok), convert=_tile_convert,
           example=512, flag="--tile", parse=_tile_text, cli_none="0"),
    Option("tile_overlap", None, f"context in input pixels kept around the used part of each tile (default: up "
           f"to {_TILE_OVERLAP}, lowered for small tiles to keep them within twice the work of whole frames)",
           must="None (fitted to the tile) or an integer >= 0 (input pixels)", valid=_or_none(_int_in(0)),
           convert=_int_or_none, example=64, flag="--tile-overlap", parse=int),
    Option("channels_last", None, "NHWC memory format (None: on)", must=_MAYBE, valid=_or_none(_bool),
           example=False),
    Option("compile", False, "use torch.compile (falls back to eager if compiling fails)",
           must=_ON_OFF, valid=_bool, example=True, flag="--compile", parse=bool),
    Option("trt", False, "compile with TensorRT instead (CUDA; needs torch-tensorrt, the tensorrt extra)",
           must=_ON_OFF, valid=_bool, example=True, flag="--trt", parse=bool),
    Option("st_scale", None, "the scale at which the S->T stream estimates its flows on the high-res frames: "
           "1, 0.5, 0.25 or 0.125 (default: the weights file's; smaller is faster)",
           must="None (the weights file's) or one of the flow scales 1, 0.5, 0.25, 0.125",
           valid=_or_none(_st_scale_ok), convert=lambda v: None if v is None else float(v), example=0.5,
           flag="--st-scale", parse=float),
    Option("ensemble", False, "average with a pass on the frames flipped upside down: a little better, twice the "
           "time", must=_ON_OFF, valid=_bool, example=True, flag="--ensemble", parse=bool),
)
NAMES: tuple[str, ...] = tuple(o.name for o in OPTIONS)
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def _cli_value(o: Option, value: Any) -> str:
    if value is None and o.cli_none is not None:
        return o.cli_none
    if isinstance(value, (tuple, list)):
        return "x".join(map(str, value))
    return str(value)


def spell(name: str, value: Any) -> str:
    """How the caller sets option ``name`` to ``value``: ``name=value`` in Python,
    the flag inside :func:`cli_terms`.

    >>> spell("weights", None)
    'weights=None'
    >>> with cli_terms():
    ...     spell("weights", None), spell("tile", (640, 360)), spell("compile", True)
    ('--weights default', '--tile 640x360', '--compile')
    """
    o = BY_NAME[name]
    if not (_CLI.get() and o.flag):
        return f"{name}={value!r}"
    if o.parse is bool:
        return o.flag if value else "--no-" + o.flag[2:]
    return f"{o.flag} {_cli_value(o, value)}"


def spell_ratio(kind: str, num: int, den: int) -> str:
    """How the caller sets the ``"factor"`` or ``"fps"`` ratio: ``factor_num=5,
    factor_den=2`` in Python, ``--factor 5/2`` inside :func:`cli_terms`.

    >>> spell_ratio("fps", 60000, 1001)
    'fps_num=60000, fps_den=1001'
    """
    o = BY_NAME[f"{kind}_num"]
    if _CLI.get() and o.cli:
        return f"{o.cli} {num}/{den}"
    return f"{kind}_num={num}, {kind}_den={den}"


def check(values: Mapping[str, Any]) -> dict[str, Any]:
    """The options in ``values`` (names not in the table are ignored) as plain Python
    values; :class:`OptionError` ("<problem>; <fix>") for the first bad one."""
    out = {}
    for o in OPTIONS:
        if o.name not in values:
            continue
        v = values[o.name]
        if o.valid is not None and not o.valid(v):
            if o.cli:
                raise OptionError(_ratio_error(o, values))
            name = o.flag if _CLI.get() and o.flag else o.name
            raise OptionError(f"{name} must be {o.must}, not {v!r}; e.g. {spell(o.name, o.example)}")
        out[o.name] = o.convert(v)
    return out


def _ratio_error(o: Option, values: Mapping[str, Any]) -> str:
    """The error for a bad part of the ``factor`` or ``fps`` ratio, in the caller's terms;
    a fractional numerator (``factor_num=Fraction(5, 2)``) is shown as the two integers."""
    kind = o.name.rpartition("_")[0]
    num, den = BY_NAME[f"{kind}_num"], BY_NAME[f"{kind}_den"]
    v = values[o.name]
    fix = spell_ratio(kind, num.example, den.example)
    if _is_real(v) and not _is_int(v) and v > 0 and o is num and values.get(den.name) in (None, 1):
        r = Fraction(v).limit_denominator(MAX_RATIO_TERM)
        fix = spell_ratio(kind, r.numerator, r.denominator)
    if _CLI.get():
        shown = "/".join(str(values.get(n.name)) for n in (num, den) if values.get(n.name) not in (None, 1))
        shown = shown or str(values.get(num.name))
        return f"{o.cli} must be N or N/D with N and D integers in [1, {MAX_RATIO_TERM}], not {shown}; e.g. {fix}"
    return f"{o.name} must be {o.must}, not {v!r}; e.g. {fix}"


def unknown(names: Iterable[str]) -> str:
    """The error for unknown option names, with a "did you mean" hint where one is close."""
    hints = [f"{u!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, NAMES, 1)) else repr(u)
             for u in sorted(names)]
    return f"unknown option(s) {', '.join(hints)}; valid options: {', '.join(NAMES)}"
