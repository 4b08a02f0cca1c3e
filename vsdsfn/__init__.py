"""vsdsfn: 2x space-time upscaling (frame rate and resolution) for VapourSynth with DSFN."""

__version__ = "0.1.0"
