"""torch-tensorrt backend: a TorchScript module compiled by ``python -m export torch-trt``
(``.ts``, metadata JSON beside it, checked like a TensorRT engine). Needs CUDA and
torch-tensorrt (imported here only)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from multiroi.backends.base import BackendError, box_extent_of, check_batch, empty_output
from multiroi.backends.tensorrt_backend import (
    check_engine_file,
    check_engine_runtime,
    gpu_identity,
    require_cuda,
)
from multiroi.types import HmrOutput, RoiBatch

logger = logging.getLogger(__name__)

SUFFIXES = (".ts",)


class TorchTRTBackend:
    """``TorchTRTBackend(checkpoint=MODULE.ts, num_rois=5, device="cuda:0")``."""

    name = "torch-trt"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        num_rois: int | None = 5,
        device: str = "cuda:0",
        **_: Any,
    ) -> None:
        if checkpoint is None or Path(checkpoint).suffix.lower() not in SUFFIXES:
            raise BackendError(
                f"the torch-trt backend needs a module compiled by 'python -m export torch-trt' "
                f"(.ts), got {checkpoint!r}"
            )
        self.path = Path(checkpoint)
        self.meta = check_engine_file(self.path, num_rois)
        require_cuda("torch-tensorrt")
        try:
            import tensorrt as trt
            import torch_tensorrt  # noqa: F401 - registers the TensorRT ops TorchScript needs
        except ImportError as exc:
            raise BackendError("the torch-trt backend needs: pip install 'multiroi[trt]'") from exc
        import torch

        self.device = device if device.startswith("cuda") else "cuda:0"
        dev = torch.device(self.device)
        check_engine_runtime(self.meta, self.path, trt.__version__, gpu_identity(dev.index or 0))
        self.module = torch.jit.load(str(self.path), map_location=dev).eval()
        self.num_rois = int(self.meta.num_rois)
        self.box_extent = box_extent_of((self.meta.onnx or {}).get("model_config"))
        self.max_persons = int(self.meta.persons_max)

    def __call__(self, batch: RoiBatch) -> HmrOutput:
        import torch

        check_batch(batch, self.num_rois)
        if len(batch) == 0:
            return empty_output(self.num_rois)
        outs: list[tuple[np.ndarray, ...]] = []
        with torch.inference_mode():
            for s in range(0, len(batch), self.max_persons):
                crops = torch.from_numpy(
                    np.ascontiguousarray(batch.crops[s : s + self.max_persons])
                )
                info = torch.from_numpy(
                    np.ascontiguousarray(batch.box_info[s : s + self.max_persons])
                )
                res = self.module(crops.to(self.device), info.to(self.device))
                # InferenceGraph without the body: (rotmat, betas, cam_local[, joints_2d])
                outs.append(tuple(t.float().cpu().numpy() for t in res[:4]))
        n = len(outs[0])
        return HmrOutput(*(np.concatenate([o[i] for o in outs]) for i in range(n)))

    def close(self) -> None:
        self.module = None
