"""The README's picture: what each stream of DSFN makes of one frame pair of real footage.

    python -m training.figure --data-root ../shared/data --out docs/streams.png \\
        [--folder frames/sintel] [--frames frame_0016.png,frame_0017.png,frame_0018.png] \\
        [--crop X,Y,W,H] [--context N] [--weights W.safetensors] [--max-kb 400]

As :mod:`training.evaluate`, the first and last frames are downscaled 2x and the true
middle frame is the ground truth. Output frame 1 of ``vsdsfn.upscale`` is taken with
``debug=None``, ``"st"``, ``"ts"`` and ``"masks"``, the network seeing the crop plus
``--context`` low-res pixels around it. The PNG shows the crop (``--crop``, in output
pixels) in a 2 x 4 grid: the low-res inputs, the S->T and T->S streams, the masks (R =
S->T's, G = T->S's), the output, the true middle frame and the output's error (x4), with
each prediction's PSNR on the crop; low bits are dropped to keep it under ``--max-kb``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .datasets import downscale, load_image
from .metrics import psnr
from .mvbaseline import frames_from_clip

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DEFAULT_CROP", "low_res_pair", "streams", "compose", "save_small", "main"]

#: output pixels (x, y, w, h) of the default crop: Sintel's arm and apple, which move fast
DEFAULT_CROP = (624, 196, 320, 180)
CAPTION_H = 18
DEBUG_VIEWS = {"output": None, "st": "st", "ts": "ts", "masks": "masks"}


def _to_float(img: np.ndarray) -> torch.Tensor:
    return torch.tensor(img).permute(2, 0, 1).float().div(255.0)


def low_res_pair(first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two uint8 frames downscaled 2x by the paper's protocol, as float32 (H, W, 3)."""
    lr = downscale(torch.stack([_to_float(first), _to_float(last)]))
    return lr[0].permute(1, 2, 0).numpy().copy(), lr[1].permute(1, 2, 0).numpy().copy()


def streams(l0: np.ndarray, l1: np.ndarray, weights: str | None = None) -> dict[str, np.ndarray]:
    """Output frame 1 of ``vsdsfn.upscale`` on the clip [l0, l1] for each of
    :data:`DEBUG_VIEWS` (float32 (2H, 2W, 3))."""
    import vsdsfn
    from .flowfps import clip_from_frames

    clip = clip_from_frames([l0, l1])
    return {name: frames_from_clip(vsdsfn.upscale(clip, weights=weights, debug=debug)[1])[0]
            for name, debug in DEBUG_VIEWS.items()}


def _chw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def compose(tiles: Sequence[tuple[str, np.ndarray]], cols: int = 4) -> Image.Image:
    """A grid (PIL image) of equally sized float RGB tiles, each under its caption."""
    from PIL import Image, ImageDraw, ImageFont

    h, w = tiles[0][1].shape[:2]
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * w, rows * (h + CAPTION_H)), "black")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for i, (caption, tile) in enumerate(tiles):
        x, y = (i % cols) * w, (i // cols) * (h + CAPTION_H)
        draw.text((x + 4, y + 2), caption, fill="white", font=font)
        sheet.paste(Image.fromarray(_u8(tile)), (x, y + CAPTION_H))
    return sheet


def save_small(sheet: Image.Image, path: Path, max_kb: int = 400) -> int:
    """Save ``sheet`` as PNG, dropping low bits (8, then 7, then 6 bits per channel) until
    it is under ``max_kb`` KiB or 6 bits are reached; the bits kept."""
    from PIL import ImageOps

    for bits in (8, 7, 6):
        (sheet if bits == 8 else ImageOps.posterize(sheet, bits)).save(path, optimize=True)
        if path.stat().st_size <= max_kb * 1024:
            break
    return bits


def _box(text: str) -> tuple[int, int, int, int]:
    parts = tuple(int(v) for v in text.split(","))
    if len(parts) != 4 or min(parts) < 0 or parts[2] < 2 or parts[3] < 2:
        raise argparse.ArgumentTypeError("--crop needs X,Y,W,H (non-negative integers, W and H >= 2)")
    return parts  # type: ignore[return-value]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--folder", default="frames/sintel", help="frame folder, relative to --data-root")
    ap.add_argument("--frames", default="frame_0016.png,frame_0017.png,frame_0018.png",
                    help="first, true middle and last frame")
    ap.add_argument("--crop", type=_box, default=DEFAULT_CROP, help="X,Y,W,H in output pixels")
    ap.add_argument("--context", type=int, default=64, help="low-res pixels around the crop the network sees")
    ap.add_argument("--weights", default=None, help="weights file (default: the shipped default weights)")
    ap.add_argument("--out", default="docs/streams.png")
    ap.add_argument("--max-kb", type=int, default=400, help="posterise (7, then 6 bits) to stay under this size")
    args = ap.parse_args(argv)

    names = args.frames.split(",")
    if len(names) != 3:
        ap.error("--frames needs three names: first, middle, last")
    first, mid, last = (load_image(Path(args.data_root, args.folder, n)) for n in names)
    l0, l1 = low_res_pair(first, last)
    lh, lw = l0.shape[:2]
    x, y, w, h = args.crop
    if x + w > 2 * lw or y + h > 2 * lh:
        ap.error(f"--crop {x},{y},{w},{h} is outside the {2 * lw}x{2 * lh} output")
    # the low-res window the network runs on: the crop plus context, inside the frame
    x0, y0 = max(x // 2 - args.context, 0), max(y // 2 - args.context, 0)
    x1, y1 = min((x + w + 1) // 2 + args.context, lw), min((y + h + 1) // 2 + args.context, lh)
    views = streams(l0[y0:y1, x0:x1], l1[y0:y1, x0:x1], args.weights)
    ox, oy = x - 2 * x0, y - 2 * y0
    crop = {k: v[oy:oy + h, ox:ox + w] for k, v in views.items()}
    truth = mid[y:y + h, x:x + w].astype(np.float32) / 255.0

    def db(k: str) -> str:
        return f"{psnr(_chw(crop[k]), _chw(truth)).item():.2f} dB"

    def nearest(lr: np.ndarray) -> np.ndarray:
        return lr.repeat(2, 0).repeat(2, 1)[y:y + h, x:x + w]

    err = 4 * np.abs(np.clip(crop["output"], 0, 1) - truth).mean(2, keepdims=True)
    tiles = [
        ("low-res input L0 (nearest 2x)", nearest(l0)),
        ("low-res input L1 (nearest 2x)", nearest(l1)),
        (f"S->T stream  {db('st')}", crop["st"]),
        (f"T->S stream  {db('ts')}", crop["ts"]),
        ("masks: R = S->T, G = T->S", crop["masks"]),
        (f"output  {db('output')}", crop["output"]),
        ("true middle frame", truth),
        ("|output - true| x4 (mean of RGB)", err.repeat(3, 2)),
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    bits = save_small(compose(tiles), out, args.max_kb)
    print(f"{out}: {out.stat().st_size // 1024} KB ({bits} bits per channel), crop {x},{y},{w},{h}"
          f" of {args.folder}/{names[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
