"""The keypoint lifter: its inputs, its place in the network and warm starts (its training:
test_train_lifter.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from multiroi.model.config import ModelConfig
from multiroi.model.lifter import (
    BODY_LANDMARKS,
    LANDMARK_INPUTS,
    LANDMARK_OFFSET,
    landmark_inputs,
)
from multiroi.model.network import MultiRoINet

D = 1464


def _features(landmarks: np.ndarray) -> torch.Tensor:
    """blazepose_full features f32[N,1464] whose landmark block is ``landmarks`` f32[N,39,5]."""
    f = np.random.default_rng(0).normal(size=(len(landmarks), D)).astype(np.float32)
    f[:, LANDMARK_OFFSET : LANDMARK_OFFSET + 195] = landmarks.reshape(len(landmarks), -1)
    return torch.from_numpy(f)


def test_landmark_inputs_are_box_heights_from_the_crop_centre_and_visibility():
    lm = np.zeros((1, 39, 5), np.float32)
    lm[0, :, 0], lm[0, :, 1], lm[0, :, 3] = 0.75, 0.25, np.linspace(0, 1, 39)
    x = landmark_inputs(_features(lm)).numpy()[0]
    assert x.shape == (LANDMARK_INPUTS,)
    xy = x[: 2 * BODY_LANDMARKS].reshape(-1, 2)
    assert np.allclose(xy, [0.25, -0.25])  # right of and above the centre
    assert np.allclose(x[2 * BODY_LANDMARKS : 3 * BODY_LANDMARKS], lm[0, :33, 3])
    assert x[-1] == 1.0


def test_the_lifter_needs_blazepose_features():
    with pytest.raises(ValueError, match="lifter"):
        ModelConfig(backbone="resnet18", lifter=True)


def test_the_lifter_size_is_part_of_the_config(tmp_path):
    from multiroi.checkpoint import load_checkpoint, save_checkpoint

    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, lifter=True, contrastive=False,
                      lifter_width=96, lifter_blocks=3)  # fmt: skip
    net = MultiRoINet(cfg, allow_random_init=True)
    assert net.lifter.inp.out_features == 96 and len(net.lifter.blocks) == 3
    assert "keypoint lifter (96 wide, 3 blocks)" in cfg.describe()
    assert "wide" not in ModelConfig(backbone="blazepose_full", lifter=True).describe()
    path = save_checkpoint(tmp_path / "n.pt", net, cfg, body_model_id="toy")
    again, _ = load_checkpoint(path)
    assert again.cfg.lifter_width == 96
    assert torch.equal(again.lifter.out.weight, net.lifter.out.weight)
    for bad in ({"lifter_width": 0}, {"lifter_width": 512.0}, {"lifter_blocks": -1}):
        with pytest.raises(ValueError, match=f"ModelConfig.{next(iter(bad))}"):
            ModelConfig(backbone="blazepose_full", lifter=True, **bad)


def _net(lifter: bool, seed: int = 0, refine: bool = False) -> MultiRoINet:
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, lifter=lifter, dropout=0.0,
                      contrastive=False, lifter_refine=refine)  # fmt: skip
    return MultiRoINet(cfg, allow_random_init=True).eval()


def test_the_mesh_decoder_reads_the_lifted_joints():
    net = _net(True)
    for p in net.mesh_decoder.dec_pose.parameters():
        torch.nn.init.normal_(p, std=0.1)
    feats, info = torch.randn(3, 2, D), torch.randn(3, 2, 3)
    with torch.no_grad():
        a = net(feats, info).rotmat
        net.lifter.out.bias.add_(1.0)  # other lifted joints, same features
        b = net(feats, info).rotmat
    assert a.shape == (3, 24, 3, 3)
    assert not torch.allclose(a, b)


def test_warm_start_widens_the_mesh_decoder_and_keeps_the_output(tmp_path):
    from multiroi.checkpoint import read_checkpoint_file, save_checkpoint
    from train.warm_start import warm_start

    src = _net(False, seed=1)
    for p in src.mesh_decoder.parameters():  # make the decoder's output depend on its weights
        torch.nn.init.normal_(p, std=0.05)
    path = save_checkpoint(tmp_path / "src.pt", src, src.cfg, body_model_id="toy")
    dst = _net(True, seed=2)
    warm_start(read_checkpoint_file(path), path, dst)
    fc1 = dst.mesh_decoder.trunk.fc1.weight
    assert torch.count_nonzero(fc1[:, -72:]) == 0
    feats, info = torch.randn(4, 2, D), torch.randn(4, 2, 3)
    with torch.no_grad():
        assert torch.allclose(src(feats, info).pose6d, dst(feats, info).pose6d, atol=1e-5)


def test_a_frozen_lifter_must_come_from_the_checkpoint(tmp_path):
    """A lifter that the checkpoint lacks would stay random: refused when frozen."""
    from multiroi.checkpoint import CheckpointError, read_checkpoint_file, save_checkpoint
    from train.warm_start import warm_start

    src = _net(False)
    path = save_checkpoint(tmp_path / "src.pt", src, src.cfg, body_model_id="toy")
    dst = _net(True)
    with pytest.raises(CheckpointError, match=r"cannot freeze lifter: lifter\.\w+"):
        warm_start(read_checkpoint_file(path), path, dst, frozen=("backbone", "lifter"))
    assert warm_start(read_checkpoint_file(path), path, dst, frozen=("backbone",)) > 0


def test_a_refined_lifter_is_not_frozen_into_a_network_without_the_refiner(tmp_path):
    """Dropping the checkpoint's 2D refiner would silently change the lifted joints."""
    from multiroi.checkpoint import CheckpointError, read_checkpoint_file, save_checkpoint
    from train.warm_start import warm_start

    src = _net(True, refine=True)
    path = save_checkpoint(tmp_path / "src.pt", src, src.cfg, body_model_id="toy")
    with pytest.raises(
        CheckpointError, match=r"cannot freeze lifter: .*lifter\.refiner\..* lacks"
    ):
        warm_start(read_checkpoint_file(path), path, _net(True), frozen=("backbone", "lifter"))
    assert warm_start(read_checkpoint_file(path), path, _net(True, refine=True),
                      frozen=("backbone", "lifter")) > 0  # fmt: skip


def test_a_fresh_refiner_changes_nothing_and_needs_the_lifter():
    net = _net(True, refine=True)
    lm = np.random.default_rng(2).random((3, 39, 5)).astype(np.float32)
    net.lifter.landmark_map.normal_()
    feats = _features(lm)
    with torch.no_grad():
        assert torch.allclose(net.lifter.joints_2d(feats), net.lifter.mapped_2d(feats))
        net.lifter.refiner.mlp[-1].bias.fill_(0.1)
        assert torch.allclose(net.lifter.joints_2d(feats), net.lifter.mapped_2d(feats) + 0.1)
    assert "keypoint lifter (2D refined)" in net.cfg.describe()
    with pytest.raises(ValueError, match="lifter_refine"):
        ModelConfig(backbone="blazepose_full", lifter=False, lifter_refine=True)


def test_the_trainer_refuses_to_freeze_a_lifter_it_cannot_load(tmp_path, caplog):
    from multiroi.checkpoint import save_checkpoint
    from train.__main__ import main

    src = _net(False)
    path = save_checkpoint(tmp_path / "src.pt", src, src.cfg, body_model_id="toy")
    argv = ["--run.init", str(path), "--model.backbone", "blazepose_full", "--model.num_rois", "2",
            "--model.lifter", "true", "--optim.freeze", "backbone,lifter", "--run.device", "cpu",
            "--run.out_dir", str(tmp_path / "run"), "--data.train", str(tmp_path / "none"),
            "--run.steps", "1"]  # fmt: skip
    assert main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].startswith("cannot freeze lifter:")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_feature_dropout_leaves_the_lifter_alone_in_training_only():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, lifter=True, dropout=0.0,
                      contrastive=False, feature_dropout=0.999)  # fmt: skip
    net = MultiRoINet(cfg, allow_random_init=True)
    for p in net.mesh_decoder.dec_pose.parameters():
        torch.nn.init.normal_(p, std=0.1)
    info = torch.randn(2, 2, 3)
    lm = np.random.default_rng(1).random((2, 39, 5)).astype(np.float32)
    a, b = _features(lm), _features(lm) + 1.0  # other image features, same landmarks
    b[:, LANDMARK_OFFSET : LANDMARK_OFFSET + 195] = a[:, LANDMARK_OFFSET : LANDMARK_OFFSET + 195]
    a, b = a[:, None].expand(2, 2, D), b[:, None].expand(2, 2, D)
    with torch.no_grad():
        net.train()
        assert torch.allclose(net(a, info).pose6d, net(b, info).pose6d)  # features dropped
        net.eval()
        assert not torch.allclose(net(a, info).pose6d, net(b, info).pose6d)
    with pytest.raises(ValueError, match="feature_dropout"):
        ModelConfig(backbone="blazepose_full", feature_dropout=1.0)


def test_feature_dropout_keeps_the_cameras():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, lifter=True, dropout=0.0,
                      contrastive=False, feature_dropout=0.999)  # fmt: skip
    net = MultiRoINet(cfg, allow_random_init=True).train()
    for p in net.camera_decoder.dec_cam.parameters():
        torch.nn.init.normal_(p, std=0.1)
    info = torch.randn(2, 2, 3)
    a = torch.randn(2, 2, D)
    with torch.no_grad():
        assert not torch.allclose(net(a, info).cam_local, net(a + 1.0, info).cam_local)


def test_mirror_2d_swaps_sides_negates_x_and_is_its_own_inverse():
    from multiroi.body.files import SMPL_JOINT_NAMES as N
    from multiroi.model.lifter import mirror_2d

    j = torch.randn(3, 24, 2)
    m = mirror_2d(j)
    lw, rw = N.index("left_wrist"), N.index("right_wrist")
    assert torch.equal(m[:, lw, 0], -j[:, rw, 0]) and torch.equal(m[:, lw, 1], j[:, rw, 1])
    assert torch.equal(mirror_2d(m), j)


def test_flip_test_lifts_the_mean_of_the_crop_and_its_mirror_image():
    from multiroi.model.lifter import mirror_2d

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, lifter=True, lifter_refine=True,
                      flip_test=True, dropout=0.0, contrastive=False)  # fmt: skip
    net = MultiRoINet(cfg, allow_random_init=True).eval()
    with torch.no_grad():  # a map and a refiner that make 2D joints (fresh ones make zeros)
        net.lifter.landmark_map.normal_(std=0.1)
        torch.nn.init.normal_(net.lifter.refiner.mlp[-1].weight, std=0.01)
    seen = []
    lift = net.lifter.lift
    net.lifter.lift = lambda joints: (seen.append(joints), lift(joints))[1]
    crops, info = torch.rand(2, 2, 3, 256, 192), torch.randn(2, 2, 3)
    with torch.no_grad():
        net(crops, info)
        net(torch.flip(crops, dims=[-1]), info)
        base, mirrored = net.backbone(crops[:, 0]), net.backbone(torch.flip(crops[:, 0], [-1]))
        mean = 0.5 * (net.lifter.joints_2d(base) + mirror_2d(net.lifter.joints_2d(mirrored)))
        net.cfg = dataclasses.replace(cfg, flip_test=False)
        net(crops, info)
    assert torch.allclose(seen[0], mean, atol=1e-5)
    assert torch.allclose(seen[1], mirror_2d(seen[0]), atol=1e-5)  # exact mirror symmetry
    assert torch.allclose(seen[2], net.lifter.joints_2d(base), atol=1e-5)
    assert not torch.allclose(seen[2], seen[0], atol=1e-3)


def test_flip_test_needs_the_lifter():
    with pytest.raises(ValueError, match="flip_test"):
        ModelConfig(backbone="blazepose_full", flip_test=True)


def test_live_loop_flip_test_flag(tmp_path):
    """--flip-test on/off sets a PyTorch network's flip; refused for a network without the
    lifter and for an export, which keeps the setting it was exported with."""
    from multiroi.model.network import set_flip_test
    from realtime import infer
    from realtime.config import build_arg_parser, config_from_args

    net = _net(True)
    set_flip_test(net, None)
    assert not net.cfg.flip_test
    set_flip_test(net, True)
    assert net.cfg.flip_test and "flip test" in net.cfg.describe()
    set_flip_test(net, False)
    assert not net.cfg.flip_test
    with pytest.raises(ValueError, match="keypoint lifter"):
        set_flip_test(_net(False), True)
    args = ["--checkpoint", str(tmp_path / "model.onnx"), "--flip-test", "on"]
    cfg = config_from_args(build_arg_parser().parse_args(args))
    assert cfg.inference.flip_test is True
    with pytest.raises(ValueError, match="exported with"):
        infer.build_inference_stage(cfg)
    assert config_from_args(build_arg_parser().parse_args([])).inference.flip_test is None


def test_export_flip_test_on_puts_the_mirrored_crop_in_the_graph(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from export.onnx_export import OnnxExportConfig, export_checkpoint
    from multiroi.checkpoint import save_checkpoint

    net = _net(True, refine=True)
    with torch.no_grad():
        net.lifter.landmark_map.normal_(std=0.1)
        torch.nn.init.normal_(net.lifter.refiner.mlp[-1].weight, std=0.01)
        torch.nn.init.normal_(net.mesh_decoder.trunk.fc1.weight, std=0.05)
    ckpt = save_checkpoint(tmp_path / "m.pt", net, net.cfg, body_model_id="toy")
    cfg = OnnxExportConfig(exporter="torchscript", flip_test=True)
    path = export_checkpoint(ckpt, tmp_path / "m.onnx", cfg).path
    crops, info = torch.rand(2, 2, 3, 256, 192), torch.randn(2, 2, 3) * 0.3
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pose = sess.run(None, {"crops": crops.numpy(), "box_info": info.numpy()})[0]
    with torch.no_grad():
        plain = net(crops, info).rotmat.numpy()
        net.cfg = dataclasses.replace(net.cfg, flip_test=True)
        flipped = net(crops, info).rotmat.numpy()
    assert np.allclose(pose, flipped, atol=1e-4) and not np.allclose(pose, plain, atol=1e-3)
