"""A video file as a source to render: the decoded clip with its colour, each frame's
time (constant or variable frame rate) and the file's other streams.

:func:`open_source` reads the first video track with ``core.bs.VideoSource`` (indexing in
memory: no index file is left anywhere) and the rest with ``ffprobe`` where installed.
The command line and other hosts that render whole files build on :class:`Source`:
``source.rgb()`` is what :func:`vsdsfn.upscale` takes, ``source.colour`` converts its
result back and tags the output, :mod:`vsdsfn.encode` writes it with the other streams.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from .colour import Colour

__all__ = ["VideoError", "Stream", "Source", "open_source", "constant_rate", "reason"]

#: how far a timestamp may sit from a constant rate's grid and still count as on it
#: (Matroska stores milliseconds)
TOLERANCE = Fraction(11, 10_000)


class VideoError(Exception):
    """A problem with an input or output video; the text reads "<what is wrong>; <the fix>"."""


def reason(exc: BaseException) -> str:
    """An error's last line: VapourSynth puts a frame callback's traceback in front of it."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1]


@dataclass(frozen=True)
class Stream:
    """A stream of the input besides the video: ``kind`` is ffprobe's codec_type."""

    index: int
    kind: str
    codec: str


@dataclass(frozen=True)
class Source:
    """The input video. ``clip``: the decoded first video track (YUV, GRAY or RGB), cut
    to the frames asked for; a variable-rate clip has fps 0 and each frame's duration in
    its props. ``times``: each frame's start and the last frame's end, in seconds from the
    first frame (``len(times) == clip.num_frames + 1``). ``start``: the first frame's time
    on the file's timeline as ffmpeg reads it (after the file's start time), which places
    the other ``streams`` against the video."""

    path: Path
    clip: Any
    colour: Colour
    times: tuple[Fraction, ...]
    start: Fraction
    vfr: bool
    streams: tuple[Stream, ...] = ()
    chapters: int = 0

    @property
    def duration(self) -> Fraction:
        return self.times[-1]

    @property
    def depth(self) -> int:
        """Bits per sample of the decoded video."""
        return self.clip.format.bits_per_sample

    def rgb(self):
        """The clip as RGBS, converted with :attr:`colour` (its durations kept)."""
        return self.colour.to_rgb(self.clip)

    def rate(self) -> str:
        """``"23.976 fps"`` or ``"variable fps"``."""
        return f"{float(self.clip.fps):.3f} fps" if self.clip.fps_num else "variable fps"


def constant_rate(times: list[Fraction], fps: Fraction) -> bool:
    """Whether frames at ``times`` (seconds, from 0) sit on the grid of ``fps``, within
    :data:`TOLERANCE`."""
    return fps > 0 and all(abs(t - i / fps) <= TOLERANCE for i, t in enumerate(times))


def _decode(path: Path):
    """The first video track and each frame's timestamp (ms, from the file's index)."""
    import vapoursynth as vs

    with tempfile.TemporaryDirectory(prefix="vsdsfn-") as tmp:
        stamps = Path(tmp) / "timestamps.txt"
        try:
            clip = vs.core.bs.VideoSource(str(path), cachemode=0, timecodes=str(stamps))
        except vs.Error as exc:
            raise VideoError(f"cannot read {str(path)!r} ({reason(exc)}); check that it is a video file") from None
        lines = stamps.read_text().splitlines() if stamps.exists() else []
    ms = [Fraction(line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    if clip.format is None or clip.format.id == 0 or clip.width == 0:
        raise VideoError(f"{str(path)!r} changes format or size mid-stream; convert it to one format first")
    return clip, [t / 1000 for t in ms]


def _timing(clip, stamps: list[Fraction], frames: int | None) -> tuple[list[Fraction], bool]:
    """Each frame's start and the end of the last (from 0), whether the rate varies."""
    n = clip.num_frames
    fps = Fraction(clip.fps_num, clip.fps_den) if clip.fps_num else Fraction(0)
    rel = [t - stamps[0] for t in stamps] if len(stamps) == n else []
    if not rel or constant_rate(rel, fps):
        if not fps:
            raise VideoError("the input has no frame timestamps and no frame rate; remux it, e.g. "
                             "ffmpeg -i IN -c copy OUT.mkv")
        times = [i / fps for i in range(n + 1)]
        return times[: (frames or n) + 1], False
    last = rel[-1] - rel[-2] if n > 1 else 1 / fps
    times = rel + [rel[-1] + last]
    return times[: (frames or n) + 1], True


def _variable(clip, times: list[Fraction]):
    """``clip`` at fps 0 (variable), each frame's duration from ``times``."""
    import vapoursynth as vs

    durations = [b - a for a, b in zip(times, times[1:])]

    def timed(n, f):
        out = f.copy()
        out.props["_DurationNum"], out.props["_DurationDen"] = durations[n].numerator, durations[n].denominator
        return out

    template = vs.core.std.BlankClip(clip, fpsnum=0, fpsden=1)
    return vs.core.std.ModifyFrame(template, clip, timed)


def _probe(path: Path, ffprobe: str | None) -> tuple[Fraction, list[Stream], int]:
    """The file's start time, its streams besides video, and its chapter count."""
    if ffprobe is None:
        return Fraction(0), [], 0
    cmd = [ffprobe, "-v", "error", "-show_entries", "format=start_time:stream=index,codec_type,codec_name",
           "-show_chapters", "-of", "json", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return Fraction(0), [], 0
    info = json.loads(proc.stdout or "{}")
    start = info.get("format", {}).get("start_time")
    streams = [Stream(int(s["index"]), s["codec_type"], s.get("codec_name", "?")) for s in info.get("streams", [])
               if s.get("codec_type") in ("audio", "subtitle", "attachment")]
    return Fraction(start) if start not in (None, "N/A") else Fraction(0), streams, len(info.get("chapters", []))


def open_source(path: str | Path, frames: int | None = None, matrix: int | None = None,
                ffprobe: str | None = None) -> Source:
    """The video file ``path`` as a :class:`Source`: its first ``frames`` frames (all
    when None); ``matrix`` (an H.273 code) where the file names no YUV matrix (else
    :func:`vsdsfn.colour.guess_matrix`); ``ffprobe`` (default: the one on PATH) finds
    the other streams. Raises :class:`VideoError`."""
    import vapoursynth as vs

    path = Path(path)
    clip, stamps = _decode(path)
    times, vfr = _timing(clip, stamps, frames)
    clip = clip[: len(times) - 1]
    props = clip.get_frame(0).props
    colour = Colour.of(props, clip.width, clip.height, clip.format.color_family == vs.YUV, matrix)
    if vfr:
        clip = _variable(clip, times)
    file_start, streams, chapters = _probe(path, ffprobe or shutil.which("ffprobe"))
    start = (stamps[0] if stamps else Fraction(0)) - file_start
    return Source(path, clip, colour, tuple(times), max(start, Fraction(0)), vfr, tuple(streams), chapters)
