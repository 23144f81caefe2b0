"""The inference backend seam: ``backend(RoiBatch) -> HmrOutput``, the same for every runtime.

One small class per runtime (torch, onnxruntime, later TensorRT) implements :class:`Backend`;
:mod:`multiroi.backends.registry` creates them by name or by model-file suffix.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

import numpy as np

from multiroi.types import HmrOutput, RoiBatch


class BackendError(RuntimeError):
    """A backend cannot be created or run (missing runtime, bad model file, wrong shapes)."""


@runtime_checkable
class Backend(Protocol):
    """Runs the Multi-RoI network on all persons x R RoIs of one frame in one call.

    name: registry name ("torch", "onnxruntime", ...); num_rois: R the model expects;
    device: where it runs ("cpu", "cuda:0"); box_extent: the person boxes the model was trained
    on, "visible" or "amodal" (``ModelConfig.box_extent``; read it with
    ``getattr(backend, "box_extent", "visible")``, backends of other packages may lack it).
    ``__call__(batch)``: batch.crops f32[M,R,3,256,192], batch.box_info f32[M,R,3] ->
    HmrOutput(rotmat f32[M,24,3,3], betas f32[M,10], cam_local f32[M,R,3]), numpy.
    M = 0 gives empty arrays of those shapes.
    """

    name: str
    num_rois: int
    device: str

    def __call__(self, batch: RoiBatch) -> HmrOutput: ...

    def close(self) -> None: ...


def box_extent_of(model_config: Any) -> str:
    """``ModelConfig.box_extent`` from a model config dict (or its JSON text, as an ONNX file's
    metadata holds it); "visible" when it is missing (models made before box_extent)."""
    if isinstance(model_config, str):
        try:
            model_config = json.loads(model_config)
        except ValueError:
            model_config = None
    value = model_config.get("box_extent") if isinstance(model_config, dict) else None
    return value if value in ("visible", "amodal") else "visible"


def check_batch(batch: RoiBatch, num_rois: int) -> None:
    """Raise ValueError unless the batch has the RoI count and shapes the backend expects."""
    crops, info = np.asarray(batch.crops), np.asarray(batch.box_info)
    if crops.ndim != 5 or crops.shape[1] != num_rois or crops.shape[2] != 3:
        raise ValueError(
            f"crops must be [M,{num_rois},3,256,192] for this {num_rois}-RoI model, got "
            f"{list(crops.shape)}; build the batch with num_rois={num_rois}"
        )
    if info.shape != (crops.shape[0], num_rois, 3):
        raise ValueError(f"box_info must be [M,{num_rois},3], got {list(info.shape)}")


def empty_output(num_rois: int) -> HmrOutput:
    """An HmrOutput for zero persons."""
    return HmrOutput(
        rotmat=np.zeros((0, 24, 3, 3), np.float32),
        betas=np.zeros((0, 10), np.float32),
        cam_local=np.zeros((0, num_rois, 3), np.float32),
    )
