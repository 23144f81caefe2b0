"""PyTorch backend: the network in eval mode on CPU, or on CUDA with fp16 autocast."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch

from multiroi.backends.base import check_batch, empty_output
from multiroi.types import HmrOutput, RoiBatch

logger = logging.getLogger(__name__)

CPU_BACKBONE = "mobilenetv3_large_100"  # light enough for real time on a laptop CPU


def load_network(
    checkpoint: str | os.PathLike | None = None,
    num_rois: int | None = None,
    backbone: str | None = None,
) -> torch.nn.Module:
    """The Multi-RoI network from ``checkpoint``; without one, the project's default checkpoint
    (``multiroi.checkpoint.default_checkpoint_path()``) if there is one and no ``backbone`` is
    asked for, else a randomly initialised network (``backbone``, default the light CPU one)
    with a loud warning (speed measurements with another backbone need no weights).
    ``num_rois`` None: the checkpoint's RoI count (5 for a random network); a number must
    match the checkpoint's."""
    from multiroi.model import ModelConfig, MultiRoINet

    if checkpoint is None and backbone is None:
        checkpoint = _default_checkpoint()
    if checkpoint is not None:
        from multiroi.checkpoint import load_checkpoint

        net, meta = load_checkpoint(checkpoint)
        if num_rois is not None and net.cfg.num_rois != num_rois:
            raise ValueError(
                f"checkpoint {checkpoint} was trained with {net.cfg.num_rois} RoIs but "
                f"{num_rois} were asked for; pass --rois {net.cfg.num_rois}"
            )
        logger.info("model: %s from %s", net.cfg.describe(), checkpoint)
        net.body_model_id = meta.body_model_id  # the body model its betas belong to
        return net.eval()
    cfg = ModelConfig(backbone=backbone or CPU_BACKBONE, num_rois=num_rois or 5,
                      contrastive=False)  # fmt: skip
    logger.warning(
        "NO CHECKPOINT: using a RANDOMLY INITIALISED network (%s); meshes will be meaningless. "
        "Pass --checkpoint FILE", cfg.describe(),
    )  # fmt: skip
    from multiroi.body import load_mean_params

    return MultiRoINet(cfg, load_mean_params()).eval()  # starts from the body model's mean


def _default_checkpoint() -> Any:
    from multiroi.checkpoint import default_checkpoint_path

    return default_checkpoint_path()


class TorchBackend:
    """``TorchBackend(checkpoint=None, num_rois=None, device="cpu", net=None, fp16=None,
    bf16=False)``.

    net: an already built MultiRoINet (tests, the training loop); fp16: autocast to float16
    (default: on for CUDA, off for CPU); bf16: on the CPU, autocast to bfloat16 with
    channels-last weights (fast only where :func:`multiroi.backends.cpu.cpu_has_fast_bf16`).
    Outputs are float32 numpy.
    """

    name = "torch"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        num_rois: int | None = None,
        device: str = "cpu",
        *,
        net: torch.nn.Module | None = None,
        backbone: str | None = None,
        fp16: bool | None = None,
        bf16: bool = False,
    ) -> None:
        if bf16 and device != "cpu":
            raise ValueError("bf16 is for the CPU; on CUDA the torch backend uses fp16")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for but CUDA is not available; use cpu")
        self.net = net if net is not None else load_network(checkpoint, num_rois, backbone)
        self.body_model_id: str | None = getattr(self.net, "body_model_id", None)
        self.net = self.net.eval().to(device)
        self.num_rois = int(self.net.cfg.num_rois)
        self.box_extent = self.net.cfg.box_extent
        self.device = device
        self.fp16 = device.startswith("cuda") if fp16 is None else fp16
        self.bf16 = bool(bf16) and device == "cpu"
        if self.bf16:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.precision = "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    @torch.inference_mode()
    def __call__(self, batch: RoiBatch) -> HmrOutput:
        check_batch(batch, self.num_rois)
        if len(batch) == 0:
            return empty_output(self.num_rois)
        dev = torch.device(self.device)
        crops = torch.from_numpy(np.ascontiguousarray(batch.crops, np.float32)).to(dev)
        info = torch.from_numpy(np.ascontiguousarray(batch.box_info, np.float32)).to(dev)
        dtype = torch.bfloat16 if self.bf16 else torch.float16
        with torch.autocast(dev.type, dtype=dtype, enabled=self.bf16 or self.fp16):
            out = self.net(crops, info)
        return HmrOutput(
            rotmat=out.rotmat.float().cpu().numpy(),
            betas=out.betas.float().cpu().numpy(),
            cam_local=out.cam_local.float().cpu().numpy(),
            joints_2d=None if out.joints_2d is None else out.joints_2d.float().cpu().numpy(),
        )

    def close(self) -> None:
        pass
