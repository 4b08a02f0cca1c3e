"""``vsdsfn.render``: a video (or a VapourSynth script) to an output file, on this
machine or on a Ray cluster, where chunks of output frames are rendered by workers,
kept beside OUTPUT for a resume, and joined without re-encoding.

The command line parses its flags and calls this; :mod:`vsdsfn.plan` cuts the frames,
:mod:`vsdsfn.store` keeps finished chunks, :mod:`vsdsfn.chunks` renders and joins them,
:mod:`vsdsfn.cluster` runs them on Ray.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__, options
from .chunks import ChunkError, Job, is_script, join_encoded, join_y4m
from .cluster import ClusterError, Progress, connect, held_signals, render_chunks, workers
from .plan import MAX_CHUNK, chunks, default_size
from .store import Store, StoreError, identity

__all__ = ["render", "add_arguments", "check_cli", "run_cli"]

log = logging.getLogger("vsdsfn")

#: command-line settings that do not change a frame (left out of a job's settings)
_NOT_SETTINGS = ("input", "output", "sample", "quiet", "verbose", "workers", "ray", "chunk", "worker_cpus")
_JOINED = "joined.mkv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command line's flags for rendering on a Ray cluster."""
    g = parser.add_argument_group("many GPUs or machines (needs the ray extra: pip install 'vsdsfn[ray]')")
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


def check_cli(args: argparse.Namespace, src: Path) -> bool:
    """Refuse what does not fit together; True where the job runs on a cluster."""
    from .cli import CliError, _parser

    if is_script(src):
        defaults = _parser()
        names = [(o.name, o.flag) for o in options.OPTIONS if o.flag]
        names += [(n, "--" + n.replace("_", "-")) for n in ("factor", "fps", "matrix", "pix_fmt")]
        given = [flag for name, flag in names if getattr(args, name) != defaults.get_default(name)]
        if given:
            raise CliError(f"{', '.join(given)} cannot be used with a script: its output is rendered as it is; "
                           "set them in the script (e.g. in its vsdsfn.upscale call)")
    cluster = bool(args.workers or args.ray)
    for flag, value, least in (("--workers", args.workers, 1), ("--chunk", args.chunk, 1),
                               ("--worker-cpus", args.worker_cpus, 1)):
        if value is not None and not least <= value <= MAX_CHUNK:
            raise CliError(f"{flag} must be at least {least}; e.g. {flag} 2")
    if not cluster and (args.chunk or args.worker_cpus != 1):
        raise CliError("--chunk and --worker-cpus are for rendering on a cluster; add --workers N or --ray ADDRESS")
    return cluster


def _job(args: argparse.Namespace, src: Path, out: Path) -> Job:
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_SETTINGS}
    return Job(input=str(src.resolve()), args=settings, suffix=out.suffix)


def _key(job: Job, src: Path, frames: int, size: int) -> dict[str, Any]:
    """Everything the kept chunks depend on."""
    weights = job.args.get("weights")
    return {"vsdsfn": __version__, "job": job.settings(), "input": identity(src), "frames": frames, "chunk": size,
            "weights": identity(Path(weights)) if weights and Path(weights).is_file() else weights}


def run_cli(args: argparse.Namespace, src: Path, out: Path) -> int:
    """Render ``src`` to ``out`` on a Ray cluster (``--workers`` / ``--ray``)."""
    from .cli import CliError

    try:
        return _distributed(args, src, out)
    except (ClusterError, StoreError, ChunkError) as exc:
        raise CliError(str(exc)) from None


def _distributed(args: argparse.Namespace, src: Path, out: Path) -> int:
    job = _job(args, src, out)
    laps = _Laps()
    with connect(args.ray, (args.workers or 1) * args.worker_cpus) as ray, held_signals() as check:
        laps("cluster")
        with workers(ray, job, args.workers, args.worker_cpus, check) as pool:
            laps("workers")
            info = pool[0][1]
            size = args.chunk or default_size(info["frame_bytes"], job.raw)
            plan = chunks(info["frames"], size, () if args.chunk else info["prefer"])   # --chunk N: exactly N
            store = Store(out, _key(job, src, info["frames"], size), plan, ".y4m" if job.raw else out.suffix)
            try:
                todo = store.open()
                if not args.quiet:
                    _announce(src, info, len(plan), len(todo), len(pool))
                progress = Progress(info["frames"], sum(c.frames for c in plan) - sum(c.frames for c in todo),
                                    args.quiet)
                render_chunks(ray, [a for a, _ in pool], todo, store.add, progress, check)
            except BaseException:
                store.close()
                raise
            laps("chunks")
    laps("stop")
    _finish(store, info["frames"], out, job)
    laps("join")
    log.info("%d chunks rendered; seconds: %s", len(todo), ", ".join(f"{k} {v:.2f}" for k, v in laps.seconds.items()),
             extra={"vsdsfn_timings": {**laps.seconds, "chunks_rendered": len(todo), "frames": progress.rendered}})
    if not args.quiet:
        wall = sum(laps.seconds.values())
        sys.stderr.write(f"vsdsfn: wrote {out}: {info['frames']} frames in {wall:.1f} s "
                         f"({progress.rendered / wall if wall > 0 else 0:.2f} output frames/s rendered)\n")
    return 0


class _Laps:
    """Seconds spent in each phase of a job: ``laps("name")`` ends the phase so named."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self._last = now - self._last, now


def _announce(src: Path, info: dict[str, Any], chunks: int, todo: int, workers: int) -> None:
    kept = chunks - todo
    sys.stderr.write(f"vsdsfn: {src.name}: {info['frames']} output frames {info['width']}x{info['height']} in "
                     f"{chunks} chunks on {workers} workers; rendering {todo}"
                     + (f" ({kept} kept from an earlier run)" if kept else "") + "\n")


def _finish(store: Store, frames: int, out: Path, job: Job) -> None:
    """Join the kept chunks into OUTPUT (atomically), then remove the chunk folder."""
    from .cli import _Partial

    part = _Partial(out)
    try:
        if job.raw:
            join_y4m(list(store.files()), frames, part.file)
        else:
            joined = store.folder / _JOINED
            join_encoded(list(store.files()), joined)
            part.file.close()
            _remux(joined, part.path)
        part.commit()
    except BaseException:
        store.close()
        raise
    finally:
        part.discard()
    store.remove(extra=(_JOINED,))


def _remux(joined: Path, path: Path) -> None:
    """The joined video into OUTPUT's container, packets copied."""
    ffmpeg = shutil.which("ffmpeg")
    cmd = [ffmpeg or "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(joined), "-map", "0:v",
           "-c", "copy", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ChunkError(f"ffmpeg could not write the joined video: {proc.stderr.strip()[-500:]}")


def render(input: str | os.PathLike | None = None, output: str | os.PathLike | None = None, *,
           workers: int | None = None, ray: str | None = None, chunk: int | None = None, worker_cpus: int = 1,
           factor: tuple[int, int] | None = None, fps: tuple[int, int] | None = None, frames: int | None = None,
           matrix: str | None = None, pix_fmt: str = "yuv420p10", ffmpeg_args: str = "", quiet: bool = True,
           **upscale_options: Any) -> Path:
    """Render ``input`` (a video, or a ``.vpy`` script rendered as it is; None: the
    shipped sample) to ``output`` (``.y4m``, or any format ffmpeg writes) and return
    its path: on this machine, or with ``workers`` / ``ray`` on a Ray cluster (see the
    command line's flags of the same names). Raises :class:`vsdsfn.cli.CliError` with
    the fix when something is wrong.

    >>> import vsdsfn
    >>> vsdsfn.render("in.mkv", "out.mkv", workers=2, factor=(5, 2))   # doctest: +SKIP
    PosixPath('out.mkv')
    """
    from . import cli

    unknown = set(upscale_options) - set(options.NAMES)
    if unknown:
        raise cli.CliError(options.unknown(unknown))
    args = cli._parser().parse_args([])
    settings = dict(input=None if input is None else os.fspath(input), sample=input is None,
                    output=None if output is None else os.fspath(output), workers=workers, ray=ray, chunk=chunk,
                    worker_cpus=worker_cpus, factor=factor, fps=fps, frames=frames, matrix=matrix, pix_fmt=pix_fmt,
                    ffmpeg_args=ffmpeg_args, quiet=quiet, **upscale_options)
    vars(args).update(settings)
    out = cli._paths(args)[1]
    cli.run(args)
    return out
