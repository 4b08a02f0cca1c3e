"""Networks of vsdsfn: pure PyTorch modules shared by the runtime and training/."""

from .dsfn import DSFN, SPATIAL, TEMPORAL, DSFNConfig, flip_ensemble
from .espcn import ESPCN
from .fusion import FusionUNet, Refine
from .multiframe import MultiFrameSR
from .rife import RIFE

__all__ = ["DSFN", "DSFNConfig", "ESPCN", "FusionUNet", "MultiFrameSR", "RIFE", "Refine", "SPATIAL", "TEMPORAL", "flip_ensemble"]
