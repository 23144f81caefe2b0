"""Datasets: synthetic shards and the SPIN/CLIFF npz layout, items consistent with the camera."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from multiroi.geometry.cliff import project_points
from train.augment import AugmentConfig
from train.datasets import ResumableSampler, collate, open_dataset


@pytest.fixture(scope="module")
def synth_dir(make_synth):
    return make_synth(6, seed=4, shard_size=3)


def test_synth_items_project_consistently(synth_dir, toy_body_model):
    ds = open_dataset(str(synth_dir), 3, AugmentConfig(occlusion_prob=1.0), seed=1)
    assert len(ds) >= 3
    for key in range(4):
        it = ds[key]
        assert it["crops"].shape == (3, 3, 256, 192) and it["box_info"].shape == (3, 3)
        uv = project_points(torch.tensor(it["kp3d"][None, :, :3]), torch.tensor(it["K"]))[0]
        assert np.abs(uv.numpy() - it["kp2d"][:, :2]).max() < 1e-2
        out = toy_body_model(torch.tensor(it["rotmat"])[None], torch.tensor(it["betas"])[None],
                             torch.tensor(it["transl"])[None])  # fmt: skip
        # flips mirror the random (asymmetric) shape components: allow a couple of cm
        assert np.abs(out.joints[0].numpy() - it["kp3d"][:, :3]).max() < 0.03
    a, b = ds[7], ds[7]
    assert np.array_equal(a["crops"], b["crops"])  # the key fixes the augmentation
    assert not np.array_equal(ds[0]["crops"], ds[len(ds)]["crops"])  # next epoch: new draw


def test_collate_batch_shapes(synth_dir):
    ds = open_dataset(str(synth_dir), 2)
    batch = collate([ds[i] for i in range(3)])
    assert batch.crops.shape == (3, 2, 3, 256, 192) and batch.rotmat.shape == (3, 24, 3, 3)
    assert batch.has_smpl.tolist() == [1.0, 1.0, 1.0] and len(batch) == 3


def _write_npz(tmp_path, with_focal: bool):
    img = np.full((200, 300, 3), 90, np.uint8)
    cv2.rectangle(img, (130, 40), (170, 160), (50, 50, 200), -1)  # BGR: red
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), img)
    n = 2
    part = np.zeros((n, 24, 3), np.float32)
    part[:, 14] = [150, 100, 1]  # pelvis
    part[:, 0] = [140, 155, 1]  # right ankle
    S = np.zeros((n, 24, 4), np.float32)
    S[:, 14] = [0, 0, 5, 1]
    S[:, 5] = [0.1, 0.9, 5, 1]  # left ankle
    d = dict(imgname=np.array(["images/a.jpg"] * n), center=np.array([[150, 100]] * n, np.float32),
             scale=np.array([0.72, 0.72], np.float32), part=part, S=S,
             pose=np.zeros((n, 72), np.float32), shape=np.zeros((n, 10), np.float32),
             has_smpl=np.array([1, 0], np.float32), gender=np.array(["m", "f"]))  # fmt: skip
    if with_focal:
        d["focal_length"] = np.array([500.0, 500.0], np.float32)
    path = tmp_path / "tiny.npz"
    np.savez(path, **d)
    return path


@pytest.mark.parametrize("with_focal", [False, True])
def test_npz_layout(tmp_path, with_focal):
    path = _write_npz(tmp_path, with_focal)
    ds = open_dataset(str(path), 2)
    it = ds[0]
    f_expected = 500.0 if with_focal else np.hypot(300, 200)
    assert np.isclose(it["K"][0, 0], f_expected) and np.allclose(it["K"][:2, 2], [150, 100])
    assert np.allclose(it["sizes"], [144.0, 144.0 * 1.5])  # scale * 200, then r_k
    assert np.allclose(it["kp2d"][0], [150, 100, 1])  # SPIN pelvis -> SMPL joint 0
    assert np.allclose(it["kp2d"][8], [140, 155, 1])  # SPIN right ankle -> SMPL 8
    assert np.allclose(it["kp3d"][7], [0.1, 0.9, 5, 1])  # SPIN left ankle -> SMPL 7
    assert it["kp2d"][3, 2] == 0  # spine1 has no SPIN source
    assert it["has_smpl"] == 1 and ds[1]["has_smpl"] == 0 and it["has_transl"] == 0
    # the crop centre shows the red box of the image
    crop = it["crops"][0]
    assert crop[0, 128, 96] > 0.5 > crop[2, 128, 96]


def test_npz_missing_keys_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "bad.npz", imgname=np.array(["x.jpg"]))
    with pytest.raises(ValueError, match="missing keys"):
        open_dataset(str(tmp_path / "bad.npz"), 1)


def test_resumable_sampler_is_a_pure_function_of_step():
    full = ResumableSampler(10, 4, seed=3)
    it = iter(full)
    keys = [next(it) for _ in range(4 * 6)]
    later = iter(ResumableSampler(10, 4, seed=3, start_step=3))
    assert [next(later) for _ in range(12)] == keys[12:]
    epoch0 = sorted(k for k in keys[:10])
    assert epoch0 == list(range(10))  # an epoch visits every person once
    r0 = iter(ResumableSampler(10, 2, seed=3, rank=0, world=2))
    r1 = iter(ResumableSampler(10, 2, seed=3, rank=1, world=2))
    both = [next(r0), next(r0), next(r1), next(r1)]
    assert both == keys[:4]


def test_min_box_px_leaves_out_small_persons(synth_dir):
    from train.datasets import open_dataset

    every = open_dataset(str(synth_dir), 2)
    heights = np.array([r.box_size for r in every.records])  # base box sizes track the boxes
    tall = open_dataset(str(synth_dir), 2, min_box_px=float(np.median(heights)))
    assert 0 < len(tall) < len(every)


def test_amodal_boxes_hold_the_whole_body(synth_dir):
    """box_extent "amodal": the base box is around every projected vertex, so every joint lies
    in the crop window, cut by the image border or not; "visible" (method.md 1.1) is around
    the visible pixels only. The same persons either way (the filters use the visible box)."""
    from multiroi.rois import CROP_ASPECT_W_OVER_H
    from train.datasets import synth_records

    visible = synth_records(synth_dir)
    amodal = synth_records(synth_dir, box_extent="amodal")
    assert [r.image_path for r in visible] == [r.image_path for r in amodal]

    def outside(rec) -> bool:  # a joint outside the base crop window
        d = np.abs(rec.kp2d[:, :2] - rec.box_center) / rec.box_size
        return bool(((d[:, 0] > CROP_ASPECT_W_OVER_H / 2) | (d[:, 1] > 0.5)).any())

    assert not any(outside(r) for r in amodal)
    cut = [i for i, r in enumerate(visible) if outside(r)]
    assert cut, "the fixture should have a person cut by the border or hidden in part"
    for i in cut:
        assert amodal[i].box_size > visible[i].box_size
    with pytest.raises(ValueError, match="box_extent"):
        synth_records(synth_dir, box_extent="whole")
