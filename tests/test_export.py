"""ONNX export: the checked chain, the metadata, parity with PyTorch, and one clear error per bad
input (not our file, missing input, mismatched RoI count)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from export.__main__ import main as export_main
from export.metadata import ExportError, NotMultiRoiModelError, read_onnx_metadata
from export.onnx_export import OnnxExportConfig, dummy_inputs, export_onnx
from export.verify import verify_onnx
from multiroi.checkpoint import load_checkpoint, save_checkpoint
from multiroi.model import ModelConfig, MultiRoINet

R = 2


def tiny_net(num_rois: int = R, seed: int = 0) -> MultiRoINet:
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="test_resnet", num_rois=num_rois, hidden=32, pe_levels=4)
    return MultiRoINet(cfg).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    net = tiny_net()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_checkpoint(path, net, net.cfg, body_model_id="toy-body")


@pytest.fixture(scope="module")
def onnx_file(checkpoint: Path) -> Path:
    out = checkpoint.parent / "tiny.onnx"
    rc = export_main(["onnx", "--checkpoint", str(checkpoint), "--out", str(out)])
    assert rc == 0
    return out


def test_cli_export_is_self_describing_and_matches_torch(onnx_file: Path, checkpoint: Path):
    import onnx
    import onnxruntime as ort

    meta = read_onnx_metadata(onnx_file)
    assert (meta.num_rois, meta.backbone, meta.body_model_id) == (R, "test_resnet", "toy-body")
    assert meta.crop_hw == (256, 192) and meta.mean == (0.485, 0.456, 0.406)
    assert meta.std == (0.229, 0.224, 0.225) and meta.opset == 18
    assert meta.output_names == ("rotmat", "betas", "cam_local")
    model = onnx.load(str(onnx_file))
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}  # no custom ops
    assert "contrastive" not in str(model.graph.initializer[0].name)
    assert not any("proj_head" in i.name for i in model.graph.initializer)
    # An independent check at a person count the export never saw (P dynamic).
    net, _ = load_checkpoint(checkpoint)
    crops, info = dummy_inputs(R, 5, seed=7)
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = sess.run(
        ["rotmat", "betas", "cam_local"], {"crops": crops.numpy(), "box_info": info.numpy()}
    )
    with torch.inference_mode():
        ref = net(crops, info)
    assert got[0].shape == (5, 24, 3, 3) and got[2].shape == (5, R, 3)
    for a, b in zip(got, (ref.rotmat, ref.betas, ref.cam_local), strict=True):
        assert np.abs(a - b.numpy()).max() <= 1e-4
    # rotations stay rotations through the graph
    rtr = np.einsum("pjab,pjac->pjbc", got[0], got[0])
    assert np.abs(rtr - np.eye(3)).max() < 1e-4


def test_body_model_inside_graph(tmp_path: Path, toy_body_model_path: Path, toy_body_model):
    import onnxruntime as ort

    net = tiny_net()
    cfg = OnnxExportConfig(exporter="torchscript", with_body_model=True,
                           body_model=str(toy_body_model_path))  # fmt: skip
    res = export_onnx(net, tmp_path / "body.onnx", cfg)
    assert res.metadata.with_body_model and res.metadata.body_model_id == toy_body_model.model_id
    assert max(res.max_abs_diff.values()) <= 1e-4
    crops, info = dummy_inputs(R, 3, seed=3)
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    rotmat, betas, _, verts, joints = sess.run(None, {"crops": crops.numpy(),
                                                      "box_info": info.numpy()})  # fmt: skip
    body = toy_body_model(torch.from_numpy(rotmat), torch.from_numpy(betas))
    assert verts.shape == (3, toy_body_model.num_vertices, 3)
    assert np.abs(verts - body.vertices.numpy()).max() < 1e-4
    assert np.abs(joints - body.joints.numpy()).max() < 1e-4


def test_verification_fails_loudly_on_a_wrong_graph(onnx_file: Path, checkpoint: Path):
    net, _ = load_checkpoint(checkpoint)
    from export.onnx_export import InferenceGraph

    assert max(verify_onnx(onnx_file, InferenceGraph(net)).values()) <= 1e-4
    other = copy.deepcopy(net)
    with torch.no_grad():
        other.mesh_decoder.residual_heads[0].bias.add_(0.05)  # a different network
    with pytest.raises(ExportError, match="differs from PyTorch"):
        verify_onnx(onnx_file, InferenceGraph(other))


def test_not_our_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(NotMultiRoiModelError, match="not written by 'python -m export onnx'"):
        read_onnx_metadata(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(NotMultiRoiModelError, match="not a readable ONNX model"):
        read_onnx_metadata(tmp_path / "junk.onnx")
    # the trt command checks the file before it looks for a GPU
    assert export_main(["trt", "--onnx", str(path)]) == 2
    assert "no multiroi metadata" in capsys.readouterr().err


def test_missing_input_is_reported(onnx_file: Path, tmp_path: Path):
    import onnx

    model = onnx.load(str(onnx_file))
    keep = [i for i in model.graph.input if i.name != "box_info"]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    bad = tmp_path / "no_box_info.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(NotMultiRoiModelError, match="lacks the input 'box_info'"):
        read_onnx_metadata(bad)


def test_mismatched_roi_count(checkpoint: Path, onnx_file: Path, tmp_path: Path, capsys):
    rc = export_main(["onnx", "--checkpoint", str(checkpoint), "--rois", "3",
                      "--out", str(tmp_path / "x.onnx")])  # fmt: skip
    assert rc == 2 and "has 2 RoIs but --rois 3" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    import onnx

    model = onnx.load(str(onnx_file))
    for p in model.metadata_props:
        if p.key == "multiroi.num_rois":
            p.value = "3"  # metadata and graph disagree
    edited = tmp_path / "edited.onnx"
    onnx.save(model, str(edited))
    with pytest.raises(NotMultiRoiModelError, match="expected \\[None, 3, 3, 256, 192\\]"):
        read_onnx_metadata(edited)


@pytest.mark.slow
def test_dynamo_exporter(tmp_path: Path):
    res = export_onnx(tiny_net(), tmp_path / "d.onnx", OnnxExportConfig(exporter="dynamo"))
    assert read_onnx_metadata(res.path).num_rois == R
    assert max(res.max_abs_diff.values()) <= 1e-4
