"""Command line: ``vsdsfn INPUT -o OUTPUT`` (also ``python -m vsdsfn``).

Reads any video through ``core.bs.VideoSource``, converts it to RGBS, runs
:func:`vsdsfn.upscale`, converts back to YUV and writes ``.y4m`` itself, or pipes the
y4m stream into ffmpeg for any other output extension. Without INPUT it upscales the
small sample clip shipped in the package. Progress and the summary go to stderr.
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

from . import __version__

SAMPLE = Path(__file__).resolve().parent / "data" / "sample.y4m"

# VapourSynth / ITU-T H.273 matrix coefficients
_MATRICES = {"709": 1, "601": 6, "170m": 6, "470bg": 5, "2020ncl": 9, "fcc": 4, "240m": 7}
_PIX_FMTS = {"yuv420p10": "YUV420P10", "yuv444p16": "YUV444P16", "yuv420p8": "YUV420P8"}


class CliError(Exception):
    pass


def _tile_arg(text: str):
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
            return (w, h)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or WxH (e.g. 512 or 640x360), not {text!r}") from None


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
    g.add_argument("--weights", help="'default' (the shipped weights; the default), 'quality' (the shipped "
                   "larger model, about 1.35x slower) or a weights file (.safetensors)")
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    g.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=None,
                   help="half precision on CUDA (default: fp32)")
    g.add_argument("--batch-size", type=int, default=1, help="frame pairs per forward pass (default 1)")
    g.add_argument("--scene-detect", action="store_true", help="detect scene cuts (no blending across them)")
    g.add_argument("--scene-threshold", type=float, default=0.1, help="detector threshold, 0..1 (default 0.1)")
    g.add_argument("--debug", choices=["st", "ts", "fused", "masks"],
                   help="write this intermediate in the odd frames instead of the result")
    g.add_argument("--threads", type=int, help="torch CPU threads")
    g.add_argument("--tile", type=_tile_arg, metavar="N|WxH",
                   help="run the network on tiles of at most N (or W x H) input pixels to bound memory")
    g.add_argument("--tile-overlap", type=int, default=None, metavar="N",
                   help="context pixels around each tile's used part (default: upscale's tile_overlap default)")
    g.add_argument("--compile", action="store_true", help="use torch.compile (falls back if it fails)")
    g.add_argument("--ensemble", action="store_true",
                   help="average with a pass on the frames flipped upside down: a little better, twice the time")
    g.add_argument("--st-scale", type=float, default=None, metavar="S",
                   help="S->T stream's flow scale in (0, 1] (default: the weights file's; smaller is faster)")
    g.add_argument("--mvtools", action="store_true",
                   help="mix mvtools FlowFPS (on the upscaled frames) into the new frames; needs vapoursynth-mvtools")
    g.add_argument("--mvtools-weight", type=float, default=None, metavar="W",
                   help="mvtools' weight in that mix, 0..1 (default: upscale's)")
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


def run(args: argparse.Namespace) -> int:
    import vapoursynth as vs

    from .filter import upscale

    core = vs.core
    if args.input and args.sample:
        raise CliError("give either INPUT or --sample, not both")
    src = Path(args.input) if args.input else SAMPLE
    if not src.is_file():
        raise CliError(f"input {str(src)!r} does not exist or is not a file")
    out = Path(args.output) if args.output else Path.cwd() / f"{src.stem}_2x.y4m"
    if out.resolve() == src.resolve():
        raise CliError("the output would overwrite the input; choose another -o")
    is_y4m = out.suffix.lower() == ".y4m"
    ffmpeg = None
    if not is_y4m:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise CliError(f"writing {out.suffix or 'that'} files needs ffmpeg on PATH; install ffmpeg "
                           "(e.g. apt-get install ffmpeg) or write .y4m")
    if args.frames is not None and args.frames < 1:
        raise CliError("--frames must be at least 1")

    try:
        clip = core.bs.VideoSource(str(src), cachemode=1, cachepath=_cache_dir())
    except vs.Error as exc:
        raise CliError(f"cannot read {str(src)!r}: {exc}") from None
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
        up = upscale(rgb, weights=args.weights, device=args.device, fp16=args.fp16,
                     batch_size=args.batch_size, scene_detect=args.scene_detect,
                     scene_threshold=args.scene_threshold, debug=args.debug, num_threads=args.threads,
                     tile=args.tile, compile=args.compile, st_scale=args.st_scale, mvtools=args.mvtools,
                     ensemble=args.ensemble,
                     **({} if args.mvtools_weight is None else {"mvtools_weight": args.mvtools_weight}),
                     **({} if args.tile_overlap is None else {"tile_overlap": args.tile_overlap}))
    except vs.Error as exc:
        raise CliError(str(exc)) from None
    yuv = core.resize.Bicubic(up, format=getattr(vs, _PIX_FMTS[args.pix_fmt]), matrix=matrix)

    if not args.quiet:
        sys.stderr.write(f"vsdsfn: {src.name}: {n_in} frames {w}x{h} {_fps(clip)} -> "
                         f"{yuv.num_frames} frames {yuv.width}x{yuv.height} {_fps(yuv)}\n")
    start = time.perf_counter()
    update = _progress(args.quiet, yuv.num_frames)
    if is_y4m:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        try:
            with open(tmp, "wb") as f:
                yuv.output(f, y4m=True, progress_update=update)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
    else:
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-",
               *shlex.split(args.ffmpeg_args), str(out)]
        logging.getLogger("vsdsfn").info("running %s", shlex.join(cmd))
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        try:
            yuv.output(proc.stdin, y4m=True, progress_update=update)
        except (BrokenPipeError, OSError, vs.Error) as exc:
            proc.kill()
            proc.wait()
            raise CliError(f"ffmpeg stopped early ({exc}); see its message above") from None
        finally:
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        if proc.wait() != 0:
            raise CliError(f"ffmpeg failed (exit {proc.returncode}): {shlex.join(cmd)}")
    wall = time.perf_counter() - start
    if not args.quiet:
        sys.stderr.write(
            f"vsdsfn: wrote {out} ({args.pix_fmt}): {n_in} frames {w}x{h} @ {_fps(clip)} -> "
            f"{yuv.num_frames} frames {yuv.width}x{yuv.height} @ {_fps(yuv)} in {wall:.1f} s "
            f"({yuv.num_frames / wall if wall > 0 else 0:.2f} output frames/s)\n")
    return 0


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
