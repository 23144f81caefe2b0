"""A live-loop recording to one glTF 2.0 binary (.glb): every track a skinned body with its motion.

    python -m realtime.gltf out/webcam.npz [--out FILE.glb] [--track ID ...] [--fps F]
                                           [--no-camera]

For Unity (glTFast, UnityGLTF), Unreal, Blender, three.js / Babylon.js and any glTF viewer: one
file holds the whole take. Each track is a node ``track<ID>`` with the body model's 24-joint
skeleton (SMPL's names and hierarchy, bone lengths from the track's median betas) and a mesh
``track<ID>_body`` skinned to it: the body model's rest mesh with that shape, its 4 strongest
skinning weights per vertex (renormalised; the free model has up to 7, so vertices near joints
move by a few millimetres), one colour per track as in the viewer. One animation,
``recording``, moves them all on one timeline: frame index k of the recording plays at
(k - first) x the frame time (``--fps`` if given, else the recorded file's fps, else measured
from the capture times). A track's frames without a row are interpolated (rotations by slerp)
as in ``realtime.bvh``; before its first row, after its last and through gaps of a second or
more (away, not a missed detection) it is hidden (its skeleton scaled to zero, step keys), so
people appear, leave and come back as they did. A track the live loop re-identified as an
earlier person after showing it under its own id for a moment is merged into theirs (the
recording's meta "reid_aliases"). A node ``camera`` is the
recording's camera (vertical field of view and aspect from K; the principal point's offset
from the centre is not kept); look through it and the bodies overlay the video.

Axes and units are glTF's own: metres, Y up. By default (``--floor auto``) the take stands on
the floor found under the people's feet (``realtime.floor``): y = 0 is the floor, the camera
stands above the origin at its height, tilted as it was; ``--floor camera`` keeps the camera's
frame (the camera at the origin looking down -Z; ``realtime.motion``).
Linear blend skinning only: an official SMPL file's pose-corrective blend shapes are not
written (the free model has none). A mesh from SMPL is SMPL data: its licence applies.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from multiroi.body.files import SMPL_JOINT_NAMES, SMPL_PARENTS
from multiroi.raster import vertex_normals
from realtime.glb import ARRAY, ELEMENTS, FLOAT, UBYTE, UINT, USHORT, GlbBuilder
from realtime.motion import (
    CAMERA_TO_YUP,
    TrackMotion,
    WorldFrame,
    open_recording,
    rest_joints,
    track_motion,
)

logger = logging.getLogger(__name__)

INFLUENCES = 4  # skinning weights per vertex: what every glTF viewer and game engine reads
HIDE_GAP_FRAMES = 30  # a track's gap this long is time away (ByteTrack's buffer), hidden


def quaternions_xyzw(rotmat: np.ndarray) -> np.ndarray:
    """f32[F,J,4] unit quaternions (x, y, z, w) of rotations f[F,J,3,3], each joint's sign kept
    continuous over the frames, so a viewer's interpolation never takes the long way round."""
    from scipy.spatial.transform import Rotation

    f, j = rotmat.shape[:2]
    q = Rotation.from_matrix(np.asarray(rotmat, np.float64).reshape(-1, 3, 3)).as_quat()
    q = q.reshape(f, j, 4)
    for k in range(1, f):
        q[k] *= np.where(np.sum(q[k] * q[k - 1], -1, keepdims=True) < 0, -1.0, 1.0)
    return q.astype(np.float32)


def skin_weights(weights: np.ndarray, n: int = INFLUENCES) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` strongest joints u8[V,n] of each vertex and their weights f32[V,n], summing to 1
    (from the body model's f[V,24])."""
    w = np.asarray(weights, np.float64)
    idx = np.argsort(-w, axis=1, kind="stable")[:, :n]
    top = np.take_along_axis(w, idx, axis=1)
    top /= np.maximum(top.sum(1, keepdims=True), 1e-12)
    idx = np.where(top > 0, idx, 0)  # unused slots point at the root with weight 0
    return idx.astype(np.uint8), top.astype(np.float32)


def rest_mesh(body: Any, betas: np.ndarray) -> np.ndarray:
    """f64[V,3] m: the body model's rest vertices for ``betas`` (its own axes, before posing)."""
    import torch

    rot = torch.eye(3, dtype=torch.float32).expand(1, 24, 3, 3).contiguous()
    b = torch.as_tensor(np.asarray(betas, np.float32).reshape(1, -1))
    with torch.no_grad():
        return body(rot, b).vertices[0].double().numpy()


def _linear(rgb: tuple[float, float, float]) -> list[float]:
    """An sRGB colour in [0,1] as glTF's linear base colour (what the viewer shows, shown)."""
    c = np.asarray(rgb, np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return [*map(float, lin), 1.0]


def add_track(
    g: GlbBuilder,
    motion: TrackMotion,
    body: Any,
    times_s: np.ndarray,
    hide: list[tuple[float, float]],
    channels: list,
    samplers: list,
) -> None:
    """Add one track: skeleton nodes, skinned mesh, material, and its animation channels and
    samplers (appended to ``channels``/``samplers``). times_s f[F]: the track's frames' times;
    hide: step keys (time, scale) of its root, empty when it is there throughout."""
    from realtime.render.overlay import track_color_rgb

    tid = motion.track_id
    rest = rest_joints(body, motion.betas)  # f64[24,3] m, the offsets' joints
    quats = quaternions_xyzw(motion.rotmat)  # [F,24,4], the root's already in Y-up axes
    first = len(g.doc["nodes"]) + 1  # the joints follow the track's group node
    g.node({"name": f"track{tid}", "children": [first]}, root=True)
    children: dict[int, list[int]] = {j: [] for j in range(24)}
    for j, p in enumerate(SMPL_PARENTS[1:], start=1):
        children[p].append(j)
    for j in range(24):
        node: dict[str, Any] = {
            "name": SMPL_JOINT_NAMES[j],
            "translation": [
                float(x) for x in (motion.root_m[0] if j == 0 else motion.offsets_m[j])
            ],
            "rotation": [float(x) for x in quats[0, j]],
        }
        if children[j]:
            node["children"] = [first + c for c in children[j]]
        g.node(node)
    joints = list(range(first, first + 24))

    ibm = np.tile(np.eye(4), (24, 1, 1))
    ibm[:, :3, 3] = -rest  # rest rotations are identity: undo the rest joint's position
    ibm_acc = g.accessor(ibm.transpose(0, 2, 1).reshape(24, 16), "MAT4", FLOAT)  # column-major
    g.doc["skins"].append(
        {
            "name": f"track{tid}_skeleton",
            "joints": joints,
            "skeleton": joints[0],
            "inverseBindMatrices": ibm_acc,
        }
    )
    verts = rest_mesh(body, motion.betas)
    faces = np.asarray(body.faces, np.int64)
    j_idx, j_w = skin_weights(body.layer.lbs_weights.double().numpy())
    index_type = USHORT if len(verts) < 65535 else UINT
    attributes = {
        "POSITION": g.accessor(verts, "VEC3", FLOAT, ARRAY, bounds=True),
        "NORMAL": g.accessor(vertex_normals(verts, faces), "VEC3", FLOAT, ARRAY),
        "JOINTS_0": g.accessor(j_idx, "VEC4", UBYTE, ARRAY),
        "WEIGHTS_0": g.accessor(j_w, "VEC4", FLOAT, ARRAY),
    }
    g.doc["materials"].append(
        {
            "name": f"track{tid}",
            "pbrMetallicRoughness": {
                "baseColorFactor": _linear(track_color_rgb(tid)),
                "metallicFactor": 0.0,
                "roughnessFactor": 0.8,
            },
        }
    )
    g.doc["meshes"].append(
        {
            "name": f"track{tid}_body",
            "primitives": [
                {
                    "attributes": attributes,
                    "mode": 4,
                    "material": len(g.doc["materials"]) - 1,
                    "indices": g.accessor(faces.reshape(-1, 1), "SCALAR", index_type, ELEMENTS),
                }
            ],
        }
    )
    g.node(
        {
            "name": f"track{tid}_body",
            "mesh": len(g.doc["meshes"]) - 1,
            "skin": len(g.doc["skins"]) - 1,
        },
        root=True,
    )

    t_acc = g.accessor(
        np.asarray(times_s, np.float32).reshape(-1, 1), "SCALAR", FLOAT, bounds=True
    )

    def channel(
        node: int, path: str, output: int, interpolation: str = "LINEAR", times: int = t_acc
    ) -> None:
        samplers.append({"input": times, "output": output, "interpolation": interpolation})
        channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": path}})

    channel(joints[0], "translation", g.accessor(motion.root_m, "VEC3", FLOAT))
    for j in range(24):
        channel(joints[j], "rotation", g.accessor(quats[:, j], "VEC4", FLOAT))
    if hide:
        keys = np.asarray(hide, np.float64)
        scale = np.repeat(keys[:, 1:2], 3, axis=1)
        channel(
            first - 1,
            "scale",
            g.accessor(scale, "VEC3", FLOAT),
            "STEP",
            g.accessor(keys[:, :1], "SCALAR", FLOAT, bounds=True),
        )


def camera_node(g: GlbBuilder, K: np.ndarray, image_wh: np.ndarray, world: WorldFrame) -> None:
    """The recording's camera where ``world`` puts it (a glTF camera looks down its -Z, y up:
    the OpenCV camera axes turned by CAMERA_TO_YUP)."""
    K = np.asarray(K, np.float64)
    wh = np.asarray(image_wh).reshape(-1)
    if K.shape != (3, 3) or len(wh) < 2 or not np.isfinite(K).all():
        logger.info("the recording's camera is not a 3x3 K with an image size: no camera node")
        return
    w, h = int(wh[0]), int(wh[1])
    if not (K[1, 1] > 0 and w > 0 and h > 0):
        logger.info("the recording has no camera (K unknown): no camera node written")
        return
    yfov = 2.0 * float(np.arctan(h / (2.0 * K[1, 1])))
    g.doc["cameras"] = [
        {
            "name": "camera",
            "type": "perspective",
            "perspective": {"yfov": yfov, "aspectRatio": w / h, "znear": 0.05, "zfar": 200.0},
        }
    ]
    from scipy.spatial.transform import Rotation

    q = Rotation.from_matrix(world.rotation @ CAMERA_TO_YUP).as_quat()
    node: dict[str, Any] = {"name": "camera", "camera": 0}
    if not np.allclose(q, [0, 0, 0, 1], atol=1e-9):
        node["rotation"] = [float(x) for x in q]
    if np.any(world.offset_m):
        node["translation"] = [float(x) for x in world.offset_m]
    g.node(node, root=True)


def visibility_keys(motion: TrackMotion, first: int, last: int, dt: float) -> list:
    """Step keys (time s, scale) that show a track's body only from its first row to its last,
    and hide it through gaps of at least HIDE_GAP_FRAMES (the person was away; shorter gaps
    are missed detections, bridged). Empty when it is there for the whole recording, frames
    ``first`` to ``last``."""
    start, end = motion.first_frame, motion.first_frame + len(motion.root_m) - 1
    shown = []
    for a, b in motion.long_gaps(HIDE_GAP_FRAMES):
        shown.append((start, a - 1))
        start = b + 1
    shown.append((start, end))
    if shown == [(first, last)]:
        return []
    keys = [] if shown[0][0] == first else [(0.0, 0.0)]
    for a, b in shown:
        keys.append(((a - first) * dt, 1.0))
        if b < last:
            keys.append(((b + 1 - first) * dt, 0.0))
    return keys


def export_glb(
    recording: str | Path,
    out: str | Path | None = None,
    tracks: list[int] | None = None,
    fps: float | None = None,
    body: Any = None,
    camera: bool = True,
    floor: str | WorldFrame = "auto",
) -> Path:
    """Write the .glb of ``recording`` (all its tracks, or ``tracks``) to ``out`` (default: next
    to the recording, ``<name>.glb``), atomically; floor: ``"auto"`` stands the take on the
    floor found under the people's feet (``realtime.floor``), ``"camera"`` keeps the camera's
    frame. Returns the path."""
    from realtime.floor import world_frame

    if out is not None and Path(out).suffix.lower() != ".glb":
        raise ValueError(f"the output must be a .glb file, got {out}")
    src = open_recording(recording, tracks, fps, body)
    world = world_frame(src.rec, src.body, floor)
    out = Path(out) if out is not None else src.path.with_suffix(".glb")
    last = src.last_frame
    dt = src.frame_time_s
    g = GlbBuilder()
    channels: list[dict[str, Any]] = []
    samplers: list[dict[str, Any]] = []
    for tid in src.track_ids:
        motion = track_motion(src.rec, tid, src.body, dt, world=world)
        span = motion.first_frame + np.arange(len(motion.root_m))
        hide = visibility_keys(motion, src.first_frame, last, dt)
        add_track(g, motion, src.body, (span - src.first_frame) * dt, hide, channels, samplers)
        away = motion.long_gaps(HIDE_GAP_FRAMES)
        logger.info(
            "track %d: frames %d-%d%s%s",
            tid,
            span[0],
            span[-1],
            f" ({motion.filled} without a row, interpolated)" if motion.filled else "",
            f", hidden while away: {', '.join(f'{a}-{b}' for a, b in away)}" if away else "",
        )
    g.doc["animations"] = [{"name": "recording", "channels": channels, "samplers": samplers}]
    if camera and "K" in src.rec and "image_wh" in src.rec:
        camera_node(g, src.rec["K"], src.rec["image_wh"], world)
    g.doc["asset"]["extras"] = {
        "source": src.path.name,
        "frame_time_s": dt,
        "first_frame": src.first_frame,
        "tracks": src.track_ids,
        "body_model": str(getattr(src.body, "model_id", "")),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    try:
        tmp.write_bytes(g.glb())
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info(
        "%d tracks, %d frames at %.2f fps -> %s (%.1f MB)",
        len(src.track_ids),
        last - src.first_frame + 1,
        1.0 / dt,
        out,
        out.stat().st_size / 1e6,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m realtime.gltf", description=__doc__.split("\n")[0]
    )
    ap.add_argument("recording", help="the .npz a run wrote (run_camera.py --out DIR)")
    ap.add_argument(
        "--out", default=None, help="the .glb to write (default: the recording's name with .glb)"
    )
    ap.add_argument(
        "--track", type=int, nargs="+", action="extend", default=None, help="only these track ids"
    )
    ap.add_argument(
        "--fps",
        type=float,
        default=None,
        help="frame rate (default: the recorded source's, else from the capture times)",
    )
    ap.add_argument("--no-camera", action="store_true", help="leave out the recording's camera")
    ap.add_argument(
        "--floor",
        default="auto",
        choices=("auto", "camera"),
        help="auto (the default): stand the take on the floor found under the people's feet "
        "(y up, the origin below the camera); camera: the camera's frame (the camera at the "
        "origin)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    try:
        path = export_glb(
            args.recording,
            args.out,
            args.track,
            args.fps,
            camera=not args.no_camera,
            floor=args.floor,
        )
    except (OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
