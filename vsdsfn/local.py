"""OUTPUT written by this process: the job's clip (:func:`vsdsfn.chunks.pipeline`) pulled
frame by frame into ``.y4m``, or encoded by ffmpeg (retimed for a variable rate) and muxed
with the input's other streams, progress and the summary on stderr (:func:`say` and
:func:`what` also sum up a job rendered on a cluster)."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from . import encode
from .chunks import open_job, pipeline, y4m_rate
from .partial import Partial
from .source import Source, VideoError, reason

__all__ = ["Tools", "tools_for", "write", "say", "what"]


@dataclass(frozen=True)
class Tools:
    """The external programs this run needs (None: not needed)."""

    ffmpeg: str | None = None
    mkvmerge: str | None = None


def tools_for(out: Path) -> Tools:
    """ffmpeg for any output but .y4m (mkvmerge is asked for once the input is known)."""
    if out.suffix.lower() == ".y4m":
        return Tools()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise VideoError(f"writing {out.suffix} files needs ffmpeg on PATH; install ffmpeg "
                         "(e.g. apt-get install ffmpeg) or write .y4m")
    return Tools(ffmpeg)


def _mkvmerge() -> str:
    found = shutil.which("mkvmerge")
    if found is None:
        raise VideoError("the input has a variable frame rate, and keeping it needs mkvmerge on PATH; install "
                         "mkvtoolnix (e.g. apt-get install mkvtoolnix), or write .y4m (one frame rate)")
    return found


def _prepare(args: argparse.Namespace, src: Path, part: Partial, tools: Tools, user_args: list[str]):
    """The source and the encoding, with everything that can be checked before the work
    checked (encoder options, streams the container can hold, mkvmerge for VFR)."""
    source, enc = open_job(args, src, part.out.suffix, tools.ffmpeg, user_args)
    if tools.ffmpeg:
        encode.check_encoding(tools.ffmpeg, enc, source.colour, user_args, part.scratch())
        if not args.video_only:
            encode.check_streams(tools.ffmpeg, source, part.out.suffix, part.scratch())
        if source.vfr:
            tools = Tools(tools.ffmpeg, _mkvmerge())
    return source, enc, tools


def write(args: argparse.Namespace, src: Path, part: Partial, tools: Tools, user_args: list[str]) -> None:
    """Read ``src``, upscale it and write it to ``part`` (y4m, or encoded and muxed)."""
    source, enc, tools = _prepare(args, src, part, tools, user_args)
    yuv = pipeline(args, source, enc)
    shape = (f"{source.clip.num_frames} frames {source.clip.width}x{source.clip.height} @ {source.rate()} -> "
             f"{yuv.num_frames} frames {yuv.width}x{yuv.height} @ {_fps(yuv)}")
    holds = what(source, enc, part.out, args.video_only)
    say(args, f"{src.name}: {shape}; {holds}")
    start = time.perf_counter()
    _encode(args, source, yuv, enc, part, tools, user_args)
    wall = time.perf_counter() - start
    say(args, f"wrote {part.out} ({holds}): {shape} in {wall:.1f} s "
              f"({yuv.num_frames / wall if wall > 0 else 0:.2f} output frames/s)")


def say(args: argparse.Namespace, line: str) -> None:
    if not args.quiet:
        sys.stderr.write(f"vsdsfn: {line}\n")


def what(source: Source, enc: encode.Encoding, out: Path, video_only: bool) -> str:
    """What the output holds, for the summary: the encoding, the colour, the other streams."""
    if out.suffix.lower() == ".y4m":
        return (f"{enc.label}, video only: .y4m holds no audio, subtitles, colour tags or variable timestamps "
                "(write .mkv or .mp4 to keep them)")
    kinds = [s.kind for s in source.streams if s.kind != "attachment" or out.suffix.lower() == ".mkv"]
    kept = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
    streams = ("video only" if video_only or not kept else f"{kept} stream(s) copied") + (
        f", {source.chapters} chapters" if source.chapters and not video_only else "")
    return f"{enc.label}, {source.colour.describe()}, {streams}"


def _encode(args: argparse.Namespace, source: Source, yuv, enc: encode.Encoding, part: Partial, tools: Tools,
            user_args: list[str]) -> None:
    """Pull every frame of ``yuv`` into ``part``: y4m directly, or encoded (retimed for a
    variable rate) and muxed with the source's other streams."""
    import vapoursynth as vs

    update = _progress(args.quiet, yuv.num_frames)
    if tools.ffmpeg is None:
        try:
            encode.write_y4m(yuv, part.file, update, rate=y4m_rate(yuv.num_frames, source.duration))
        except (OSError, vs.Error) as exc:
            raise VideoError(f"writing {str(part.out)!r} stopped ({reason(exc)}); fix that and run again") from None
        return
    timed, durations = encode.record_durations(yuv) if source.vfr else (yuv, {})
    # Matroska for mkvmerge to retime; else NUT, which keeps the exact rational rate
    video = part.scratch() / ("video.mkv" if source.vfr else "video.nut")
    encode.encode_video(timed, video, enc, source.colour, tools.ffmpeg, user_args, update)
    if source.vfr:
        times = [Fraction(0)]
        for n in range(yuv.num_frames - 1):
            times.append(times[-1] + durations[n])
        encode.retime(tools.mkvmerge, video, times, part.scratch() / "timed.mkv")
        video = part.scratch() / "timed.mkv"
    encode.mux(tools.ffmpeg, video, source, part.path, keep=not args.video_only, trim=args.frames is not None)


def _progress(quiet: bool, total: int):
    start = time.perf_counter()
    tty = sys.stderr.isatty()
    last = [-1]

    def update(done: int, total_: int) -> None:
        if quiet:
            return
        pct = 100 * done // max(total_, 1)
        if not tty and pct // 10 == last[0] // 10 and done != total_:
            return
        last[0] = pct
        el = time.perf_counter() - start
        rate = done / el if el > 0 else 0.0
        eta = f"ETA {(total_ - done) / rate:.0f} s" if done and rate > 0 else "ETA unknown yet"
        msg = f"vsdsfn: frame {done}/{total_} ({pct}%), {rate:.2f} frames/s, {eta}"
        if tty:
            sys.stderr.write("\r" + msg + ("\n" if done == total_ else ""))
        else:
            sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    return update


def _fps(clip) -> str:
    return f"{float(Fraction(clip.fps_num, clip.fps_den)):.3f} fps" if clip.fps_num else "variable fps"
