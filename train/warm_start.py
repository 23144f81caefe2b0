"""Start a training run from another multiroi checkpoint's weights (e.g. a 1-RoI run -> 5 RoIs).

Every network weight is shared across RoIs (backbone, fusion scorer, decoders), so a checkpoint
trained with another RoI count, fusion or contrastive setting can seed a new run: tensors with the
same name and shape are copied, the rest keep their fresh initialisation and are logged.
The optimiser, step and schedule start afresh (use ``--resume`` to continue a run instead).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from multiroi.checkpoint import CheckpointError, model_from_payload
from multiroi.model import MultiRoINet
from multiroi.model.lifter import LIFTED_DIM

logger = logging.getLogger(__name__)

WIDENED = "mesh_decoder.trunk.fc1.weight"


def warm_start(
    payload: Any, path: str | os.PathLike, model: MultiRoINet, frozen: tuple[str, ...] = ()
) -> int:
    """Copy the weights of a checkpoint (``payload``: the content of file ``path``, as
    multiroi.checkpoint.read_checkpoint_file returns it) into ``model`` where name and shape
    match. Raises CheckpointError when the backbones differ (nothing useful would be copied),
    or when a part named in ``frozen`` would keep its random initialisation.
    Returns the number of tensors copied."""
    p = Path(path)
    source, meta = model_from_payload(payload, p)
    src_cfg, cfg = meta.model_config, model.cfg
    if src_cfg.backbone != cfg.backbone:
        raise CheckpointError(
            f"cannot start from {p}: it has backbone {src_cfg.backbone!r}, this run "
            f"{cfg.backbone!r}; pass --model.backbone {src_cfg.backbone} or another checkpoint"
        )
    if src_cfg.downsample != cfg.downsample:
        logger.warning("warm start: %s was trained at 1/%d resolution, this run uses 1/%d",
                       p, src_cfg.downsample, cfg.downsample)  # fmt: skip
    src = source.state_dict()
    own = model.state_dict()
    copied = {k: v for k, v in src.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    for k, v in src.items():  # a layer given new inputs at the end (the lifter's joints)
        if k in own and k not in copied and _widened(k, v, own[k]):
            w = torch.zeros_like(own[k])
            w[:, : v.shape[1]] = v
            copied[k] = w
            logger.info("warm start: %s widened %d -> %d inputs (new ones start at zero)",
                        k, v.shape[1], w.shape[1])  # fmt: skip
    fresh = [k for k in own if k not in copied and not k.endswith("num_batches_tracked")]
    stuck = [k for k in fresh if k.split(".")[0] in frozen]
    if stuck:
        raise CheckpointError(
            f"cannot freeze {stuck[0].split('.')[0]}: {stuck[0]} is not in {p} (or of another "
            f"shape: {src_cfg.describe()}), so it would stay random; train it, or give the "
            "model options that match the checkpoint"
        )
    unused = [k for k in src if k not in copied and k.split(".")[0] in frozen]
    if unused:  # e.g. a lifter with a 2D refiner frozen into a network built without one
        raise CheckpointError(
            f"cannot freeze {unused[0].split('.')[0]}: {p} has {unused[0]}, which this network "
            f"lacks ({src_cfg.describe()}; this run: {cfg.describe()}); give the model options "
            "that match the checkpoint"
        )
    model.load_state_dict(copied, strict=False)
    if fresh:
        logger.warning("warm start: %d tensors not in %s (or of another shape) keep their "
                       "initialisation, e.g. %s", len(fresh), p, fresh[:3])  # fmt: skip
    logger.info("warm start: %d tensors from %s (%s, step %d)", len(copied), p,
                src_cfg.describe(), meta.step)  # fmt: skip
    return len(copied)


def _widened(name: str, src: torch.Tensor, own: torch.Tensor) -> bool:
    """The mesh decoder's first layer, given the lifter's joints as new inputs at the end."""
    return (name == WIDENED and src.ndim == 2 and own.ndim == 2 and src.shape[0] == own.shape[0]
            and own.shape[1] - src.shape[1] == LIFTED_DIM)  # fmt: skip


def run_file_name(path: str | os.PathLike) -> str:
    """'RUN_DIR/FILE' of a checkpoint path: enough to name it, no machine path."""
    return "/".join(Path(path).parts[-2:])


def earlier_stages(payload: Any, path: str | os.PathLike) -> list[dict]:
    """The training behind a checkpoint (``payload``: the content of file ``path``), oldest
    first: the stages it recorded itself, then its own (file name, step, training config).
    A run warm-started from it keeps this list, so a model card can tell its whole recipe."""
    extra = payload.get("extra") or {}
    stages = list(extra.get("stages") or [])
    stage = {"checkpoint": run_file_name(path), "step": int(payload.get("step", 0)),
             "train_config": extra.get("train_config")}  # fmt: skip
    if extra.get("lifter"):  # written by python -m train.lifter
        stage["lifter"] = extra["lifter"]
    if extra.get("tune2d"):  # written by python -m train.tune2d
        stage["tune2d"] = extra["tune2d"]
    if extra.get("turn_lifter"):  # written by python -m train.turn_lifter
        stage["turn_lifter"] = extra["turn_lifter"]
    if extra.get("train_data_meta"):  # the data of a decoder stage, for the model card
        stage["train_data_meta"] = extra["train_data_meta"]
    stages.append(stage)
    return stages
