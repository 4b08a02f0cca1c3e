"""The ``trt`` option: the networks through TensorRT, with torch-tensorrt's ``torch.compile``
backend (NVIDIA GPUs only).

torch-tensorrt is optional (the ``tensorrt`` extra; its release must match torch's).
TensorRT builds an engine per graph and input shape and runs what it cannot convert in
PyTorch; the engine warns and runs without compiling if the build fails. Built engines
are kept in :func:`cache_dir`, so a frame size and batch is built once per machine, not
each time a script starts.

>>> compile_arguments(torch.device("cpu"))
Traceback (most recent call last):
ValueError: trt=True runs on CUDA devices only, not cpu; e.g. device='cuda'
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch

from .options import spell

__all__ = ["BACKEND", "cache_dir", "compile_arguments"]

#: torch-tensorrt's name for its torch.compile backend (registered when it is imported)
BACKEND = "torch_tensorrt"


def cache_dir() -> Path:
    """Where built TensorRT engines are kept: ``$XDG_CACHE_HOME/vsdsfn/tensorrt`` (default
    ``~/.cache``). torch-tensorrt evicts the oldest entries of its engine folder when
    it outgrows 5 GB, so that folder is vsdsfn's own, never one a user names.

    >>> cache_dir().parts[-2:]
    ('vsdsfn', 'tensorrt')
    """
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "vsdsfn" / "tensorrt"


def _torch_release() -> str:
    """torch's major.minor (``"2.14"``): torch-tensorrt's releases follow torch's."""
    return ".".join(torch.__version__.split("+")[0].split(".")[:2])


def compile_arguments(device: torch.device) -> dict[str, Any]:
    """``torch.compile``'s ``backend`` and ``options`` arguments for ``trt=True`` on ``device``;
    ``ValueError`` (with the fix) off CUDA or without a working torch-tensorrt."""
    if device.type != "cuda":
        raise ValueError(f"{spell('trt', True)} runs on CUDA devices only, not {device}; e.g. "
                         f"{spell('device', 'cuda')}")
    try:
        importlib.import_module("torch_tensorrt")   # registers the backend
    except Exception as exc:   # not installed, or its TensorRT/CUDA libraries do not load
        raise ValueError(
            f"{spell('trt', True)} needs torch-tensorrt, the release made for torch {_torch_release()}: pip install "
            f"\"torch-tensorrt=={_torch_release()}.*\" ({type(exc).__name__}: {str(exc).strip()[:200]}); or "
            f"{spell('trt', False)}") from None
    folder = cache_dir()
    return {"backend": BACKEND, "options": {
        "device": device,
        "cache_built_engines": True,
        "reuse_cached_engines": True,
        "engine_cache_dir": str(folder / "engines"),
        "timing_cache_path": str(folder / "timing.cache"),
    }}
