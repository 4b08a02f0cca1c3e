"""Pack a training config's data into a compact copy, for training on another machine.

Frame folders (``data.sequences``, ``data.val_sequences``) become RGB H.264 videos
(``libx264rgb``: every decoder returns the same RGB), video files are copied (or, with
``--videos encode``, re-encoded the same way), stills (``data.sr_images``, ``data.sr_val``)
become JPEG, and ``config.toml`` is the config with its ``[data]`` table pointing at the
copy. The copy is lossy: say so wherever weights trained on it are described.

    python -m training.pack --config training/configs/cpu.toml --data-root ../shared/data \\
        --out pack/
    # on the other machine (VapourSynth, ffmpeg or OpenCV decodes the videos):
    python -m training.train --config pack/config.toml --data-root pack/ --stage temporal ...

Needs the ``ffmpeg`` command here (and a video decoder there:
:class:`training.datasets.VideoSequence`).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from .config import load_config
from .datasets import list_images, open_sequence

__all__ = ["pack", "data_table", "main"]

log = logging.getLogger("vsdsfn.training")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        if any(isinstance(x, dict) for x in v):
            return "[\n" + "".join(f"  {_toml_value(x)},\n" for x in v) + "]"
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"pack: cannot write {type(v).__name__} to TOML")


def data_table(data: dict) -> str:
    """A ``[data]`` TOML table for ``data`` (scalars, lists, inline tables; ``None`` left out)."""
    lines = ["[data]"]
    for k, v in data.items():
        if v is not None:
            lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _replace_data_table(text: str, table: str) -> str:
    """The TOML ``text`` with its ``[data]`` table (up to the next table header) replaced."""
    m = re.search(r"(?m)^\[data\][ \t]*(#.*)?$", text)
    if not m:
        return text.rstrip() + "\n\n" + table
    nxt = re.search(r"(?m)^\[", text[m.end():])
    end = m.end() + nxt.start() if nxt else len(text)
    return text[: m.start()] + table + ("\n" + text[end:] if nxt else "")


def _encode(seq, out: Path, crf: int, fps: int = 25) -> int:
    """Write every frame of ``seq`` to ``out`` as lossy RGB H.264; returns the frame count."""
    first = np.ascontiguousarray(seq.frame(0))
    h, w = first.shape[:2]
    proc = subprocess.Popen(
        ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
         "-r", str(fps), "-i", "-", "-c:v", "libx264rgb", "-crf", str(crf), "-preset", "medium",
         str(out)], stdin=subprocess.PIPE)
    try:
        for i in range(len(seq)):
            frame = first if i == 0 else np.ascontiguousarray(seq.frame(i))
            if frame.shape[:2] != (h, w):
                raise ValueError(f"pack: {seq.name}: frame {i} is {frame.shape[1]}x{frame.shape[0]}, "
                                 f"not {w}x{h} like frame 0")
            proc.stdin.write(frame.tobytes())  # sequences give uint8 RGB frames
    finally:
        proc.stdin.close()
        rc = proc.wait()
    if rc:
        raise RuntimeError(f"pack: ffmpeg failed ({rc}) writing {out}")
    return len(seq)


def _pack_sequence(path: str, root: Path, out: Path, crf: int, videos: str, taken: set[str]) -> str:
    """One sequence of the config (a frame folder or a video file) into ``out/seq/`` under a
    name not in ``taken``; returns that name, relative to ``out``."""
    src = Path(path) if Path(path).is_absolute() else root / path
    copy = videos == "copy" and src.is_file()
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", src.stem if src.is_file() else src.name)
    ext = src.suffix.lower() if copy else ".mkv"
    name, k = f"seq/{stem}{ext}", 1
    while name in taken:
        k += 1
        name = f"seq/{stem}_{k}{ext}"
    if copy:
        shutil.copyfile(src, out / name)
        what = "copied"
    else:
        what = f"{_encode(open_sequence(src), out / name, crf)} frames"
    log.info("packed %s: %s -> %s (%.1f MB)", src, what, out / name, (out / name).stat().st_size / 1e6)
    return name


def _pack_sequences(d: dict, root: Path, out: Path, crf: int, videos: str) -> None:
    """``data.sequences`` and ``data.val_sequences`` into ``out/seq/`` (each source once), their
    entries in ``d`` pointed at the copies (slices and strides kept)."""
    names: dict[str, str] = {}  # source path -> packed path
    for key in ("sequences", "val_sequences"):
        entries = []
        for e in d.get(key) or []:
            e = {"path": e} if isinstance(e, str) else dict(e)
            if e["path"] not in names:
                names[e["path"]] = _pack_sequence(e["path"], root, out, crf, videos, set(names.values()))
            e["path"] = names[e["path"]]
            entries.append(e)
        d[key] = entries


def _pack_stills(d: dict, root: Path, out: Path, jpeg: int) -> None:
    """The folders of ``data.sr_images`` and ``data.sr_val`` as JPEG under ``out`` (each once),
    their entries in ``d`` pointed at the copies."""
    from PIL import Image

    done: dict[str, str] = {}
    for key in ("sr_images", "sr_val"):
        folders = []
        for f in d.get(key) or []:
            if f not in done:
                src = Path(f) if Path(f).is_absolute() else root / f
                rel = Path(f)
                dst = (f"images/{rel.name}" if rel.is_absolute() or ".." in rel.parts
                       else rel.as_posix().strip("/"))
                (out / dst).mkdir(parents=True, exist_ok=True)
                for p in list_images(src):
                    Image.open(p).convert("RGB").save(out / dst / f"{p.stem}.jpg", quality=jpeg)
                done[f] = dst
            folders.append(done[f])
        d[key] = folders


def pack(config: str | Path | None, data_root: str | Path, out: str | Path, crf: int = 18,
         jpeg: int = 85, videos: str = "copy") -> Path:
    """Write the compact copy of ``config``'s data under ``out``; returns ``out/config.toml``.

    ``videos="copy"`` copies video files unchanged (smallest; on a machine with only OpenCV
    their YUV is converted with BT.601 whatever the video's matrix), ``"encode"`` re-encodes
    them as RGB H.264 like the frame folders."""
    if videos not in ("copy", "encode"):
        raise ValueError("pack: videos must be 'copy' or 'encode'")
    import PIL  # noqa: F401 -- the stills need Pillow: fail before any work

    if not shutil.which("ffmpeg"):
        raise RuntimeError("pack: needs the ffmpeg command (e.g. apt-get install ffmpeg)")
    d = dict(load_config(config)["data"])
    root, out = Path(data_root), Path(out)
    (out / "seq").mkdir(parents=True, exist_ok=True)
    _pack_sequences(d, root, out, crf, videos)
    _pack_stills(d, root, out, jpeg)
    if d.get("vimeo"):
        log.warning("pack: data.vimeo is not packed; the copy's config keeps its path")
    d.pop("root", None)
    head = (f"# packed by python -m training.pack from {config or 'the defaults'} (data root {data_root});\n"
            f"# frame folders{' and videos' if videos == 'encode' else ''} as libx264rgb crf {crf}"
            f"{'' if videos == 'encode' else ', videos copied'}, stills as JPEG quality {jpeg}\n")
    cfg_path = out / "config.toml"
    cfg_path.write_text(head + _replace_data_table(Path(config).read_text() if config else "", data_table(d)))
    load_config(cfg_path)  # the copy's config must load
    return cfg_path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.pack", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="TOML config whose data to pack (default: the built-in defaults)")
    ap.add_argument("--data-root", required=True, help="folder the config's data paths are relative to")
    ap.add_argument("--out", required=True, help="folder for the copy (seq/, images/, config.toml)")
    ap.add_argument("--crf", type=int, default=18, help="H.264 quality of the frame folders (lower: larger, closer)")
    ap.add_argument("--jpeg", type=int, default=85, help="JPEG quality of the stills")
    ap.add_argument("--videos", choices=("copy", "encode"), default="copy",
                    help="copy video files unchanged (default) or re-encode them as RGB H.264")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        path = pack(args.config, args.data_root, args.out, args.crf, args.jpeg, args.videos)
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(str(exc)) from None
    size = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    print(f"wrote {path} ({size / 2**20:.1f} MiB in all)", file=sys.stderr)


if __name__ == "__main__":
    main()
