"""The turn lifter: the body turned towards another torso (joint_ik.turn_towards), its place in
the network and config, and its training (python -m train.turn_lifter)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from test_train_lifter import RANGES

from multiroi.geometry.joint_ik import forward_kinematics, turn_towards
from multiroi.model.config import ModelConfig
from multiroi.model.lifter import BODY_LANDMARKS, LANDMARK_INPUTS, in_crop


def _pose(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    rot = Rotation.from_rotvec(rng.normal(0, 0.3, (n * 24, 3))).as_matrix().reshape(n, 24, 3, 3)
    return torch.as_tensor(rot, dtype=torch.float32)


def test_turn_towards_turns_only_the_root_by_the_weight(toy_body_model):
    rotmat = _pose(3)
    rest = toy_body_model.joint_template[None].expand(3, -1, -1).float()
    own = forward_kinematics(rotmat, rest)
    spin = torch.as_tensor(Rotation.from_rotvec([[0, 0.6, 0]] * 3).as_matrix(),
                           dtype=torch.float32)  # fmt: skip
    other = (spin @ (own - own[:, :1]).transpose(1, 2)).transpose(1, 2) + 5.0  # any translation
    same = turn_towards(rotmat, rest, own, 0.7)
    assert torch.allclose(same, rotmat, atol=1e-5)  # its own torso: nothing to do
    full = turn_towards(rotmat, rest, other, 1.0)
    assert torch.allclose(full[:, 1:], rotmat[:, 1:])
    assert torch.allclose(full[:, 0], spin @ rotmat[:, 0], atol=1e-4)
    half = turn_towards(rotmat, rest, other, 0.5)
    angle = Rotation.from_matrix((half[:, 0] @ rotmat[:, 0].transpose(1, 2)).numpy()).magnitude()
    assert np.all((angle > 0.2) & (angle < 0.4))  # part of the 0.6 rad


def test_the_turn_lifter_needs_the_lifted_joints_in_the_pose():
    ModelConfig(backbone="blazepose_full", lifter=True, lifter_ik=0.7, lifter_turn=0.75)
    for bad in ({"lifter_ik": 0.0}, {"lifter": False, "lifter_ik": 0.0}, {"lifter_turn": 1.5}):
        cfg = dict(backbone="blazepose_full", lifter=True, lifter_ik=0.7, lifter_turn=0.75)
        with pytest.raises(ValueError, match="lifter_turn"):
            ModelConfig(**(cfg | bad))
    assert "turn lifter (b 0.75)" in ModelConfig(
        backbone="blazepose_full", lifter=True, lifter_ik=0.7, lifter_turn=0.75).describe()


def _net(turn: float, toy_body_model):
    from multiroi.model.network import MultiRoINet, set_lifter_ik

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, lifter=True, dropout=0.0,
                      contrastive=False, lifter_ik=0.7, lifter_turn=turn)  # fmt: skip
    net = MultiRoINet(cfg, allow_random_init=True).eval()
    set_lifter_ik(net, 0.7, toy_body_model, replace_rest=True)
    with torch.no_grad():
        net.lifter.landmark_map.normal_(std=0.1)
    return net


def test_the_network_turns_its_body_by_the_turn_lifter(toy_body_model):
    from multiroi.model.network import set_lifter_turn

    net = _net(1.0, toy_body_model)
    with torch.no_grad():
        net.lifter.turn.out.bias.normal_(std=0.3)  # some torso to turn to
    feats, info = torch.randn(3, 2, 1464), torch.randn(3, 2, 3) * 0.3
    with torch.no_grad():
        turned = net(feats, info)
        set_lifter_turn(net, 0.0)
        plain = net(feats, info)
    assert torch.allclose(turned.rotmat[:, 1:], plain.rotmat[:, 1:], atol=1e-5)
    assert not torch.allclose(turned.rotmat[:, 0], plain.rotmat[:, 0], atol=1e-3)
    with pytest.raises(ValueError, match="turn lifter"):
        set_lifter_turn(_net(0.0, toy_body_model), 0.5)


def test_the_turn_lifter_learns_the_turn_the_box_tells(toy_body_model):
    """Pose-prior stand-ins seen along rays up to 30 degrees off the axis: the keypoint lifter
    cannot tell the ray, the turn lifter reads it from the box information."""
    from types import SimpleNamespace

    from multiroi.model.lifter import KeypointLifter
    from train.lifter import train_lifter
    from train.lifter_pairs import PairSampler
    from train.lifter_rendered import Rendered
    from train.turn_lifter import train_turn_lifter

    wide = RANGES | {"fov_deg": (70.0, 80.0), "rot_prob": 0.0}
    sampler = PairSampler(toy_body_model, wide, np.zeros((1, 2), np.float32),
                          np.full(1, 0.8, np.float32))  # fmt: skip
    n = 1200
    uv, j3, info = sampler.with_box_info(np.random.default_rng(5), n)
    seen = uv + np.random.default_rng(6).normal(0, 0.01, uv.shape).astype(np.float32)
    inputs = np.zeros((n, LANDMARK_INPUTS), np.float32)  # landmarks that show the 2D joints
    inputs[:, :48] = seen.reshape(n, -1)
    inputs[:, 2 * BODY_LANDMARKS : 3 * BODY_LANDMARKS] = 1.0
    inputs[:, -1] = 1.0
    rendered = Rendered(inputs, uv, j3, in_crop(torch.as_tensor(uv)).all(1).numpy(), None, info)
    torch.manual_seed(0)
    lifter = KeypointLifter(width=128, turn=True)
    plain = train_lifter(lifter, rendered, sampler, samples=6000, steps=600, batch=128,
                         lr=2e-3, seed=0, progress=False, rendered_share=0.5)  # fmt: skip
    assert plain["pa_mpjpe_all_mm"] < 0.7 * plain["pa_mpjpe_all_mean_pose_mm"]  # it lifts
    mapped = (inputs @ lifter.landmark_map.numpy()).reshape(n, 24, 2)
    scores = train_turn_lifter(SimpleNamespace(lifter=lifter), rendered, sampler,
                               samples=6000, steps=600, batch=128, lr=2e-3, seed=0,
                               rendered_share=0.5, progress=False, joints_2d=mapped)  # fmt: skip
    assert scores["turn_error_deg"] < 0.8 * scores["lifter_turn_error_deg"], scores


def test_the_command_refuses_bad_input_in_one_line(tmp_path, caplog):
    from multiroi.checkpoint import save_checkpoint
    from multiroi.model.network import MultiRoINet
    from train.turn_lifter import main

    out = tmp_path / "t.pt"
    assert main(["--cache", "x", "--init", "x.pt", "--out", str(out), "--weight", "0"]) == 2
    net = MultiRoINet(ModelConfig(backbone="test_resnet", num_rois=1, hidden=32, pe_levels=4))
    plain = save_checkpoint(tmp_path / "plain.pt", net, net.cfg, body_model_id="toy")
    assert main(["--cache", "x", "--init", str(plain), "--out", str(out)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 2 and "--weight" in errors[0] and "keypoint lifter" in errors[1]
    assert not out.exists()


def test_the_turn_is_in_the_onnx_graph(toy_body_model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from multiroi.backends.onnxruntime_backend import export_onnx_simple

    net = _net(1.0, toy_body_model)
    with torch.no_grad():
        net.lifter.turn.out.bias.normal_(std=0.3)
        crops, info = torch.rand(2, 2, 3, 256, 192), torch.randn(2, 2, 3) * 0.3
        want = net(crops, info).rotmat.numpy()
    path = export_onnx_simple(net, tmp_path / "t.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"crops": crops.numpy(), "box_info": info.numpy()})[0]
    assert np.allclose(got, want, atol=1e-4)
