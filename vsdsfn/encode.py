"""Writing a rendered clip: the encoder and pixel format, the video stream, its per-frame
timestamps and the final file with the input's other streams.

* :func:`choose` picks an encoder and pixel format that play: 8-bit 4:2:0 H.264 for an
  8-bit source, 10-bit HEVC or AV1 (whichever ffmpeg has) for a deeper one, AV1 or VP9
  in ``.webm``; ``pix_fmt`` and the user's ffmpeg options override.
* :func:`write_y4m` writes a clip as YUV4MPEG2 (video only, constant rate).
* :func:`encode_video` pipes a clip into ffmpeg: a Matroska file holding the video
  stream alone, tagged with its :class:`~vsdsfn.colour.Colour`.
* :func:`retime` gives that stream per-frame timestamps (variable frame rate) with
  mkvmerge; :func:`record_durations` collects them from the rendered frames.
* :func:`mux` writes the output: the video stream placed at the source's first frame,
  the source's audio, subtitles, attachments, chapters and metadata copied unchanged
  (cut to the same span when only part of the video was rendered).

ffmpeg's messages are kept in a log file; a failure's first lines go into the
:class:`~vsdsfn.source.VideoError`.
"""

from __future__ import annotations

import functools
import logging
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .colour import Colour
from .source import Source, VideoError, reason

__all__ = ["PIX_FMTS", "Encoding", "choose", "default_pix_fmt", "encoders", "check_encoding", "check_streams",
           "record_durations", "write_y4m", "encode_video", "write_timestamps", "retime", "mux"]

log = logging.getLogger("vsdsfn")

#: the pixel formats written: ffmpeg's name (less the "le" of deeper formats) -> VapourSynth's
PIX_FMTS = {"yuv420p": "YUV420P8", "yuv420p10": "YUV420P10", "yuv420p12": "YUV420P12", "yuv422p": "YUV422P8",
            "yuv422p10": "YUV422P10", "yuv444p": "YUV444P8", "yuv444p10": "YUV444P10", "yuv444p16": "YUV444P16"}

# encoder -> (codec shown, its options); preferences by depth and container below
_ENCODERS = {
    "libx264": ("H.264", ("-preset", "medium", "-crf", "16")),
    "libx265": ("HEVC", ("-preset", "medium", "-crf", "18", "-x265-params", "log-level=error")),
    "libsvtav1": ("AV1", ("-preset", "8", "-crf", "30")),
    "libaom-av1": ("AV1", ("-cpu-used", "6", "-crf", "30", "-b:v", "0")),
    "libvpx-vp9": ("VP9", ("-crf", "30", "-b:v", "0")),
}
_PREFER_8 = ("libx264", "libx265", "libsvtav1", "libaom-av1")
_PREFER_DEEP = ("libx265", "libsvtav1", "libaom-av1", "libx264")
_PREFER_WEBM = ("libsvtav1", "libaom-av1", "libvpx-vp9")
_CODEC_FLAGS = ("-c", "-codec", "-c:v", "-codec:v", "-vcodec", "-c:v:0", "-codec:v:0")


@dataclass(frozen=True)
class Encoding:
    """How the video is written: ``encoder`` (ffmpeg's name; None for .y4m, or where
    the user's options name it), the pixel format (a key of :data:`PIX_FMTS`) and our
    encoder options (the user's come after them)."""

    encoder: str | None
    pix_fmt: str
    options: tuple[str, ...] = ()
    label: str = ""

    @property
    def ffmpeg_pix_fmt(self) -> str:
        return self.pix_fmt + ("le" if self.pix_fmt[-2:].isdigit() else "")


def default_pix_fmt(depth: int) -> str:
    """8-bit 4:2:0 for sources of up to 8 bits, 10-bit 4:2:0 for deeper ones."""
    return "yuv420p" if depth <= 8 else "yuv420p10"


@functools.lru_cache(maxsize=8)
def encoders(ffmpeg: str) -> frozenset[str]:
    """The video encoders ``ffmpeg`` has (of those :func:`choose` considers)."""
    out = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60).stdout
    names = {line.split()[1] for line in out.splitlines() if len(line.split()) > 1 and line.split()[0][:1] == "V"}
    return frozenset(names & set(_ENCODERS))


def _user_codec(user_args: Sequence[str]) -> str | None:
    for flag, value in zip(user_args, user_args[1:]):
        if flag in _CODEC_FLAGS:
            return value
    return None


def choose(suffix: str, depth: int, pix_fmt: str | None = None, user_args: Sequence[str] = (),
           available: frozenset[str] = frozenset()) -> Encoding:
    """The encoding of an output ending in ``suffix`` for a source of ``depth`` bits:
    ``pix_fmt`` (default :func:`default_pix_fmt`), the first of the preferred encoders
    that is ``available``, unless ``user_args`` name the codec.

    >>> choose(".mp4", 8, available=frozenset({"libx264", "libx265"})).label
    'H.264 (libx264) yuv420p'
    >>> choose(".mkv", 10, available=frozenset({"libx264", "libsvtav1"})).label
    'AV1 (libsvtav1) yuv420p10'
    """
    fmt = pix_fmt or default_pix_fmt(depth)
    if suffix.lower() == ".y4m":
        return Encoding(None, fmt, (), f"y4m {fmt}")
    user = _user_codec(user_args)
    if user is not None:
        return Encoding(None, fmt, (), f"{user} (from --ffmpeg-args) {fmt}")
    deep = int(fmt[7:] or 8) > 8
    prefer = _PREFER_WEBM if suffix.lower() == ".webm" else _PREFER_DEEP if deep else _PREFER_8
    name = next((e for e in prefer if e in available), None)
    if name is None:
        raise VideoError(f"this ffmpeg has none of the encoders {', '.join(prefer)}; install an ffmpeg built with "
                         "them, or name one with --ffmpeg-args \"-c:v ENCODER\"")
    codec, opts = _ENCODERS[name]
    if name == "libx265" and suffix.lower() in (".mp4", ".mov"):
        opts += ("-tag:v", "hvc1")   # what Apple's players look for
    if name == "libx264" and deep:
        log.warning("no HEVC or AV1 encoder in ffmpeg: writing %s as H.264 High 10, which few players decode", fmt)
    return Encoding(name, fmt, opts, f"{codec} ({name}) {fmt}")


def _ffmpeg_video_options(enc: Encoding, colour: Colour, user_args: Sequence[str]) -> list[str]:
    codec = ["-c:v", enc.encoder] if enc.encoder else []
    return [*codec, "-pix_fmt", enc.ffmpeg_pix_fmt, *enc.options, *colour.ffmpeg_options(), *user_args]


def _stopped_writing(exc: BaseException) -> bool:
    """A failed write into the pipe, or a frame that failed to render."""
    vs = sys.modules.get("vapoursynth")
    return isinstance(exc, (OSError, ValueError)) or (vs is not None and isinstance(exc, vs.Error))


def _run(cmd: list[str], log_path: Path, what: str, fix: str, feed: Callable | None = None,
         ok: tuple[int, ...] = (0,)) -> None:
    """Run ``cmd`` with its messages in ``log_path``; ``feed(proc.stdin)`` writes its
    input. A failure (an exit status not in ``ok``) raises :class:`VideoError` with the
    tool's messages."""
    log.info("running %s", shlex.join(cmd))
    with open(log_path, "ab") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if feed else subprocess.DEVNULL, stdout=err, stderr=err)
        try:
            if feed is not None:
                feed(proc.stdin)
                proc.stdin.close()
        except BaseException as exc:
            proc.kill()
            proc.wait()
            if _stopped_writing(exc):
                raise VideoError(f"{what} stopped early ({reason(exc)}{_messages(log_path, ': ')}); {fix}") from None
            raise
        rc = proc.wait()
    if rc not in ok:
        status = f"stopped by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
        raise VideoError(f"{what} failed ({status}{_messages(log_path, ': ')}); {fix}")


def _messages(path: Path, prefix: str) -> str:
    """The tool's messages on one line (at most three: the first names the cause)."""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return f"{prefix}{' | '.join(dict.fromkeys(lines[:3]))}" if lines else ""


def check_encoding(ffmpeg: str, enc: Encoding, colour: Colour, user_args: Sequence[str], scratch: Path) -> None:
    """Encode two small frames with these options (to nothing): a bad option or encoder
    is refused before any work."""
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-f", "lavfi", "-i",
           "color=size=128x128:rate=25:duration=0.08", *_ffmpeg_video_options(enc, colour, user_args), "-f", "null", "-"]
    _run(cmd, scratch / "check.log", "ffmpeg with these options", "check --ffmpeg-args and --pix-fmt")


def _stream_maps(source: Source, suffix: str, keep: bool, input_index: int) -> list[str]:
    if not keep:
        return ["-map_chapters", "-1"]
    maps = [f"{input_index}:a?", f"{input_index}:s?"] + ([f"{input_index}:t?"] if suffix == ".mkv" else [])
    return [a for m in maps for a in ("-map", m)] + ["-map_metadata", str(input_index),
                                                      "-map_chapters", str(input_index)]


def check_streams(ffmpeg: str, source: Source, suffix: str, scratch: Path) -> None:
    """Copy a moment of the source's other streams into a file of the output's kind: a
    stream that container cannot hold is refused before any work."""
    if not source.streams:
        return
    probe = scratch / f"streams{suffix}"
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y", "-t", "0.1", "-i", str(source.path),
           *_stream_maps(source, suffix.lower(), True, 0), "-c", "copy", str(probe)]
    kinds = ", ".join(sorted({f"{s.kind} ({s.codec})" for s in source.streams}))
    _run(cmd, scratch / "streams.log", f"copying the input's {kinds} into {suffix}",
         "write .mkv (it holds any stream), or drop them with --video-only")
    probe.unlink(missing_ok=True)


def record_durations(clip) -> tuple[object, dict[int, Fraction]]:
    """``clip`` passed through unchanged, and a dict that collects each rendered frame's
    duration (its ``_DurationNum/_DurationDen`` props) as frames are requested."""
    import vapoursynth as vs

    seen: dict[int, Fraction] = {}

    def note(n, f):
        num, den = f.props.get("_DurationNum"), f.props.get("_DurationDen")
        if num is not None and den:
            seen[n] = Fraction(int(num), int(den))
        return f

    return vs.core.std.ModifyFrame(clip, clip, note), seen


def write_y4m(clip, file, progress: Callable[[int, int], None] | None = None, rate: Fraction = Fraction(25)) -> None:
    """Every frame of ``clip`` (YUV) into the open binary ``file`` as YUV4MPEG2, which has
    one frame rate: a variable-rate clip is written at ``rate``."""
    import vapoursynth as vs

    if not clip.fps_num:
        clip = vs.core.std.AssumeFPS(clip, fpsnum=rate.numerator, fpsden=rate.denominator)
    clip.output(file, y4m=True, progress_update=progress)


def encode_video(clip, path: Path, enc: Encoding, colour: Colour, ffmpeg: str, user_args: Sequence[str] = (),
                 progress: Callable[[int, int], None] | None = None) -> None:
    """Every frame of ``clip`` (YUV in ``enc.pix_fmt``) encoded into ``path`` (its
    extension names the container: .mkv for :func:`retime`, .nut keeps an exact rational
    frame rate), holding that video stream alone, tagged with ``colour``; ffmpeg's
    messages go to ``path`` with ``.log`` added."""
    cmd = [ffmpeg, "-hide_banner", "-v", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-", "-map", "0:v",
           *_ffmpeg_video_options(enc, colour, user_args), str(path)]
    _run(cmd, path.with_name(path.name + ".log"), "ffmpeg", "check --ffmpeg-args, free disk space, and run again",
         feed=lambda pipe: write_y4m(clip, pipe, progress))


def write_timestamps(path: Path, times: Sequence[Fraction]) -> None:
    """A Matroska timestamps file (v2: one start time per frame, in milliseconds)."""
    path.write_text("# timestamp format v2\n" + "".join(f"{float(t * 1000):.6f}\n" for t in times))


def retime(mkvmerge: str, video: Path, times: Sequence[Fraction], out: Path) -> None:
    """The Matroska ``video`` (one stream) with its frames at ``times`` (seconds), into ``out``."""
    stamps = out.with_name(out.name + ".timestamps.txt")
    write_timestamps(stamps, times)
    cmd = [mkvmerge, "--quiet", "-o", str(out), "--timestamps", f"0:{stamps}", str(video)]
    _run(cmd, out.with_name(out.name + ".log"), "mkvmerge", "check the scratch folder's disk space and run again",
         ok=(0, 1))   # 1: warnings only


def mux(ffmpeg: str, video: Path, source: Source, out: Path, *, keep: bool = True, trim: bool = False) -> None:
    """The output file ``out`` (its extension names the container): the single-stream
    ``video`` placed at the source's first frame and tagged (stream and container) with the
    source's colour, and with ``keep`` the source's audio,
    subtitles, attachments (Matroska), chapters and metadata copied unchanged; ``trim``
    cuts them to the video's span (for part of the source)."""
    suffix = out.suffix.lower()
    src = ["-t", f"{float(source.start + source.duration):.6f}"] if trim else []
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-v", "error", "-y", "-itsoffset", f"{float(source.start):.6f}",
           "-i", str(video), *(src + ["-i", str(source.path)] if keep else []), "-map", "0:v",
           *_stream_maps(source, suffix, keep, 1), "-c", "copy", *source.colour.ffmpeg_options(),
           *(["-movflags", "+faststart"] if suffix in (".mp4", ".mov") else []), str(out)]
    _run(cmd, video.with_name(video.name + ".mux.log"), "ffmpeg (muxing)",
         "write .mkv, or drop the other streams with --video-only")
