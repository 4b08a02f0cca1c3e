"""``vsdsfn.render``: a video (or a VapourSynth script) to an output file, on this
machine or on a Ray cluster, where chunks of output frames are rendered by workers,
kept beside OUTPUT for a resume, and joined without re-encoding.

The command line's flags are defined here (:func:`parser`); :mod:`vsdsfn.cli` parses
them and calls :func:`run`. :mod:`vsdsfn.local` writes OUTPUT in this process;
:mod:`vsdsfn.plan` cuts the frames, :mod:`vsdsfn.store` keeps finished chunks,
:mod:`vsdsfn.chunks` renders and joins them, :mod:`vsdsfn.cluster` runs them on Ray.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from . import encode, local, options
from ._version import __version__
from .chunks import Job, is_script, join_encoded, join_y4m, rate_options
from .colour import MATRIX_NAMES
from .cluster import Progress, connect, held_signals, render_chunks, workers
from .partial import Partial
from .plan import MAX_CHUNK, chunks, default_size
from .source import VideoError
from .store import Store, identity

__all__ = ["render", "run", "parser", "SAMPLE"]

SAMPLE = Path(__file__).resolve().parent / "data" / "sample.y4m"

log = logging.getLogger("vsdsfn")

#: command-line settings that do not change a frame (left out of a job's settings)
_NOT_SETTINGS = ("input", "output", "sample", "quiet", "verbose", "workers", "ray", "chunk", "worker_cpus")


def parser() -> argparse.ArgumentParser:
    """The command line's flags (also :func:`render`'s keywords and defaults); the upscale
    flags, their defaults and help come from :mod:`vsdsfn.options`."""
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
    _cluster_arguments(p)
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


def _ffmpeg_args(args: argparse.Namespace) -> list[str]:
    try:
        return shlex.split(args.ffmpeg_args)
    except ValueError as exc:
        raise VideoError(f"--ffmpeg-args {args.ffmpeg_args!r} cannot be split into options ({exc}); "
                         "balance its quotes, e.g. --ffmpeg-args \"-crf 18 -preset slow\"") from None


def _run(args: argparse.Namespace) -> None:
    """Check the paths and options, then write OUTPUT through a
    :class:`vsdsfn.partial.Partial` file, renamed over OUTPUT when complete and removed
    when anything fails or a signal stops us."""
    src, out = _paths(args)
    user_args = _ffmpeg_args(args)
    tools = local.tools_for(out)
    if args.frames is not None and args.frames < 1:
        raise VideoError("--frames must be at least 1; e.g. --frames 10")
    try:
        options.check({**vars(args), **rate_options(args)})
    except ValueError as exc:
        raise VideoError(str(exc)) from None
    write = _run_cluster if _check(args, src) else local.write   # --workers / --ray: on a Ray cluster
    try:
        part = Partial(out)
    except OSError as exc:
        raise VideoError(f"cannot create the output {str(out)!r} ({exc.strerror}); "
                         "choose a path in a folder you can write to") from None
    with part:
        write(args, src, part, tools, user_args)
        part.commit()


def _cluster_arguments(p: argparse.ArgumentParser) -> None:
    """The command line's flags for rendering on a Ray cluster."""
    g = p.add_argument_group("many GPUs or machines (needs the ray extra: pip install 'vsdsfn[ray]')")
    g.add_argument("--workers", type=int, metavar="N",
                   help="render on a local Ray cluster of N workers, started and stopped here (with --ray: N "
                        "workers on that cluster; default there: one per GPU, else one per --worker-cpus CPUs)")
    g.add_argument("--ray", metavar="ADDRESS",
                   help="render on the running Ray cluster at ADDRESS (HOST:PORT of its head, or auto: "
                        "$RAY_ADDRESS); INPUT must be at the same path on every node")
    g.add_argument("--chunk", type=int, metavar="N",
                   help="output frames per chunk, exactly (default: about 300, cut where no work is repeated; fewer "
                        "where raw .y4m frames are large)")
    g.add_argument("--worker-cpus", type=int, default=1, metavar="N",
                   help="CPUs each worker asks of Ray (default 1; on clusters with GPUs it also asks one GPU)")


def _check(args: argparse.Namespace, src: Path) -> bool:
    """Refuse what does not fit together; True where the job runs on a cluster."""
    if is_script(src):
        defaults = parser()
        names = [(o.name, o.flag) for o in options.OPTIONS if o.flag]
        names += [(n, "--" + n.replace("_", "-")) for n in ("factor", "fps", "matrix", "pix_fmt")]
        given = [flag for name, flag in names if getattr(args, name) != defaults.get_default(name)]
        if given:
            raise VideoError(f"{', '.join(given)} cannot be used with a script: its output is rendered as it is; "
                             "set them in the script (e.g. in its vsdsfn.upscale call)")
        args.video_only = True   # a script's output is a video node: there are no other streams to copy
    cluster = bool(args.workers or args.ray)
    for flag, value in (("--workers", args.workers), ("--chunk", args.chunk), ("--worker-cpus", args.worker_cpus)):
        if value is not None and not 1 <= value <= MAX_CHUNK:
            raise VideoError(f"{flag} must be in [1, {MAX_CHUNK}]; e.g. {flag} 2")
    if not cluster and (args.chunk or args.worker_cpus != 1):
        raise VideoError("--chunk and --worker-cpus are for rendering on a cluster; add --workers N or --ray ADDRESS")
    return cluster


def _job(args: argparse.Namespace, src: Path, out: Path) -> Job:
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_SETTINGS}
    return Job(input=str(src.absolute()), args=settings, suffix=out.suffix)   # as spelled: the path on every node


def _key(job: Job, src: Path, info: dict[str, Any], size: int) -> dict[str, Any]:
    """Everything the kept chunks depend on."""
    weights = job.args.get("weights")
    return {"vsdsfn": __version__, "job": job.settings(), "input": identity(src), "frames": info["frames"],
            "chunk": size, "encoding": dataclasses.asdict(info["enc"]),
            "weights": identity(Path(weights)) if weights and Path(weights).is_file() else weights}


def _run_cluster(args: argparse.Namespace, src: Path, part: Partial, tools: local.Tools,
                 user_args: list[str]) -> None:
    """Render ``src`` into ``part`` on a Ray cluster (``--workers`` / ``--ray``): chunks
    rendered and kept beside the output, then joined."""
    mkvmerge = shutil.which("mkvmerge")
    if tools.ffmpeg and mkvmerge is None:
        raise VideoError(f"joining {part.out.suffix} chunks needs mkvmerge on PATH; install mkvtoolnix (e.g. "
                         "apt-get install mkvtoolnix), or write .y4m")
    _distributed(args, src, part, _Writer(tools.ffmpeg, mkvmerge, user_args))


@dataclass(frozen=True)
class _Writer:
    """The driver's tools and the user's encoder options."""

    ffmpeg: str | None
    mkvmerge: str | None
    user_args: list[str]


def _distributed(args: argparse.Namespace, src: Path, part: Partial, writer: _Writer) -> None:
    job = _job(args, src, part.out)
    laps = _Laps()
    with connect(args.ray, (args.workers or 1) * args.worker_cpus) as ray, held_signals() as check:
        laps("cluster")
        with workers(ray, job, args.workers, args.worker_cpus, check) as pool:
            laps("workers")
            info = _agreed([i for _, i in pool])
            _check_output(args, info, part, writer)
            size = args.chunk or default_size(info["frame_bytes"], job.raw)
            plan = chunks(info["frames"], size, info["prefer"], info["scenes"])   # --chunk N: none preferred
            store = Store(part.out, _key(job, src, info, size), plan, ".y4m" if job.raw else ".mkv")
            try:
                todo = store.open()
                local.say(args, _announce(src, info, len(plan), len(todo), len(pool)))
                progress = Progress(info["frames"], sum(c.frames for c in plan) - sum(c.frames for c in todo),
                                    args.quiet)
                render_chunks(ray, [a for a, _ in pool], todo, _keep(store), progress, check)
            except BaseException:
                store.close()
                raise
            laps("chunks")
    laps("stop")
    _finish(store, info, part, writer, args)
    laps("join")
    log.info("%d chunks rendered; seconds: %s", len(todo), ", ".join(f"{k} {v:.2f}" for k, v in laps.seconds.items()),
             extra={"vsdsfn_timings": {**laps.seconds, "chunks_rendered": len(todo), "frames": progress.rendered}})
    wall = sum(laps.seconds.values())
    local.say(args, f"wrote {part.out} ({local.what(info['source'], info['enc'], part.out, args.video_only)}): "
                    f"{info['frames']} frames in {wall:.1f} s ({progress.rendered / wall if wall > 0 else 0:.2f} "
                    "output frames/s rendered)")


def _agreed(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """What the workers said of the job, where they all say the same."""
    for key in ("frames", "width", "height", "fps", "enc"):
        seen = {repr(i[key]): i["host"] for i in infos}
        if len(seen) > 1:
            raise VideoError(f"the nodes disagree on the job's {key}: " + "; ".join(f"{h}: {v}" for v, h in seen.items())
                             + "; install the same vsdsfn, VapourSynth and ffmpeg on every node (or name the "
                             "encoder with --ffmpeg-args \"-c:v ENCODER\")")
    return infos[0]


def _check_output(args: argparse.Namespace, info: dict[str, Any], part: Partial, writer: _Writer) -> None:
    """What the single-process command checks before the work: the encoder options, and
    that OUTPUT's container holds the input's other streams."""
    if writer.ffmpeg:
        encode.check_encoding(writer.ffmpeg, info["enc"], info["source"].colour, writer.user_args, part.scratch())
        if not args.video_only:
            encode.check_streams(writer.ffmpeg, info["source"], part.out.suffix, part.scratch())


def _keep(store: Store):
    def keep(chunk, result) -> None:
        data, durations = result
        store.add(chunk, data, durations=durations)

    return keep


class _Laps:
    """Seconds spent in each phase of a job: ``laps("name")`` ends the phase so named."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._last = now - self._last, now


def _announce(src: Path, info: dict[str, Any], chunks: int, todo: int, workers: int) -> str:
    kept = chunks - todo
    return (f"{src.name}: {info['frames']} output frames {info['width']}x{info['height']} in {chunks} chunks on "
            f"{workers} workers; rendering {todo}" + (f" ({kept} kept from an earlier run)" if kept else ""))


def _times(store: Store, info: dict[str, Any]) -> list[Fraction]:
    """Each output frame's start (seconds): the workers' durations, or the constant rate."""
    durations = [Fraction(*d) for c in store.chunks for d in (store.done[c.index].get("durations") or [])]
    if not durations:
        fps = Fraction(*info["fps"])
        return [i / fps for i in range(info["frames"])]
    times = [Fraction(0)]
    for d in durations[:-1]:
        times.append(times[-1] + d)
    return times


def _finish(store: Store, info: dict[str, Any], part: Partial, writer: _Writer, args: argparse.Namespace) -> None:
    """Join the kept chunks into ``part`` (the input's other streams muxed in, as the
    single-process command does), then remove the chunk folder."""
    try:
        files = list(store.files())
        if writer.ffmpeg is None:
            join_y4m(files, info["frames"], part.file)
        else:
            joined = part.scratch() / "joined.mkv"
            join_encoded(files, _times(store, info), joined, writer.mkvmerge, exact=not info["source"].vfr)
            part.file.close()
            encode.mux(writer.ffmpeg, joined, info["source"], part.path, keep=not args.video_only,
                       trim=args.frames is not None)
    except BaseException:
        store.close()
        raise
    store.remove()


def render(input: str | os.PathLike | None = None, output: str | os.PathLike | None = None, *,
           sample: bool = False, workers: int | None = None, ray: str | None = None, chunk: int | None = None,
           worker_cpus: int = 1, factor: tuple[int, int] | None = None, fps: tuple[int, int] | None = None,
           frames: int | None = None, matrix: str | None = None, pix_fmt: str | None = None, ffmpeg_args: str = "",
           video_only: bool = False, quiet: bool = True, **upscale_options: Any) -> Path:
    """Render ``input`` (a video, or a ``.vpy`` script rendered as it is; None or
    ``sample``: the shipped sample) to ``output`` (``.y4m``, or any format ffmpeg writes,
    the input's audio and other streams copied in) and return its path: on this machine,
    or with ``workers`` / ``ray`` on a Ray cluster (a connection this process already has
    to one is used as it is). The keywords are the command line's flags (``vsdsfn
    --help``), which calls this; raises :class:`vsdsfn.source.VideoError` with the fix
    when something is wrong.

    >>> import vsdsfn
    >>> vsdsfn.render("in.mkv", "out.mkv", workers=2, factor=(5, 2))   # doctest: +SKIP
    PosixPath('out.mkv')
    """
    unknown = set(upscale_options) - set(options.NAMES)
    if unknown:
        raise VideoError(options.unknown(unknown))
    args = parser().parse_args([])
    vars(args).update(input=None if input is None else os.fspath(input), sample=sample,
                      output=None if output is None else os.fspath(output), workers=workers, ray=ray, chunk=chunk,
                      worker_cpus=worker_cpus, factor=factor, fps=fps, frames=frames, matrix=matrix,
                      pix_fmt=pix_fmt, ffmpeg_args=ffmpeg_args, video_only=video_only, quiet=quiet, **upscale_options)
    out = _paths(args)[1]
    _run(args)
    return out
