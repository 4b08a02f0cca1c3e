"""vsdsfn: space-time upscaling for VapourSynth with DSFN: any higher frame rate, twice the size.

>>> import vapoursynth as vs
>>> import vsdsfn
>>> clip = vs.core.std.BlankClip(format=vs.RGBS, width=32, height=24, length=3)
>>> up = vsdsfn.upscale(clip)                       # RGBS/RGBH in, 2x fps (by default) and size out
>>> up.num_frames, up.width, up.height
(6, 64, 48)
"""

import logging

from ._version import __version__

# a library's convention: records go where the application sends them (the command line
# shows them on stderr); nothing is printed by default
logging.getLogger("vsdsfn").addHandler(logging.NullHandler())

__all__ = ["upscale", "render", "Engine", "WeightsError", "default_weights_path", "load_model", "__version__"]


def __getattr__(name):
    # Lazy: `import vsdsfn` stays cheap, and the engine/weights work without VapourSynth.
    if name == "upscale":
        from .filter import upscale

        return upscale
    if name == "render":
        from .job import render

        return render
    if name == "Engine":
        from .engine import Engine

        return Engine
    if name in ("WeightsError", "default_weights_path", "load_model"):
        from . import weights

        return getattr(weights, name)
    raise AttributeError(f"module 'vsdsfn' has no attribute {name!r}")
