"""ExportWrapper -> ONNX (opset 17, dynamic P) -> onnxruntime CPU matches torch eval in fp32.

Uses the legacy TorchScript exporter (dynamo=False): it honours opset 17 exactly and exports in
well under a second; the dynamo exporter in torch 2.14 emits opset 18 (its down-conversion to 17
fails) and takes ~8 s.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from multiroi.model import ExportWrapper, ModelConfig, MultiRoINet

ort = pytest.importorskip("onnxruntime")

OPSET = 17
TOL = 1e-4


def export_onnx(net: MultiRoINet, path: Path, crop_hw: tuple[int, int]) -> onnx.ModelProto:
    wrapper = ExportWrapper(net.eval()).eval()
    r = net.cfg.num_rois
    example = (torch.randn(1, r, 3, *crop_hw), torch.randn(1, r, 3))
    dyn = {name: {0: "P"} for name in ExportWrapper.INPUT_NAMES + ExportWrapper.OUTPUT_NAMES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape checks
        torch.onnx.export(
            wrapper,
            example,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(ExportWrapper.INPUT_NAMES),
            output_names=list(ExportWrapper.OUTPUT_NAMES),
            dynamic_axes=dyn,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    return model


def check_graph(model: onnx.ModelProto, r: int) -> None:
    domains = {node.domain for node in model.graph.node}
    assert domains <= {"", "ai.onnx"}, f"custom op domains: {domains}"
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"SVD", "ATen", "PythonOp"}
    crops = model.graph.input[0].type.tensor_type.shape.dim
    assert crops[0].dim_param == "P" and crops[1].dim_value == r


def check_parity(net: MultiRoINet, path: Path, crop_hw: tuple[int, int], ps=(1, 3)) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    r = net.cfg.num_rois
    worst = 0.0
    for p in ps:
        g = torch.Generator().manual_seed(p)
        crops = torch.randn(p, r, 3, *crop_hw, generator=g)
        box_info = torch.randn(p, r, 3, generator=g) * 0.6
        with torch.no_grad():
            ref = ExportWrapper(net)(crops, box_info)
        outs = sess.run(None, {"crops": crops.numpy(), "box_info": box_info.numpy()})
        for name, got, want in zip(ExportWrapper.OUTPUT_NAMES, outs, ref, strict=True):
            assert got.shape == tuple(want.shape), name
            diff = float(np.abs(got - want.numpy()).max())
            assert diff <= TOL, f"{name} P={p}: max abs diff {diff:.2e} > {TOL}"
            worst = max(worst, diff)
    return worst


def _net(**kw) -> MultiRoINet:
    torch.manual_seed(0)
    net = MultiRoINet(ModelConfig(**kw)).eval()
    with torch.no_grad():  # larger residual heads so outputs move away from the mean
        for head in net.residual_heads:
            head.weight.normal_(std=0.02)
    return net


def _export_and_check(tmp_path: Path, net: MultiRoINet, crop_hw: tuple[int, int]) -> float:
    model = export_onnx(net, tmp_path / "m.onnx", crop_hw)
    check_graph(model, net.cfg.num_rois)
    return check_parity(net, tmp_path / "m.onnx", crop_hw)


def test_onnx_parity_resnet18(tmp_path):
    """5 RoIs, L = 32, the paper's relative PE (smaller crops keep the CPU test fast)."""
    net = _net(backbone="resnet18", num_rois=5)
    assert _export_and_check(tmp_path, net, (128, 96)) < TOL


@pytest.mark.slow
def test_onnx_parity_resnet18_full_size(tmp_path):
    """The deployed shape: 5 RoIs of 256x192."""
    net = _net(backbone="resnet18", num_rois=5)
    assert _export_and_check(tmp_path, net, (256, 192)) < TOL


@pytest.mark.parametrize(
    "kw",
    [dict(relative_mode="diff_pe", pe_levels=8), dict(fusion="raf_mlp", pe_levels=4)],
    ids=["raf-diff_pe", "raf_mlp"],
)
def test_onnx_parity_mobilenetv3(tmp_path, kw):
    net = _net(backbone="mobilenetv3_large_100", num_rois=3, hidden=256, **kw)
    assert _export_and_check(tmp_path, net, (96, 64)) < TOL
