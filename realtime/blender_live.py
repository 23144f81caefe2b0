"""Drive Blender armatures live from ``run_camera.py --stream``: one armature per person.

    blender --python realtime/blender_live.py -- --port 9000      # then, elsewhere:
    python run_camera.py --stream udp://127.0.0.1:9000

(or open this file in Blender's Text Editor and press Run Script: it listens on port 9000).
It runs inside Blender and needs nothing from this project: Blender's own Python and numpy.
A timer reads the newest datagram (``realtime.stream``'s format) every 10 ms; each person id
gets an armature ``multiroi_<id>`` with the SMPL skeleton, built from the first datagram in
which the person appears (its rest bone offsets follow from the posed joints and the joint
rotations, so the skeleton has the person's proportions), then posed every frame: the root
where the camera saw the person (Blender axes: x right, y away from the camera, z up; the
camera at the origin; once the stream has found the floor under the people's feet, its
"world", the floor is z = 0 and the camera stands above the origin: ``--camera-frame`` keeps
the camera's frame), every bone rotated as SMPL's joint. A person not seen for
``--hide-after`` seconds is hidden until they come back; the custom property ``held`` is true
while the person's pose is an earlier frame's (covered by a nearer person). Parent a mesh or
retarget the bones to drive a character.

The math is plain numpy and is tested without Blender (``tests/test_blender_live.py``). In
Blender 4.2 (the ``bpy`` wheel), fed the demo clip, the posed bone heads land on the streamed
joints within 0.001 mm in the frame the skeleton was built from, and within 1 cm (median 2 mm)
later: the estimated shape varies a little from frame to frame, the bones keep their length.
On the floor the stream found (its "world"), the bone heads land on the joints in that frame
within 1 mm too, the ankles 4-7 cm above z = 0.
(That check ran the ``bpy`` module without a window; the timer in a Blender window was not.)
"""

from __future__ import annotations

import json
import socket
import sys
import time

import numpy as np

NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
CAM_TO_BLENDER = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # x right, y away, z up
Y_UP_TO_BLENDER = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # the stream's floor frame
BODY_TO_BLENDER = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # SMPL's y-up rest -> z-up
POLL_S = 0.01


def axis_angle_to_rotmat(aa: np.ndarray) -> np.ndarray:
    """f64[...,3] radians -> f64[...,3,3] (Rodrigues)."""
    aa = np.asarray(aa, np.float64)
    theta = np.linalg.norm(aa, axis=-1, keepdims=True)
    k = aa / np.maximum(theta, 1e-12)
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    zero = np.zeros_like(kx)
    K = np.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    s, c = np.sin(theta)[..., None], np.cos(theta)[..., None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


def world_rotations(local: np.ndarray) -> np.ndarray:
    """f64[24,3,3]: each joint's rotation in the camera frame (the chain of local rotations)."""
    world = np.zeros_like(local)
    for j, p in enumerate(PARENTS):
        world[j] = local[j] if p < 0 else world[p] @ local[j]
    return world


def rest_joints(person: dict) -> np.ndarray:
    """f64[24,3] m: the person's rest joints in SMPL's body axes, pelvis at the origin, from a
    streamed person's posed joints and rotations (offset_j = G_parent^T (J_j - J_parent))."""
    local = axis_angle_to_rotmat(np.reshape(person["pose_axis_angle"], (24, 3)))
    world = world_rotations(local)
    joints = np.reshape(person["joints_m"], (24, 3)).astype(np.float64)
    rest = np.zeros((24, 3))
    for j, p in enumerate(PARENTS[1:], start=1):
        rest[j] = rest[p] + world[p].T @ (joints[j] - joints[p])
    return rest


def bone_tails(heads: np.ndarray) -> np.ndarray:
    """f64[24,3]: each bone's tail, at its first child's head, or for a leaf half its own bone
    on (at least 2 cm)."""
    tails = np.zeros_like(heads)
    for j in range(24):
        kids = [c for c, p in enumerate(PARENTS) if p == j]
        if kids:
            tails[j] = heads[kids[0]]
        else:
            step = heads[j] - heads[PARENTS[j]]
            tails[j] = heads[j] + step / max(np.linalg.norm(step), 1e-9) * max(
                0.5 * np.linalg.norm(step), 0.02)
        if np.linalg.norm(tails[j] - heads[j]) < 1e-3:  # a zero-length bone is dropped
            tails[j] = heads[j] + [0, 0, 0.02]
    return tails


def pose_bases(person: dict, rest_rot: np.ndarray, root_head: np.ndarray,
               world: dict | None = None) -> np.ndarray:  # fmt: skip
    """f64[24,4,4]: each pose bone's ``matrix_basis`` for a streamed person, given the bones'
    rest rotations ``rest_rot`` f64[24,3,3] and the root bone's rest head (armature space).
    world: the datagram's "world" (the floor found under the feet: camera -> a Y-up frame on
    the floor), or None for the camera's frame.

    SMPL's joint frames are all aligned with the body at rest, so a joint's local rotation R
    becomes, in the bone's own rest frame Rb, ``Rb^T (C R C^T) Rb`` with C the body-to-Blender
    axes; the root also carries the camera-to-Blender turn and its position."""
    local = axis_angle_to_rotmat(np.reshape(person["pose_axis_angle"], (24, 3)))
    C, A, offset = BODY_TO_BLENDER, CAM_TO_BLENDER, np.zeros(3)
    if world is not None:  # camera -> the floor's Y-up frame -> Blender's z up, floor at z = 0
        A = Y_UP_TO_BLENDER @ np.reshape(world["rotation"], (3, 3))
        offset = Y_UP_TO_BLENDER @ np.reshape(world["offset_m"], 3)
    out = np.tile(np.eye(4), (24, 1, 1))
    for j in range(24):
        turn = (A @ local[0] @ C.T) if j == 0 else (C @ local[j] @ C.T)
        out[j, :3, :3] = rest_rot[j].T @ turn @ rest_rot[j]
    pelvis = A @ np.reshape(person["joints_m"], (24, 3))[0] + offset
    out[0, :3, 3] = rest_rot[0].T @ (pelvis - root_head)
    return out


def compose(bases: np.ndarray, rest: np.ndarray) -> np.ndarray:
    """f64[24,4,4]: the posed bones' armature-space matrices from their bases and rest
    matrices ``rest`` f64[24,4,4], as Blender composes them (M_j = M_p Rest_p^-1 Rest_j B_j)."""
    out = np.zeros_like(bases)
    for j, p in enumerate(PARENTS):
        if p < 0:
            out[j] = rest[j] @ bases[j]
        else:
            out[j] = out[p] @ np.linalg.inv(rest[p]) @ rest[j] @ bases[j]
    return out


class Receiver:
    """Reads the newest datagram on ``port`` without blocking; ``poll() -> dict | None``."""

    def __init__(self, port: int, host: str = "0.0.0.0") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)

    def poll(self) -> dict | None:
        newest = None
        while True:
            try:
                data, _ = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return newest
            try:
                newest = json.loads(data)
            except ValueError:
                continue  # not ours: skipped

    def close(self) -> None:
        self.sock.close()


# ----- inside Blender -------------------------------------------------------------------------


def _make_armature(pid: int, person: dict):
    import bpy

    heads = rest_joints(person) @ BODY_TO_BLENDER.T
    tails = bone_tails(heads)
    data = bpy.data.armatures.new(f"multiroi_{pid}")
    obj = bpy.data.objects.new(f"multiroi_{pid}", data)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    bones = []
    for j, name in enumerate(NAMES):
        b = data.edit_bones.new(name)
        b.head, b.tail, b.roll = heads[j].tolist(), tails[j].tolist(), 0.0
        if PARENTS[j] >= 0:
            b.parent = bones[PARENTS[j]]
        bones.append(b)
    bpy.ops.object.mode_set(mode="POSE")
    for pb in obj.pose.bones:
        pb.rotation_mode = "QUATERNION"
    bpy.ops.object.mode_set(mode="OBJECT")
    return obj


def apply_message(msg: dict, seen: dict, hide_after_s: float = 2.0, floor: bool = True) -> None:
    """Pose (creating when new) one armature per person of ``msg``; hide the ones gone.
    floor: stand them on the floor the stream found (its "world"), once it has one."""
    import bpy
    from mathutils import Matrix

    now = time.monotonic()
    for person in msg.get("persons", []):
        if "joints_m" not in person:
            continue
        pid = int(person["id"])
        obj = bpy.data.objects.get(f"multiroi_{pid}") or _make_armature(pid, person)
        rest = np.array([np.array(obj.data.bones[n].matrix_local) for n in NAMES])
        world = msg.get("world") if floor else None
        bases = pose_bases(person, rest[:, :3, :3], rest[0, :3, 3], world)
        for name, basis in zip(NAMES, bases, strict=True):  # Blender keeps its own bone order
            obj.pose.bones[name].matrix_basis = Matrix(basis.tolist())
        obj.hide_viewport = obj.hide_render = False
        obj["held"] = bool(person.get("held", False))  # an earlier frame's pose (covered)
        seen[pid] = now
    for pid, t in list(seen.items()):
        obj = bpy.data.objects.get(f"multiroi_{pid}")
        if obj is not None and now - t > hide_after_s:
            obj.hide_viewport = obj.hide_render = True


def start(port: int = 9000, hide_after_s: float = 2.0, floor: bool = True) -> Receiver:
    """Listen on ``port`` and pose the armatures from a Blender timer."""
    import bpy

    receiver = Receiver(port)
    seen: dict[int, float] = {}

    def tick() -> float:
        msg = receiver.poll()
        if msg is not None:
            apply_message(msg, seen, hide_after_s, floor)
        return POLL_S

    bpy.app.timers.register(tick, first_interval=POLL_S, persistent=True)
    print(f"multiroi: listening on UDP port {port} for run_camera.py --stream")
    return receiver


def _args(argv: list[str]) -> tuple[int, float, bool]:
    import argparse

    ap = argparse.ArgumentParser(prog="blender --python realtime/blender_live.py --")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--hide-after", type=float, default=2.0, help="seconds")
    ap.add_argument("--camera-frame", action="store_true",
                    help="keep the camera at the origin (by default the armatures stand on the "
                         "floor the stream found under the people's feet, once it has one)")
    args = ap.parse_args(argv)
    return args.port, args.hide_after, not args.camera_frame


if __name__ == "__main__":  # run by Blender (after "--" come this script's arguments)
    port, hide, on_floor = _args(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else [])
    start(port, hide, on_floor)
