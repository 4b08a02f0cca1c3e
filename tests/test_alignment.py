"""training.alignment: textured-pixel warp scores of the flows between frames."""

import numpy as np
import torch

from training.alignment import textured, warp_scores
from vsdsfn.weights import load_model


class _Moving:
    """A textured still moving 3 px right per frame (HWC uint8 frames, as sequences give)."""

    name = "moving[0:]"

    def __init__(self, n=5, h=96, w=128):
        g = torch.Generator().manual_seed(1)
        big = torch.nn.functional.interpolate(torch.rand(1, 3, 24, 40, generator=g), size=(h, w + 3 * n),
                                              mode="bicubic", align_corners=False).clamp(0, 1)[0]
        self.frames = [(big[:, :, 3 * (n - k):3 * (n - k) + w].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                       for k in range(n)]

    def __len__(self):
        return len(self.frames)

    def frame(self, i):
        return self.frames[i]


def test_textured_pixels_exclude_flat_ones_and_the_border():
    x = torch.zeros(1, 3, 48, 48)
    x[..., :, 24:] = torch.rand(1, 3, 48, 24, generator=torch.Generator().manual_seed(0))
    mask = textured(x, 0.03, 8)
    assert mask[..., 8:-8, 30:-8].mean() > 0.9 and mask[..., :, :20].sum() == 0 and mask[..., :8, :].sum() == 0


def test_flows_align_moving_texture_better_than_no_motion_and_lk_helps():
    model = load_model(None).eval().float()
    with torch.no_grad():
        s = warp_scores(model, _Moving(), 2, 2, [0, 2], 0.03)
    assert s["lk=0"] > s["zero"] + 3 and s["lk=2"] > s["lk=0"] + 3, s
