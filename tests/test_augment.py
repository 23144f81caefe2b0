"""Augmentation: exact ground truth under flip and rotation, shared by the RoIs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train import augment as aug
from train.augment import AugmentConfig, AugmentDraw


def _person(toy_body_model, rng):
    from multiroi.geometry.rotations import axis_angle_to_rotmat

    aa = rng.normal(0, 0.3, (24, 3))
    aa[0] = [np.pi, 0.3, 0.1]
    rot = axis_angle_to_rotmat(torch.as_tensor(aa, dtype=torch.float32))[None]
    betas = torch.zeros(1, 10)
    betas[0, :2] = torch.as_tensor(rng.normal(0, 1, 2))  # the toy's symmetric components
    transl = torch.tensor([[0.3, -0.2, 5.0]])
    out = toy_body_model(rot, betas, transl)
    return rot[0].numpy(), betas, transl[0].numpy(), out.joints[0].numpy()


@pytest.mark.parametrize("draw", [AugmentDraw(flip=True), AugmentDraw(rot_rad=0.4),
                                  AugmentDraw(flip=True, rot_rad=-0.3)])  # fmt: skip
def test_augmented_smpl_reproduces_augmented_joints(toy_body_model, draw):
    rot, betas, transl, joints = _person(toy_body_model, np.random.default_rng(0))
    new_rot, new_j, new_t = aug.augment_smpl(draw, rot, joints, transl)
    out = toy_body_model(torch.as_tensor(new_rot)[None], betas, torch.as_tensor(new_t)[None])
    # exact for a left/right symmetric body (flips assume one, as SPIN's do)
    assert np.abs(out.joints[0].numpy() - new_j).max() < 1e-4
    expected = joints @ aug.rotation_3d(draw).T
    if draw.flip:
        expected = expected[aug.FLIP_PERM]
    assert np.allclose(new_j, expected, atol=1e-5)


def test_image_transform_matches_projection():
    K = np.array([[300.0, 0, 200], [0, 300, 150], [0, 0, 1]])
    pts = np.random.default_rng(1).normal([0, 0, 5], [1, 1, 0.5], (20, 3))
    draw = AugmentDraw(flip=True, rot_rad=0.5)
    A = aug.image_transform(draw, 400, K[:2, 2])
    uv = pts[:, :2] / pts[:, 2:] * 300 + K[:2, 2]
    moved = pts @ aug.rotation_3d(draw).T
    K2 = K.copy()
    K2[:2, 2] = aug.transform_points_2d(A, K[:2, 2])
    uv2 = moved[:, :2] / moved[:, 2:] * 300 + K2[:2, 2]
    assert np.allclose(aug.transform_points_2d(A, uv), uv2, atol=1e-6)


def test_flip_permutation_swaps_sides():
    from multiroi.body.files import SMPL_JOINT_NAMES as N

    assert N[aug.FLIP_PERM[N.index("left_wrist")]] == "right_wrist"
    assert aug.FLIP_PERM[0] == 0 and sorted(aug.FLIP_PERM) == list(range(24))


def test_warp_rois_identity_equals_crop_rois():
    from multiroi.rois import crop_rois, normalize_crops

    img = (np.random.default_rng(2).random((120, 160, 3)) * 255).astype(np.uint8)
    centers = np.array([[80.0, 60.0], [70.0, 50.0]], np.float32)
    sizes = np.array([100.0, 80.0], np.float32)
    mine = normalize_crops(aug.warp_rois(img, np.eye(3), centers, sizes))
    ref = crop_rois(img, centers[None], sizes[None])[0]
    assert np.abs(mine - ref).max() < 1e-5


def test_draws_are_shared_and_vary():
    cfg = AugmentConfig()
    draws = [aug.sample_draw(np.random.default_rng(i), cfg) for i in range(40)]
    assert any(d.flip for d in draws) and not all(d.flip for d in draws)
    assert len({round(d.scale, 6) for d in draws}) > 30
    assert all(abs(np.degrees(d.rot_rad)) <= cfg.rot_deg + 1e-9 for d in draws)
    assert aug.sample_draw(np.random.default_rng(0), AugmentConfig(enabled=False)) == AugmentDraw()
