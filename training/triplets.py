"""Triplets of frames for evaluation: listed from a dataset layout or a training config,
and loaded (unreadable or mismatched triplets skipped alike for every evaluation).

``Triplet.idx`` are frames (i, i + s, i + 2s) of a sequence, or (i, i + j, i + m) for
other timesteps (:mod:`training.timesteps`); the middle one is the ground truth.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .datasets import FolderSequence, VIDEO_EXTS, config_sequences, data_path, list_images, open_sequence, \
    vimeo_sequences

__all__ = ["EvaluateError", "Triplet", "LAYOUTS", "list_triplets", "config_triplets", "select", "load_triplets",
           "outer_low_res", "to_tensor", "to_array"]

log = logging.getLogger("vsdsfn.training")


class EvaluateError(ValueError):
    """A problem with the evaluation's inputs; ``main`` prints it and exits with status 1."""


class _Files(FolderSequence):
    """A :class:`~training.datasets.FolderSequence` of listed files rather than a whole folder:
    Middlebury's ground truth lies in another folder than its inputs, and UCF's folders hold
    other pictures besides the triplet."""

    def __init__(self, files: Sequence[Path], name: str) -> None:
        # not FolderSequence.__init__, which lists a folder
        self.files = [Path(f) for f in files]
        self.folder, self.name = self.files[0].parent, name


@dataclass
class Triplet:
    """Frames ``idx`` of ``seq`` (the middle one is the ground truth)."""

    name: str
    seq: object
    idx: tuple[int, int, int]
    group: str = ""          # sequence name, for the per-sequence table

    def load(self) -> list[np.ndarray]:
        return [self.seq.frame(i) for i in self.idx]

    def outer(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The frames one input step before the first and after the last (the inputs'
        neighbours in a clip at the inputs' rate: a multi-frame M_S sees them); None
        beyond the sequence or where one cannot be read."""
        step, n = self.idx[2] - self.idx[0], len(self.seq)
        out = []
        for i in (self.idx[0] - step, self.idx[2] + step):
            try:
                out.append(self.seq.frame(i) if 0 <= i < n else None)
            except Exception:  # noqa: BLE001 -- a missing neighbour is replicated, not fatal
                out.append(None)
        return out[0], out[1]


def _seq_triplets(seq, stride: int, group: str, label: str | None = None) -> list[Triplet]:
    label = label or group
    return [Triplet(f"{label}:{i}", seq, (i, i + stride, i + 2 * stride), group)
            for i in range(len(seq) - 2 * stride)]


def _vimeo(root: Path, stride: int) -> list[Triplet]:
    out = []
    for seq in vimeo_sequences(root, "test"):
        name = "/".join(seq.folder.parts[-2:])
        trips = _seq_triplets(seq, stride, "vimeo", name)
        if len(seq) == 3:  # triplet layout: one per folder, named by it
            for t in trips:
                t.name = name
        out += trips
    return out


def _frames(path: Path, stride: int) -> list[Triplet]:
    if path.is_file():
        seq = open_sequence(path)
        return _seq_triplets(seq, stride, path.name)
    if not path.is_dir():
        raise EvaluateError(f"--data {path}: no such file or folder")
    if list_images(path):
        return _seq_triplets(FolderSequence(path), stride, path.name)
    out = []
    for child in sorted(path.iterdir()):
        if child.is_dir() and list_images(child):
            out += _seq_triplets(FolderSequence(child), stride, child.name)
        elif child.is_file() and child.suffix.lower() in VIDEO_EXTS:
            out += _seq_triplets(open_sequence(child), stride, child.name)
    return out


def _middlebury(root: Path, stride: int) -> list[Triplet]:
    gt_root = next((p for p in (root / "other-gt-interp", root.parent / "other-gt-interp") if p.is_dir()), None)
    data_root = root / "other-data" if (root / "other-data").is_dir() else root
    out = []
    if gt_root is not None:
        for gt_dir in sorted(p for p in gt_root.iterdir() if p.is_dir()):
            files = [data_root / gt_dir.name / "frame10.png", gt_dir / "frame10i11.png",
                     data_root / gt_dir.name / "frame11.png"]
            if all(f.exists() for f in files):
                out.append(Triplet(gt_dir.name, _Files(files, gt_dir.name), (0, 1, 2), gt_dir.name))
        return out
    for d in sorted(p for p in data_root.iterdir() if p.is_dir()):
        files = [d / f"frame{k:02d}.png" for k in range(7, 15)]
        files = [f for f in files if f.exists()]
        if len(files) >= 3:
            seq = _Files(files, d.name)
            for t in _seq_triplets(seq, stride, d.name):
                t.name = f"{d.name}:{files[t.idx[1]].stem}"
                out.append(t)
    return out


def _ucf(root: Path) -> list[Triplet]:
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = [d / "frame_00.png", d / "frame_01_gt.png", d / "frame_02.png"]
        if all(f.exists() for f in files):
            out.append(Triplet(d.name, _Files(files, d.name), (0, 1, 2), "ucf"))
    return out


LAYOUTS: dict[str, Callable[[Path, int], list[Triplet]]] = {
    "vimeo": _vimeo, "frames": _frames, "middlebury": _middlebury, "ucf": lambda p, s: _ucf(p),
}


def list_triplets(data: str | os.PathLike, layout: str, stride: int = 1) -> list[Triplet]:
    """All triplets of a dataset in one of the :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; layouts: {sorted(LAYOUTS)}")
    return LAYOUTS[layout](Path(data), stride)


def config_triplets(config: str, split: str = "val", data_root: str | None = None,
                    stride: int = 1, overrides: Sequence[str] = ()) -> tuple[list[Triplet], str]:
    """The triplets of a training config's split (``val``: ``data.val_sequences`` and the
    Vimeo test list when ``data.vimeo`` is set) and a description of it."""
    from .config import load_config

    over = list(overrides)
    if data_root:
        over.append(f"data.root={json.dumps(data_root)}")
    cfg = load_config(config, over)
    d = cfg["data"]
    root = Path(d["root"])
    if not root.is_absolute():
        # data.root in a config file is relative to the current directory, as in training
        root = Path.cwd() / root
    if split != "val":
        raise EvaluateError(f"--split {split!r}: only 'val' (data.val_sequences) is defined")
    entries = d["val_sequences"]
    out = []
    for e, seq in zip(entries, config_sequences(root, entries)):
        out += _seq_triplets(seq, stride, seq.name)
    if d.get("vimeo"):
        out += _vimeo(data_path(root, d["vimeo"]), stride)
    if not out:
        raise EvaluateError(f"{config}: split {split!r} has no triplets")
    desc = f"`{config}` split `{split}` (`data.val_sequences`: " + ", ".join(
        f"{(e if isinstance(e, str) else e['path'])}"
        + ("" if isinstance(e, str) else f"[{e.get('start', 0)}:{e.get('stop', '') or ''}]")
        for e in entries) + (f"; Vimeo test list of {d['vimeo']}" if d.get("vimeo") else "") + ")"
    return out, desc


def select(triplets: list[Triplet], max_n: int | None) -> list[Triplet]:
    """At most ``max_n`` triplets, evenly spaced over the list."""
    if not max_n or len(triplets) <= max_n:
        return triplets
    idx = np.unique(np.linspace(0, len(triplets) - 1, max_n).round().astype(int))
    return [triplets[i] for i in idx]


def to_array(x: torch.Tensor) -> np.ndarray:
    """The first frame of a (B, 3, H, W) tensor as an (H, W, 3) float32 array."""
    return x[0].permute(1, 2, 0).float().cpu().numpy()


def to_tensor(a: np.ndarray) -> torch.Tensor:
    """An (H, W, 3) array as a (1, 3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)[None]


def outer_low_res(trip: Triplet, like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """:meth:`Triplet.outer` cropped like ``like`` (a loaded high-res frame) and downscaled
    as the inputs are; None where there is none (or of another size)."""
    from .datasets import downscale

    h, w = like.shape[-2:]
    out = []
    for f in trip.outer():
        ok = f is not None and f.shape[0] >= h and f.shape[1] >= w
        out.append(downscale(to_tensor(f[:h, :w].astype(np.float32) / 255.0)) if ok else None)
    return out[0], out[1]


def load_triplets(triplets: Sequence[Triplet], skipped: list[str]) -> Iterator[tuple[int, Triplet, list[torch.Tensor]]]:
    """``(k, triplet, frames)`` for each readable triplet (its index in ``triplets``): the
    frames as (1, 3, H, W) tensors in [0, 1], cropped to even sizes. A triplet with a file
    that cannot be read, or frames of different sizes, is logged, named in ``skipped`` and
    left out."""
    for k, trip in enumerate(triplets):
        try:
            frames = trip.load()
        except Exception as exc:  # noqa: BLE001 -- an unreadable file is skipped, not fatal
            log.warning("skipping triplet %s: %s", trip.name, exc)
            skipped.append(trip.name)
            continue
        if any(f.shape != frames[0].shape for f in frames):
            log.warning("skipping triplet %s: frames of different sizes", trip.name)
            skipped.append(trip.name)
            continue
        h, w = (n - n % 2 for n in frames[0].shape[:2])
        yield k, trip, [to_tensor(f[:h, :w].astype(np.float32) / 255.0) for f in frames]
