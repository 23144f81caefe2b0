"""Import the ResNet-50 encoder of a CLIFF checkpoint into a MultiRoINet's backbone."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from multiroi.checkpoint import CheckpointError, read_checkpoint_file
from multiroi.model.network import MultiRoINet

logger = logging.getLogger(__name__)


def _unwrap_state_dict(obj: Any, p: Path) -> dict[str, torch.Tensor]:
    """Peel ``model``/``state_dict`` wrappers and ``module.`` prefixes."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("model", "state_dict") if k in obj), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"CLIFF checkpoint {p} holds a {type(obj).__name__}; expected a dict"
        )
    out = {}
    for k, v in obj.items():
        k = str(k)
        while k.startswith("module."):
            k = k[len("module.") :]
        if isinstance(v, torch.Tensor):
            out[k] = v
    return out


def import_cliff_backbone(
    path: str | os.PathLike, model: MultiRoINet, *, allow_pickle: bool = False,
    payload: Any = None,
) -> int:  # fmt: skip
    """Copy a CLIFF checkpoint's ``encoder.*`` weights into ``model``'s timm resnet50 backbone.

    Handles ``module.`` prefixes and a ``model``/``state_dict`` wrapper. Keys of the backbone
    absent from the file and encoder keys the backbone lacks are logged as warnings; a shape
    mismatch or no usable key raises CheckpointError. Returns the number of tensors loaded.
    allow_pickle=True loads with weights_only=False (only for files you trust); payload: the
    file's content when the caller has read it already (it is not read again).
    """
    p = Path(path)
    if model.cfg.backbone != "resnet50":
        raise CheckpointError(
            f"CLIFF checkpoints hold a ResNet-50 encoder; this model has backbone "
            f"{model.cfg.backbone!r}: build it with ModelConfig(backbone='resnet50')"
        )
    if payload is None:
        payload = read_checkpoint_file(p, "cpu", allow_pickle=allow_pickle)
    source = _unwrap_state_dict(payload, p)
    encoder = {k[len("encoder.") :]: v for k, v in source.items() if k.startswith("encoder.")}
    if not encoder:
        raise CheckpointError(
            f"CLIFF checkpoint {p} has no 'encoder.*' weights; found keys {sorted(source)[:5]}"
        )
    target = model.backbone.model.state_dict()
    usable = {k: v for k, v in encoder.items() if k in target}
    bad = [k for k, v in usable.items() if tuple(v.shape) != tuple(target[k].shape)]
    if bad:
        raise CheckpointError(
            f"CLIFF checkpoint {p}: {len(bad)} encoder weights have another shape than the "
            f"resnet50 backbone, e.g. {bad[0]!r} {tuple(usable[bad[0]].shape)} vs "
            f"{tuple(target[bad[0]].shape)}"
        )
    missing = [k for k in target if k not in usable and not k.endswith("num_batches_tracked")]
    unexpected = sorted(set(encoder) - set(usable))
    if missing:
        logger.warning(
            "CLIFF import: %d backbone keys not in %s, e.g. %s", len(missing), p, missing[:3]
        )
    if unexpected:
        logger.warning(
            "CLIFF import: %d encoder keys unused, e.g. %s", len(unexpected), unexpected[:3]
        )
    model.backbone.model.load_state_dict(usable, strict=False)
    logger.info("imported %d CLIFF encoder tensors from %s", len(usable), p)
    return len(usable)
