"""A job's clip, rendered one chunk of output frames at a time, and the chunks joined.

:class:`Job` says what to render (an input video or a VapourSynth script, the command
line's settings, OUTPUT's format); :class:`Worker` builds the job's clip once (weights
loaded once) and renders chunks of it: ``.y4m`` chunks are raw frames, other formats are
encoded by ffmpeg with the job's encoder settings, each chunk starting on a keyframe.
:func:`join_y4m` and :func:`join_encoded` put finished chunks together without
re-encoding. Nothing here knows about Ray (:mod:`vsdsfn.cluster` does).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import os
import re
import runpy
import shlex
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

from . import encode, options
from .colour import MATRIX_NAMES, Colour
from .encode import PIX_FMTS
from .plan import default_size
from .source import Source, VideoError, open_source, reason

__all__ = ["Job", "Worker", "ChunkError", "open_job", "pipeline", "rate_options", "script_node", "script_source", "cut_frames",
           "pix_fmt_of", "y4m_rate", "join_y4m", "join_encoded"]

SCRIPT_SUFFIXES = (".vpy",)


class ChunkError(VideoError):
    """A chunk (or a worker's preparation) failed; the text says where and why."""


@dataclass(frozen=True)
class Job:
    """What to render: ``input`` (a video, or a ``.vpy`` script whose output node is
    rendered as it is), the command line's settings ``args`` (argparse names: the upscale
    options, ``factor``, ``fps``, ``frames``, ``matrix``, ``pix_fmt``, ``ffmpeg_args``,
    ``video_only``) and OUTPUT's extension ``suffix``."""

    input: str
    args: dict[str, Any] = field(hash=False)
    suffix: str

    @property
    def script(self) -> bool:
        return is_script(self.input)

    @property
    def raw(self) -> bool:
        return self.suffix.lower() == ".y4m"

    def settings(self) -> dict[str, Any]:
        """Everything a rendered frame depends on, as JSON values (for the manifest)."""
        return json.loads(json.dumps({"input": self.input, "args": self.args, "suffix": self.suffix}, default=str))


def is_script(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in SCRIPT_SUFFIXES


def script_node(path: str | os.PathLike, frames: int | None = None):
    """The output node (index 0) of VapourSynth script ``path``, run in this process;
    ``frames``: only its first frames."""
    import vapoursynth as vs

    vs.clear_outputs()
    try:
        runpy.run_path(str(path), run_name="__vapoursynth__")
    except Exception as exc:
        raise ChunkError(f"the script {str(path)!r} failed: {type(exc).__name__}: {reason(exc)}; "
                         "fix the script (try it with vspipe)") from None
    outputs = vs.get_outputs()
    if 0 not in outputs or not isinstance(outputs[0], vs.VideoOutputTuple):
        raise ChunkError(f"the script {str(path)!r} sets no video output 0; end it with clip.set_output()")
    node = outputs[0].clip
    if node.format is None or node.width == 0 or node.format.color_family not in (vs.YUV, vs.GRAY):
        fmt = node.format.name if node.format is not None else "a variable format"
        raise ChunkError(f"the script's output is {fmt}; video files need constant-format YUV: convert at the "
                         "end, e.g. clip = core.resize.Bicubic(clip, format=vs.YUV420P10, matrix_s=\"709\")")
    if not node.fps_num:
        raise ChunkError("the script's output has no constant frame rate; give it one at the end, e.g. "
                         "clip = core.std.AssumeFPS(clip, fpsnum=60000, fpsden=1001)")
    return node[: min(frames, node.num_frames)] if frames else node


def script_source(path: str | os.PathLike, frames: int | None = None) -> Source:
    """A script's output as a :class:`~vsdsfn.source.Source`: its colour from its first
    frame's props, a constant rate, no other streams."""
    import vapoursynth as vs

    node = script_node(path, frames)
    if pix_fmt_of(node) is None:
        raise ChunkError(f"the script's output is {node.format.name}; write one of "
                         f"{', '.join(PIX_FMTS.values())}, e.g. core.resize.Bicubic(clip, format=vs.YUV420P10)")
    colour = Colour.of(node.get_frame(0).props, node.width, node.height, node.format.color_family == vs.YUV)
    fps = Fraction(node.fps_num, node.fps_den)
    return Source(Path(path), node, colour, tuple(i / fps for i in range(node.num_frames + 1)), Fraction(0), False)


def pix_fmt_of(node) -> str | None:
    """The pixel format (a key of :data:`vsdsfn.encode.PIX_FMTS`) of ``node``'s format."""
    return next((k for k, v in PIX_FMTS.items() if v == node.format.name), None)


def open_job(args: argparse.Namespace, src: Path, suffix: str, ffmpeg: str | None, user_args: list[str]):
    """The source (a video, or a script's output) and the encoding of an output ending in
    ``suffix``."""
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

    from .filter import upscale

    if is_script(source.path):
        return source.clip
    try:
        up = upscale(source.rgb(), **{o.name: getattr(args, o.name) for o in options.OPTIONS if o.flag},
                     **rate_options(args))
    except vs.Error as exc:
        raise VideoError(str(exc)) from None
    return source.colour.from_rgb(up, getattr(vs, encode.PIX_FMTS[enc.pix_fmt]))


def rate_options(args: argparse.Namespace) -> dict[str, int | None]:
    """upscale's factor_num/factor_den and fps_num/fps_den from --factor and --fps."""
    out: dict[str, int | None] = {}
    if args.factor:
        out["factor_num"], out["factor_den"] = args.factor
    if args.fps:
        out["fps_num"], out["fps_den"] = args.fps
    return out


def _warnings_on_stderr() -> None:
    """vsdsfn's warnings on this process's stderr (Ray passes a worker's stderr on to the
    command that started the job), as the command line shows them."""
    log = logging.getLogger("vsdsfn")
    if not any(isinstance(h, logging.StreamHandler) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(f"vsdsfn: {socket.gethostname()}: %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(min(log.getEffectiveLevel(), logging.WARNING))


class Worker:
    """Renders chunks of a job's clip; the clip (and the weights) is built on first use
    and kept for the next chunks. ``gpu``: this worker was given a GPU."""

    def __init__(self, job: Job, gpu: bool = False) -> None:
        self.job, self.gpu = job, gpu
        self.node = None
        self.host = socket.gethostname()
        self.ffmpeg = shutil.which("ffmpeg")
        _warnings_on_stderr()

    def _build(self) -> None:
        if self.node is not None:
            return
        src = Path(self.job.input)
        if not os.access(src, os.R_OK) or not src.is_file():
            raise ChunkError(f"node {self.host}: cannot read the input {str(src)!r}; every node must see it at "
                             "the same path (shared storage)")
        if not self.job.raw and self.ffmpeg is None:
            raise ChunkError(f"node {self.host}: ffmpeg is not on PATH; install it on every node (or write .y4m)")
        if self.gpu:
            import torch

            if not torch.cuda.is_available():
                raise ChunkError(f"node {self.host}: Ray gave this worker a GPU but PyTorch sees no CUDA device; "
                                 "install a CUDA build of PyTorch on that node, or render on CPUs with --device cpu")
        args = argparse.Namespace(**self.job.args)
        try:
            self.source, self.enc = open_job(args, src, self.job.suffix, self.ffmpeg, shlex.split(args.ffmpeg_args))
            self.node = pipeline(args, self.source, self.enc)
        except VideoError as exc:
            raise ChunkError(f"node {self.host}: {exc}") from None

    def prepare(self) -> dict[str, Any]:
        """Build the clip; what the driver plans and writes with: this node's name, the
        output's length and frame size, where chunk cuts cost least (:func:`cut_frames`;
        none for a script or a given ``--chunk``), the source (without its clip) and the
        encoding."""
        self._build()
        n = self.node
        frame_bytes = sum(n.format.bytes_per_sample * (n.width >> (p and n.format.subsampling_w)) *
                          (n.height >> (p and n.format.subsampling_h)) for p in range(n.format.num_planes))
        prefer, scenes = [], []
        if not self.job.script and not self.job.args.get("chunk"):   # --chunk N: exactly N
            size = default_size(frame_bytes, self.job.raw)
            prefer, scenes = cut_frames(self.source.rgb(), n.num_frames, self.job.args, size)
        return {"host": self.host, "frames": n.num_frames, "width": n.width, "height": n.height,
                "fps": [n.fps_num, n.fps_den], "frame_bytes": frame_bytes, "prefer": prefer, "scenes": scenes,
                "source": dataclasses.replace(self.source, clip=None), "enc": self.enc}

    def render(self, start: int, stop: int) -> tuple[bytes, list[tuple[int, int]] | None]:
        """Output frames ``start`` .. ``stop - 1``: a y4m stream (header and frames), or a
        Matroska file of the video encoded with the job's encoding; and the frames'
        durations where the rate varies."""
        import vapoursynth as vs

        self._build()
        part = self.node[start:stop]
        try:
            if self.job.raw:
                buf = io.BytesIO()
                encode.write_y4m(part, buf, rate=y4m_rate(self.node.num_frames, self.source.duration))
                return buf.getvalue(), None
            return self._encode(part)
        except (OSError, vs.Error, VideoError) as exc:
            raise ChunkError(f"node {self.host}: output frames {start}-{stop - 1}: {reason(exc)}") from None

    def _encode(self, part) -> tuple[bytes, list[tuple[int, int]] | None]:
        timed, seen = encode.record_durations(part) if self.source.vfr else (part, {})
        with tempfile.TemporaryDirectory(prefix="vsdsfn-chunk-") as tmp:
            path = Path(tmp) / "chunk.mkv"
            encode.encode_video(timed, path, self.enc, self.source.colour, self.ffmpeg,
                                shlex.split(self.job.args.get("ffmpeg_args", "")))
            durations = [(seen[i].numerator, seen[i].denominator) for i in range(part.num_frames)] if seen else None
            return path.read_bytes(), durations


def y4m_rate(frames: int, duration: Fraction) -> Fraction:
    """The one frame rate a y4m stream of a clip lasting ``duration`` states."""
    return (Fraction(frames) / duration).limit_denominator(1001) if duration > 0 else Fraction(25)


def cut_frames(clip, length: int, args: dict[str, Any], size: int) -> tuple[list[int], list[int]]:
    """Where a chunk cut costs least, for ``upscale`` on the RGB ``clip`` with the job's
    ``args`` and chunks of about ``size`` output frames: the first output frame of each
    work group (``batch_size`` source frames: a cut there computes no group twice), and,
    with ``scene_detect``, the first output frame of each new scene near a nominal cut
    (:func:`vsdsfn.plan.chunks`' reach; cuts found as ``upscale`` finds them,
    :func:`vsdsfn.filter.scene_cut`)."""
    from .filter import planes, scene_cut
    from .schedule import Schedule

    if args.get("fps"):
        factor = Fraction(*args["fps"]) / clip.fps
    else:
        factor = Fraction(*(args.get("factor") or (2, 1)))
    batch = args.get("batch_size") or 1
    s = Schedule(clip.num_frames, factor, batch)
    firsts = (s.first_output(g * batch) for g in range(1, -(-clip.num_frames // batch)))
    groups = [n for n in firsts if 0 < n < length]
    if not args.get("scene_detect"):
        return groups, []
    threshold, reach, seen = args.get("scene_threshold", 0.1), size // 4, {}

    def frame(k: int):
        if k not in seen:
            if len(seen) > 64:
                seen.clear()
            f = clip.get_frame(k)
            seen[k] = (f, planes(f))
        return seen[k]

    scenes = []
    for nominal in range(size, length, size):
        lo = s.position(max(0, nominal - reach))[0]
        hi = s.position(min(length - 1, nominal + reach))[0]
        for k in range(max(0, lo - 1), min(hi, clip.num_frames - 2) + 1):
            first = s.first_output(k + 1)
            if abs(first - nominal) <= reach:
                (a, pa), (b, pb) = frame(k), frame(k + 1)
                if scene_cut(a, b, pa, pb, threshold)[0]:
                    scenes.append(first)
    return groups, sorted(set(scenes))


_XLENGTH = re.compile(rb" XLENGTH=\d+")


def join_y4m(chunks: list[Path], total: int, out: BinaryIO) -> None:
    """Write y4m chunks as one stream: the first chunk's header (its length made the
    whole stream's), then every chunk's frames, byte for byte."""
    for i, path in enumerate(chunks):
        with open(path, "rb") as f:
            header = f.readline()
            if i == 0:
                out.write(_XLENGTH.sub(b" XLENGTH=%d" % total, header))
            shutil.copyfileobj(f, out, 1 << 20)


def join_encoded(chunks: list[Path], times: list[Fraction], joined: Path, mkvmerge: str, exact: bool) -> None:
    """Append encoded chunks (Matroska, each starting on a keyframe) into one Matroska
    file with mkvmerge, packets copied, each frame at its time in ``times`` (seconds):
    to the nanosecond where ``exact`` (a constant rate, which the single-process command
    keeps exactly), else to the millisecond (as it retimes a variable rate)."""
    appended = joined.with_name(joined.stem + "-appended.mkv")
    opts = ["--output", str(appended)]
    for i, path in enumerate(chunks):
        opts += (["+"] if i else []) + ["--no-audio", "--no-subtitles", str(path)]
    _mkvmerge(mkvmerge, opts, joined, "join the chunks")
    stamps = joined.with_name(joined.stem + "-timestamps.txt")
    encode.write_timestamps(stamps, times)
    scale = ["--timestamp-scale", "1"] if exact else []
    _mkvmerge(mkvmerge, [*scale, "--output", str(joined), "--timestamps", f"0:{stamps}", str(appended)], joined,
              "time the joined chunks")
    appended.unlink()
    stamps.unlink()


def _mkvmerge(mkvmerge: str, opts: list[str], joined: Path, what: str) -> None:
    """Run mkvmerge with ``opts`` (through an options file: a film has many chunks)."""
    optfile = joined.with_name(joined.stem + "-options.json")
    optfile.write_text(json.dumps(["--quiet", *opts]))
    try:
        proc = subprocess.run([mkvmerge, f"@{optfile}"], capture_output=True, text=True)
    finally:
        optfile.unlink(missing_ok=True)
    if proc.returncode >= 2:   # 1: warnings only
        raise ChunkError(f"mkvmerge could not {what}: {(proc.stdout + proc.stderr).strip()[-500:]}")
