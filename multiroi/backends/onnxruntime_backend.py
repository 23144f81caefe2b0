"""ONNX Runtime backend: an exported ``.onnx`` (inputs crops/box_info, outputs rotmat/betas/
cam_local, as ``multiroi.model.ExportWrapper`` defines) on CPU, or on the CUDA execution
provider with a CPU fallback. Without an ``.onnx`` file the network is built as the torch
backend builds it and exported to a temporary file first."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from multiroi.backends.base import BackendError, box_extent_of, check_batch, empty_output
from multiroi.types import HmrOutput, RoiBatch

logger = logging.getLogger(__name__)

INPUT_NAMES = ("crops", "box_info")
OUTPUT_NAMES = ("rotmat", "betas", "cam_local")
JOINTS_2D = "joints_2d"  # an optional output: the lifter's 2D joints (multiroi.geometry.fit2d)


def export_onnx_simple(net: Any, path: str | os.PathLike, opset: int = 17) -> Path:
    """Export ``ExportWrapper(net)`` to ``path`` with a dynamic person axis (a minimal export
    for running the network through onnxruntime; the export package does the checked one)."""
    import torch

    from multiroi.model import ExportWrapper

    wrapper = ExportWrapper(net).eval()
    r = int(net.cfg.num_rois)
    dummy = (torch.randn(2, r, 3, 256, 192), torch.randn(2, r, 3) * 0.1)
    names = wrapper.output_names
    axes = {n: {0: "persons"} for n in INPUT_NAMES + names}
    path = Path(path)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python-side shape checks
        torch.onnx.export(
            wrapper, dummy, str(path), input_names=list(INPUT_NAMES),
            output_names=list(names), dynamic_axes=axes, opset_version=opset,
            dynamo=False,
        )  # fmt: skip
    return path


def _providers(device: str) -> list[str]:
    """Execution providers for ``device``: "cpu", "cuda[:N]" (CUDA, then CPU) or "tensorrt"
    (onnxruntime's TensorRT provider, then CUDA, then CPU); missing ones fall back with a
    warning."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = {
        "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
        "cuda": ["CUDAExecutionProvider"],
    }.get(device.split(":")[0], [])
    chosen = [p for p in wanted if p in available]
    if wanted and chosen != wanted:
        logger.warning(
            "onnxruntime lacks %s here (has %s); falling back to %s",
            [p for p in wanted if p not in available], available, chosen + ["CPU"],
        )  # fmt: skip
    return chosen + ["CPUExecutionProvider"]


class OnnxRuntimeBackend:
    """``OnnxRuntimeBackend(checkpoint=None, num_rois=None, device="cpu", net=None,
    threads=None)``.

    checkpoint: an ``.onnx`` file, or a torch checkpoint / None (exported on the fly);
    threads: intra-op threads (None = onnxruntime's default).
    """

    name = "onnxruntime"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        num_rois: int | None = None,
        device: str = "cpu",
        *,
        net: Any = None,
        backbone: str | None = None,
        threads: int | None = None,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("the onnxruntime backend needs: pip install onnxruntime") from exc
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._net_body_model_id: str | None = None
        self._net_box_extent: str | None = None
        if net is not None:
            num_rois = int(net.cfg.num_rois)
        path = self._model_path(checkpoint, num_rois, net, backbone)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=_providers(device))
        except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail) are bare
            raise BackendError(f"{path} is not a readable ONNX model ({type(exc).__name__}: "
                               f"{str(exc).strip()[:200]}); export it again with python -m "
                               "export onnx") from exc  # fmt: skip
        used = self.session.get_providers()
        self.device = "cpu" if used == ["CPUExecutionProvider"] else device
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.body_model_id: str | None = (
            self.metadata.get("multiroi.body_model_id") or self._net_body_model_id
        )
        self.model_path = path
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.num_rois = self._read_num_rois(num_rois)
        self.box_extent = self._net_box_extent or box_extent_of(
            self.metadata.get("multiroi.model_config")
        )

    def _model_path(self, checkpoint: Any, num_rois: int | None, net: Any, backbone: Any) -> Path:
        if checkpoint is not None and Path(checkpoint).suffix.lower() == ".onnx":
            if not Path(checkpoint).is_file():
                raise BackendError(f"ONNX model not found: {checkpoint}")
            return Path(checkpoint)
        from multiroi.backends.torch_backend import load_network

        net = net if net is not None else load_network(checkpoint, num_rois, backbone)
        self._net_body_model_id = getattr(net, "body_model_id", None)
        self._net_box_extent = net.cfg.box_extent
        self._tmpdir = tempfile.TemporaryDirectory(prefix="multiroi-ort-")
        path = Path(self._tmpdir.name) / "model.onnx"
        logger.info("exporting the network to ONNX for onnxruntime (%s)", path)
        return export_onnx_simple(net.eval(), path)

    def _read_num_rois(self, asked: int | None) -> int:
        if len(self._inputs) < 2:
            raise BackendError(f"ONNX model must take (crops, box_info); inputs: {self._inputs}")
        dim = self.session.get_inputs()[0].shape[1]
        if not isinstance(dim, int) and "multiroi.num_rois" in self.metadata:
            dim = int(self.metadata["multiroi.num_rois"])  # written by `python -m export onnx`
        if isinstance(dim, int):
            if asked is not None and dim != asked:
                raise ValueError(
                    f"ONNX model {self.model_path.name} has {dim} RoIs but {asked} were asked "
                    f"for; pass --rois {dim}"
                )
            return dim
        return 5 if asked is None else asked  # R dynamic and not recorded

    def __call__(self, batch: RoiBatch) -> HmrOutput:
        check_batch(batch, self.num_rois)
        if len(batch) == 0:
            return empty_output(self.num_rois)
        feeds = {
            self._inputs[0]: np.ascontiguousarray(batch.crops, np.float32),
            self._inputs[1]: np.ascontiguousarray(batch.box_info, np.float32),
        }
        outs = dict(zip(self._outputs, self.session.run(None, feeds), strict=True))
        names = OUTPUT_NAMES if all(n in outs for n in OUTPUT_NAMES) else self._outputs[:3]
        rotmat, betas, cam = (np.asarray(outs[n], np.float32) for n in names)
        j2 = outs.get(JOINTS_2D)  # models exported with a lifter
        return HmrOutput(rotmat=rotmat, betas=betas, cam_local=cam,
                         joints_2d=None if j2 is None else np.asarray(j2, np.float32))

    def close(self) -> None:
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
