"""A video's colour description (ITU-T H.273 codes, as VapourSynth's frame props and
ffmpeg use them) and the one rule for a YUV matrix the file does not state.

The command line, :func:`vsdsfn.upscale`'s conversion hint and training's decoders ask
:func:`matrix_of` / :func:`guess_matrix`; the conversion to RGB and back uses one
:class:`Colour` both ways, and the encoder writes it as the output's tags.

>>> guess_matrix(1280, 544), guess_matrix(720, 576), guess_matrix(720, 640)
(1, 6, 1)
>>> matrix_of({"_Matrix": 9}, 720, 480), matrix_of({"_Matrix": 2}, 1920, 1080)
(9, 1)
>>> Colour(matrix=1, transfer=16, primaries=9, full_range=False).ffmpeg_options()
['-colorspace', 'bt709', '-color_trc', 'smpte2084', '-color_primaries', 'bt2020', '-color_range', 'tv']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BT709", "BT601", "Colour", "guess_matrix", "matrix_of", "range_of", "MATRIX_NAMES"]

BT709, BT601 = 1, 6
#: codes that say nothing: 2 unspecified, 3 reserved (0 is RGB for the matrix)
_UNSPECIFIED = (2, 3)

#: H.273 matrix codes by the names VapourSynth's resize uses (``matrix_in_s``)
MATRIX_NAMES = {"709": 1, "fcc": 4, "470bg": 5, "601": 6, "170m": 6, "240m": 7, "2020ncl": 9, "2020cl": 10}
# ffmpeg's names of the H.273 codes (-colorspace, -color_trc, -color_primaries)
_FF_MATRIX = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "ycgco",
              9: "bt2020nc", 10: "bt2020c", 14: "ictcp"}
_FF_TRANSFER = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
                13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67"}
_FF_PRIMARIES = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film", 9: "bt2020",
                 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}


def guess_matrix(width: int, height: int) -> int:
    """The matrix of untagged YUV video: BT.709 for HD (wider than 1279 or taller than 576
    pixels, as mpv decides), else BT.601 (SMPTE 170M)."""
    return BT709 if width >= 1280 or height > 576 else BT601


def matrix_of(props: Mapping[str, Any], width: int, height: int) -> int:
    """The YUV matrix a frame's ``_Matrix`` prop names, or :func:`guess_matrix` where it
    names none."""
    m = int(props.get("_Matrix", 2))
    return guess_matrix(width, height) if m in _UNSPECIFIED or m == 0 else m


def range_of(props: Mapping[str, Any], yuv: bool) -> bool:
    """Whether a frame is full range: its ``_Range`` prop (VapourSynth R74+: 1 full,
    0 limited) or ``_ColorRange`` (earlier: 0 full, 1 limited); else YUV is limited and
    RGB full."""
    if "_Range" in props:
        return int(props["_Range"]) == 1
    if "_ColorRange" in props:
        return int(props["_ColorRange"]) == 0
    return not yuv


@dataclass(frozen=True)
class Colour:
    """Matrix, transfer and primaries (H.273 codes; 2: unspecified) and the range."""

    matrix: int
    transfer: int = 2
    primaries: int = 2
    full_range: bool = False
    matrix_guessed: bool = False   # the file did not say; :func:`guess_matrix` chose it

    @classmethod
    def of(cls, props: Mapping[str, Any], width: int, height: int, yuv: bool, matrix: int | None = None) -> Colour:
        """A source frame's colour: its props, ``matrix`` where the file names none."""
        stated = int(props.get("_Matrix", 2))
        untagged = stated in _UNSPECIFIED or (yuv and stated == 0)
        if not yuv:
            m, guessed = guess_matrix(width, height), False   # RGB in: the matrix written out
        elif untagged:
            m, guessed = (matrix, False) if matrix else (guess_matrix(width, height), True)
        else:
            m, guessed = stated, False
        return cls(m, int(props.get("_Transfer", 2)), int(props.get("_Primaries", 2)), range_of(props, yuv), guessed)

    @property
    def range_name(self) -> str:
        return "full" if self.full_range else "limited"

    def to_rgb(self, clip):
        """``clip`` (YUV, GRAY or RGB) as RGBS, with this matrix and range."""
        import vapoursynth as vs

        core = vs.core
        if clip.format.color_family == vs.RGB:
            return core.resize.Point(clip, format=vs.RGBS, range_in_s=self.range_name)
        if clip.format.color_family == vs.GRAY:
            clip = core.std.ShufflePlanes([clip] * 3, [0, 0, 0], vs.RGB)
            return core.resize.Point(clip, format=vs.RGBS, range_in_s=self.range_name)
        return core.resize.Bicubic(clip, format=vs.RGBS, matrix_in=self.matrix, range_in_s=self.range_name)

    def from_rgb(self, clip, fmt):
        """An RGBS/RGBH ``clip`` in the YUV format ``fmt``, with this matrix and range, its
        frames tagged with this colour."""
        import vapoursynth as vs

        out = vs.core.resize.Bicubic(clip, format=fmt, matrix=self.matrix, range_s=self.range_name)
        tags = {"_Transfer": self.transfer, "_Primaries": self.primaries}
        return vs.core.std.SetFrameProps(out, **tags)

    def ffmpeg_options(self) -> list[str]:
        """ffmpeg output options that tag the stream (and its container) with this colour."""
        out = ["-colorspace", _FF_MATRIX[self.matrix]] if self.matrix in _FF_MATRIX else []
        if self.transfer in _FF_TRANSFER:
            out += ["-color_trc", _FF_TRANSFER[self.transfer]]
        if self.primaries in _FF_PRIMARIES:
            out += ["-color_primaries", _FF_PRIMARIES[self.primaries]]
        return out + ["-color_range", "pc" if self.full_range else "tv"]

    def describe(self) -> str:
        """E.g. ``"matrix bt709 (guessed), transfer smpte2084, primaries bt2020, limited range"``."""
        parts = [f"matrix {_FF_MATRIX.get(self.matrix, self.matrix)}{' (guessed)' if self.matrix_guessed else ''}"]
        if self.transfer in _FF_TRANSFER:
            parts.append(f"transfer {_FF_TRANSFER[self.transfer]}")
        if self.primaries in _FF_PRIMARIES:
            parts.append(f"primaries {_FF_PRIMARIES[self.primaries]}")
        return ", ".join(parts + [f"{self.range_name} range"])
