"""Backend registry and the parity of every CPU backend on one light random network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multiroi.backends import (
    BackendError,
    available_backends,
    backend_for_path,
    create_backend,
    register_backend,
    resolve_backend_name,
)
from multiroi.model import ModelConfig, MultiRoINet
from multiroi.types import RoiBatch

LIGHT = dict(backbone="mobilenetv2_050", hidden=64, pe_levels=2, contrastive=False, dropout=0.0)


def light_net(num_rois: int = 3) -> MultiRoINet:
    torch.manual_seed(0)
    return MultiRoINet(ModelConfig(num_rois=num_rois, **LIGHT)).eval()


def random_batch(m: int, r: int, seed: int = 0) -> RoiBatch:
    rng = np.random.default_rng(seed)
    return RoiBatch(
        crops=rng.standard_normal((m, r, 3, 256, 192)).astype(np.float32),
        box_info=(0.3 * rng.standard_normal((m, r, 3))).astype(np.float32),
        centers=np.zeros((m, r, 2), np.float32),
        sizes=np.full((m, r), 200.0, np.float32),
        focal_px=800.0,
        image_wh=(640, 480),
    )


@pytest.fixture(scope="module")
def net3() -> MultiRoINet:
    return light_net(3)


def test_registry_by_name_and_suffix(tmp_path):
    names = available_backends()
    assert ".pt" in names["torch"] and ".onnx" in names["onnxruntime"]
    assert backend_for_path("x/model.ONNX") == "onnxruntime"
    assert backend_for_path("m.engine") == "tensorrt"
    assert backend_for_path("m.ts") == "torch-trt"
    assert backend_for_path("m.unknown") is None
    assert resolve_backend_name("auto", None) == "torch"
    assert resolve_backend_name("auto", "a.onnx") == "onnxruntime"
    assert resolve_backend_name("model.onnx", None) == "onnxruntime"
    with pytest.raises(BackendError, match="unknown backend 'tensorrtx'"):
        resolve_backend_name("tensorrtx", None)
    register_backend("fake", "tests.nowhere:Nothing", suffixes=(".fake",))
    assert backend_for_path("a.fake") == "fake"
    with pytest.raises(BackendError, match="not installed"):
        create_backend("fake")


def test_torch_backend_shapes_empty_and_wrong_rois(net3):
    be = create_backend("torch", net=net3)
    assert (be.name, be.num_rois, be.device) == ("torch", 3, "cpu")
    out = be(random_batch(2, 3))
    assert out.rotmat.shape == (2, 24, 3, 3) and out.betas.shape == (2, 10)
    assert out.cam_local.shape == (2, 3, 3) and out.rotmat.dtype == np.float32
    rtr = out.rotmat @ np.swapaxes(out.rotmat, -1, -2)
    assert np.allclose(rtr, np.eye(3), atol=1e-4)  # proper rotations
    empty = be(random_batch(0, 3))
    assert empty.rotmat.shape == (0, 24, 3, 3) and empty.cam_local.shape == (0, 3, 3)
    with pytest.raises(ValueError, match="3-RoI model"):
        be(random_batch(1, 5))


def test_torch_and_onnxruntime_agree(net3, tmp_path):
    batch = random_batch(3, 3, seed=1)
    ref = create_backend("torch", net=net3)(batch)
    ort_be = create_backend("onnxruntime", net=net3)
    try:
        got = ort_be(batch)
        assert ort_be.num_rois == 3 and ort_be.device == "cpu"
        for k in ("rotmat", "betas", "cam_local"):
            np.testing.assert_allclose(getattr(got, k), getattr(ref, k), atol=1e-4, rtol=1e-3)
        one = ort_be(random_batch(1, 3, seed=2))  # dynamic person axis
        assert one.rotmat.shape == (1, 24, 3, 3)
        # the exported file loads by suffix alone
        path = tmp_path / "m.onnx"
        path.write_bytes(ort_be.model_path.read_bytes())
        by_path = create_backend(str(path), num_rois=3)
        assert by_path.name == "onnxruntime"
        np.testing.assert_allclose(by_path(batch).betas, ref.betas, atol=1e-4, rtol=1e-3)
        with pytest.raises(ValueError, match="--rois 3"):
            create_backend(str(path), num_rois=5)
    finally:
        ort_be.close()


def test_torch_backend_from_checkpoint(net3, tmp_path):
    from multiroi.checkpoint import save_checkpoint

    ckpt = save_checkpoint(tmp_path / "m.pt", net3, net3.cfg, body_model_id="toy-v1")
    be = create_backend("auto", ckpt, num_rois=3)
    assert be.name == "torch"
    batch = random_batch(2, 3, seed=3)
    ref = create_backend("torch", net=net3)(batch)
    np.testing.assert_allclose(be(batch).cam_local, ref.cam_local, atol=1e-5)
    with pytest.raises(ValueError, match="--rois 3"):
        create_backend("torch", ckpt, num_rois=5)


def test_missing_onnx_file_and_cuda_without_gpu(tmp_path):
    with pytest.raises(BackendError, match="not found"):
        create_backend("onnxruntime", tmp_path / "none.onnx")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            create_backend("torch", net=light_net(1), device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_cuda_fp16_close_to_cpu(net3):
    batch = random_batch(2, 3, seed=4)
    ref = create_backend("torch", net=light_net(3))(batch)
    got = create_backend("torch", net=light_net(3), device="cuda")(batch)
    np.testing.assert_allclose(got.rotmat, ref.rotmat, atol=0.05)


def test_backends_report_the_body_model_the_network_was_trained_for(tmp_path):
    from multiroi.backends.onnxruntime_backend import OnnxRuntimeBackend
    from multiroi.backends.torch_backend import TorchBackend
    from multiroi.checkpoint import save_checkpoint
    from multiroi.model import ModelConfig, MultiRoINet

    cfg = ModelConfig(backbone="resnet18", num_rois=2, pe_levels=2, hidden=32, contrastive=False)
    ckpt = save_checkpoint(tmp_path / "m.pt", MultiRoINet(cfg), cfg, body_model_id="toy-v1")
    assert TorchBackend(ckpt, num_rois=2).body_model_id == "toy-v1"
    assert OnnxRuntimeBackend(ckpt, num_rois=2).body_model_id == "toy-v1"


def test_torch_bf16_on_cpu_stays_close_to_fp32():
    from multiroi.backends.torch_backend import TorchBackend

    batch = random_batch(2, 3, seed=4)
    ref = TorchBackend(net=light_net(), num_rois=3)(batch)
    bf16 = TorchBackend(net=light_net(), num_rois=3, bf16=True)
    assert bf16.precision == "bf16"
    out = bf16(batch)
    assert out.rotmat.dtype == np.float32
    np.testing.assert_allclose(out.rotmat, ref.rotmat, atol=0.05)
    np.testing.assert_allclose(out.cam_local, ref.cam_local, atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="CPU"):
        TorchBackend(net=light_net(), num_rois=3, device="cuda", bf16=True)


@pytest.mark.parametrize(
    "backend, precision, fast_bf16, device, expect",
    [
        ("auto", "auto", True, "cpu", ("torch", {"fp16": False, "bf16": True})),
        ("auto", "auto", False, "cpu", ("onnxruntime", {"threads": 1})),
        ("auto", "fp32", False, "cpu", ("onnxruntime", {"threads": 1})),
        ("torch", "auto", False, "cpu", ("torch", {"fp16": False, "bf16": False})),
        ("auto", "auto", False, "cuda", ("torch", {"fp16": True, "bf16": False})),
        ("onnxruntime", "auto", True, "cpu", ("onnxruntime", {"threads": 1})),
    ],
)
def test_live_loop_picks_the_fastest_cpu_backend(
    monkeypatch, backend, precision, fast_bf16, device, expect
):
    from realtime import infer
    from realtime.config import InferenceConfig

    monkeypatch.setattr("multiroi.backends.cpu.cpu_has_fast_bf16", lambda: fast_bf16)
    cfg = InferenceConfig(backend=backend, precision=precision, device=device, backbone="resnet18")
    extra = {"backbone": "resnet18", **expect[1]}
    assert infer.choose_backend(cfg, threads=1) == (expect[0], extra)


def test_auto_keeps_mobilenets_on_onnxruntime_and_reads_the_checkpoint_once(
    monkeypatch, tmp_path, toy_body_model_path
):
    """Depthwise convolutions run slower in bf16 than in onnxruntime fp32; the checkpoint is
    loaded once and handed to the chosen backend."""
    import multiroi.checkpoint as ck
    from multiroi.checkpoint import save_checkpoint
    from realtime import infer
    from realtime.config import InferenceConfig, build_arg_parser, config_from_args

    monkeypatch.setattr("multiroi.backends.cpu.cpu_has_fast_bf16", lambda: True)
    net = light_net()  # a MobileNetV2 backbone
    ckpt = save_checkpoint(tmp_path / "m.pt", net, net.cfg, body_model_id="toy-v1")
    loads = []
    real_load = ck.load_checkpoint
    monkeypatch.setattr(
        ck, "load_checkpoint", lambda *a, **k: loads.append(a) or real_load(*a, **k)
    )
    cfg = config_from_args(build_arg_parser().parse_args(
        ["--checkpoint", str(ckpt), "--rois", "3", "--body-model", str(toy_body_model_path)]
    ))  # fmt: skip
    stage = infer.build_inference_stage(cfg)
    assert stage.backend.name == "onnxruntime" and len(loads) == 1
    assert infer.choose_backend(InferenceConfig(), 1)[0] == "onnxruntime"  # random MobileNetV3
    resnet = infer.choose_backend(InferenceConfig(), 1, backbone="resnet18")
    assert resnet == ("torch", {"fp16": False, "bf16": True})


@pytest.mark.parametrize(
    "backend, precision, device",
    [("torch", "fp16", "cpu"), ("torch", "bf16", "cuda"), ("onnxruntime", "bf16", "cpu"),
     ("model.engine", "fp16", "cuda")],
)  # fmt: skip
def test_live_loop_rejects_a_precision_the_backend_lacks(backend, precision, device):
    from realtime import infer
    from realtime.config import InferenceConfig

    cfg = InferenceConfig(backend=backend, precision=precision, device=device)
    with pytest.raises(ValueError, match="--precision"):
        infer.choose_backend(cfg, threads=1)
    with pytest.raises(ValueError, match="--precision"):
        InferenceConfig(precision="int4")


def test_backends_report_the_boxes_the_network_was_trained_on(tmp_path):
    """ModelConfig.box_extent reaches the live loop's detector through every backend: torch,
    onnxruntime from a checkpoint and from an exported file (its metadata); "visible" for
    models made before it."""
    import onnx

    from export.metadata import ExportMetadata, write_onnx_metadata
    from multiroi.backends.base import box_extent_of
    from multiroi.backends.onnxruntime_backend import OnnxRuntimeBackend
    from multiroi.backends.torch_backend import TorchBackend
    from multiroi.checkpoint import save_checkpoint

    cfg = ModelConfig(num_rois=1, box_extent="amodal", **LIGHT)
    net = MultiRoINet(cfg).eval()
    ckpt = save_checkpoint(tmp_path / "m.pt", net, cfg, body_model_id="toy-v1")
    assert TorchBackend(ckpt).box_extent == "amodal"
    from_ckpt = OnnxRuntimeBackend(ckpt)
    assert from_ckpt.box_extent == "amodal"
    model = onnx.load(str(from_ckpt.model_path))  # as python -m export onnx writes it
    write_onnx_metadata(model, ExportMetadata(1, cfg.backbone, "toy-v1", "0", 17,
                                              model_config=cfg.to_dict()))  # fmt: skip
    onnx.save(model, str(tmp_path / "m.onnx"))
    assert OnnxRuntimeBackend(str(tmp_path / "m.onnx")).box_extent == "amodal"
    assert TorchBackend(net=light_net(1)).box_extent == "visible"
    assert box_extent_of(None) == box_extent_of({"num_rois": 5}) == "visible"
    assert box_extent_of('{"box_extent": "amodal"}') == "amodal"
