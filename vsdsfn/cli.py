"""Command line: ``vsdsfn INPUT -o OUTPUT`` (also ``python -m vsdsfn``).

Reads any video through ``core.bs.VideoSource``, converts it to RGBS, runs
:func:`vsdsfn.upscale`, converts back to YUV and writes ``.y4m`` itself, or pipes the
y4m stream into ffmpeg for any other output extension. Without INPUT it upscales the
small sample clip shipped in the package. Progress and the summary go to stderr. The
upscale flags, their defaults and help come from :mod:`vsdsfn.options`; bad paths and
options are refused before any work, and OUTPUT appears only when complete.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

from . import __version__, options

SAMPLE = Path(__file__).resolve().parent / "data" / "sample.y4m"

# VapourSynth / ITU-T H.273 matrix coefficients
_MATRICES = {"709": 1, "601": 6, "170m": 6, "470bg": 5, "2020ncl": 9, "fcc": 4, "240m": 7}
_PIX_FMTS = {"yuv420p10": "YUV420P10", "yuv444p16": "YUV444P16", "yuv420p8": "YUV420P8"}


class CliError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vsdsfn",
        description="Double a video's frame rate and resolution with the Dual-Stream Fusion Network.",
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
            kind = ({"action": argparse.BooleanOptionalAction} if o.type is bool
                    else {"type": o.type, "choices": o.choices or None})
            shown = "" if o.default is None or o.default is False else " (default: %(default)s)"
            g.add_argument(o.flag, dest=o.name, default=o.default, help=o.help + shown, **kind)
    io = p.add_argument_group("input/output")
    io.add_argument("--frames", type=int, help="only the first N input frames")
    io.add_argument("--matrix", choices=sorted(_MATRICES),
                    help="YUV matrix of the input when the file does not say (default: 709 for HD, 601 for SD)")
    io.add_argument("--pix-fmt", choices=sorted(_PIX_FMTS), default="yuv420p10",
                    help="pixel format written (default yuv420p10)")
    io.add_argument("--ffmpeg-args", default="",
                    help='extra ffmpeg output options, e.g. "-c:v libx264 -crf 16"')
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    p.add_argument("-v", "--verbose", action="store_true", help="log details (stderr)")
    p.add_argument("--version", action="version", version=f"vsdsfn {__version__}")
    return p


def _cache_dir() -> str:
    """A writable folder for bestsource's index (never next to a possibly read-only input)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for cand in (os.path.join(base, "vsdsfn", "bsindex"), os.path.join(tempfile.gettempdir(), "vsdsfn-bsindex")):
        try:
            os.makedirs(cand, exist_ok=True)
            if os.access(cand, os.W_OK):
                return cand
        except OSError:
            continue
    return tempfile.mkdtemp(prefix="vsdsfn-bsindex-")


def _reason(exc: BaseException) -> str:
    """An error's last line: VapourSynth puts a frame callback's traceback in front of it."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1]


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
        eta = (total_ - done) / rate if rate > 0 else 0.0
        msg = f"vsdsfn: frame {done}/{total_} ({pct}%), {rate:.2f} frames/s, ETA {eta:.0f} s"
        if tty:
            sys.stderr.write("\r" + msg + ("\n" if done == total_ else ""))
        else:
            sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    return update


def _paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The input and the output file, checked before any work (nothing is created here)."""
    if args.input and args.sample:
        raise CliError("give either INPUT or --sample, not both")
    src = Path(args.input) if args.input else SAMPLE
    if not src.is_file():
        raise CliError(f"input {str(src)!r} does not exist or is not a file; check the path")
    if not os.access(src, os.R_OK):
        raise CliError(f"input {str(src)!r} is not readable; check its permissions")
    out = Path(args.output) if args.output else Path.cwd() / f"{src.stem}_2x.y4m"
    if out.is_dir():
        raise CliError(f"output {str(out)!r} is a folder; give a file name, e.g. -o {out / f'{src.stem}_2x.y4m'}")
    if not out.parent.is_dir():
        raise CliError(f"the output's folder {str(out.parent)!r} does not exist; create it or choose another -o")
    if out.resolve() == src.resolve():
        raise CliError("the output would overwrite the input; choose another -o")
    return src, out


def run(args: argparse.Namespace) -> int:
    """Check the paths and options, then write OUTPUT through a partial file next to it,
    renamed when complete and removed when anything fails."""
    src, out = _paths(args)
    ffmpeg = None
    if out.suffix.lower() != ".y4m":
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise CliError(f"writing {out.suffix or 'that'} files needs ffmpeg on PATH; install ffmpeg "
                           "(e.g. apt-get install ffmpeg) or write .y4m")
    if args.frames is not None and args.frames < 1:
        raise CliError("--frames must be at least 1; e.g. --frames 10")
    try:
        options.check(vars(args), cli=True)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    part = out.with_name(f"{out.stem}.part{out.suffix}")   # keeps the extension ffmpeg picks the format by
    try:
        f = open(part, "wb")
    except OSError as exc:
        raise CliError(f"cannot create the output {str(out)!r} ({exc.strerror}); "
                       "choose a path in a folder you can write to") from None
    try:
        with f:
            _write(args, src, out, f, ffmpeg)
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
    return 0


def _write(args: argparse.Namespace, src: Path, out: Path, f: BinaryIO, ffmpeg: str | None) -> None:
    """Read ``src``, upscale it and write y4m to ``f`` (or, through ffmpeg, to ``f``'s path)."""
    import vapoursynth as vs

    from .filter import upscale

    core = vs.core
    try:
        clip = core.bs.VideoSource(str(src), cachemode=1, cachepath=_cache_dir())
    except vs.Error as exc:
        raise CliError(f"cannot read {str(src)!r} ({_reason(exc)}); check that it is a video file") from None
    if clip.format is None or clip.format.id == 0 or clip.width == 0:
        raise CliError(f"{str(src)!r} changes format or size mid-stream; convert it to one format first")
    if args.frames:
        clip = clip[: min(args.frames, clip.num_frames)]
    n_in, w, h = clip.num_frames, clip.width, clip.height

    fam = clip.format.color_family
    hd = w >= 1280 or h >= 720
    if args.matrix:
        matrix = _MATRICES[args.matrix]
    else:
        m = clip.get_frame(0).props.get("_Matrix", 2) if fam == vs.YUV else 2
        matrix = m if m not in (0, 2, 3) else (1 if hd else 6)
    if fam == vs.YUV:
        rgb = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in=matrix)
    else:
        rgb = core.resize.Point(clip, format=vs.RGBS)

    try:
        up = upscale(rgb, **{o.name: getattr(args, o.name) for o in options.OPTIONS if o.flag})
    except vs.Error as exc:
        raise CliError(str(exc)) from None
    yuv = core.resize.Bicubic(up, format=getattr(vs, _PIX_FMTS[args.pix_fmt]), matrix=matrix)

    if not args.quiet:
        sys.stderr.write(f"vsdsfn: {src.name}: {n_in} frames {w}x{h} {_fps(clip)} -> "
                         f"{yuv.num_frames} frames {yuv.width}x{yuv.height} {_fps(yuv)}\n")
    start = time.perf_counter()
    update = _progress(args.quiet, yuv.num_frames)
    proc = None
    if ffmpeg is not None:
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-",
               *shlex.split(args.ffmpeg_args), f.name]
        logging.getLogger("vsdsfn").info("running %s", shlex.join(cmd))
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    try:
        yuv.output(f if proc is None else proc.stdin, y4m=True, progress_update=update)
    except (OSError, vs.Error) as exc:
        if proc is None:
            raise CliError(f"writing {str(out)!r} stopped ({_reason(exc)}); fix that and run again") from None
        proc.kill()
        proc.wait()
        raise CliError(f"ffmpeg stopped early ({_reason(exc)}); see its message above") from None
    finally:
        if proc and proc.stdin and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
    if proc and proc.wait() != 0:
        raise CliError(f"ffmpeg failed (exit {proc.returncode}); see its message above (ran {shlex.join(cmd)})")
    wall = time.perf_counter() - start
    if not args.quiet:
        sys.stderr.write(
            f"vsdsfn: wrote {out} ({args.pix_fmt}): {n_in} frames {w}x{h} @ {_fps(clip)} -> "
            f"{yuv.num_frames} frames {yuv.width}x{yuv.height} @ {_fps(yuv)} in {wall:.1f} s "
            f"({yuv.num_frames / wall if wall > 0 else 0:.2f} output frames/s)\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verbose:
        logging.getLogger("vsdsfn").setLevel(logging.INFO)
    try:
        return run(args)
    except CliError as exc:
        sys.stderr.write(f"vsdsfn: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\nvsdsfn: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
