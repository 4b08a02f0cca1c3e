"""What the benchmarks share: the moving texture they feed in, how they read peak memory, and
the machine-readable results file (``bench/gpu.json``) that several runs fill together.

The results file has exactly this schema (one row per configuration; ``path`` is how the
frames went through: ``"vapoursynth"`` for :mod:`bench.benchmark`, ``"engine"`` for
:mod:`bench.engine_cuda`)::

    {"date": "YYYY-MM-DD", "device": "...", "command": "...",
     "rows": [{"input": "1920x1080", "output": "3840x2160", "precision": "fp16", "batch": 1,
               "path": "engine", "fps": 12.3, "peak_mb": 4567.0}]}

>>> import json, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "gpu.json"
>>> _ = merge_json_rows(p, [result_row(64, 48, "fp32", 1, "engine", 2.0, 10.0)], device="cpu", command="a")
>>> doc = merge_json_rows(p, [result_row(64, 48, "fp32", 4, "engine", 5.0, 20.0),
...                             result_row(64, 48, "fp32", 1, "engine", 3.0, 11.0)], device="cpu", command="b")
>>> [(r["batch"], r["fps"]) for r in doc["rows"]], doc["command"]
([(1, 3.0), (4, 5.0)], 'a; b')
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import resource
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["JSON_KEYS", "MATCH_KEYS", "ROW_KEYS", "merge_json_rows", "peak_rss_mb", "report_header", "result_row",
           "texture_frames"]

#: keys of the results file
JSON_KEYS = ("date", "device", "command", "rows")
#: keys of one row
ROW_KEYS = ("input", "output", "precision", "batch", "path", "fps", "peak_mb")
#: a new row replaces an older one with the same values of these keys
MATCH_KEYS = ("input", "output", "precision", "batch", "path")


def texture_frames(w: int, h: int, n: int) -> list[np.ndarray]:
    """``n`` (H, W, 3) float32 frames in [0, 1] of smooth noise in 8x8 blocks (trackable
    motion) panning diagonally by (3, 5) pixels a frame: views into one texture (no memory
    per frame)."""
    rng = np.random.default_rng(0)
    big = np.kron(rng.random((h // 8 + 8 + n, w // 8 + 8 + n, 3), dtype=np.float32), np.ones((8, 8, 1), np.float32))
    return [big[3 * i:3 * i + h, 5 * i:5 * i + w] for i in range(n)]


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): Linux's ``VmHWM``, which starts afresh in a
    new program (``ru_maxrss``, the fallback elsewhere, keeps the peak of the parent that
    started it, e.g. one that had loaded PyTorch)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def result_row(w: int, h: int, precision: str, batch: int, path: str, fps: float, peak_mb: float) -> dict:
    """One row of the results file for a ``w`` x ``h`` input (output: twice each side)."""
    if precision not in ("fp16", "fp32", "bf16"):
        raise ValueError(f"precision must be 'fp16', 'bf16' or 'fp32', not {precision!r}")
    if path not in ("vapoursynth", "engine"):
        raise ValueError(f"path must be 'vapoursynth' or 'engine', not {path!r}")
    return {"input": f"{w}x{h}", "output": f"{2 * w}x{2 * h}", "precision": precision, "batch": int(batch),
            "path": path, "fps": round(float(fps), 4), "peak_mb": round(float(peak_mb), 1)}


def merge_json_rows(path: str | os.PathLike, rows: Iterable[dict], *, device: str, command: str) -> dict:
    """Merge ``rows`` into the results file at ``path`` (created if missing) and return it.

    A row replaces an older one with the same :data:`MATCH_KEYS` (in its place); other rows
    are appended. ``date`` and ``device`` become this run's; ``command`` lists each distinct
    command that filled the file, joined by ``"; "``.
    """
    p = Path(path)
    doc = json.loads(p.read_text()) if p.exists() and p.stat().st_size else {}
    old = doc.get("rows", [])
    commands = [c for c in str(doc.get("command", "")).split("; ") if c]
    if command not in commands:
        commands.append(command)
    for row in rows:
        if tuple(row) != ROW_KEYS:
            raise ValueError(f"a row has keys {tuple(row)}, not {ROW_KEYS}")
        key = tuple(row[k] for k in MATCH_KEYS)
        same = [i for i, r in enumerate(old) if tuple(r.get(k) for k in MATCH_KEYS) == key]
        if same:
            old[same[0]] = dict(row)
            old = [r for i, r in enumerate(old) if i not in same[1:]]
        else:
            old.append(dict(row))
    doc = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d"), "device": device,
           "command": "; ".join(commands), "rows": old}
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(p)
    return doc


def report_header(title: str, device: str, command: str, *details: str) -> list[str]:
    """The first lines of a markdown report: title, date, machine, device, command and
    ``details`` (more ``- ...`` lines)."""
    import torch

    from vsdsfn.sysinfo import cpu_flags, describe_machine

    return [f"# {title}", "", f"- Date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d')}",
            f"- Machine: {describe_machine()}", f"- CPU flags: {', '.join(cpu_flags()) or 'none of note'}",
            f"- Device: {device}; torch {torch.__version__}",
            f"- Command: `{command}`", *(f"- {d}" for d in details)]
