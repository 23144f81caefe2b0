"""Synthetic data: renderer, pose prior, scenes, shards (tiny sizes, the toy body model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from train.pose_prior import ACTIVITIES, JOINT_LIMITS, sample_pose, within_limits
from train.scene import SceneConfig, SceneRenderer
from train.synth import generate


@pytest.mark.parametrize("activity", ACTIVITIES)
def test_pose_prior_within_limits_and_not_uniform(activity):
    rng = np.random.default_rng(0)
    poses = np.stack([sample_pose(rng, activity).body_pose for _ in range(50)])
    assert all(within_limits(p) for p in poses)
    span = JOINT_LIMITS[1:, :, 1] - JOINT_LIMITS[1:, :, 0]
    # uniform random angles would spread over the whole range: a prior does not
    assert np.median(poses[:, 1:].std(0) / np.maximum(span, 1e-9)) < 0.2


def test_pose_prior_activities_differ():
    rng = np.random.default_rng(1)
    knee = {a: np.mean([sample_pose(rng, a).body_pose[4, 0] for _ in range(30)])
            for a in ("standing", "sitting", "crouching")}  # fmt: skip
    assert knee["standing"] < 0.4 < knee["sitting"] < knee["crouching"]


@pytest.fixture(scope="module")
def renderer(toy_body_model):
    cfg = SceneConfig(width=160, height=128, num_people=(2, 3), occluder_prob=0.5)
    return SceneRenderer(toy_body_model, cfg)


def test_scene_ground_truth_is_consistent(renderer, toy_body_model):
    from multiroi.geometry.rotations import axis_angle_to_rotmat

    scene = renderer.render(np.random.default_rng(3))
    assert scene.image_rgb.shape == (128, 160, 3) and scene.image_rgb.dtype == np.uint8
    assert 2 <= len(scene.people) <= 3
    fov = np.degrees(2 * np.arctan(80 / scene.K[0, 0]))
    assert 40 <= fov <= 90
    for p in scene.people:
        rot = axis_angle_to_rotmat(torch.as_tensor(p.pose_aa))[None]
        out = toy_body_model(rot, torch.as_tensor(p.betas)[None], torch.as_tensor(p.transl)[None])
        assert np.allclose(out.joints[0].numpy(), p.joints3d, atol=2e-3)
        z = p.joints3d[:, 2:]
        uv = p.joints3d[:, :2] / z * scene.K[0, 0] + scene.K[:2, 2]
        assert np.allclose(uv, p.joints2d[:, :2], atol=1e-2)
        assert 1.0 < p.transl[2] + p.joints3d[0, 2] - p.transl[2] < 14.0


def test_scene_is_deterministic_and_varied(renderer):
    a = renderer.render(np.random.default_rng(5)).image_rgb
    b = renderer.render(np.random.default_rng(5)).image_rgb
    c = renderer.render(np.random.default_rng(6)).image_rgb
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_generate_shards_same_seed_same_data(tmp_path, toy_body_model_path):
    cfg = SceneConfig(width=96, height=96)
    m1 = generate(tmp_path / "a", 5, seed=2, cfg=cfg, body_model_path=str(toy_body_model_path),
                  workers=1, shard_size=2, progress=False)  # fmt: skip
    generate(tmp_path / "b", 5, seed=2, cfg=cfg, body_model_path=str(toy_body_model_path),
             workers=2, shard_size=3, progress=False)  # fmt: skip
    assert m1["num_shards"] == 3
    la = [np.load(p) for p in sorted((tmp_path / "a").glob("shard_*/labels.npz"))]
    lb = [np.load(p) for p in sorted((tmp_path / "b").glob("shard_*/labels.npz"))]
    pose_a = np.concatenate([z["pose"] for z in la])
    pose_b = np.concatenate([z["pose"] for z in lb])
    assert pose_a.shape[0] >= 5 and np.array_equal(pose_a, pose_b)
    assert len(list((tmp_path / "a").glob("shard_*/images/*.jpg"))) == 5


def _facing_z(toy_body_model, yaw_deg) -> np.ndarray:
    """Camera-frame z of the body's forward axis for upright persons of a few scenes."""
    from multiroi.geometry.rotations import axis_angle_to_rotmat

    cfg = SceneConfig(width=96, height=96, num_people=(3, 4), yaw_deg=yaw_deg, occluder_prob=0)
    renderer = SceneRenderer(toy_body_model, cfg)
    zs = []
    for seed in range(4):
        for p in renderer.render(np.random.default_rng(seed)).people:
            if p.activity != "lying":
                root = axis_angle_to_rotmat(torch.as_tensor(p.pose_aa[:1]))[0].numpy()
                zs.append(root[2, 2])  # body +z (forward) in camera coordinates, its z
    return np.array(zs)


def test_yaw_range_sets_which_way_people_face(toy_body_model):
    toward = _facing_z(toy_body_model, (-20.0, 20.0))
    away = _facing_z(toy_body_model, (160.0, 200.0))
    everywhere = _facing_z(toy_body_model, (0.0, 360.0))
    assert len(toward) >= 8 and len(away) >= 8
    assert (toward < -0.6).all()  # towards the camera (it looks along +z), tilt up to 30 deg
    assert (away > 0.6).all()
    assert everywhere.min() < -0.3 and everywhere.max() > 0.3


def test_scene_ranges_must_be_ordered(capsys):
    with pytest.raises(ValueError, match="--yaw-deg expects LO HI with LO <= HI"):
        SceneConfig(yaw_deg=(30.0, -30.0))
    from train.synth import main

    with pytest.raises(SystemExit):
        main(["--out", "unused", "--num", "1", "--distance-m", "5", "2"])
    assert "--distance-m expects LO HI" in capsys.readouterr().err
