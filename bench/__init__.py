"""Benchmarks of vsdsfn, run from the repository root as modules: ``python -m bench.benchmark``
(speed and memory through VapourSynth), ``python -m bench.engine_cuda`` (the engine on a
GPU, without VapourSynth) and ``python -m bench.tiling`` (tiled against untiled inference)."""
