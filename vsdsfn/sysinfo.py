"""One line describing the machine, for benchmark and evaluation reports."""

from __future__ import annotations

import os
import platform

__all__ = ["cpu_flags", "describe_machine"]

#: the /proc/cpuinfo flags that decide which kernels and precisions run fast
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16")


def describe_machine() -> str:
    """CPU model and count, OS, Python, torch (threads, GPU) and VapourSynth versions.

    >>> "Python" in describe_machine()
    True
    """
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [f"{cpu} ({os.cpu_count()} logical CPUs)", f"{platform.system()} {platform.release()}",
             f"Python {platform.python_version()}"]
    try:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
        parts.append(f"torch {torch.__version__} ({torch.get_num_threads()} threads, {gpu})")
    except ImportError:
        pass
    try:
        import vapoursynth as vs

        parts.append(f"VapourSynth R{vs.core.core_version.release_major}")
    except Exception:  # noqa: BLE001 -- VapourSynth is optional for the engine
        pass
    return ", ".join(parts)


def cpu_flags() -> list[str]:
    """The flags of :data:`FLAGS` this CPU has (Linux; empty elsewhere).

    >>> set(cpu_flags()) <= set(FLAGS)
    True
    """
    try:
        with open("/proc/cpuinfo") as f:
            have = next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return []
    return [fl for fl in FLAGS if fl in have]
