"""Export a training checkpoint to a shipped weights file (safetensors + model card data).

    python -m training.export runs/joint/best.pt models/NAME.safetensors
    python -m training.export runs/fusion/best.pt runs/joint/best.pt models/NAME.safetensors

Given several checkpoints (of stages validated on the same samples, e.g. stage 2 and
stage 3), the one with the best validation PSNR is exported.

The weights file stores the architecture config (so ``vsdsfn.upscale(weights=...)``
builds the right network) and the training provenance (stage, step, validation PSNR).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vsdsfn.nets import DSFN, DSFNConfig
from vsdsfn.weights import save_model

from .train import load_checkpoint

__all__ = ["export", "pick_best", "main"]


def pick_best(checkpoints: list[str | Path]) -> Path:
    """The checkpoint with the highest validation PSNR (``best``); the first one on ties."""
    scored = [(float(load_checkpoint(c).get("best", float("-inf"))), -i, Path(c)) for i, c in enumerate(checkpoints)]
    return max(scored)[2]


def export(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the model of a training checkpoint to ``out`` (safetensors)."""
    ck = load_checkpoint(checkpoint)
    cfg = json.loads(ck["config"])
    model = DSFN(DSFNConfig.from_dict(cfg.get("model", {})))
    model.load_state_dict(ck["model"])
    extra = {
        "stage": str(ck.get("stage")), "step": str(ck.get("step")),
        "val_psnr": f"{ck.get('best', float('nan')):.4f}", "source": Path(checkpoint).name,
    }
    return save_model(model, out, extra)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m training.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="+", help="one or more checkpoints; the best validated is exported")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    best = pick_best(args.checkpoint)
    path = export(best, args.out)
    print(f"wrote {path} from {best}", file=sys.stderr)


if __name__ == "__main__":
    main()
