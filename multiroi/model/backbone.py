"""Image backbone: any timm model reduced to one pooled feature vector per crop."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class BackboneError(RuntimeError):
    """The backbone cannot be built (unknown name, pretrained weights unavailable)."""


SPATIAL_GRID = (4, 3)  # rows, columns of the "spatial" pooling (a 256x192 crop's 4:3 aspect)
SPATIAL_CHANNELS = 64


class Backbone(nn.Module):
    """timm model with its classifier removed, reduced to one feature vector per crop.

    forward(images f32[N,3,H,W], ImageNet-normalised) -> features f32[N,D], D = ``num_features``
    (timm's ``head_hidden_size`` when the model has one: MobileNetV3's pooled output passes its
    conv head, 1280 wide, while timm's own ``num_features`` is 960).
    downsample: the images are average-pooled by this factor first (1: as given).
    pool: "avg" global average pooling (timm's pooled output, the paper's), or "spatial": the
    last feature map -> 1x1 conv to 64 channels, BN, ReLU -> average-pooled to a 4x3 grid ->
    flattened (D = 768), which keeps where in the crop things are: a network trained from
    scratch need not learn to encode position into channels first.
    """

    def __init__(
        self, name: str, pretrained: bool = False, *, allow_random_init: bool = False,
        downsample: int = 1, pool: str = "avg",
    ) -> None:  # fmt: skip
        super().__init__()
        if pool not in ("avg", "spatial"):
            raise ValueError(f"backbone pool must be 'avg' or 'spatial', got {pool!r}")
        self.name = name
        self.downsample = int(downsample)
        self.pool = pool
        self.model = create_timm_backbone(name, pretrained, allow_random_init=allow_random_init)
        if pool == "spatial":
            self.reduce = nn.Sequential(
                nn.Conv2d(int(self.model.num_features), SPATIAL_CHANNELS, 1, bias=False),
                nn.BatchNorm2d(SPATIAL_CHANNELS),
                nn.ReLU(inplace=True),
            )
            self.num_features = SPATIAL_CHANNELS * SPATIAL_GRID[0] * SPATIAL_GRID[1]
        else:
            width = getattr(self.model, "head_hidden_size", None) or self.model.num_features
            self.num_features = int(width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.downsample > 1:  # an AveragePool node in ONNX: every runtime has it
            images = F.avg_pool2d(images, self.downsample)
        if self.pool == "avg":
            return self.model(images)
        fmap = self.reduce(self.model.forward_features(images))
        return _grid_pool(fmap).flatten(1)


def build_backbone(
    name: str, pretrained: bool = False, *, allow_random_init: bool = False,
    downsample: int = 1, pool: str = "avg",
) -> nn.Module:  # fmt: skip
    """The backbone called ``name``: ``blazepose_full`` (MediaPipe's pose network, see
    :mod:`multiroi.model.blazepose`; its own features, so downsample 1 and pool "avg" only) or
    any timm model (:class:`Backbone`). Both have ``num_features`` and map ImageNet-normalised
    crops f32[N,3,H,W] to f32[N,num_features]."""
    from multiroi.model.blazepose import BLAZEPOSE_BACKBONE, BlazePoseBackbone

    if name == BLAZEPOSE_BACKBONE:
        if downsample != 1 or pool != "avg":
            raise ValueError(
                f"backbone {name} takes the full 256x192 crop and has its own features: use "
                f"downsample 1 and pool 'avg' (got {downsample}, {pool!r})"
            )
        return BlazePoseBackbone(pretrained, allow_random_init=allow_random_init)
    return Backbone(name, pretrained, allow_random_init=allow_random_init,
                    downsample=downsample, pool=pool)  # fmt: skip


def _grid_pool(fmap: torch.Tensor) -> torch.Tensor:
    """[N,C,h,w] -> [N,C,4,3]: plain average pooling when the map divides evenly (a 256x192
    crop gives 8x6 or 4x3 maps: one AveragePool node in ONNX), adaptive pooling otherwise."""
    h, w = int(fmap.shape[-2]), int(fmap.shape[-1])
    gh, gw = SPATIAL_GRID
    if h % gh == 0 and w % gw == 0:
        return F.avg_pool2d(fmap, (h // gh, w // gw))
    return F.adaptive_avg_pool2d(fmap, SPATIAL_GRID)


def create_timm_backbone(name: str, pretrained: bool, *, allow_random_init: bool) -> nn.Module:
    """timm ``create_model(name, pretrained, num_classes=0, global_pool="avg")``.

    When ``pretrained`` weights cannot be loaded (no download, no cache) this raises
    :class:`BackboneError`, unless ``allow_random_init`` is True: then it logs a warning and
    returns a randomly initialised model.
    """
    import timm

    if not timm.is_model(name):
        raise BackboneError(
            f"unknown timm backbone {name!r}; use a timm model name such as 'resnet50', "
            "'hrnet_w48', 'mobilenetv3_large_100' (see timm.list_models())"
        )
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0, global_pool="avg")
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, global_pool="avg")
    except Exception as exc:  # noqa: BLE001 - network/cache errors come in many types
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        if not allow_random_init:
            raise BackboneError(
                f"pretrained weights for backbone {name!r} could not be loaded ({reason}); "
                "put them in the timm/Hugging Face cache, or build with pretrained=False"
            ) from exc
        logger.warning(
            "pretrained weights for %s could not be loaded (%s); using random init", name, reason
        )
        return timm.create_model(name, pretrained=False, num_classes=0, global_pool="avg")
