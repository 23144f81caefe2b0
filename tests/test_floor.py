"""realtime.floor: the floor found under the people's feet, and the exports standing on it."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from realtime.floor import estimate_floor, world_frame
from realtime.motion import WorldFrame
from realtime.smoothing import so3_exp

HEIGHT_M, PITCH_DEG = 1.4, 8.0


def _standing_rows(body, n=160, seed=0, lifted=0, one_shape=False):
    """A recording of ``n`` upright people standing on a floor 1.4 m below a camera pitched
    down by 8 degrees (their lowest vertex on it), at 2.5-6 m; the first ``lifted`` rows are
    0.3 m above it (jumping); one_shape: all of one shape (one person)."""
    rng = np.random.default_rng(seed)
    tilt = so3_exp(np.array([np.deg2rad(PITCH_DEG), 0.0, 0.0]))  # level -> camera
    up_level = np.array([0.0, -1.0, 0.0])  # the level frame: y down, floor at y = HEIGHT_M
    rot = np.zeros((n, 24, 3, 3), np.float32)
    rot[:] = np.eye(3)
    transl = np.zeros((n, 3), np.float32)
    for i in range(n):
        yaw = so3_exp(np.array([0.0, rng.uniform(-np.pi, np.pi), 0.0]))
        root = tilt @ so3_exp(np.array([np.pi, 0.0, 0.0])) @ yaw  # upright, turned, tilted
        rot[i, 0] = root
        rot[i, 1:] = [so3_exp(rng.normal(0, 0.05, 3)) for _ in range(23)]
    betas = rng.normal(0, 0.5, (1 if one_shape else n, 10)).astype(np.float32)
    betas = np.repeat(betas, n, axis=0) if one_shape else betas
    with torch.no_grad():
        verts = body(torch.as_tensor(rot), torch.as_tensor(betas)).vertices.double().numpy()
    for i in range(n):
        level = verts[i] @ tilt  # camera -> level (tilt is orthonormal)
        drop = HEIGHT_M - (level @ -up_level).max() - (0.3 if i < lifted else 0.0)
        place = np.array([rng.uniform(-1.5, 1.5), drop, rng.uniform(2.5, 6.0)])
        transl[i] = tilt @ place
    boxes = np.tile(np.float32([200, 100, 300, 400]), (n, 1))  # feet in a 640x480 picture
    return {"rotmat": rot, "betas": betas, "transl_m": transl, "box_xyxy": boxes,
            "held": np.zeros(n, bool), "image_wh": np.array([640, 480])}  # fmt: skip


def test_the_floor_of_people_standing_on_it(toy_body_model):
    rec = _standing_rows(toy_body_model)
    floor = estimate_floor(rec, toy_body_model, (640, 480))
    assert floor.height_m == pytest.approx(HEIGHT_M, abs=1e-3)
    assert floor.pitch_deg == pytest.approx(PITCH_DEG, abs=0.05)
    assert floor.roll_deg == pytest.approx(0.0, abs=0.05)
    assert floor.inliers == floor.rows == 160 and floor.rms_m < 1e-3
    # in the floor's frame every person's lowest point is at y = 0, the camera at y = height
    world = floor.world()
    with torch.no_grad():
        v = toy_body_model(torch.as_tensor(rec["rotmat"]), torch.as_tensor(rec["betas"]),
                           torch.as_tensor(rec["transl_m"])).vertices.double().numpy()  # fmt: skip
    lowest = (v @ world.rotation.T + world.offset_m)[..., 1].min(1)
    np.testing.assert_allclose(lowest, 0.0, atol=1e-3)
    np.testing.assert_allclose(world.rotation @ world.rotation.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(world.rotation) == pytest.approx(1.0)
    assert (world.rotation @ [0, 0, 1.0])[2] < 0  # the camera looks down -z, as in glTF


def test_jumpers_and_cut_off_feet_are_left_out(toy_body_model):
    """A fifth of the rows 0.3 m in the air, and rows whose box reaches the image's bottom edge
    (their feet are a guess) placed wrongly, do not move the floor."""
    rec = _standing_rows(toy_body_model, n=200, seed=1, lifted=40)
    rec["box_xyxy"][-10:, 3] = 479.0
    rec["transl_m"][-10:] += np.float32([0, -0.5, 0])
    floor = estimate_floor(rec, toy_body_model, (640, 480))
    assert floor.rows == 190 and floor.inliers == 150
    assert floor.height_m == pytest.approx(HEIGHT_M, abs=1e-3)
    assert floor.pitch_deg == pytest.approx(PITCH_DEG, abs=0.05)


def test_no_floor_falls_back_to_the_camera_frame_with_a_reason(toy_body_model, caplog):
    rec = _standing_rows(toy_body_model, n=30)
    rec["box_xyxy"][:, 3] = 479.0  # a waist-up view: no feet in the picture
    with pytest.raises(ValueError, match="0 rows show a person's feet.*--floor camera"):
        estimate_floor(rec, toy_body_model, (640, 480))
    with caplog.at_level(logging.WARNING):
        world = world_frame(rec, toy_body_model, "auto")
    np.testing.assert_array_equal(world.rotation, WorldFrame.camera().rotation)
    assert "written in the camera's frame" in caplog.text
    scattered = _standing_rows(toy_body_model, n=160)
    scattered["transl_m"][:, 1] += np.random.default_rng(3).uniform(-1, 1, 160).astype(np.float32)
    with pytest.raises(ValueError, match="agree on a plane"):
        estimate_floor(scattered, toy_body_model, (640, 480))
    with pytest.raises(ValueError, match="auto or camera"):
        world_frame(rec, toy_body_model, "level")


def test_exports_stand_on_the_floor(tmp_path, toy_body_model):
    """The glTF of a recording of people standing on a tilted floor has their lowest vertices
    at y = 0 and its camera 1.4 m above the origin, pitched down 8 degrees; BVH roots agree."""
    import json

    from realtime.bvh import export_recording
    from realtime.gltf import export_glb
    from tests.test_gltf import _read_glb, _skinned

    rec = _standing_rows(toy_body_model, n=160, one_shape=True)
    n = len(rec["rotmat"])
    rec.update(frame_index=np.arange(n), track_id=np.zeros(n, np.int64),
               frames_index=np.arange(n), K=np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]]),
               meta_json=np.asarray(json.dumps({"fps": 10.0})))  # fmt: skip
    np.savez(tmp_path / "rec.npz", **rec)
    doc, read = _read_glb(export_glb(tmp_path / "rec.npz", body=toy_body_model))
    mesh = next(i for i, node in enumerate(doc["nodes"]) if "skin" in node)
    for frame in (0, 7, 29):
        v = _skinned(doc, read, mesh, frame / 10.0)
        assert v[:, 1].min() == pytest.approx(0.0, abs=2e-3)
    cam = next(node for node in doc["nodes"] if node.get("name") == "camera")
    np.testing.assert_allclose(cam["translation"], [0, HEIGHT_M, 0], atol=2e-3)
    from scipy.spatial.transform import Rotation

    view = Rotation.from_quat(cam["rotation"]).apply([0, 0, -1.0])
    assert np.degrees(np.arcsin(-view[1])) == pytest.approx(PITCH_DEG, abs=0.1)
    (bvh,) = export_recording(tmp_path / "rec.npz", body=toy_body_model)
    flat = export_recording(tmp_path / "rec.npz", tmp_path / "flat", body=toy_body_model,
                            floor="camera")[0]  # fmt: skip
    first_root = [np.array(p.read_text().split("MOTION")[1].split("\n")[3].split()[:3], float)
                  for p in (bvh, flat)]  # fmt: skip
    assert 0.7 < first_root[0][1] < 1.3  # the pelvis above the floor, at the toy's height
    assert abs(first_root[1][1] - first_root[0][1]) > 0.3  # in the camera's frame: elsewhere


def test_feet_on_one_spot_give_a_level_camera_at_their_height(toy_body_model):
    """One person standing still (their feet cover no area of the floor): a plane through them
    could lean any way, so the camera is taken as level and only its height is measured."""
    rec = _standing_rows(toy_body_model, n=160, seed=4)
    rec["transl_m"][:] = rec["transl_m"][0] + np.random.default_rng(0).normal(
        0, 0.01, (160, 3)).astype(np.float32)  # fmt: skip
    rec["rotmat"][:] = rec["rotmat"][0]
    rec["betas"][:] = rec["betas"][0]
    floor = estimate_floor(rec, toy_body_model, (640, 480))
    assert floor.level and floor.pitch_deg == 0.0 and floor.roll_deg == 0.0
    assert "taken as level" in floor.describe()
    with torch.no_grad():
        v = toy_body_model(torch.as_tensor(rec["rotmat"][:1]), torch.as_tensor(rec["betas"][:1]),
                           torch.as_tensor(rec["transl_m"][:1])).vertices[0].numpy()  # fmt: skip
    assert floor.height_m == pytest.approx(float(v[:, 1].max()), abs=0.03)
    world = floor.world()
    np.testing.assert_allclose(world.rotation, WorldFrame.camera().rotation, atol=1e-12)


def test_a_camera_looking_straight_down_has_a_world_frame():
    from realtime.floor import Floor

    world = Floor(np.array([0.0, 0.0, -1.0]), 3.0, 30, 30, 0.0).world()
    assert np.isfinite(world.rotation).all()
    np.testing.assert_allclose(world.rotation @ world.rotation.T, np.eye(3), atol=1e-12)


def test_the_live_floor_is_found_from_the_people_it_is_shown(toy_body_model):
    """LiveFloor fed the live loop's persons (feet in view) finds the floor once enough rows
    are in, leaves out held persons and those cut off by the bottom edge, and stops at
    max_rows."""
    from types import SimpleNamespace

    from realtime.floor import LiveFloor

    rec = _standing_rows(toy_body_model, n=80, seed=2)
    with torch.no_grad():
        verts = toy_body_model(torch.as_tensor(rec["rotmat"]), torch.as_tensor(rec["betas"]),
                               torch.as_tensor(rec["transl_m"])).vertices.numpy()  # fmt: skip
    live = LiveFloor(refit_rows=10, max_rows=60, min_rows=20)
    cut = SimpleNamespace(box_xyxy=np.float32([0, 100, 50, 479]), held=False, vertices_m=verts[0])
    held = SimpleNamespace(box_xyxy=np.float32([0, 100, 50, 300]), held=True, vertices_m=verts[0])
    for k in range(0, 80, 2):
        people = [SimpleNamespace(box_xyxy=rec["box_xyxy"][i], held=False, vertices_m=verts[i])
                  for i in (k, k + 1)] + [cut, held]  # fmt: skip
        live.add(people, (640, 480))
        if k == 16:
            assert live.world is None  # 18 rows: not yet
    assert len(live._feet) == 60 and live.floor is not None
    assert live.floor.height_m == pytest.approx(HEIGHT_M, abs=5e-3)
    assert live.floor.pitch_deg == pytest.approx(PITCH_DEG, abs=0.2)
