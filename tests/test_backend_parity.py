"""ONE parity test: every backend available on this machine against torch on the same network
and inputs (onnxruntime always; TensorRT and torch-tensorrt when a GPU and the packages exist)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from export.onnx_export import OnnxExportConfig, export_onnx
from multiroi.backends import create_backend
from multiroi.model import ModelConfig, MultiRoINet
from multiroi.types import RoiBatch

R = 2
TOL = {"fp32": 1e-4, "fp16": 5e-2}


def _batch(persons: int) -> RoiBatch:
    rng = np.random.default_rng(5)
    crops = rng.standard_normal((persons, R, 3, 256, 192), dtype=np.float32)
    info = rng.uniform(-0.5, 0.5, (persons, R, 3)).astype(np.float32)
    return RoiBatch(crops, info, np.zeros((persons, R, 2), np.float32),
                    np.full((persons, R), 200.0, np.float32), 800.0, (640, 480))  # fmt: skip


def _candidates(net: MultiRoINet, tmp: Path) -> list[tuple[str, str, object]]:
    """(name, precision, backend) for every backend this machine can run."""
    onnx_path = export_onnx(net, tmp / "m.onnx", OnnxExportConfig(exporter="torchscript")).path
    out = [("onnxruntime", "fp32", create_backend(str(onnx_path), num_rois=R))]
    gpu = torch.cuda.is_available()
    if gpu and importlib.util.find_spec("tensorrt"):
        from export.tensorrt_build import TrtBuildConfig, build_engine
        from multiroi.backends.tensorrt_backend import TensorRTBackend

        for prec in ("fp32", "fp16"):
            cfg = TrtBuildConfig(precision=prec, persons_opt=2, persons_max=4, out_dir=str(tmp))
            out.append(("tensorrt", prec, TensorRTBackend(build_engine(onnx_path, cfg), R)))
    if gpu and importlib.util.find_spec("torch_tensorrt"):
        from export.tensorrt_build import TrtBuildConfig
        from export.torch_trt import compile_torch_trt
        from multiroi.backends.torch_trt_backend import TorchTRTBackend
        from multiroi.checkpoint import save_checkpoint

        ckpt = save_checkpoint(tmp / "m.pt", net, net.cfg, body_model_id="test")
        cfg = TrtBuildConfig(precision="fp32", persons_opt=2, persons_max=4)
        out.append(("torch-trt", "fp32", TorchTRTBackend(compile_torch_trt(ckpt, tmp, cfg), R)))
    return out


def test_every_available_backend_matches_torch(tmp_path: Path):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="test_resnet", num_rois=R, hidden=32, pe_levels=4,
                      contrastive=False)  # fmt: skip
    net = MultiRoINet(cfg).eval()
    ref_backend = create_backend("torch", net=net, num_rois=R)
    checked = []
    for name, precision, backend in _candidates(net, tmp_path):
        assert backend.num_rois == R
        for persons in (1, 3):
            batch = _batch(persons)
            got, want = backend(batch), ref_backend(batch)
            for field in ("rotmat", "betas", "cam_local"):
                a, b = getattr(got, field), getattr(want, field)
                assert a.shape == b.shape and a.dtype == np.float32, (name, field)
                diff = float(np.abs(a - b).max())
                assert diff <= TOL[precision], f"{name} {precision} {field}: {diff:.3g}"
        empty = backend(_batch(0))
        assert empty.rotmat.shape == (0, 24, 3, 3) and empty.cam_local.shape == (0, R, 3)
        checked.append(f"{name}-{precision}")
        backend.close()
    assert "onnxruntime-fp32" in checked
