"""The ``precision`` option: which float type the networks compute in, per device.

``"auto"``: bf16 on a CPU that computes bf16 natively (AVX-512 BF16 or AMX), fp32 on other
CPUs, fp16 on CUDA. An explicit precision the device cannot run is refused, naming what it
can.

>>> cpu = torch.device("cpu")
>>> choose("fp32", cpu)
torch.float32
>>> choose("fp16", cpu)
Traceback (most recent call last):
ValueError: precision 'fp16' does not run on cpu; it runs 'fp32' or 'bf16' (e.g. precision='bf16')
"""

from __future__ import annotations

import contextlib
import functools
import logging

import torch

from .options import spell

__all__ = ["DTYPES", "NAMES", "autocast", "choose", "cpu_capabilities", "cpu_has_native_bf16", "name_of", "native_bf16",
           "runs_on"]

log = logging.getLogger("vsdsfn")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NAMES = {v: k for k, v in DTYPES.items()}


def cpu_capabilities() -> dict[str, bool]:
    """torch's own CPU feature detection (the one that picks its kernels)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        return dict(get())
    return {name: bool(getattr(torch.cpu, f"_is_{name}_supported", lambda: False)())
            for name in ("avx512_bf16", "amx_tile")}


def native_bf16(caps: dict[str, bool]) -> bool:
    """Whether CPU features ``caps`` compute bf16 in hardware (AVX-512 BF16 or AMX).

    >>> native_bf16({"avx512_f": True}), native_bf16({"avx512_bf16": True}), native_bf16({"amx_bf16": True})
    (False, True, True)
    """
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16") or caps.get("amx_tile"))


@functools.cache
def cpu_has_native_bf16() -> bool:
    """This CPU's :func:`native_bf16` (the hook tests replace)."""
    return native_bf16(cpu_capabilities())


def runs_on(device: torch.device) -> tuple[str, ...]:
    """The precisions ``device`` runs (bf16 on any CPU: emulated where not native)."""
    if device.type == "cuda":
        return ("fp32", "fp16", "bf16") if torch.cuda.is_bf16_supported() else ("fp32", "fp16")
    return ("fp32", "bf16")


def choose(precision: str | None, device: torch.device) -> torch.dtype:
    """The dtype for a checked ``precision`` option on ``device``."""
    if precision in (None, "auto"):
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    runs = runs_on(device)
    if precision not in runs:
        raise ValueError(f"precision {precision!r} does not run on {device}; it runs "
                         f"{' or '.join(map(repr, runs))} (e.g. {spell('precision', runs[-1])})")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("%s: this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 is emulated and several "
                    "times slower than %s", spell("precision", "bf16"), spell("precision", "fp32"))
    return DTYPES[precision]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """The context the networks run in at ``dtype``: ``torch.autocast`` for fp16/bf16
    (convolutions in ``dtype``, on weights stored in it), none for fp32. The networks
    keep RIFE's flows and mask logits, the masks and the blends in float32 either way."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def name_of(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bf16"``."""
    return NAMES[dtype]
