"""Dataset loaders for the three training stages and for evaluation.

Frame sources (each one sequence of RGB frames, optionally a ``start:stop`` slice):

* :class:`FolderSequence` -- a folder of image files (name order is time order);
* :class:`VideoSequence` -- a video file decoded once through VapourSynth
  (``core.bs.VideoSource``; the ffmpeg command or OpenCV where VapourSynth is missing)
  into a uint8 memory-mapped cache;
* :func:`vimeo_sequences` -- the Vimeo-90K triplet (``im1..im3``) and septuplet
  (``im1..im7``) layouts with their ``tri_/sep_ trainlist/testlist`` files.

Training sets draw samples with an explicit ``numpy.random.Generator`` (so a run
resumed at step *k* sees exactly the samples it would have seen):

* :class:`TripletSet` -- the outer frames and a true frame between them, with its timestep;
* :class:`SRSet` -- single high-res crops for pretraining M_S;
* :class:`SyntheticMotionSet` -- synthetic triplets with known large motion and
  occlusion (an affinely moving background plus foreground patches) for M_T.

Every sample is a list of float32 arrays (H, W, 3) in [0, 1] (triplets end with their
timestep, :func:`timestep_array`); low-res inputs are made
later, on the batch, by :func:`downscale` (PyTorch bicubic, as the paper's code).
A file that cannot be read is skipped with a warning and counted in ``skipped``.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vsdsfn.colour import BT709, guess_matrix, matrix_of

from .augment import augment, center_crop, random_crop

__all__ = [
    "IMAGE_EXTS", "FolderSequence", "VideoSequence", "vimeo_sequences", "open_sequence",
    "TripletSet", "SRSet", "SyntheticMotionSet", "MovingStill", "affine_window", "moving_stills", "MixtureSet", "downscale", "to_batch",
    "load_image", "list_images", "data_path", "config_sequences", "config_images",
]

log = logging.getLogger("vsdsfn.training")

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m2ts", ".ts", ".y4m")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files of ``folder`` in name order."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXTS)


class FolderSequence:
    """A folder of frames; ``start``/``stop`` select a slice (Python semantics)."""

    def __init__(self, folder: str | os.PathLike, start: int = 0, stop: int | None = None) -> None:
        self.folder = Path(folder)
        files = list_images(self.folder)
        self.files = files[start:stop]
        self.name = f"{self.folder.name}[{start}:{'' if stop is None else stop}]"

    def __len__(self) -> int:
        return len(self.files)

    def frame(self, i: int) -> np.ndarray:
        return load_image(self.files[i])


def _cache_dir() -> Path:
    root = os.environ.get("VSDSFN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vsdsfn")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _vapoursynth_source() -> bool:
    """Whether VapourSynth with the BestSource plugin (``core.bs``) can be used here."""
    try:
        import vapoursynth as vs
    except ImportError:
        return False
    return hasattr(vs.core, "bs")


def _ffmpeg() -> bool:
    import shutil

    return bool(shutil.which("ffmpeg") and shutil.which("ffprobe"))


def _opencv() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


#: video decoders in the order ``decoder="auto"`` tries them
DECODERS = ("vapoursynth", "ffmpeg", "opencv")


def _available_decoder() -> str | None:
    checks = {"vapoursynth": _vapoursynth_source, "ffmpeg": _ffmpeg, "opencv": _opencv}
    return next((name for name in DECODERS if checks[name]()), None)


def _raw_to_npy(raw: Path, out_path: Path, h: int, w: int) -> int:
    """Copy a file of packed RGB24 frames into a .npy array (N, h, w, 3); returns N."""
    n = raw.stat().st_size // (w * h * 3)
    src = np.memmap(raw, dtype=np.uint8, mode="r", shape=(n, h, w, 3))
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(n, h, w, 3))
    for i in range(0, n, 64):
        out[i:i + 64] = src[i:i + 64]
    out.flush()
    del out, src
    return n


class VideoSequence:
    """A video decoded once into a uint8 .npy cache (memory-mapped).

    ``decoder``: ``"vapoursynth"`` (``core.bs.VideoSource``), ``"ffmpeg"`` (the ``ffmpeg``
    and ``ffprobe`` commands, for machines without VapourSynth such as a rented GPU box),
    ``"opencv"`` (``cv2.VideoCapture``) or ``"auto"``: the first of these that is
    installed. VapourSynth and ffmpeg convert YUV with the file's matrix, or where it names
    none with :func:`vsdsfn.colour.guess_matrix`'s (BT.709 for HD, else BT.601), limited range, so their frames differ by rounding and chroma upsampling only;
    OpenCV always uses BT.601, which shifts the colours of BT.709 video slightly (RGB-coded
    video, such as ``python -m training.pack`` writes, decodes the same everywhere).

    The cache file is ``STEM-PATHKEY-STATEKEY.npy`` in ``$VSDSFN_CACHE`` (default
    ``~/.cache/vsdsfn``): PATHKEY names the source file, STATEKEY its size and mtime.
    A changed (or re-copied) video is decoded again and its stale caches are removed.
    """

    def __init__(self, path: str | os.PathLike, start: int = 0, stop: int | None = None,
                 decoder: str = "auto") -> None:
        if decoder not in ("auto",) + DECODERS:
            raise ValueError(f"VideoSequence: decoder must be auto, {', '.join(DECODERS)}, not {decoder!r}")
        self.decoder = decoder
        self.path = Path(path)
        st = self.path.stat()
        path_key = _short_hash(str(self.path.resolve()))
        state_key = _short_hash(f"{st.st_size}:{st.st_mtime_ns}")
        cache = _cache_dir() / f"{self.path.stem}-{path_key}-{state_key}.npy"
        if not cache.exists():
            self._decode(cache)
            # this file's older caches (another size or mtime)
            for old in cache.parent.glob(f"{glob.escape(self.path.stem)}-{path_key}-*.npy"):
                if old != cache and ".tmp" not in old.name:
                    old.unlink(missing_ok=True)
                    log.info("removed stale cache %s", old)
        frames = np.load(cache, mmap_mode="r")
        self.frames = frames[start:stop]
        self.name = f"{self.path.name}[{start}:{'' if stop is None else stop}]"

    def _decode(self, cache: Path) -> None:
        # per-process temp name: two trainings started together may decode the same video
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp.npy")
        decoder = self.decoder if self.decoder != "auto" else _available_decoder()
        if decoder is None:
            raise RuntimeError(f"cannot decode {self.path}: none of VapourSynth with BestSource "
                               "(pip install vapoursynth vapoursynth-bestsource), the ffmpeg and ffprobe "
                               "commands or OpenCV (pip install opencv-python-headless) is available")
        try:
            n = getattr(self, f"_decode_{decoder}")(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)  # no half-written cache left behind
            raise
        os.replace(tmp, cache)
        log.info("decoded %s (%s): %d frames -> %s", self.path, decoder, n, cache)

    def _decode_ffmpeg(self, tmp: Path) -> int:
        import subprocess

        if not _ffmpeg():
            raise RuntimeError(f"cannot decode {self.path} with ffmpeg: the ffmpeg and ffprobe commands "
                               "are not on PATH")
        probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                                "stream=width,height,color_space", "-of", "csv=p=0", str(self.path)],
                               capture_output=True, text=True, check=True)
        w, h, tag = (probe.stdout.strip().split(",") + ["unknown"])[:3]
        w, h = int(w), int(h)
        # the file's matrix where it names one (ffmpeg reads it: "auto"), else the one guess
        matrix = "auto" if tag not in ("", "unknown", "reserved") else (
            "bt709" if guess_matrix(w, h) == BT709 else "bt601")
        raw = tmp.with_name(tmp.name + ".rgb")
        try:
            subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(self.path), "-map", "0:v:0",
                            "-vf", f"scale=in_color_matrix={matrix}:in_range=tv,format=rgb24",
                            "-f", "rawvideo", "-y", str(raw)], check=True)
            return _raw_to_npy(raw, tmp, h, w)
        finally:
            raw.unlink(missing_ok=True)

    def _decode_opencv(self, tmp: Path) -> int:
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise RuntimeError(f"OpenCV cannot open {self.path}")
        raw, shape = tmp.with_name(tmp.name + ".rgb"), None
        try:
            with open(raw, "wb") as f:  # frames streamed to disk, not held in memory
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    shape = shape or bgr.shape
                    f.write(np.ascontiguousarray(bgr[:, :, ::-1]).tobytes())
            cap.release()
            if shape is None:
                raise RuntimeError(f"OpenCV decoded no frames from {self.path}")
            return _raw_to_npy(raw, tmp, shape[0], shape[1])
        finally:
            raw.unlink(missing_ok=True)

    def _decode_vapoursynth(self, tmp: Path) -> int:
        import vapoursynth as vs

        core = vs.core
        clip = core.bs.VideoSource(str(self.path), cachemode=0)  # decoded linearly: no index needed
        if clip.format.color_family != vs.RGB:
            matrix = matrix_of(clip.get_frame(0).props, clip.width, clip.height)
            clip = core.resize.Bicubic(clip, format=vs.RGB24, matrix_in=matrix)
        else:
            clip = core.resize.Point(clip, format=vs.RGB24)
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(clip.num_frames, clip.height, clip.width, 3))
        for i, frame in enumerate(clip.frames()):
            for p in range(3):
                out[i, :, :, p] = np.asarray(frame[p])
        out.flush()
        del out
        return clip.num_frames

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, i: int) -> np.ndarray:
        return np.asarray(self.frames[i])


def vimeo_sequences(root: str | os.PathLike, split: str = "train", septuplet: bool | None = None) -> list[FolderSequence]:
    """Sequences of a Vimeo-90K triplet or septuplet tree (``sequences/%05d/%04d/imN.png``).

    The layout is detected from the list files (``tri_*`` or ``sep_*``) unless given.
    """
    root = Path(root)
    kinds = ["sep", "tri"] if septuplet is None else (["sep"] if septuplet else ["tri"])
    for kind in kinds:
        lst = root / f"{kind}_{split}list.txt"
        if lst.exists():
            break
    else:
        raise FileNotFoundError(f"no tri_{split}list.txt or sep_{split}list.txt in {root}")
    names = [line.strip() for line in lst.read_text().splitlines() if line.strip()]
    seqs = []
    for name in names:
        folder = root / "sequences" / name
        seq = FolderSequence(folder)
        seq.files = [folder / f"im{i}.png" for i in range(1, (7 if kind == "sep" else 3) + 1)]
        seqs.append(seq)
    return seqs


def open_sequence(path: str | os.PathLike, start: int = 0, stop: int | None = None):
    """A :class:`VideoSequence` for a video file, a :class:`FolderSequence` for a folder."""
    path = Path(path)
    if path.is_dir():
        return FolderSequence(path, start, stop)
    if path.suffix.lower() in VIDEO_EXTS:
        return VideoSequence(path, start, stop)
    raise ValueError(f"{path}: neither a folder of frames nor a video file ({', '.join(VIDEO_EXTS)})")


def _to_float(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(f, dtype=np.float32) / 255.0 for f in frames]


class _Skipping:
    """Retries another index when a file cannot be read, counting the failures."""

    skipped = 0

    def _guard(self, fn, index: int, rng: np.random.Generator, n: int):
        for _ in range(20):
            try:
                return fn(index)
            except Exception as exc:  # noqa: BLE001 -- any unreadable file is skipped
                self.skipped += 1
                log.warning("skipping unreadable sample %d (%s); %d skipped so far", index, exc, self.skipped)
                index = int(rng.integers(0, n))
        raise RuntimeError("too many unreadable samples in a row; check the dataset")


@dataclass
class _Index:
    seq: int
    start: int
    stride: int
    span: int      # the outer frames are start and start + span * stride
    j: int         # the true frame is start + j * stride: timestep j / span


def timestep_array(t: float) -> np.ndarray:
    """A sample's timestep, as the (1, 1, 1) array :func:`to_batch` stacks like a frame."""
    return np.full((1, 1, 1), t, np.float32)


class TripletSet(_Skipping):
    """Triplets (i, i + j*s, i + m*s) of frame sequences: the outer frames, the true frame
    and its timestep t = j/m, for every span m in ``spans`` (span -> strides s; by default
    span 2 with ``strides``, the middle frame) and every 0 < j < m. A sample is
    ``[L-, truth, L+, t]``, ``t`` a :func:`timestep_array`.

    With ``crop`` set, training samples are random crops with flips, rotations and
    temporal reversal (t becomes 1 - t); :meth:`get` with ``train=False`` gives the
    deterministic central crop (or the full frame when ``crop`` is None).
    """

    def __init__(self, sequences: Sequence, strides: Sequence[int] = (1,), crop: int | None = None,
                 spans: Mapping[int, Sequence[int]] | None = None) -> None:
        self.sequences = list(sequences)
        self.crop = crop
        spans = {2: strides} if spans is None else spans
        self.index = [
            _Index(si, i, s, m, j)
            for si, seq in enumerate(self.sequences)
            for m, strides_m in sorted(spans.items())
            for s in strides_m
            for j in range(1, m)
            for i in range(len(seq) - m * s)
        ]
        if not self.index:
            raise ValueError("TripletSet: no triplets (sequences too short for the spans and strides?)")

    def __len__(self) -> int:
        return len(self.index)

    def _read(self, index: int) -> list[np.ndarray]:
        ix = self.index[index]
        seq = self.sequences[ix.seq]
        return [seq.frame(ix.start + k * ix.stride) for k in (0, ix.j, ix.span)]

    def get(self, index: int, rng: np.random.Generator, train: bool = True) -> list[np.ndarray]:
        frames = self._guard(self._read, index, rng, len(self))
        ix = self.index[index]
        t = ix.j / ix.span
        if not train:
            frames = _to_float(center_crop(frames, self.crop) if self.crop else frames)
            return frames + [timestep_array(t)]
        if self.crop:
            frames = random_crop(frames, self.crop, rng)
        frames = augment(frames, rng, reverse=False)
        if rng.random() < 0.5:                       # temporal reversal
            frames, t = frames[::-1], 1 - t
        return _to_float(frames) + [timestep_array(t)]

    def sample(self, rng: np.random.Generator) -> list[np.ndarray]:
        return self.get(int(rng.integers(0, len(self))), rng)


class SRSet(_Skipping):
    """Random high-res crops of still images (one-frame samples) for pretraining M_S.

    Decoded images are kept for reuse up to ``cache_bytes`` per process (least recently
    used dropped); a pickled copy (what a spawned DataLoader worker gets) starts with none.
    """

    def __init__(self, images: Sequence[str | os.PathLike], crop: int = 96, cache_bytes: int = 512 * 2**20) -> None:
        self.images = [Path(p) for p in images]
        if not self.images:
            raise ValueError("SRSet: no images")
        self.crop = crop
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.images)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": OrderedDict()}

    def _read(self, index: int) -> np.ndarray:
        img = self._cache.get(index)
        if img is not None:
            self._cache.move_to_end(index)
            return img
        img = self._cache[index] = load_image(self.images[index])
        while sum(a.nbytes for a in self._cache.values()) > self.cache_bytes:
            self._cache.popitem(last=False)
        return img

    def get(self, index: int, rng: np.random.Generator, train: bool = True) -> list[np.ndarray]:
        img = self._guard(self._read, index, rng, len(self))
        if not train:
            h, w = img.shape[:2]
            return _to_float([img[: h - h % 2, : w - w % 2]])
        return _to_float(augment(random_crop([img], self.crop, rng), rng, reverse=False))

    def sample(self, rng: np.random.Generator) -> list[np.ndarray]:
        return self.get(int(rng.integers(0, len(self))), rng)


def affine_window(img: np.ndarray, size: tuple[int, int], centre: tuple[float, float], offset: Sequence[float],
                  angle: float = 0.0, zoom: float = 1.0, mode: str = "bilinear") -> np.ndarray:
    """A ``size`` = (h, w) window resampled from ``img`` (H, W, C): the window's pixel at
    ``p`` from its centre shows ``img`` at ``centre + A p + offset`` (pixel coordinates;
    ``A`` rotates by ``angle`` radians and shrinks by ``zoom``); outside the image, its
    edge pixels. ``mode``: ``bilinear`` or ``bicubic`` (:func:`torch.nn.functional.grid_sample`).
    The whole image unmoved is returned exactly.

    >>> img = np.arange(48, dtype=np.float32).reshape(4, 4, 3)
    >>> bool((affine_window(img, (4, 4), (1.5, 1.5), (0, 0)) == img).all())
    True
    >>> affine_window(img, (1, 2), (1.0, 2.0), (0.25, 0))[..., 0].tolist()   # x 0.75, 1.75 on row 2
    [[26.25, 29.25]]
    """
    (h, w), (H, W) = size, img.shape[:2]
    if (h, w) == (H, W) and centre == ((W - 1) / 2, (H - 1) / 2) and not (np.any(offset) or angle or zoom != 1.0):
        return img.astype(np.float32)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) - (h - 1) / 2,
                            torch.arange(w, dtype=torch.float64) - (w - 1) / 2, indexing="ij")
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    sx = cos * xs - sin * ys + centre[0] + offset[0]
    sy = sin * xs + cos * ys + centre[1] + offset[1]
    # grid_sample's coordinates (align_corners=False): pixel i's centre at (2 i + 1) / W - 1
    grid = torch.stack(((2 * sx + 1) / W - 1, (2 * sy + 1) / H - 1), -1).float()[None]
    t = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1)[None]
    out = F.grid_sample(t, grid, mode=mode, padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0).numpy()


class SyntheticMotionSet(SRSet):
    """Synthetic triplets with known motion and occlusion, made from still images.

    The background is a crop of one image under a random affine motion (translation up
    to ``max_shift`` pixels per frame step, small rotation and zoom); one to three
    elliptical foreground patches cut from other images move with their own velocities
    over it, so parts of the background are covered and uncovered (occlusion). The
    motion is linear in time, so the middle frame is the true intermediate.
    """

    def __init__(self, images: Sequence[str | os.PathLike], crop: int = 128, max_shift: float = 24.0) -> None:
        super().__init__(images, crop)
        self.max_shift = max_shift

    def _affine(self, img: np.ndarray, center: tuple[float, float], shift: np.ndarray,
                angle: float, zoom: float, t: float) -> np.ndarray:
        """Sample a crop x crop window of ``img`` moved by ``t`` times the motion."""
        return affine_window(img, (self.crop, self.crop), center, -shift * t, angle * t, zoom**t)

    def _make(self, index: int, rng: np.random.Generator) -> list[np.ndarray]:
        c = self.crop
        bg = self._read(index)
        if min(bg.shape[:2]) < c // 2 + 4:
            bg = np.pad(bg, ((c, c), (c, c), (0, 0)), mode="reflect")
        h, w = bg.shape[:2]
        center = (rng.uniform(c / 2, max(c / 2 + 1, w - c / 2)), rng.uniform(c / 2, max(c / 2 + 1, h - c / 2)))
        shift = rng.uniform(-1, 1, 2) * self.max_shift * rng.uniform(0.2, 1.0)
        angle = rng.uniform(-0.05, 0.05)
        zoom = rng.uniform(0.95, 1.05)
        frames = [self._affine(bg, center, shift, angle, zoom, t) for t in (-1.0, 0.0, 1.0)]
        ys, xs = np.mgrid[0:c, 0:c].astype(np.float32)
        for _ in range(int(rng.integers(1, 4))):
            fg = self._read(int(rng.integers(0, len(self))))
            fh, fw = fg.shape[:2]
            r = rng.uniform(0.1, 0.3) * c
            fcenter = (rng.uniform(min(r, fw / 2), max(fw - r, fw / 2)), rng.uniform(min(r, fh / 2), max(fh - r, fh / 2)))
            fshift = rng.uniform(-1, 1, 2) * self.max_shift * 1.5
            pos = np.array([rng.uniform(r, c - r), rng.uniform(r, c - r)])
            aspect = rng.uniform(0.6, 1.6)
            for k, t in enumerate((-1.0, 0.0, 1.0)):
                p = pos + fshift * t
                # the patch moves with the object: sample fg around fcenter, placed at p
                patch = self._affine(fg, (fcenter[0] + (c - 1) / 2 - p[0], fcenter[1] + (c - 1) / 2 - p[1]),
                                     np.zeros(2), 0.0, 1.0, 0.0)
                d = ((xs - p[0]) / (r * aspect)) ** 2 + ((ys - p[1]) / r) ** 2
                alpha = np.clip((1.0 - d) * 4.0, 0.0, 1.0)[..., None]
                frames[k] = frames[k] * (1 - alpha) + patch * alpha
        return [np.clip(f, 0, 255).astype(np.uint8) for f in frames]

    def get(self, index: int, rng: np.random.Generator, train: bool = True) -> list[np.ndarray]:
        frames = self._guard(lambda i: self._make(i, rng), index, rng, len(self))
        return _to_float(augment(frames, rng) if train else frames) + [timestep_array(0.5)]


class MovingStill:
    """A still image under a smooth random camera motion, as a sequence of ``length``
    frames: per frame step a translation of up to ``max_shift`` pixels (a constant
    velocity plus jitter, sub-pixel), a rotation of up to 0.5 degree and a zoom of up to
    1 percent; frames are bicubic resamplings of the image (the middle frame is the image
    itself), cut ``border`` pixels inside its edges. Aliasing differs from frame to frame
    as in real footage, and the image keeps its full detail: training windows for a
    multi-frame M_S. ``patches``: images pasted as soft-edged ellipses (a fifth to a third
    of the frame) that move over it with their own velocity (up to twice ``max_shift``), so
    that parts of the background are covered and uncovered and the flows fail there, as
    on real footage; the middle frame holds them at whole-pixel places.

    >>> img = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    >>> seq = MovingStill(img, 5, np.random.default_rng(1), border=8)
    >>> len(seq), seq.frame(0).shape, bool((seq.frame(2) == img[8:-8, 8:-8]).all())
    (5, (48, 64, 3), True)
    """

    def __init__(self, image: np.ndarray, length: int, rng: np.random.Generator, max_shift: float = 3.0,
                 border: int = 16, patches: Sequence[np.ndarray] = ()) -> None:
        self.image, self.length, self.border = image, int(length), int(border)
        self.name = "moving still"
        velocity = rng.uniform(-1, 1, 2) * max_shift * 0.7
        steps = [velocity + rng.uniform(-1, 1, 2) * max_shift * 0.3 for _ in range(self.length)]
        angles, zooms = rng.uniform(-1, 1, self.length) * np.pi / 360, np.exp(rng.uniform(-1, 1, self.length) * 0.01)
        mid, self.motion = self.length // 2, []
        for k in range(self.length):
            span = range(mid, k) if k > mid else range(k, mid)
            sign = 1.0 if k > mid else -1.0
            shift = sign * sum((steps[i] for i in span), np.zeros(2))
            angle = sign * sum(angles[i] for i in span)
            zoom = float(np.prod([zooms[i] for i in span])) ** sign
            self.motion.append((shift, angle, zoom))
        h, w = image.shape[:2]
        self.patches = []
        for patch in patches:
            ry, rx = (int(rng.uniform(0.1, 0.17) * min(h, w) * a) for a in rng.uniform(0.7, 1.4, 2))
            ph, pw = min(2 * ry, patch.shape[0]), min(2 * rx, patch.shape[1])
            py, px = int(rng.integers(0, patch.shape[0] - ph + 1)), int(rng.integers(0, patch.shape[1] - pw + 1))
            yy, xx = np.mgrid[0:ph, 0:pw].astype(np.float32)
            ellipse = ((yy - (ph - 1) / 2) / (ph / 2)) ** 2 + ((xx - (pw - 1) / 2) / (pw / 2)) ** 2
            alpha = np.clip((1.0 - ellipse) * 4.0, 0.0, 1.0)[..., None]
            canvas = np.zeros((h, w, 4), np.float32)
            y0, x0 = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            canvas[y0:y0 + ph, x0:x0 + pw] = np.concatenate((patch[py:py + ph, px:px + pw] * alpha, alpha * 255), -1)
            self.patches.append((canvas, rng.uniform(-1, 1, 2) * max_shift * 2))

    def __len__(self) -> int:
        return self.length

    @staticmethod
    def _warp(x: np.ndarray, shift: np.ndarray, angle: float = 0.0, zoom: float = 1.0) -> np.ndarray:
        """``x`` (H, W, C) resampled (bicubic) so that output pixel p shows x at the rotated
        and zoomed p moved by ``shift``."""
        h, w = x.shape[:2]
        return affine_window(x, (h, w), ((w - 1) / 2, (h - 1) / 2), shift, angle, zoom, "bicubic")

    def frame(self, i: int) -> np.ndarray:
        b, (h, w) = self.border, self.image.shape[:2]
        img = self._warp(self.image, *self.motion[i])
        for canvas, velocity in self.patches:
            layer = self._warp(canvas, -velocity * (i - self.length // 2))
            alpha = np.clip(layer[..., 3:] / 255, 0, 1)
            img = img * (1 - alpha) + layer[..., :3]
        return np.clip(img, 0, 255).round().astype(np.uint8)[b:h - b, b:w - b]


def moving_stills(images: Sequence[str | os.PathLike], count: int, length: int, min_size: int, seed: int,
                  max_shift: float = 3.0, patches: int = 0, border: int = 16) -> list[MovingStill]:
    """``count`` :class:`MovingStill` sequences of ``length`` frames from images at least
    ``min_size`` pixels on their short side once cut (the images drawn in turn), each with
    up to ``patches`` moving patches cut from other images (0 to ``patches``, at random)."""
    rng = np.random.default_rng(seed)
    usable = [im for im in map(load_image, images) if min(im.shape[:2]) - 2 * border >= min_size]
    if not usable:
        raise ValueError(f"moving_stills: no image of at least {min_size + 2 * border} pixels on its short side")
    order = rng.permutation(len(usable))
    return [MovingStill(usable[order[n % len(usable)]], length, rng, max_shift, border,
                        [usable[int(j)] for j in rng.integers(0, len(usable), int(rng.integers(0, patches + 1)))])
            for n in range(count)]


class MixtureSet:
    """Draws each sample from one of several sets, chosen with the given weights."""

    def __init__(self, sets: Sequence, weights: Sequence[float]) -> None:
        self.sets = list(sets)
        w = np.asarray(weights, dtype=np.float64)
        self.p = w / w.sum()

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.sets)

    def sample(self, rng: np.random.Generator) -> list[np.ndarray]:
        return self.sets[int(rng.choice(len(self.sets), p=self.p))].sample(rng)


def to_batch(samples: list[list[np.ndarray]], device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Samples (lists of HxWx3 frames) -> one (B, 3, H, W) tensor per frame position."""
    n = len(samples[0])
    return [
        torch.from_numpy(np.stack([s[k] for s in samples])).permute(0, 3, 1, 2).contiguous().to(device)
        for k in range(n)
    ]


def downscale(x: torch.Tensor, antialias: bool = False) -> torch.Tensor:
    """2x bicubic downscaling in PyTorch (the paper's protocol: no antialias)."""
    h, w = x.shape[-2:]
    x = x[..., : h - h % 2, : w - w % 2]
    return F.interpolate(x, scale_factor=0.5, mode="bicubic", align_corners=False,
                         antialias=antialias).clamp(0, 1)


def data_path(root: Path, p: str | os.PathLike) -> Path:
    """A config's data path: as given when absolute, else under ``root`` (``data.root``)."""
    q = Path(p)
    return q if q.is_absolute() else root / q


def config_images(root: Path, folders: list[str]) -> list[Path]:
    """The image files of a config's folders (``data.sr_images``, ``data.sr_val``)."""
    return [p for f in folders for p in list_images(data_path(root, f))]


def config_sequences(root: Path, entries: list) -> list:
    """The sequences of a config's ``data.sequences``/``data.val_sequences`` entries: a path,
    or ``{path, start, stop}`` (frames ``start:stop``)."""
    seqs = []
    for e in entries:
        e = {"path": e} if isinstance(e, str) else e
        seqs.append(open_sequence(data_path(root, e["path"]), e.get("start", 0), e.get("stop")))
    return seqs
