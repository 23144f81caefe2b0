"""A live-loop recording to BVH motion files, one per track, for Blender, MotionBuilder & co.

    python -m realtime.bvh out/webcam.npz [--out DIR] [--track ID ...] [--unit m|cm] [--fps F]
                                          [--align]

Each track's rows become one ``<recording>_track<ID>.bvh``: the body model's 24-joint skeleton
(SMPL's names and hierarchy) with the track's own shape (its median betas give the bone
offsets), a root with position and rotation, every joint with its rotation, one frame per
recorded frame from the track's first to its last (each file's first frame is in the log;
``--align`` starts them all at the recording's first frame, so they line up when imported
together). Frames in which the track has no row (it was lost for a while) are interpolated
between the rows around them (rotations by slerp); the log says how many. (BVH cannot hide a
skeleton: a person away for a while walks across the gap; ``realtime.gltf`` hides them.) A
track the live loop re-identified as an earlier person is merged into theirs.

Axes: BVH is Y-up. By default (``--floor auto``) the motion stands on the floor found under
the people's feet (``realtime.floor``): y up along the floor's normal, y = 0 on the floor, the
origin below the camera, z towards the camera. ``--floor camera`` keeps the camera frame (OpenCV:
x right, y down, z forward) turned about x by 180 degrees: x right, y up, z towards the camera,
the camera at the origin looking down -z. Rotations are written as Z, X, Y Euler angles in
degrees (the channel order of most BVH files: R = Rz Rx Ry). Units: metres (Blender imports
them at scale 1) or centimetres (``--unit cm``). Forward kinematics of the file's skeleton gives
back the body model's joints (``tests/test_bvh.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from multiroi.body.files import SMPL_JOINT_NAMES, SMPL_PARENTS
from realtime.motion import (
    TrackMotion,
    open_recording,
    track_motion,
)

logger = logging.getLogger(__name__)

UNITS = {"m": 1.0, "cm": 100.0}
END_SITE_SHARE = 0.5  # a leaf's end site: this share of its own bone, along it


def euler_zxy_deg(rotmat: np.ndarray) -> np.ndarray:
    """f64[...,3] degrees (z, x, y) with R = Rz(z) Rx(x) Ry(y) for rotations f[...,3,3]."""
    from scipy.spatial.transform import Rotation

    flat = np.asarray(rotmat, np.float64).reshape(-1, 3, 3)
    angles = Rotation.from_matrix(flat).as_euler("ZXY", degrees=True)
    return angles.reshape(*np.shape(rotmat)[:-2], 3)


def bvh_text(motion: TrackMotion, unit: str = "m") -> str:
    """The BVH file of ``motion`` (see module doc)."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {sorted(UNITS)}, got {unit!r}")
    scale = UNITS[unit]
    children = _children()
    lines = ["HIERARCHY"]

    def fmt(v: np.ndarray) -> str:
        return " ".join(f"{x:.6f}" for x in v)

    def joint(j: int, depth: int) -> None:
        pad = "  " * depth
        head = "ROOT" if j == 0 else "JOINT"
        lines.append(f"{pad}{head} {SMPL_JOINT_NAMES[j]}")
        lines.append(f"{pad}{{")
        offset = np.zeros(3) if j == 0 else motion.offsets_m[j] * scale
        lines.append(f"{pad}  OFFSET {fmt(offset)}")
        if j == 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition "
                         f"Zrotation Xrotation Yrotation")  # fmt: skip
        else:
            lines.append(f"{pad}  CHANNELS 3 Zrotation Xrotation Yrotation")
        for c in children[j]:
            joint(c, depth + 1)
        if not children[j]:  # a leaf: an end site along its own bone
            lines.append(f"{pad}  End Site")
            lines.append(f"{pad}  {{")
            lines.append(f"{pad}    OFFSET {fmt(motion.offsets_m[j] * scale * END_SITE_SHARE)}")
            lines.append(f"{pad}  }}")
        lines.append(f"{pad}}}")

    joint(0, 0)
    order = _depth_first()
    euler = euler_zxy_deg(motion.rotmat[:, order])  # [F,24,3]
    lines += ["MOTION", f"Frames: {len(motion.root_m)}", f"Frame Time: {motion.frame_time_s:.6f}"]
    for root, angles in zip(motion.root_m * scale, euler, strict=True):
        lines.append(" ".join([fmt(root), *(fmt(a) for a in angles)]))
    return "\n".join(lines) + "\n"


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {j: [] for j in range(len(SMPL_PARENTS))}
    for j, p in enumerate(SMPL_PARENTS[1:], start=1):
        children[p].append(j)
    return children


def _depth_first() -> list[int]:
    """The joints in the order their channels appear in the file (depth first)."""
    children = _children()
    out: list[int] = []

    def walk(j: int) -> None:
        out.append(j)
        for c in children[j]:
            walk(c)

    walk(0)
    return out


def export_recording(recording: str | Path, out_dir: str | Path | None = None,
                     tracks: list[int] | None = None, unit: str = "m", fps: float | None = None,
                     body: Any = None, align: bool = False,
                     floor: Any = "auto") -> list[Path]:  # fmt: skip
    """Write one BVH per track of ``recording`` (all, or ``tracks``) into ``out_dir`` (default:
    the recording's folder), each atomically. align: every file starts at the recording's
    first frame (so files imported together line up); floor: ``"auto"`` stands the motion on
    the floor found under the people's feet (``realtime.floor``), ``"camera"`` keeps the
    camera's frame. Returns the paths."""
    from realtime.floor import world_frame

    if unit not in UNITS:
        raise ValueError(f"--unit must be one of {sorted(UNITS)}, got {unit!r}")
    src = open_recording(recording, tracks, fps, body)
    world = world_frame(src.rec, src.body, floor)
    out_dir = Path(out_dir) if out_dir is not None else src.path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    start = src.first_frame if align else None
    paths = []
    for tid in src.track_ids:
        motion = track_motion(src.rec, tid, src.body, src.frame_time_s, start, world)
        path = out_dir / f"{src.path.stem}_track{tid}.bvh"
        tmp = path.with_name(path.name + ".partial")
        try:
            tmp.write_text(bvh_text(motion, unit))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info("track %d: %d frames from frame %d%s -> %s", tid, len(motion.root_m),
                    motion.first_frame,
                    f" ({motion.filled} without a row, interpolated)" if motion.filled
                    else "", path)  # fmt: skip
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m realtime.bvh",
                                 description=__doc__.split("\n")[0])  # fmt: skip
    ap.add_argument("recording", help="the .npz a run wrote (run_camera.py --out DIR)")
    ap.add_argument("--out", default=None, help="folder for the .bvh files (default: the "
                    "recording's)")  # fmt: skip
    ap.add_argument("--track", type=int, nargs="+", action="extend", default=None,
                    help="only these track ids")
    ap.add_argument("--unit", default="m", choices=sorted(UNITS), help="length unit (default m)")
    ap.add_argument("--fps", type=float, default=None, help="frame rate (default: the "
                    "recorded source's, else from the capture times)")  # fmt: skip
    ap.add_argument("--align", action="store_true", help="start every file at the recording's "
                    "first frame, so tracks imported together line up (a track's frames "
                    "before it appears repeat its first pose)")  # fmt: skip
    ap.add_argument("--floor", default="auto", choices=("auto", "camera"), help="auto (the "
                    "default): stand the motion on the floor found under the people's feet "
                    "(y up, the origin below the camera); camera: the camera's frame (y up, "
                    "the camera at the origin)")  # fmt: skip
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    try:
        paths = export_recording(args.recording, args.out, args.track, args.unit, args.fps,
                                 align=args.align, floor=args.floor)
    except (OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
