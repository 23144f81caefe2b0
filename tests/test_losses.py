"""Loss terms (multiroi.losses): camera consistency, SupCon, supervised terms, combine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from multiroi import losses
from multiroi.geometry import full_to_local, local_to_full, rot6d_to_rotmat
from multiroi.rois import base_boxes, roi_windows

FOCAL = 800.0
PRINCIPAL = (320.0, 240.0)


def _consistent_cameras(num_persons: int = 3, num_rois: int = 5, seed: int = 0):
    """Local cameras of RoI windows, all derived from ONE full translation per person."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(50, 400, num_persons)
    y1 = rng.uniform(20, 200, num_persons)
    boxes = np.stack([x1, y1, x1 + rng.uniform(40, 120, num_persons),
                      y1 + rng.uniform(120, 250, num_persons)], axis=1)  # fmt: skip
    centers, sizes = roi_windows(*base_boxes(boxes), num_rois)
    transl = torch.tensor(
        np.stack(
            [
                rng.uniform(-1, 1, num_persons),
                rng.uniform(-0.5, 0.5, num_persons),
                rng.uniform(3, 12, num_persons),
            ],
            axis=1,
        )  # fmt: skip
    )
    centers_t = torch.tensor(centers, dtype=torch.float64)
    sizes_t = torch.tensor(sizes, dtype=torch.float64)
    cam = full_to_local(transl[:, None, :], centers_t, sizes_t, FOCAL, PRINCIPAL)
    return cam, centers_t, sizes_t


def test_camera_consistency_zero_for_one_full_camera():
    cam, centers, sizes = _consistent_cameras()
    loss = losses.camera_consistency_loss(cam, centers, sizes, FOCAL, PRINCIPAL)
    assert loss.item() < 1e-8
    # per-person focal [P] and principal [P,2] broadcast the same way
    loss_pp = losses.camera_consistency_loss(
        cam, centers, sizes, torch.full((3,), FOCAL), torch.tensor([PRINCIPAL] * 3)
    )
    assert loss_pp.item() < 1e-8


def test_camera_consistency_grows_with_perturbation():
    cam, centers, sizes = _consistent_cameras(seed=1)
    direction = torch.zeros_like(cam)
    direction[:, 2] = torch.tensor([0.05, 0.02, -0.03])  # perturb RoI 2: scale and translation
    values = [
        losses.camera_consistency_loss(
            cam + eps * direction, centers, sizes, FOCAL, PRINCIPAL
        ).item()
        for eps in (0.0, 0.25, 0.5, 1.0, 2.0)
    ]
    assert values[0] < 1e-8
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values
    assert values[-1] > 1e-3


def test_camera_consistency_by_hand_two_rois():
    # RoI 0: b s = 100 -> T = (2 * 100 / 100, 0, 16); RoI 1: b s = 200 -> T = (2*100/200, 0, 8)
    cam = torch.tensor([[[0.5, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    centers = torch.tensor([[[420.0, 240.0], [420.0, 240.0]]], dtype=torch.float64)
    sizes = torch.tensor([[200.0, 200.0]], dtype=torch.float64)
    loss = losses.camera_consistency_loss(cam, centers, sizes, FOCAL, PRINCIPAL)
    expected = 0.1 * (2.0 - 1.0) ** 2 + 0.0001 * (100.0 - 200.0) ** 2
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    # one RoI: nothing to compare
    assert losses.camera_consistency_loss(cam[:, :1], centers[:, :1], sizes[:, :1], FOCAL,
                                          PRINCIPAL).item() == 0.0  # fmt: skip


def test_camera_consistency_gradients_flow():
    cam, centers, sizes = _consistent_cameras(seed=2)
    cam = (cam + 0.01 * torch.randn_like(cam)).requires_grad_(True)
    losses.camera_consistency_loss(cam, centers, sizes, FOCAL, PRINCIPAL).backward()
    assert torch.isfinite(cam.grad).all() and (cam.grad.abs().sum(dim=(0, 1)) > 0).all()
    # the gradient points downhill: a small step reduces the loss
    with torch.no_grad():
        before = losses.camera_consistency_loss(cam, centers, sizes, FOCAL, PRINCIPAL)
        after = losses.camera_consistency_loss(cam - 1e-3 * cam.grad, centers, sizes, FOCAL,
                                               PRINCIPAL)  # fmt: skip
    assert after < before
    # consistency is exactly the agreement of the full translations
    t = local_to_full(cam.detach(), centers, sizes, FOCAL, PRINCIPAL)
    assert (t[..., 2] > 0).all()


def _clustered_features(num_persons: int, num_rois: int, spread: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_persons, 1, 16, generator=g) * 3
    z = means + spread * torch.randn(num_persons, num_rois, 16, generator=g)
    labels = torch.arange(num_persons)[:, None].expand(num_persons, num_rois)
    return z.reshape(-1, 16), labels.reshape(-1)


def test_supcon_lower_for_separated_clusters():
    z, labels = _clustered_features(4, 5, spread=0.1, seed=0)
    good = losses.supcon_loss(z, labels)
    g = torch.Generator().manual_seed(1)
    shuffled = losses.supcon_loss(z, labels[torch.randperm(len(labels), generator=g)])
    assert good.item() < shuffled.item() - 0.5, (good.item(), shuffled.item())
    # lower bound: with n = 20 samples and 4 positives each, L >= log(19) - log(4) ... > 0
    assert good.item() >= math.log(4) - 1e-6  # -log(1/|P|) per positive at best with |P| = 4


def test_supcon_by_hand_and_edge_cases():
    # two orthogonal pairs: positives have cosine 1, negatives 0
    z = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    tau = 0.5
    expected = -(1 / tau - math.log(math.exp(1 / tau) + 2 * math.exp(0.0)))
    assert losses.supcon_loss(z, labels, temperature=tau).item() == pytest.approx(expected)
    # no anchor has a positive: exactly 0, graph intact
    zz = torch.randn(3, 4, requires_grad=True)
    out = losses.supcon_loss(zz, torch.tensor([0, 1, 2]))
    assert out.item() == 0.0
    out.backward()
    # an anchor without positives is left out of the mean
    z3 = torch.cat([z, torch.tensor([[1.0, 1.0]])])
    with_single = losses.supcon_loss(z3, torch.tensor([0, 0, 1, 1, 7]), temperature=tau)
    assert with_single.item() != pytest.approx(expected)  # it still acts as a negative
    with pytest.raises(ValueError):
        losses.supcon_loss(z, torch.tensor([0, 1]))


def test_supcon_gradients_flow():
    z, labels = _clustered_features(3, 5, spread=1.0, seed=2)
    z.requires_grad_(True)
    losses.supcon_loss(z, labels).backward()
    assert torch.isfinite(z.grad).all() and (z.grad.abs().sum(dim=1) > 0).all()


def _smpl_like(num_persons: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rotmat = rot6d_to_rotmat(torch.randn(num_persons, 24, 6, generator=g))
    betas = torch.randn(num_persons, 10, generator=g)
    joints = torch.randn(num_persons, 24, 3, generator=g)
    verts = torch.randn(num_persons, 50, 3, generator=g)
    return rotmat, betas, joints, verts


def test_keypoint2d_loss():
    g = torch.Generator().manual_seed(3)
    gt = torch.cat([torch.rand(2, 17, 2, generator=g) * 600, torch.ones(2, 17, 1)], dim=-1)
    sizes = torch.tensor([[200.0, 300.0, 250.0], [100.0, 150.0, 125.0]])
    pred = gt[:, None, :, :2].expand(2, 3, 17, 2).clone().requires_grad_(True)
    assert losses.keypoint2d_loss(pred, gt, sizes).item() == 0.0
    # a 10 px error on one joint of person 0 RoI 0 (b = 200): err = 2 * 10 / 200 = 0.1
    off = pred.detach().clone()
    off[0, 0, 3, 0] += 10.0
    expected = 0.1**2 / off.numel()
    assert losses.keypoint2d_loss(off, gt, sizes).item() == pytest.approx(expected, rel=1e-4)
    gt_noconf = gt.clone()
    gt_noconf[0, 3, 2] = 0.0  # confidence 0 hides the error
    assert losses.keypoint2d_loss(off, gt_noconf, sizes).item() == 0.0
    moved = pred + 5.0
    losses.keypoint2d_loss(moved, gt, sizes).backward()
    assert (pred.grad.abs() > 0).all()


def test_joints3d_loss_pelvis_centred():
    _, _, joints, _ = _smpl_like()
    gt = torch.cat([joints, torch.ones(2, 24, 1)], dim=-1)
    # a global translation is removed by pelvis centring
    assert losses.joints3d_loss(joints + torch.tensor([1.0, 2.0, 3.0]), gt).item() < 1e-12
    pred = joints.clone()
    pred[:, 5] += 0.1
    assert losses.joints3d_loss(pred, gt).item() == pytest.approx(0.01 * 2 * 3 / (2 * 24 * 3))
    gt_hidden = gt.clone()
    gt_hidden[:, 0, 3] = 0.0  # no pelvis: nothing to compare
    assert losses.joints3d_loss(pred, gt_hidden).item() == 0.0
    pred.requires_grad_(True)
    losses.joints3d_loss(pred * 1.1, gt).backward()
    assert pred.grad.abs().sum() > 0


def test_vertices_pose_betas_losses_masked():
    rotmat, betas, joints, verts = _smpl_like()
    has = torch.tensor([1.0, 0.0])
    shift = torch.tensor([0.3, -0.2, 1.0])
    pelvis = joints[:, 0]
    assert losses.vertices_loss(verts + shift, verts, has, pelvis + shift, pelvis).item() < 1e-7
    assert losses.vertices_loss(verts, verts, has).item() == 0.0
    assert losses.pose_loss(rotmat, rotmat, has).item() == 0.0
    assert losses.betas_loss(betas, betas, has).item() == 0.0
    other_r, other_b, _, other_v = _smpl_like(seed=1)
    assert losses.vertices_loss(other_v, verts, has).item() > 0.1
    assert losses.pose_loss(other_r, rotmat, has).item() > 0.01
    assert losses.betas_loss(other_b, betas, has).item() > 0.1
    # person 1 has no SMPL: its errors must not count
    mixed = verts.clone()
    mixed[1] += 5.0
    assert losses.vertices_loss(mixed, verts, has).item() == 0.0
    assert losses.vertices_loss(mixed, verts, torch.zeros(2)).item() == 0.0
    # L1: a 0.2 m offset on every coordinate of person 0 gives 0.2
    assert losses.vertices_loss(verts + 0.2, verts, has).item() == pytest.approx(0.2, rel=1e-5)
    cases = [
        (losses.vertices_loss, other_v, verts),
        (losses.pose_loss, other_r, rotmat),
        (losses.betas_loss, other_b, betas),
    ]
    for fn, pred, gt in cases:
        p = pred.clone().requires_grad_(True)
        fn(p, gt, has).backward()
        assert p.grad[0].abs().sum() > 0 and p.grad[1].abs().sum() == 0


def test_combine_weights_and_logging():
    w = losses.LossWeights()
    assert (w.kp2d, w.kp3d, w.verts, w.pose, w.betas, w.cc, w.con, w.scale) == (
        5.0, 5.0, 1.0, 1.0, 0.001, 1.0, 0.1, 60.0)  # fmt: skip
    assert w.kp3d_body == 0.0  # ours, not a paper term: off unless asked for
    a = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    total, log = losses.combine({"kp2d": a, "con": b}, w)
    assert total.item() == pytest.approx(60 * (5 * 2 + 0.1 * 3))
    assert log == {"kp2d": 2.0, "con": 3.0, "total": pytest.approx(618.0)}
    total.backward()
    assert a.grad.item() == pytest.approx(300.0) and b.grad.item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="unknown"):
        losses.combine({"kp_2d": a}, w)


def test_body_frame_joints_ignore_global_orientation_and_translation():
    from multiroi.geometry.rotations import axis_angle_to_rotmat
    from multiroi.losses import body_frame_joints_loss

    g = torch.Generator().manual_seed(3)
    body = torch.randn(4, 24, 3, generator=g) * 0.3
    r_pred = axis_angle_to_rotmat(torch.randn(4, 3, generator=g))
    r_gt = axis_angle_to_rotmat(torch.randn(4, 3, generator=g))
    pred = body @ r_pred.transpose(1, 2) + torch.randn(4, 1, 3, generator=g)
    gt = torch.cat([body @ r_gt.transpose(1, 2) + 2.0, torch.ones(4, 24, 1)], dim=-1)
    assert body_frame_joints_loss(pred, r_pred, gt, r_gt) < 1e-10
    # the camera-frame term does see the orientation difference
    assert losses.joints3d_loss(pred, gt) > 1e-3
    bent = body.clone()
    bent[:, 5] += 0.1  # one joint moved in the body frame: 0.01 m^2 on 1 of 24*3 numbers
    pred_bent = bent @ r_pred.transpose(1, 2)
    loss = body_frame_joints_loss(pred_bent, r_pred, gt, r_gt)
    assert torch.isclose(loss, torch.tensor(0.03 / 72), rtol=1e-4)
    gt[:, 5, 3] = 0.0  # a joint without confidence does not count
    assert body_frame_joints_loss(pred_bent, r_pred, gt, r_gt) < 1e-10
