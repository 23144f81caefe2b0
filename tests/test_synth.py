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
