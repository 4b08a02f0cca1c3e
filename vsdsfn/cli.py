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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

from . import __version__, job, options

SAMPLE = Path(__file__).resolve().parent / "data" / "sample.y4m"

# VapourSynth / ITU-T H.273 matrix coefficients
_MATRICES = {"709": 1, "601": 6, "170m": 6, "470bg": 5, "2020ncl": 9, "fcc": 4, "240m": 7}
_PIX_FMTS = {"yuv420p10": "YUV420P10", "yuv444p16": "YUV444P16", "yuv420p8": "YUV420P8"}


class CliError(Exception):
    pass


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
    io.add_argument("--matrix", choices=sorted(_MATRICES),
                    help="YUV matrix of the input when the file does not say (default: 709 for HD, 601 for SD)")
    io.add_argument("--pix-fmt", choices=sorted(_PIX_FMTS), default="yuv420p10",
                    help="pixel format written (default yuv420p10)")
    io.add_argument("--ffmpeg-args", default="",
                    help='extra ffmpeg output options, e.g. "-c:v libx264 -crf 16"')
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
    if not out.suffix:
        raise CliError(f"output {str(out)!r} has no extension to choose its format by; add one, e.g. "
                       f"-o {out}.mkv (or .y4m)")
    if not out.parent.is_dir():
        raise CliError(f"the output's folder {str(out.parent)!r} does not exist; create it or choose another -o")
    if out.exists() and os.path.samefile(out, src):
        raise CliError("the output is the input (or a link to it); choose another -o")
    if out.exists() and not out.is_file():
        raise CliError(f"output {str(out)!r} exists and is not a regular file; choose another -o")
    return src, out


class _Partial:
    """A temporary file that this process creates exclusively in the output's folder
    (a name no other file has); :meth:`commit` renames it over the output, :meth:`discard`
    removes it. Nothing else is ever opened for writing or removed."""

    def __init__(self, out: Path) -> None:
        try:
            fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".vsdsfn-part{out.suffix}", dir=out.parent)
        except OSError as exc:
            raise CliError(f"cannot create the output {str(out)!r} ({exc.strerror}); "
                           "choose a path in a folder you can write to") from None
        self.out, self.path, self.file = out, Path(name), os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.file.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.path, 0o666 & ~umask)   # mkstemp's 0600 -> what a new file gets
        os.replace(self.path, self.out)
        self.path = None

    def discard(self) -> None:
        """Remove the temporary file unless :meth:`commit` renamed it."""
        self.file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    """Check the paths and options, then write OUTPUT through a :class:`_Partial` file,
    renamed over OUTPUT when complete and removed when anything fails or a signal stops us."""
    src, out = _paths(args)
    ffmpeg = None
    if out.suffix.lower() != ".y4m":
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise CliError(f"writing {out.suffix} files needs ffmpeg on PATH; install ffmpeg "
                           "(e.g. apt-get install ffmpeg) or write .y4m")
    if args.frames is not None and args.frames < 1:
        raise CliError("--frames must be at least 1; e.g. --frames 10")
    try:
        options.check({**vars(args), **_rate_options(args)})
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if job.check_cli(args, src):
        return job.run_cli(args, src, out)
    part = _Partial(out)
    try:
        _write(args, src, out, part, ffmpeg)
        part.commit()
    finally:
        part.discard()
    return 0


def _source(args: argparse.Namespace, src: Path):
    """The input as a clip (``--frames`` applied) and its YUV matrix (for the way back)."""
    import vapoursynth as vs

    try:
        clip = vs.core.bs.VideoSource(str(src), cachemode=1, cachepath=_cache_dir())
    except vs.Error as exc:
        raise CliError(f"cannot read {str(src)!r} ({_reason(exc)}); check that it is a video file") from None
    if clip.format is None or clip.format.id == 0 or clip.width == 0:
        raise CliError(f"{str(src)!r} changes format or size mid-stream; convert it to one format first")
    if args.frames:
        clip = clip[: min(args.frames, clip.num_frames)]
    if args.matrix:
        return clip, _MATRICES[args.matrix]
    m = clip.get_frame(0).props.get("_Matrix", 2) if clip.format.color_family == vs.YUV else 2
    hd = clip.width >= 1280 or clip.height >= 720
    return clip, m if m not in (0, 2, 3) else (1 if hd else 6)


def _pipeline(args: argparse.Namespace, src: Path):
    """The input clip and the clip to write: ``src`` read, upscaled and converted back to
    YUV, or a script's output node as it is."""
    import vapoursynth as vs

    from .chunks import ChunkError, is_script, script_node
    from .filter import upscale

    if is_script(src):
        try:
            node = script_node(src, args.frames)
        except ChunkError as exc:
            raise CliError(str(exc)) from None
        return node, node
    core = vs.core
    clip, matrix = _source(args, src)
    if clip.format.color_family == vs.YUV:
        rgb = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in=matrix)
    else:
        rgb = core.resize.Point(clip, format=vs.RGBS)
    try:
        up = upscale(rgb, **{o.name: getattr(args, o.name) for o in options.OPTIONS if o.flag}, **_rate_options(args))
    except vs.Error as exc:
        raise CliError(str(exc)) from None
    return clip, core.resize.Bicubic(up, format=getattr(vs, _PIX_FMTS[args.pix_fmt]), matrix=matrix)


def _write(args: argparse.Namespace, src: Path, out: Path, part: _Partial, ffmpeg: str | None) -> None:
    """Read ``src``, upscale it and write it to ``part`` (y4m, or through ffmpeg)."""
    clip, yuv = _pipeline(args, src)
    shape = (f"{clip.num_frames} frames {clip.width}x{clip.height} @ {_fps(clip)} -> "
             f"{yuv.num_frames} frames {yuv.width}x{yuv.height} @ {_fps(yuv)}")
    if not args.quiet:
        sys.stderr.write(f"vsdsfn: {src.name}: {shape}\n")
    start = time.perf_counter()
    _encode(yuv, args, out, part, ffmpeg)
    wall = time.perf_counter() - start
    if not args.quiet:
        sys.stderr.write(f"vsdsfn: wrote {out} ({args.pix_fmt}): {shape} in {wall:.1f} s "
                         f"({yuv.num_frames / wall if wall > 0 else 0:.2f} output frames/s)\n")


def _encode(yuv, args: argparse.Namespace, out: Path, part: _Partial, ffmpeg: str | None) -> None:
    """Pull every frame of ``yuv`` into ``part``: y4m directly, or piped into ffmpeg,
    which writes ``part``'s path (and is killed and waited for if anything stops us)."""
    import vapoursynth as vs

    update = _progress(args.quiet, yuv.num_frames)
    if ffmpeg is None:
        try:
            yuv.output(part.file, y4m=True, progress_update=update)
        except (OSError, vs.Error) as exc:
            raise CliError(f"writing {str(out)!r} stopped ({_reason(exc)}); fix that and run again") from None
        return
    cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-",
           *shlex.split(args.ffmpeg_args), str(part.path)]
    logging.getLogger("vsdsfn").info("running %s", shlex.join(cmd))
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    try:
        yuv.output(proc.stdin, y4m=True, progress_update=update)
        proc.stdin.close()
    except BaseException as exc:
        proc.kill()
        proc.wait()
        if isinstance(exc, (OSError, vs.Error)):
            raise CliError(f"ffmpeg stopped early ({_reason(exc)}); see its message above") from None
        raise
    if proc.wait() != 0:
        raise CliError(f"ffmpeg failed (exit {proc.returncode}); see its message above (ran {shlex.join(cmd)})")


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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.verbose:
        logging.getLogger("vsdsfn").setLevel(logging.INFO)
    previous = {s: signal.signal(s, _raise_stopped) for s in _catchable()}
    try:
        with options.cli_terms():
            return run(args)
    except CliError as exc:
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
