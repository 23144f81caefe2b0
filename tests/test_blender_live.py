"""realtime.blender_live's math (no Blender here): the rest skeleton recovered from a streamed
person, and pose bases that put every bone head on the streamed joints when composed as
Blender composes pose bones."""

from __future__ import annotations

import json
import socket

import numpy as np
import torch

from multiroi.types import PersonState
from realtime.blender_live import (
    BODY_TO_BLENDER,
    CAM_TO_BLENDER,
    Receiver,
    axis_angle_to_rotmat,
    bone_tails,
    compose,
    pose_bases,
    rest_joints,
)
from realtime.stream import message


def _streamed(toy_body_model, seed: int = 0) -> tuple[dict, np.ndarray]:
    """A person as realtime.stream sends it, and the body model's rest joints (body axes)."""
    import cv2

    rng = np.random.default_rng(seed)
    aa = rng.normal(0, 0.4, (24, 3))
    aa[0] = [np.pi * 0.9, 0.3, 0.1]
    rot = np.stack([cv2.Rodrigues(v)[0] for v in aa]).astype(np.float32)
    betas = rng.normal(0, 1, 10).astype(np.float32)
    transl = np.float32([0.4, -0.2, 3.5])
    with torch.no_grad():
        joints = toy_body_model.joints(torch.from_numpy(rot[None]), torch.from_numpy(betas[None]),
                                       torch.from_numpy(transl[None]))[0].numpy()  # fmt: skip
        rest = toy_body_model.joints(torch.eye(3).expand(1, 24, 3, 3).contiguous(),
                                     torch.from_numpy(betas[None]))[0].numpy()  # fmt: skip
    person = PersonState(5, np.float32([0, 0, 10, 10]), rot, betas, transl, None, joints)
    msg = json.loads(message(0, 0.0, (640, 480), None, [person]))
    return msg["persons"][0], rest.astype(np.float64)


def _random_rotations(n: int, seed: int) -> np.ndarray:
    return axis_angle_to_rotmat(np.random.default_rng(seed).normal(0, 1.0, (n, 3)))


def test_the_rest_skeleton_is_recovered_from_a_streamed_person(toy_body_model):
    person, rest = _streamed(toy_body_model)
    np.testing.assert_allclose(rest_joints(person), rest - rest[0], atol=2e-4)  # 5-digit JSON
    import cv2

    for v in np.random.default_rng(1).normal(0, 1, (5, 3)):
        np.testing.assert_allclose(axis_angle_to_rotmat(v), cv2.Rodrigues(v)[0], atol=1e-12)


def test_posed_bone_heads_land_on_the_streamed_joints(toy_body_model):
    """Whatever rest frames Blender gives the bones (random here), composing the bases as
    Blender does puts each bone head on its joint in Blender axes, and each bone's rotation is
    the joint's world rotation carried from the rest frame."""
    for seed in range(3):
        person, _ = _streamed(toy_body_model, seed)
        heads = rest_joints(person) @ BODY_TO_BLENDER.T
        rest = np.tile(np.eye(4), (24, 1, 1))
        rest[:, :3, :3] = _random_rotations(24, seed + 10)
        rest[:, :3, 3] = heads
        bases = pose_bases(person, rest[:, :3, :3], rest[0, :3, 3])
        posed = compose(bases, rest)
        want = np.reshape(person["joints_m"], (24, 3)) @ CAM_TO_BLENDER.T
        np.testing.assert_allclose(posed[:, :3, 3], want, atol=3e-4)
        assert np.allclose(bases[1:, :3, 3], 0)  # only the root moves
        for m in posed[:, :3, :3]:
            np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-9)


def test_bone_tails_point_to_the_first_child_and_leaves_go_on():
    heads = np.zeros((24, 3))
    parents = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
    for j, p in enumerate(parents[1:], start=1):
        heads[j] = heads[p] + [0.01 * j, 0.1, 0.02]
    tails = bone_tails(heads)
    np.testing.assert_allclose(tails[4], heads[7])  # left knee -> left ankle
    leaf = tails[15] - heads[15]  # the head: along the neck-to-head bone, half as long
    step = heads[15] - heads[12]
    np.testing.assert_allclose(leaf, 0.5 * step)
    assert (np.linalg.norm(tails - heads, axis=1) >= 1e-3).all()


def test_the_receiver_keeps_the_newest_datagram_and_skips_junk():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    rx = Receiver(port, "127.0.0.1")
    assert rx.poll() is None
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for k in range(3):
        tx.sendto(json.dumps({"frame": k}).encode(), ("127.0.0.1", port))
    tx.sendto(b"not json", ("127.0.0.1", port))
    import time

    for _ in range(100):
        got = rx.poll()
        if got is not None:
            break
        time.sleep(0.01)
    assert got == {"frame": 2}
    tx.close()
    rx.close()


def test_its_skeleton_is_the_body_models():
    """The script keeps its own copy of SMPL's joint names and parents (it runs in Blender,
    without this project): the same as multiroi's."""
    from multiroi.body.files import SMPL_JOINT_NAMES, SMPL_PARENTS
    from realtime.blender_live import NAMES, PARENTS

    assert NAMES == SMPL_JOINT_NAMES and PARENTS == SMPL_PARENTS


def test_it_imports_nothing_blender_lacks():
    """Blender's Python has the standard library, numpy, bpy and mathutils, not this project."""
    import ast
    import sys
    from pathlib import Path

    import realtime.blender_live as script

    tree = ast.parse(Path(script.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}  # fmt: skip
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module}  # fmt: skip
    allowed = set(sys.stdlib_module_names) | {"numpy", "bpy", "mathutils", "__future__"}
    assert names <= allowed, names - allowed


def test_on_the_streamed_floor_bone_heads_stand_in_its_frame(toy_body_model):
    """With the datagram's "world" (the floor the stream found), the posed bone heads land on
    the joints in that frame turned to Blender's z up: floor at z = 0, camera above the origin."""
    from realtime.blender_live import Y_UP_TO_BLENDER
    from realtime.floor import Floor

    person, _ = _streamed(toy_body_model, 1)
    pitch = np.deg2rad(8.0)
    floor = Floor(np.array([0.0, -np.cos(pitch), -np.sin(pitch)]), 1.4, 40, 40, 0.01)
    world = json.loads(message(0, 0.0, (640, 480), None, [], floor=floor))["world"]
    assert world["camera_height_m"] == 1.4 and abs(world["pitch_deg"] - 8.0) < 1e-6
    heads = rest_joints(person) @ BODY_TO_BLENDER.T
    rest = np.tile(np.eye(4), (24, 1, 1))
    rest[:, :3, :3] = _random_rotations(24, 3)
    rest[:, :3, 3] = heads
    posed = compose(pose_bases(person, rest[:, :3, :3], rest[0, :3, 3], world), rest)
    w = floor.world()
    joints = np.reshape(person["joints_m"], (24, 3)) @ w.rotation.T + w.offset_m
    np.testing.assert_allclose(posed[:, :3, 3], joints @ Y_UP_TO_BLENDER.T, atol=3e-4)
    camera = Y_UP_TO_BLENDER @ w.offset_m
    np.testing.assert_allclose(camera, [0, 0, 1.4])  # the camera 1.4 m above the origin
