"""The TFLite-graph converter and the pretrained BlazePose backbone (multiroi.model.blazepose)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from multiroi.model import ModelConfig, MultiRoINet
from multiroi.model.backbone import build_backbone
from multiroi.model.blazepose import (
    FEATURE_TENSORS,
    NUM_FEATURES,
    BlazePoseBackbone,
    BlazePoseWeightsError,
    find_pose_landmark_tflite,
    load_spec,
)
from multiroi.model.network import set_lifter_ik
from multiroi.model.tflite_graph import GraphNet, TFLiteGraphError, read_tflite

REFERENCE = Path(__file__).parent / "data" / "blazepose_reference.npz"


def _conv_spec(padding: str, stride: int, groups: int = 1) -> dict:
    return {
        "input": "x",
        "input_shape": [4, 4, 2],
        "outputs": ["y"],
        "ops": [{
            "op": "conv", "inputs": ["x"], "output": "y", "groups": groups, "in_channels": 2,
            "out_channels": 2, "kernel": [3, 3], "stride": [stride, stride],
            "dilation": [1, 1], "padding": padding, "activation": "none",
        }],
    }  # fmt: skip


def _ones_net(spec: dict) -> GraphNet:
    net = GraphNet(spec)
    conv = net.convs["y"]
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    return net


def test_same_padding_puts_the_odd_pixel_after_like_tensorflow():
    """TF SAME, 3x3 stride 2 on 4x4: pad 0 before, 1 after (PyTorch's padding=1 would pad 1
    before), so output (0,0) sums rows and columns 0..2, output (1,1) rows and columns 2..3."""
    x = torch.arange(32, dtype=torch.float32).reshape(1, 2, 4, 4)
    y = _ones_net(_conv_spec("same", 2, groups=2))(x)[0]
    assert y.shape == (1, 2, 2, 2)
    for c in range(2):
        assert y[0, c, 0, 0] == x[0, c, 0:3, 0:3].sum()
        assert y[0, c, 1, 1] == x[0, c, 2:4, 2:4].sum()
        assert y[0, c, 0, 1] == x[0, c, 0:3, 2:4].sum()


def test_same_stride_one_keeps_the_size_and_valid_shrinks_it():
    x = torch.randn(1, 2, 4, 4)
    assert _ones_net(_conv_spec("same", 1))(x)[0].shape == (1, 2, 4, 4)
    y = _ones_net(_conv_spec("valid", 1))(x)[0]
    assert y.shape == (1, 2, 2, 2)
    assert torch.allclose(y[0, 0, 0, 0], x[0, :, 0:3, 0:3].sum())  # both input channels


def test_add_pad_pool_resize_and_relu6():
    spec = {
        "input": "x", "input_shape": [4, 4, 1], "outputs": ["a", "p", "m", "r"],
        "ops": [
            {"op": "add", "inputs": ["x", "x"], "output": "a", "activation": "relu6"},
            {"op": "pad", "inputs": ["x"], "output": "p", "pads": [1, 0, 0, 2]},
            {"op": "max_pool", "inputs": ["x"], "output": "m", "kernel": [2, 2],
             "stride": [2, 2], "padding": "valid", "activation": "none"},
            {"op": "resize", "inputs": ["x"], "output": "r", "size": [8, 8], "in_size": [4, 4],
             "align_corners": False},
        ],
    }  # fmt: skip
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) - 4
    a, p, m, r = GraphNet(spec)(x)
    assert torch.equal(a, (2 * x).clamp(0, 6))
    assert (
        p.shape == (1, 1, 5, 6)
        and p[0, 0, 0].abs().sum() == 0
        and p[0, 0, 1, :4].equal(x[0, 0, 0])
    )
    assert torch.equal(m[0, 0], torch.tensor([[1.0, 3.0], [9.0, 11.0]]))
    assert r.shape == (1, 1, 8, 8)
    # the same graph on a larger input scales the resize by the recorded factor
    assert GraphNet(spec)(torch.randn(1, 1, 6, 6))[3].shape == (1, 1, 12, 12)


def test_unknown_op_in_spec_is_refused():
    with pytest.raises(TFLiteGraphError, match="unsupported op"):
        GraphNet({"input": "x", "outputs": ["y"], "ops": [{"op": "softmax", "output": "y"}]})


def test_weights_of_the_wrong_shape_are_refused():
    net = GraphNet(_conv_spec("same", 1))
    with pytest.raises(TFLiteGraphError, match="expected"):
        net.load_tflite_weights({"y.weight": np.zeros((2, 2, 1, 1), np.float32)})


def test_not_a_tflite_file(tmp_path):
    pytest.importorskip("tflite")
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(TFLiteGraphError):
        read_tflite(bad, ["a"])


def test_shipped_spec_and_backbone_shapes():
    spec = load_spec()
    assert len(spec["outputs"]) == 3 and spec["input_shape"] == [256, 256, 3]
    bb = BlazePoseBackbone().eval()
    assert sum(p.numel() for p in bb.parameters()) > 3_000_000
    with torch.no_grad():
        f = bb(torch.randn(2, 3, 256, 192))
        g = bb(torch.randn(1, 3, 128, 128))  # square crops of another size are resized
    assert f.shape == (2, NUM_FEATURES) and g.shape == (1, NUM_FEATURES)
    assert torch.isfinite(f).all()


def test_build_backbone_refuses_downsampling_for_blazepose():
    with pytest.raises(ValueError, match="downsample 1"):
        build_backbone("blazepose_full", downsample=2)


def test_missing_weights_say_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("MULTIROI_BLAZEPOSE_TFLITE", str(tmp_path / "nope.tflite"))
    with pytest.raises(BlazePoseWeightsError, match="not a file"):
        find_pose_landmark_tflite(download=False)
    monkeypatch.delenv("MULTIROI_BLAZEPOSE_TFLITE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr("multiroi.model.blazepose._installed_mediapipe_file", lambda m: None)
    with pytest.raises(BlazePoseWeightsError, match="pip download mediapipe"):
        find_pose_landmark_tflite(download=False)
    # with allow_random_init the network is built, random
    bb = BlazePoseBackbone(pretrained=True, allow_random_init=True)
    assert bb.num_features == NUM_FEATURES


@pytest.mark.parametrize("lifter",
                         [False, True, "refined", "flip_test", "tail_flip", "ik", "tail251"])
def test_multiroi_net_with_blazepose_exports_to_onnx(tmp_path, lifter, toy_body_model):
    ort = pytest.importorskip("onnxruntime")
    from tests.test_onnx_parity import export_onnx

    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, contrastive=False,
                      lifter=bool(lifter), lifter_refine=lifter in ("refined", "flip_test"),
                      flip_test=lifter in ("flip_test", "tail_flip", "ik"),
                      lifter_tail=lifter in ("tail_flip", "ik", "tail251"),
                      lifter_tap="t251" if lifter == "tail251" else "t269")  # fmt: skip
    net = MultiRoINet(cfg)
    if lifter == "ik":  # the decoder's pose swung to the lifted joints (ModelConfig.lifter_ik)
        set_lifter_ik(net, 0.7, toy_body_model)
    if lifter:  # the landmarks reach the mesh through the lifter
        net.lifter.landmark_map.normal_()
    if cfg.lifter_tail:  # the lifter's own tail differs from the shared layers
        with torch.no_grad():
            net.backbone.lifter_tail.convs["t336"].bias.add_(10.0)
    if cfg.lifter_refine:  # and the rest of the feature through the refiner
        torch.nn.init.normal_(net.lifter.refiner.mlp[-1].weight, std=0.1)
    net.eval()
    export_onnx(net, tmp_path / "bp.onnx", (256, 192))
    sess = ort.InferenceSession(str(tmp_path / "bp.onnx"), providers=["CPUExecutionProvider"])
    crops, info = torch.randn(2, 2, 3, 256, 192), torch.randn(2, 2, 3) * 0.3
    outs = sess.run(None, {"crops": crops.numpy(), "box_info": info.numpy()})
    with torch.no_grad():
        ref = net(crops, info)
    assert np.allclose(outs[0], ref.rotmat.numpy(), atol=1e-4)


def _real_tflite() -> Path:
    pytest.importorskip("tflite")
    try:
        return find_pose_landmark_tflite(download=False)
    except BlazePoseWeightsError:
        pytest.skip("MediaPipe's pose_landmark_full.tflite is not here (make setup fetches it)")


def test_converted_blazepose_matches_the_tflite_interpreter():
    """Landmarks and world landmarks of the converted graph on a fixed random image equal the
    TensorFlow Lite interpreter's (recorded in tests/data with ai-edge-litert 2.3.0)."""
    path = _real_tflite()
    spec, weights = read_tflite(path, FEATURE_TENSORS)
    assert spec == {k: v for k, v in load_spec().items() if k != "source"}
    net = GraphNet(spec).eval()
    assert net.load_tflite_weights(weights) == 146
    x = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
    with torch.no_grad():
        _, landmarks, world = net(torch.from_numpy(x).permute(0, 3, 1, 2))
    ref = np.load(REFERENCE)
    assert np.abs(landmarks.reshape(-1).numpy() - ref["landmarks"]).max() < 0.01  # px of 256
    assert np.abs(world.reshape(-1).numpy() - ref["world"]).max() < 1e-4  # metres


def test_pretrained_backbone_differs_from_random_and_is_deterministic():
    _real_tflite()
    pre = BlazePoseBackbone(pretrained=True).eval()
    rnd = BlazePoseBackbone().eval()
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        a, b, c = pre(x), pre(x), rnd(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
