"""Networks of vsdsfn: pure PyTorch modules shared by the runtime and training/."""

from .dsfn import DSFN, SPATIAL, TEMPORAL, DSFNConfig, flip_ensemble, register_spatial, register_temporal
from .espcn import ESPCN
from .flowinterp import FlowInterp
from .fusion import FusionUNet, Refine

__all__ = [
    "DSFN", "DSFNConfig", "ESPCN", "FlowInterp", "FusionUNet", "Refine",
    "SPATIAL", "TEMPORAL", "flip_ensemble", "register_spatial", "register_temporal",
]
