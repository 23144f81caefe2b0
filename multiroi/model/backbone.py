"""Image backbone: any timm model reduced to one pooled feature vector per crop."""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


class BackboneError(RuntimeError):
    """The backbone cannot be built (unknown name, pretrained weights unavailable)."""


class Backbone(nn.Module):
    """timm model with its classifier removed and global average pooling.

    forward(images f32[N,3,H,W], ImageNet-normalised) -> features f32[N,D], D = ``num_features``
    (timm's ``head_hidden_size`` when the model has one: MobileNetV3's pooled output passes its
    conv head, 1280 wide, while timm's own ``num_features`` is 960).
    """

    def __init__(
        self, name: str, pretrained: bool = False, *, allow_random_init: bool = False
    ) -> None:
        super().__init__()
        self.name = name
        self.model = create_timm_backbone(name, pretrained, allow_random_init=allow_random_init)
        width = getattr(self.model, "head_hidden_size", None) or self.model.num_features
        self.num_features = int(width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


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
