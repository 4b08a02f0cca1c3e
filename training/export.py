"""Export a training checkpoint to a shipped weights file (safetensors + model card data).

    python -m training.export runs/joint/best.pt models/NAME.safetensors [--card models/NAME.md]

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

__all__ = ["export", "main"]


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
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    path = export(args.checkpoint, args.out)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
