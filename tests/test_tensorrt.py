"""TensorRT engines. The error paths that need no GPU run everywhere; the build/run tests carry
the ``gpu`` and ``trt`` markers and run on a GPU machine with ``pytest -m "gpu or trt"``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.onnx_export import OnnxExportConfig, export_onnx
from multiroi.backends.base import BackendError
from multiroi.backends.tensorrt_backend import (
    EngineCorruptedError,
    EngineMetadata,
    EngineMismatchError,
    TensorRTBackend,
    metadata_path,
    sha256_file,
)
from multiroi.model import ModelConfig, MultiRoINet
from multiroi.types import RoiBatch

HAS_GPU = torch.cuda.is_available()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not (HAS_GPU and HAS_TRT), reason="needs a CUDA GPU and TensorRT")


def _engine(path: Path, num_rois: int = 2, **overrides) -> Path:
    path.write_bytes(b"engine bytes " * 10)
    fields = dict(
        gpu_name="NVIDIA Test GPU",
        compute_capability="8.6",
        tensorrt_version="10.0.0",
        precision="fp16",
        num_rois=num_rois,
        persons_min=1,
        persons_opt=2,
        persons_max=4,
        sha256=sha256_file(path),
    )
    fields.update(overrides)
    EngineMetadata(**fields).write(path)
    return path


def test_corrupted_engine(tmp_path: Path):
    engine = _engine(tmp_path / "m.engine")
    with open(engine, "r+b") as fh:  # flip one byte
        fh.seek(3)
        fh.write(b"X")
    with pytest.raises(EngineCorruptedError, match="is corrupted"):
        TensorRTBackend(engine, num_rois=2)


def test_engine_without_metadata_or_with_foreign_metadata(tmp_path: Path):
    engine = _engine(tmp_path / "m.engine")
    metadata_path(engine).unlink()
    with pytest.raises(EngineCorruptedError, match="no metadata m.engine.json"):
        TensorRTBackend(engine, num_rois=2)
    metadata_path(engine).write_text(json.dumps({"producer": "someone else"}))
    with pytest.raises(EngineCorruptedError, match="damaged"):
        TensorRTBackend(engine, num_rois=2)


def test_engine_for_another_roi_count(tmp_path: Path):
    engine = _engine(tmp_path / "m.engine", num_rois=2)
    with pytest.raises(EngineMismatchError, match="built for 2 RoIs but 5 were asked"):
        TensorRTBackend(engine, num_rois=5)


def test_not_an_engine_file(tmp_path: Path):
    with pytest.raises(BackendError, match="needs an engine file"):
        TensorRTBackend(tmp_path / "model.onnx", num_rois=2)


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU error")
def test_tensorrt_without_gpu(tmp_path: Path):
    engine = _engine(tmp_path / "m.engine")
    with pytest.raises(BackendError, match="needs an NVIDIA GPU with CUDA"):
        TensorRTBackend(engine, num_rois=2)
    from export.tensorrt_build import build_engine

    onnx_path = export_onnx(
        _net(1), tmp_path / "m.onnx", OnnxExportConfig(exporter="torchscript", verify=False)
    ).path
    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        build_engine(onnx_path)


def test_engine_name():
    from export.tensorrt_build import TrtBuildConfig, engine_name, gpu_slug

    assert gpu_slug("NVIDIA GeForce RTX 4090") == "rtx4090"
    cfg = TrtBuildConfig(precision="int8", persons_min=1, persons_max=8, dla_core=0)
    assert engine_name(Path("a/m.onnx"), "Orin", cfg, 5) == "m_orin_int8_r5_p1-8_dla0.engine"
    with pytest.raises(ValueError, match="1 <= min <= opt <= max"):
        TrtBuildConfig(persons_min=4, persons_opt=2).validate()


# ---- on a GPU with TensorRT -------------------------------------------------------------


def _net(num_rois: int) -> MultiRoINet:
    torch.manual_seed(0)
    return MultiRoINet(
        ModelConfig(backbone="resnet18", num_rois=num_rois, hidden=256, contrastive=False)
    ).eval()


def _batch(num_rois: int, persons: int) -> RoiBatch:
    rng = np.random.default_rng(1)
    crops = rng.standard_normal((persons, num_rois, 3, 256, 192), dtype=np.float32)
    info = rng.uniform(-0.5, 0.5, (persons, num_rois, 3)).astype(np.float32)
    return RoiBatch(
        crops,
        info,
        np.zeros((persons, num_rois, 2), np.float32),
        np.full((persons, num_rois), 200.0, np.float32),
        800.0,
        (640, 480),
    )


@pytest.fixture(scope="module")
def gpu_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MultiRoINet]:
    net = _net(3)
    path = tmp_path_factory.mktemp("trt") / "m.onnx"
    return export_onnx(net, path, OnnxExportConfig(exporter="torchscript")).path, net


@pytest.mark.gpu
@pytest.mark.trt
@needs_trt
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 5e-2)])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_engine_parity(gpu_onnx, tmp_path: Path, precision: str, tol: float, cuda_graph: bool):
    from export.tensorrt_build import TrtBuildConfig, build_engine
    from multiroi.backends.torch_backend import TorchBackend

    onnx_path, net = gpu_onnx
    cfg = TrtBuildConfig(
        precision=precision,
        persons_min=1,
        persons_opt=2,
        persons_max=4,
        out_dir=str(tmp_path),
        timing_cache=str(tmp_path / "t.cache"),
    )
    engine = build_engine(onnx_path, cfg)
    assert engine.name.endswith(f"_{precision}_r3_p1-4.engine")
    assert (tmp_path / "t.cache").stat().st_size > 0
    backend = TensorRTBackend(engine, num_rois=3, cuda_graph=cuda_graph)
    ref = TorchBackend(net=net, device="cpu")
    for persons in (1, 3, 6):  # 6 > persons_max: run in chunks
        got, want = backend(_batch(3, persons)), ref(_batch(3, persons))
        assert got.rotmat.shape == (persons, 24, 3, 3)
        assert np.abs(got.rotmat - want.rotmat).max() < tol
        assert np.abs(got.cam_local - want.cam_local).max() < tol


@pytest.mark.gpu
@pytest.mark.trt
@needs_trt
def test_int8_calibration_cache_and_gpu_mismatch(gpu_onnx, tmp_path: Path):
    from export.tensorrt_build import TrtBuildConfig, build_engine

    onnx_path, _ = gpu_onnx
    cache = tmp_path / "calib.cache"
    cfg = TrtBuildConfig(
        precision="int8",
        persons_max=2,
        persons_opt=2,
        calib_batches=2,
        calib_persons=2,
        calib_cache=str(cache),
        out_dir=str(tmp_path),
    )
    engine = build_engine(onnx_path, cfg)
    assert cache.stat().st_size > 0
    assert TensorRTBackend(engine, num_rois=3)(_batch(3, 2)).betas.shape == (2, 10)
    meta = json.loads(metadata_path(engine).read_text())
    meta["gpu_name"] = "Some Other GPU"
    metadata_path(engine).write_text(json.dumps(meta))
    with pytest.raises(EngineMismatchError, match="rebuild it on this machine"):
        TensorRTBackend(engine, num_rois=3)
    meta["tensorrt_version"] = "0.0.1"
    metadata_path(engine).write_text(json.dumps(meta))
    with pytest.raises(EngineMismatchError, match="TensorRT 0.0.1"):
        TensorRTBackend(engine, num_rois=3)


@pytest.mark.gpu
@pytest.mark.trt
@needs_trt
def test_engine_parity_of_the_lifter_with_the_test_time_flip(tmp_path: Path):
    """The default model's kind of network (BlazePose, refined lifter) with --flip-test on: the
    mirror image is a reversed slice of the crops in the graph, which TensorRT must build too."""
    from export.tensorrt_build import TrtBuildConfig, build_engine
    from multiroi.backends.torch_backend import TorchBackend

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, contrastive=False, lifter=True,
                      lifter_refine=True, flip_test=True)  # fmt: skip
    net = MultiRoINet(cfg, allow_random_init=True)
    net.lifter.landmark_map.normal_()
    torch.nn.init.normal_(net.lifter.refiner.mlp[-1].weight, std=0.1)
    net.eval()
    onnx_path = export_onnx(net, tmp_path / "flip.onnx", OnnxExportConfig(
        exporter="torchscript", flip_test=True)).path  # fmt: skip
    engine = build_engine(onnx_path, TrtBuildConfig(precision="fp32", persons_max=4,
                                                    out_dir=str(tmp_path)))  # fmt: skip
    got = TensorRTBackend(engine, num_rois=2)(_batch(2, 3))
    want = TorchBackend(net=net, device="cpu")(_batch(2, 3))
    assert np.abs(got.rotmat - want.rotmat).max() < 1e-3
