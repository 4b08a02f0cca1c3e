"""Command line: ``vsdsfn INPUT -o OUTPUT`` (also ``python -m vsdsfn``).

Parses the flags and calls the pieces: :func:`vsdsfn.source.open_source` reads the input
(colour, timing, other streams), :func:`vsdsfn.upscale` renders, :mod:`vsdsfn.encode`
writes ``.y4m`` itself or encodes with ffmpeg and copies the input's other streams in,
all through a :class:`vsdsfn.partial.Partial` file. Without INPUT it upscales the small
sample clip shipped in the package. Progress and the summary go to stderr. The upscale
flags, their defaults and help come from :mod:`vsdsfn.options`; bad paths and options are
refused before any work, and OUTPUT appears only when complete.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from . import __version__, encode, job, options
from .colour import MATRIX_NAMES
from .partial import Partial
from .source import Source, VideoError, open_source, reason

SAMPLE = Path(__file__).resolve().parent / "data" / "sample.y4m"



def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vsdsfn",
        description="Raise a video's frame rate and double its resolution with the Dual-Stream Fusion Network.",
        epilog="Without INPUT (or with --sample) the small sample clip shipped with vsdsfn is used. "
               "OUTPUT ending in .y4m is written directly; any other extension is encoded by ffmpeg.",
    )
    p.add_argument("input", nargs="?", help="input video (anything ffmpeg/bestsource reads)")
    p.add_argument("-o", "--output", help="output file (.y4m, or .mkv/.mp4/... through ffmpeg); "
                                          "default: INPUTNAME_2x.y4m in the current folder")
    p.add_argument("--sample", action="store_true", help="use the shipped sample clip as INPUT")
    g = p.add_argument_group("upscale options (see vsdsfn.upscale)")
    for o in options.OPTIONS:
        if o.flag is not None:
            kind = ({"action": argparse.BooleanOptionalAction} if o.parse is bool
                    else {"type": o.parse, "choices": o.choices or None})
            shown = "" if o.default is None or o.default is False else " (default: %(default)s)"
            g.add_argument(o.flag, dest=o.name, default=o.default, help=o.help + shown, **kind)
    rate = p.add_argument_group("frame rate (default: twice the input's)")
    rate.add_argument("--factor", type=_ratio, metavar="N[/D]",
                      help="multiply the frame rate by N/D, e.g. 5/2 (upscale's factor_num/factor_den)")
    rate.add_argument("--fps", type=_ratio, metavar="N[/D]",
                      help="the output frame rate, e.g. 60000/1001 (upscale's fps_num/fps_den)")
    io = p.add_argument_group("input/output")
    io.add_argument("--frames", type=int, help="only the first N input frames")
    io.add_argument("--matrix", choices=sorted(MATRIX_NAMES),
                    help="YUV matrix of the input where the file names none (default: 709 for HD, 601 for SD)")
    io.add_argument("--pix-fmt", choices=sorted(encode.PIX_FMTS),
                    help="pixel format written (default: yuv420p for sources of up to 8 bits, else yuv420p10)")
    io.add_argument("--ffmpeg-args", default="",
                    help='extra ffmpeg options for the video encoder, e.g. "-c:v libx264 -crf 16" '
                         "(default: H.264 for 8-bit sources, 10-bit HEVC or AV1 for deeper ones)")
    io.add_argument("--video-only", action="store_true",
                    help="write the video alone (default: the input's audio, subtitles and chapters are copied)")
    job.add_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.add_argument("-v", "--verbose", action="store_true", help="log details (stderr)")
    p.add_argument("--version", action="version", version=f"vsdsfn {__version__}")
    return p


def _ratio(text: str) -> tuple[int, int]:
    """``"5/2"`` -> (5, 2), ``"60"`` -> (60, 1)."""
    num, _, den = text.partition("/")
    try:
        return int(num), int(den or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or N/D (e.g. 5/2 or 60000/1001), not {text!r}") from None


def _rate_options(args: argparse.Namespace) -> dict[str, int | None]:
    """upscale's factor_num/factor_den and fps_num/fps_den from --factor and --fps."""
    out: dict[str, int | None] = {}
    if args.factor:
        out["factor_num"], out["factor_den"] = args.factor
    if args.fps:
        out["fps_num"], out["fps_den"] = args.fps
    return out


def _fps(clip) -> str:
    return f"{float(Fraction(clip.fps_num, clip.fps_den)):.3f} fps" if clip.fps_num else "variable fps"


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


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The input and the output file, checked before any work (nothing is created here)."""
    if args.input and args.sample:
        raise VideoError("give either INPUT or --sample, not both")
    src = Path(args.input) if args.input else SAMPLE
    if not src.is_file():
        raise VideoError(f"input {str(src)!r} does not exist or is not a file; check the path")
    if not os.access(src, os.R_OK):
        raise VideoError(f"input {str(src)!r} is not readable; check its permissions")
    out = Path(args.output) if args.output else Path.cwd() / f"{src.stem}_2x.y4m"
    if out.is_dir():
        raise VideoError(f"output {str(out)!r} is a folder; give a file name, e.g. -o {out / f'{src.stem}_2x.y4m'}")
    if not out.suffix:
        raise VideoError(f"output {str(out)!r} has no extension to choose its format by; add one, e.g. "
                       f"-o {out}.mkv (or .y4m)")
    if not out.parent.is_dir():
        raise VideoError(f"the output's folder {str(out.parent)!r} does not exist; create it or choose another -o")
    if out.exists() and os.path.samefile(out, src):
        raise VideoError("the output is the input (or a link to it); choose another -o")
    if out.exists() and not out.is_file():
        raise VideoError(f"output {str(out)!r} exists and is not a regular file; choose another -o")
    return src, out


@dataclass(frozen=True)
class _Tools:
    """The external programs this run needs (None: not needed)."""

    ffmpeg: str | None = None
    mkvmerge: str | None = None


def _ffmpeg_args(args: argparse.Namespace) -> list[str]:
    try:
        return shlex.split(args.ffmpeg_args)
    except ValueError as exc:
        raise VideoError(f"--ffmpeg-args {args.ffmpeg_args!r} cannot be split into options ({exc}); "
                         "balance its quotes, e.g. --ffmpeg-args \"-crf 18 -preset slow\"") from None


def _tools(out: Path) -> _Tools:
    """ffmpeg for any output but .y4m (mkvmerge is asked for once the input is known)."""
    if out.suffix.lower() == ".y4m":
        return _Tools()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise VideoError(f"writing {out.suffix} files needs ffmpeg on PATH; install ffmpeg "
                         "(e.g. apt-get install ffmpeg) or write .y4m")
    return _Tools(ffmpeg)


def _mkvmerge() -> str:
    found = shutil.which("mkvmerge")
    if found is None:
        raise VideoError("the input has a variable frame rate, and keeping it needs mkvmerge on PATH; install "
                         "mkvtoolnix (e.g. apt-get install mkvtoolnix), or write .y4m (one frame rate)")
    return found


def run(args: argparse.Namespace) -> int:
    """Check the paths and options, then write OUTPUT through a
    :class:`vsdsfn.partial.Partial` file, renamed over OUTPUT when complete and removed
    when anything fails or a signal stops us."""
    src, out = _paths(args)
    user_args = _ffmpeg_args(args)
    tools = _tools(out)
    if args.frames is not None and args.frames < 1:
        raise VideoError("--frames must be at least 1; e.g. --frames 10")
    try:
        options.check({**vars(args), **_rate_options(args)})
    except ValueError as exc:
        raise VideoError(str(exc)) from None
    write = job.run_cli if job.check_cli(args, src) else _write   # --workers / --ray: on a Ray cluster
    try:
        part = Partial(out)
    except OSError as exc:
        raise VideoError(f"cannot create the output {str(out)!r} ({exc.strerror}); "
                         "choose a path in a folder you can write to") from None
    with part:
        write(args, src, part, tools, user_args)
        part.commit()
    return 0


def _prepare(args: argparse.Namespace, src: Path, part: Partial, tools: _Tools, user_args: list[str]):
    """The source and the encoding, with everything that can be checked before the work
    checked (encoder options, streams the container can hold, mkvmerge for VFR)."""
    source, enc = open_job(args, src, part.out.suffix, tools.ffmpeg, user_args)
    if tools.ffmpeg:
        encode.check_encoding(tools.ffmpeg, enc, source.colour, user_args, part.scratch())
        if not args.video_only:
            encode.check_streams(tools.ffmpeg, source, part.out.suffix, part.scratch())
        if source.vfr:
            tools = _Tools(tools.ffmpeg, _mkvmerge())
    return source, enc, tools


def open_job(args: argparse.Namespace, src: Path, suffix: str, ffmpeg: str | None, user_args: list[str]):
    """The source (a video, or a script's output) and the encoding of an output ending in
    ``suffix``."""
    from .chunks import is_script, pix_fmt_of, script_source

    if is_script(src):
        source = script_source(src, args.frames)
        pix_fmt = pix_fmt_of(source.clip)
    else:
        source = open_source(src, args.frames, MATRIX_NAMES[args.matrix] if args.matrix else None)
        pix_fmt = args.pix_fmt
    available = encode.encoders(ffmpeg) if ffmpeg else frozenset()
    return source, encode.choose(suffix, source.depth, pix_fmt, user_args, available)


def pipeline(args: argparse.Namespace, source: Source, enc: encode.Encoding):
    """The clip to write: the source upscaled and converted to ``enc``'s pixel format, or a
    script's output as it is."""
    import vapoursynth as vs

    from .chunks import is_script
    from .filter import upscale

    if is_script(source.path):
        return source.clip
    try:
        up = upscale(source.rgb(), **{o.name: getattr(args, o.name) for o in options.OPTIONS if o.flag},
                     **_rate_options(args))
    except vs.Error as exc:
        raise VideoError(str(exc)) from None
    return source.colour.from_rgb(up, getattr(vs, encode.PIX_FMTS[enc.pix_fmt]))


def _write(args: argparse.Namespace, src: Path, part: Partial, tools: _Tools, user_args: list[str]) -> None:
    """Read ``src``, upscale it and write it to ``part`` (y4m, or encoded and muxed)."""
    source, enc, tools = _prepare(args, src, part, tools, user_args)
    yuv = pipeline(args, source, enc)
    shape = (f"{source.clip.num_frames} frames {source.clip.width}x{source.clip.height} @ {source.rate()} -> "
             f"{yuv.num_frames} frames {yuv.width}x{yuv.height} @ {_fps(yuv)}")
    what = _what(source, enc, part.out, args.video_only)
    _say(args, f"{src.name}: {shape}; {what}")
    start = time.perf_counter()
    _encode(args, source, yuv, enc, part, tools, user_args)
    wall = time.perf_counter() - start
    _say(args, f"wrote {part.out} ({what}): {shape} in {wall:.1f} s "
               f"({yuv.num_frames / wall if wall > 0 else 0:.2f} output frames/s)")


def _say(args: argparse.Namespace, line: str) -> None:
    if not args.quiet:
        sys.stderr.write(f"vsdsfn: {line}\n")


def _what(source: Source, enc: encode.Encoding, out: Path, video_only: bool) -> str:
    """What the output holds, for the summary: the encoding, the colour, the other streams."""
    if out.suffix.lower() == ".y4m":
        return (f"{enc.label}, video only: .y4m holds no audio, subtitles, colour tags or variable timestamps "
                "(write .mkv or .mp4 to keep them)")
    kinds = [s.kind for s in source.streams if s.kind != "attachment" or out.suffix.lower() == ".mkv"]
    kept = ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
    streams = ("video only" if video_only or not kept else f"{kept} stream(s) copied") + (
        f", {source.chapters} chapters" if source.chapters and not video_only else "")
    return f"{enc.label}, {source.colour.describe()}, {streams}"


def _encode(args: argparse.Namespace, source: Source, yuv, enc: encode.Encoding, part: Partial, tools: _Tools,
            user_args: list[str]) -> None:
    """Pull every frame of ``yuv`` into ``part``: y4m directly, or encoded (retimed for a
    variable rate) and muxed with the source's other streams."""
    import vapoursynth as vs

    update = _progress(args.quiet, yuv.num_frames)
    if tools.ffmpeg is None:
        try:
            encode.write_y4m(yuv, part.file, update, rate=_mean_rate(yuv.num_frames, source.duration))
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


def _mean_rate(frames: int, duration: Fraction) -> Fraction:
    return (Fraction(frames) / duration).limit_denominator(1001) if duration > 0 else Fraction(25)

class _Stopped(BaseException):
    """A signal (SIGINT, SIGTERM, SIGHUP) turned into an exception, so that the partial
    output is removed on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, frame) -> None:
    raise _Stopped(signum)


def _catchable() -> list[int]:
    """SIGINT, SIGTERM and SIGHUP, except those this process was started to ignore
    (``nohup``, a background job) and except off the main thread (no handlers there)."""
    if threading.current_thread() is not threading.main_thread():
        return []
    return [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) is not signal.SIG_IGN]


@contextlib.contextmanager
def _logs_on_stderr(verbose: bool) -> Iterator[None]:
    """vsdsfn's log records on stderr (``vsdsfn: WARNING: ...``; INFO too when
    ``verbose``) while the command runs: the library itself only has a NullHandler."""
    log = logging.getLogger("vsdsfn")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    previous = {s: signal.signal(s, _raise_stopped) for s in _catchable()}
    try:
        with options.cli_terms(), _logs_on_stderr(args.verbose):
            return run(args)
    except VideoError as exc:
        sys.stderr.write(f"vsdsfn: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\nvsdsfn: interrupted\n")
        return 130
    except _Stopped as exc:
        sys.stderr.write(f"\nvsdsfn: {'interrupted' if exc.signum == signal.SIGINT else f'stopped by {exc}'}\n")
        return 128 + exc.signum
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
