"""The paper's L1 losses (Eq. 11-16) and their equal-weight sum (Eq. 17)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSS_NAMES", "STAGE_LOSSES", "dsfn_losses", "total_loss"]

#: Eq. 11-16: S->T, T->S, fused, refined, and the auxiliary M_S and M_T losses.
LOSS_NAMES = ("st", "ts", "fused", "refined", "spatial", "temporal")

#: which losses each stage optimises (stage 1's sub-stages train one backbone each)
STAGE_LOSSES = {
    "spatial": ("spatial",),
    "temporal": ("temporal",),
    "fusion": ("fused", "refined"),
    "joint": LOSS_NAMES,
}


def dsfn_losses(out: dict[str, torch.Tensor], h0: torch.Tensor, h1: torch.Tensor, h2: torch.Tensor,
                l1_mid: torch.Tensor) -> dict[str, torch.Tensor]:
    """All six losses for a DSFN output against the ground-truth triplet.

    ``h0, h1, h2`` are the high-res frames t-1, t, t+1; ``l1_mid`` is L(t), the
    downscaled middle frame (target of M_T in the T->S stream, Eq. 16). Each loss is
    the mean absolute error, as PyTorch's ``l1_loss``.
    """
    return {
        "st": F.l1_loss(out["st"], h1),
        "ts": F.l1_loss(out["ts"], h1),
        "fused": F.l1_loss(out["fused"], h1),
        "refined": F.l1_loss(out["refined"], h1),
        "spatial": F.l1_loss(out["hr0"], h0) + F.l1_loss(out["hr1"], h2),
        "temporal": F.l1_loss(out["lt"], l1_mid),
    }


def total_loss(losses: dict[str, torch.Tensor], names: tuple[str, ...]) -> torch.Tensor:
    """Equal-weight sum (Eq. 17) of the named losses."""
    return sum(losses[n] for n in names)
