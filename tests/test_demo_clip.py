"""Demo clip: GT boxes match the rendered people; GT goes through the body model; cache."""

import cv2
import numpy as np
import pytest
import torch

from multiroi.body import load_body_model
from multiroi.body.toy import make_toy_body_model
from realtime.demo import ensure_demo_clip, projected_boxes
from realtime.demo.background import room_background

SIZE = (160, 120)
FRAMES = 8


@pytest.fixture(scope="module")
def toy_model_path(tmp_path_factory):
    return make_toy_body_model(tmp_path_factory.mktemp("body") / "toy.npz")


@pytest.fixture(scope="module")
def clip(tmp_path_factory, toy_model_path):
    cache = tmp_path_factory.mktemp("cache")
    return ensure_demo_clip(cache, num_frames=FRAMES, size_wh=SIZE,
                            body_model_path=toy_model_path, shadows=False)  # fmt: skip


def _read_frames(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            return frames
        frames.append(img)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_video_and_gt_shapes(clip):
    frames = _read_frames(clip.video_path)
    assert len(frames) == FRAMES and frames[0].shape == (SIZE[1], SIZE[0], 3)
    gt = clip.load_gt()  # allow_pickle=False inside
    n, p = FRAMES, 3
    assert gt["box_xyxy"].shape == (n, p, 4) and gt["rotmat"].shape == (n, p, 24, 3, 3)
    assert gt["betas"].shape == (n, p, 10) and gt["transl"].shape == (n, p, 3)
    assert list(gt["track_ids"]) == [1, 2, 3] and tuple(gt["image_wh"]) == SIZE
    depths = gt["transl"][..., 2]
    assert depths.min() > 2.0 and depths.max() < 9.0  # 2.5-8 m, body origin near the pelvis
    assert len({tuple(np.round(b, 3)) for b in gt["betas"][0]}) == 3  # different shapes


def test_gt_boxes_match_rendered_silhouettes(clip):
    gt = clip.load_gt()
    background, _ = room_background(gt["K"], SIZE)
    frames = _read_frames(clip.video_path)
    checked = 0
    for i in range(0, FRAMES, 2):
        fg = np.abs(frames[i].astype(int) - background).max(-1) > 40
        boxes = gt["box_xyxy"][i]
        for j, box in enumerate(boxes):
            others = [_iou(box, b) for k, b in enumerate(boxes) if k != j]
            if max(others) > 0 or gt["in_frame_fraction"][i, j] < 0.5:
                continue  # overlapping people / mostly outside: silhouettes are not separable
            x1, y1 = np.floor(box[:2] - 3).astype(int).clip(0)
            x2, y2 = np.ceil(box[2:] + 3).astype(int)
            ys, xs = np.nonzero(fg[y1:y2, x1:x2])
            found = [x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1]
            assert _iou(found, box) > 0.8, (i, j, found, box)
            checked += 1
    assert checked >= 4, checked


def test_gt_parameters_reproduce_the_boxes(clip, toy_model_path):
    """rotmat/betas/transl go through the body model to the same meshes (camera frame)."""
    gt = clip.load_gt()
    model = load_body_model(toy_model_path)
    with torch.no_grad():
        out = model(torch.from_numpy(gt["rotmat"].reshape(-1, 24, 3, 3)),
                    torch.from_numpy(gt["betas"].reshape(-1, 10)),
                    torch.from_numpy(gt["transl"].reshape(-1, 3)))  # fmt: skip
    verts = out.vertices.numpy().reshape(FRAMES, 3, -1, 3)
    boxes, _ = projected_boxes(verts, gt["K"], SIZE)
    np.testing.assert_allclose(boxes, gt["box_xyxy"], atol=0.05)
    joints = out.joints.numpy().reshape(FRAMES, 3, 24, 3)
    np.testing.assert_allclose(joints, gt["joints"], atol=1e-4)


def test_cached_and_deterministic(clip, toy_model_path, tmp_path):
    mtime = clip.video_path.stat().st_mtime_ns
    again = ensure_demo_clip(clip.video_path.parent.parent, num_frames=FRAMES, size_wh=SIZE,
                             body_model_path=toy_model_path, shadows=False)  # fmt: skip
    assert again == clip and again.video_path.stat().st_mtime_ns == mtime
    assert not [p for p in clip.video_path.parent.parent.iterdir() if p.name.startswith(".")]
    other = ensure_demo_clip(tmp_path, num_frames=FRAMES, size_wh=SIZE,
                             body_model_path=toy_model_path, shadows=False)  # fmt: skip
    a, b = clip.load_gt(), other.load_gt()
    for key in ("box_xyxy", "rotmat", "transl", "betas"):
        np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ValueError, match="num_frames"):
        ensure_demo_clip(tmp_path, num_frames=0, body_model_path=toy_model_path)


def test_the_return_scenario_brings_the_walker_back(tmp_path, toy_model_path):
    """In ``demo:return`` the walker walks right, turns round at 6.2 s and walks back the way he
    came, facing the other way; the others move as in the default clip. An unknown scenario is
    refused in one line, before any work."""
    from realtime.demo.scene import pose_at, scene_scripts
    from realtime.sources import open_source

    default, back = scene_scripts("default"), scene_scripts("return")
    walker = back[0]
    x = [pose_at(walker, t)[1][0] for t in (0.0, 6.2, 8.0, 9.9)]
    assert x[0] < x[1] and x[1] > x[2] > x[3]
    assert pose_at(walker, 8.0)[1][0] == pytest.approx(pose_at(walker, 4.4)[1][0])
    r_out, r_back = pose_at(walker, 4.0)[0][0], pose_at(walker, 8.0)[0][0]
    assert np.trace(r_out.T @ r_back) < -0.5  # turned round (about 180 degrees)
    for a, b in zip(default[1:], back[1:], strict=True):
        np.testing.assert_allclose(pose_at(a, 7.0)[0], pose_at(b, 7.0)[0])
    with pytest.raises(ValueError, match="scenario must be one of"):
        ensure_demo_clip(tmp_path, num_frames=2, body_model_path=toy_model_path,
                         scenario="dance")  # fmt: skip

    class Spec:
        source, realtime = "demo:dance", False

    with pytest.raises(ValueError, match="scenario must be one of"):
        open_source(Spec())


def test_the_cross_scenario_has_two_walkers_crossing():
    from realtime.demo.scene import pose_at, scene_scripts

    first, _, second = scene_scripts("cross")
    assert second.style == "walk" and second.velocity_xz[0] < 0 < first.velocity_xz[0]
    gap = [pose_at(first, t)[1][0] - pose_at(second, t)[1][0] for t in (0.0, 2.4, 5.0)]
    assert gap[0] < -3 and abs(gap[1]) < 0.2 and gap[2] > 3  # they pass each other
    assert pose_at(second, 2.4)[1][2] - pose_at(first, 2.4)[1][2] == pytest.approx(0.4)
