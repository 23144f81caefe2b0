"""Lifted joints into the pose (multiroi.geometry.joint_ik, ModelConfig.lifter_ik)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multiroi.geometry.joint_ik import (
    SWUNG,
    align_rotation,
    blend_into_pose,
    forward_kinematics,
    nearest_rotation,
    swing_to_joints,
)
from multiroi.geometry.rotations import rot6d_to_rotmat
from multiroi.model.config import ModelConfig
from multiroi.model.network import MultiRoINet, set_lifter_ik


def _pose(n: int, seed: int, spread: float = 0.6) -> torch.Tensor:
    """f32[n,24,3,3]: random poses (6D noise around the identity)."""
    g = torch.Generator().manual_seed(seed)
    eye6 = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    return rot6d_to_rotmat(eye6 + spread * torch.randn(n, 24, 6, generator=g))


def _rest(body, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    betas = torch.randn(n, 10, generator=torch.Generator().manual_seed(seed))
    rest = body.joint_template + torch.einsum("bl,jkl->bjk", betas, body.joint_dirs)
    return rest.float(), betas


def test_forward_kinematics_gives_the_body_models_joints(toy_body_model):
    rot = _pose(4, 0)
    rest, betas = _rest(toy_body_model, 4, 1)
    joints = toy_body_model.joints(rot, betas)
    assert torch.allclose(forward_kinematics(rot, rest), joints - joints[:, :1], atol=1e-5)


def test_swinging_onto_another_poses_joints_reaches_them_and_keeps_a_pose_its_own(
    toy_body_model,
):
    rest, _ = _rest(toy_body_model, 6, 2)
    start, goal = _pose(6, 3), _pose(6, 4)
    target = forward_kinematics(goal, rest) + torch.tensor([0.3, -1.0, 4.0])  # any translation
    swung = swing_to_joints(start, rest, target)
    reached = forward_kinematics(swung, rest)
    assert torch.allclose(reached, target - target[:, :1], atol=1e-4)
    assert (forward_kinematics(start, rest) - reached).abs().max() > 0.1  # it did move
    # rotations stay rotations
    eye = torch.eye(3).expand_as(swung)
    assert torch.allclose(swung @ swung.transpose(-1, -2), eye, atol=1e-4)
    # the pose's own joints as targets leave it as it is, twists included
    assert torch.allclose(swing_to_joints(start, rest, forward_kinematics(start, rest)), start,
                          atol=1e-4)  # fmt: skip
    # leaves (feet, head, hands) keep their local rotation
    for leaf in (10, 11, 15, 22, 23):
        assert torch.allclose(swung[:, leaf], start[:, leaf], atol=1e-5)


def test_nearest_rotation_is_kabschs_answer_without_svd():
    g = torch.Generator().manual_seed(5)
    turn = rot6d_to_rotmat(torch.randn(200, 6, generator=g))
    src = torch.randn(200, 11, 3, generator=g)
    noise = 0.3 * torch.randn(200, 11, 3, generator=g)
    dst = (turn @ src.transpose(1, 2)).transpose(1, 2) + noise
    a, b = src - src.mean(1, keepdim=True), dst - dst.mean(1, keepdim=True)
    u, _, vt = torch.linalg.svd(b.transpose(1, 2) @ a)
    fix = torch.diag_embed(torch.stack([torch.ones(200), torch.ones(200),
                                        torch.det(u @ vt)], -1))  # fmt: skip
    assert torch.allclose(align_rotation(src, dst), u @ fix @ vt, atol=1e-4)
    assert torch.allclose(nearest_rotation(turn * 3.0), turn, atol=1e-5)


def test_blending_takes_the_estimates_articulation_not_its_orientation(toy_body_model):
    rest, _ = _rest(toy_body_model, 5, 6)
    start, goal = _pose(5, 7), _pose(5, 8)
    spin = rot6d_to_rotmat(torch.randn(5, 6, generator=torch.Generator().manual_seed(9)))
    estimate = (spin @ forward_kinematics(goal, rest).transpose(1, 2)).transpose(1, 2)
    full = forward_kinematics(blend_into_pose(start, rest, estimate, 1.0), rest)
    # the estimate's shape, on the starting pose's torso: equal after one rotation
    turn = align_rotation(estimate, full)
    back = (turn @ estimate.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(back, full, atol=1e-3)
    assert torch.allclose(blend_into_pose(start, rest, estimate, 0.0), start, atol=1e-4)
    half = forward_kinematics(blend_into_pose(start, rest, estimate, 0.5), rest)
    own = forward_kinematics(start, rest)
    assert 0.2 < ((half - own).norm(dim=-1).mean() / (full - own).norm(dim=-1).mean()) < 0.8


def test_the_estimates_orientation_and_position_are_not_taken(toy_body_model):
    """The pose's own joints, turned and moved anywhere, leave the pose as it is: only the
    estimate's articulation counts, not its orientation."""
    rest, _ = _rest(toy_body_model, 5, 11)
    start = _pose(5, 12)
    spin = rot6d_to_rotmat(torch.randn(5, 6, generator=torch.Generator().manual_seed(13)))
    moved = (spin @ forward_kinematics(start, rest).transpose(1, 2)).transpose(1, 2) + 2.0
    for weight in (0.5, 1.0):
        assert torch.allclose(blend_into_pose(start, rest, moved, weight), start, atol=1e-4)


def test_a_mirrored_or_degenerate_estimate_still_gives_rotations(toy_body_model):
    rest, _ = _rest(toy_body_model, 4, 14)
    start = _pose(4, 15, spread=0.3)
    mirrored = forward_kinematics(_pose(4, 16, spread=0.3), rest) * torch.tensor([-1.0, 1, 1])
    collapsed = torch.zeros(4, 24, 3)  # a lifter that outputs nothing
    for estimate in (mirrored, collapsed):
        out = blend_into_pose(start, rest, estimate, 1.0)
        assert torch.isfinite(out).all()
        assert torch.allclose(torch.linalg.det(out), torch.ones(4, 24), atol=1e-3)
    # nothing to point at: the pose stays
    assert torch.allclose(blend_into_pose(start, rest, collapsed, 1.0), start, atol=1e-4)


def test_the_swing_of_opposite_and_empty_directions():
    from multiroi.geometry.joint_ik import _swing

    v = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.3, -0.2, 0.9], [0.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, -2.0, 0.0], [-1.0, 1e-7, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    turn = _swing(v, t)
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    moved = (turn[:3] @ unit(v[:3])[..., None])[..., 0]
    assert torch.allclose(moved, unit(t[:3]), atol=1e-3)  # opposite ones too
    assert torch.allclose(torch.linalg.det(turn), torch.ones(4), atol=1e-4)
    assert torch.allclose(turn[3], torch.eye(3))  # a zero-length bone: no turn


def _lifter_net(**kw) -> MultiRoINet:
    torch.manual_seed(10)
    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, contrastive=False, lifter=True,
                      dropout=0.0, **kw)  # fmt: skip
    net = MultiRoINet(cfg).eval()
    net.lifter.landmark_map.normal_()
    torch.nn.init.normal_(net.mesh_decoder.residual_heads[0].weight, std=0.01)
    return net


def test_the_network_swings_its_pose_to_the_lifted_joints(toy_body_model, tmp_path):
    from multiroi.checkpoint import load_checkpoint, save_checkpoint

    net = _lifter_net()
    lifted = []
    net.lifter.register_forward_hook(lambda m, i, o: lifted.append(o))
    crops, info = torch.randn(2, 2, 3, 256, 192), torch.randn(2, 2, 3) * 0.3
    with torch.no_grad():
        plain = net(crops, info)
        with pytest.raises(ValueError, match="set_lifter_ik"):  # no rest joints yet
            net.cfg.lifter_ik = 1.0
            net(crops, info)
        net.cfg.lifter_ik = 0.0
        set_lifter_ik(net, 1.0, toy_body_model)
        swung = net(crops, info)
    assert "joints into the pose (w 1)" in net.cfg.describe()
    assert torch.allclose(swung.betas, plain.betas) and torch.allclose(swung.cam_local,
                                                                       plain.cam_local)
    assert torch.allclose(rot6d_to_rotmat(swung.pose6d.reshape(2, 24, 6)), swung.rotmat,
                          atol=1e-5)  # fmt: skip
    # the mesh's bones point along the lifted joints' bones (up to one rotation)
    def bones(j: torch.Tensor) -> torch.Tensor:
        kids = sorted(SWUNG)
        d = j[:, [SWUNG[k] for k in kids]] - j[:, kids]
        return d / d.norm(dim=-1, keepdim=True)

    est = bones(lifted[-1])

    def misfit(rotmat: torch.Tensor) -> float:
        mesh = bones(toy_body_model.joints(rotmat, swung.betas))
        turn = align_rotation(est, mesh)
        return float(((turn @ est.transpose(1, 2)).transpose(1, 2) - mesh).norm(dim=-1).max())

    assert misfit(swung.rotmat) < 1e-3 < 0.1 < misfit(plain.rotmat)
    # in float32 under autocast too (bf16 would move the joints by millimetres)
    args = (plain.rotmat, plain.betas, lifted[-1])
    with torch.no_grad():
        exact = net._lifted_into_pose(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(net._lifted_into_pose(*args), exact)
    # training sees the swung pose too, and its gradient reaches the mesh decoder
    net.train()
    out = net(crops, info)
    assert torch.allclose(out.rotmat, swung.rotmat, atol=1e-4)
    out.rotmat.sum().backward()
    grads = [p.grad for p in net.mesh_decoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    net.zero_grad()
    net.eval()
    # the rest joints travel in the checkpoint; turned off, they are gone
    path = save_checkpoint(tmp_path / "ik.pt", net, net.cfg,
                           body_model_id=toy_body_model.model_id)  # fmt: skip
    loaded, meta = load_checkpoint(path)
    assert meta.model_config.lifter_ik == 1.0
    with torch.no_grad():
        assert torch.allclose(loaded(crops, info).rotmat, swung.rotmat, atol=1e-5)
    # a network that holds rest joints keeps them unless told to replace them
    other = type("Body", (), {"joint_template": toy_body_model.joint_template + 1.0,
                              "joint_dirs": toy_body_model.joint_dirs})()  # fmt: skip
    set_lifter_ik(loaded, 0.5, other)
    assert loaded.cfg.lifter_ik == 0.5
    assert torch.allclose(loaded.ik_joint_template, toy_body_model.joint_template)
    set_lifter_ik(loaded, 0.5, other, replace_rest=True)
    assert torch.allclose(loaded.ik_joint_template, toy_body_model.joint_template + 1.0)
    set_lifter_ik(loaded, 0.0)
    assert "ik_joint_template" not in loaded.state_dict()
    with torch.no_grad():
        assert torch.allclose(loaded(crops, info).rotmat, plain.rotmat, atol=1e-5)


def test_lifter_ik_needs_the_lifter_and_a_weight_in_range():
    with pytest.raises(ValueError, match="lifter_ik"):
        ModelConfig(backbone="blazepose_full", lifter_ik=0.5)
    with pytest.raises(ValueError, match="lifter_ik"):
        ModelConfig(backbone="blazepose_full", lifter=True, lifter_ik=1.5)
    net = MultiRoINet(ModelConfig(num_rois=1, contrastive=False))
    with pytest.raises(ValueError, match="keypoint lifter"):
        set_lifter_ik(net, 0.5)
    with pytest.raises(ValueError, match="pass the body model"):
        set_lifter_ik(_lifter_net(), 0.5)


def test_eval_scores_the_lifted_pose(toy_body_model, toy_body_model_path, make_synth,
                                     tmp_path):  # fmt: skip
    """train.eval --lifter-ik changes the scored pose of a lifter network, not its camera."""
    from multiroi.checkpoint import save_checkpoint
    from train.eval import evaluate_checkpoint

    net = _lifter_net()
    path = save_checkpoint(tmp_path / "n.pt", net, net.cfg, body_model_id=toy_body_model.model_id)
    data = make_synth(2, 0, 2)
    kw = dict(body_model=str(toy_body_model_path), max_persons=4)
    off, _, _ = evaluate_checkpoint(path, data, lifter_ik=0.0, **kw)
    on, _, _ = evaluate_checkpoint(path, data, lifter_ik=1.0, **kw)
    assert on["pa_mpjpe"] != pytest.approx(off["pa_mpjpe"], abs=1e-3)
    assert on["depth_err"] == pytest.approx(off["depth_err"], abs=1e-6)
    assert np.isfinite(on["pve"])


def test_live_loop_lifter_ik_flag(toy_body_model, toy_body_model_path, tmp_path):
    """--lifter-ik W sets a PyTorch network's weight (rest joints from --body-model when the
    checkpoint has none); refused out of [0, 1] and for an export."""
    from multiroi.checkpoint import save_checkpoint
    from realtime import infer
    from realtime.config import build_arg_parser, config_from_args

    net = _lifter_net()
    path = save_checkpoint(tmp_path / "n.pt", net, net.cfg,
                           body_model_id=toy_body_model.model_id)  # fmt: skip

    def config(*extra: str):
        return config_from_args(build_arg_parser().parse_args(list(extra)))

    base = ("--checkpoint", str(path), "--backend", "torch", "--body-model",
            str(toy_body_model_path))  # fmt: skip
    stage = infer.build_inference_stage(config(*base, "--lifter-ik", "0.6"))
    assert stage.backend.net.cfg.lifter_ik == 0.6
    assert torch.allclose(stage.backend.net.ik_joint_template, toy_body_model.joint_template)
    assert infer.build_inference_stage(config(*base)).backend.net.cfg.lifter_ik == 0.0
    with pytest.raises(ValueError, match="--lifter-ik must be a weight"):
        config(*base, "--lifter-ik", "1.5")
    onnx = config("--checkpoint", str(tmp_path / "model.onnx"), "--lifter-ik", "0.5")
    with pytest.raises(ValueError, match="exported with"):
        infer.build_inference_stage(onnx)
