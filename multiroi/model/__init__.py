"""nn.Modules of the Multi-RoI network (no I/O): config, backbone, fusion, decoders, heads."""

from multiroi.model.backbone import Backbone, BackboneError
from multiroi.model.config import ModelConfig
from multiroi.model.fusion import FusionResult, PositionalEncoding, RoIAwareFusion
from multiroi.model.network import ExportWrapper, MultiRoINet, NetOutput, default_mean_params

__all__ = [
    "Backbone",
    "BackboneError",
    "ExportWrapper",
    "FusionResult",
    "ModelConfig",
    "MultiRoINet",
    "NetOutput",
    "PositionalEncoding",
    "RoIAwareFusion",
    "default_mean_params",
]
