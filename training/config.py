"""Training configuration: a TOML file, overridable from the command line.

Defaults follow the paper (RAdam, lr 5e-5, batch 24); a config file changes any of
them per stage. Data paths in the file are relative to ``data.root`` (which
``--data-root`` overrides), so no dataset location is hard-coded.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

__all__ = ["DEFAULTS", "SPLITS", "data_section", "load_config", "stage_options", "set_path"]

#: a split's name on the command line -> its key under ``data``
SPLITS = {"train": "sequences", "val": "val_sequences"}

DEFAULTS: dict[str, Any] = {
    "model": {},                     # DSFNConfig fields
    "train": {
        "lr": 5e-5, "batch": 24, "crop": 128, "iters": 10000, "schedule": "constant",
        "warmup": 0, "val_every": 500, "ckpt_every": 250, "log_every": 20, "seed": 0,
        "threads": 0, "workers": 0, "amp": True, "grad_clip": 0.0,
        "lr_scale": {},             # {module = factor}: that sub-network's lr is lr * factor
    },
    "stages": {
        "spatial": {"crop": 96},
        "temporal": {"half_res": 0.5},
        "fusion": {},
        "joint": {},
    },
    "data": {
        "root": ".",
        "sr_images": [],            # folders of still images (M_S pretraining, synthetic motion)
        "sr_val": [],               # folders of still images for M_S validation
        "sequences": [],            # [{path=..., start=0, stop=...}] videos or frame folders
        "vimeo": "",                # a Vimeo-90K root (triplet or septuplet layout), optional
        "val_sequences": [],
        "strides": [1, 2, 3],       # frame strides of the middle-frame triplets (span 2)
        "spans": [],                # more timesteps: [{span = 4, strides = [1]}] -> t = 1/4, 1/2, 3/4
        "synthetic_weight": 0.3,    # share of synthetic-motion triplets in M_T/F/R training
        "synthetic_max_shift": 24.0,
        "val_crop": 256,
        "val_max": 32,              # validation samples (deterministic, evenly spaced)
    },
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_path(cfg: dict, dotted: str, value: str) -> None:
    """``set_path(cfg, "train.lr", "1e-4")`` (values parsed as TOML, else strings)."""
    keys = dotted.split(".")
    node = cfg
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = _parse_value(value)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    """DEFAULTS merged with the TOML file and ``key.path=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        with open(path, "rb") as f:
            cfg = _merge(cfg, tomllib.load(f))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r}: expected KEY.PATH=VALUE")
        key, value = item.split("=", 1)
        set_path(cfg, key.strip(), value.strip())
    return cfg


def data_section(path: str | Path, data_root: str | Path | None = None) -> tuple[dict, Path]:
    """A config file's ``data`` table and the folder its paths are under: ``data_root``
    when given, else its ``data.root`` (relative to the current directory)."""
    data = load_config(path)["data"]
    return data, Path(data_root or data["root"]).absolute()


def stage_options(cfg: dict, stage: str) -> dict:
    """The ``train`` options with the stage's own overrides applied."""
    if stage not in cfg["stages"]:
        raise ValueError(f"unknown stage {stage!r}; stages: {sorted(cfg['stages'])}")
    return {**cfg["train"], **cfg["stages"][stage]}
