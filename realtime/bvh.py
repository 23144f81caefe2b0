"""A live-loop recording to BVH motion files, one per track, for Blender, MotionBuilder & co.

    python -m realtime.bvh out/webcam.npz [--out DIR] [--track ID ...] [--unit m|cm] [--fps F]
                                          [--align]

Each track's rows become one ``<recording>_track<ID>.bvh``: the body model's 24-joint skeleton
(SMPL's names and hierarchy) with the track's own shape (its median betas give the bone
offsets), a root with position and rotation, every joint with its rotation, one frame per
recorded frame from the track's first to its last (each file's first frame is in the log;
``--align`` starts them all at the recording's first frame, so they line up when imported
together). Frames in which the track has no row (it was lost for a while) are interpolated
between the rows around them (rotations by slerp); the log says how many.

Axes: BVH is Y-up, so the camera frame (OpenCV: x right, y down, z forward) is turned about x by
180 degrees: x right, y up, z towards the camera; the person stands where the camera saw them,
the camera at the origin looking down -z. Rotations are written as Z, X, Y Euler angles in
degrees (the channel order of most BVH files: R = Rz Rx Ry). Units: metres (Blender imports
them at scale 1) or centimetres (``--unit cm``). Forward kinematics of the file's skeleton gives
back the body model's joints (``tests/test_bvh.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multiroi.body.files import SMPL_JOINT_NAMES, SMPL_PARENTS

logger = logging.getLogger(__name__)

CAMERA_TO_BVH = np.diag([1.0, -1.0, -1.0])  # OpenCV camera axes -> Y-up, z towards the camera
UNITS = {"m": 1.0, "cm": 100.0}
END_SITE_SHARE = 0.5  # a leaf's end site: this share of its own bone, along it


@dataclass
class TrackMotion:
    """One track's motion, ready to write: rest offsets f64[24,3] m of each joint from its
    parent (the root's: its rest position), root positions f64[F,3] m and local rotations
    f64[F,24,3,3] in BVH axes, the first frame's index and the frame time (s)."""

    track_id: int
    offsets_m: np.ndarray
    root_m: np.ndarray
    rotmat: np.ndarray
    first_frame: int
    frame_time_s: float
    filled: int  # frames without a row (interpolated, or before the first: its first pose)


def rest_joints(body: Any, betas: np.ndarray) -> np.ndarray:
    """f64[24,3] m: the body model's rest joints for ``betas`` f[B] (its own axes)."""
    import torch

    rot = torch.eye(3, dtype=torch.float32).expand(1, 24, 3, 3).contiguous()
    b = torch.as_tensor(np.asarray(betas, np.float32).reshape(1, -1))
    with torch.no_grad():
        return body.joints(rot, b)[0].double().numpy()


def track_motion(rec: dict[str, np.ndarray], track_id: int, body: Any, frame_time_s: float,
                 start: int | None = None) -> TrackMotion:  # fmt: skip
    """The motion of one track of a recording (see module doc); ``start``: the first frame of
    the file (default: the track's first; frames before it repeat its first pose)."""
    sel = np.flatnonzero(np.asarray(rec["track_id"]) == track_id)
    if not len(sel):
        raise ValueError(f"track {track_id} is not in the recording")
    frames = np.asarray(rec["frame_index"], np.int64)[sel]
    order = np.argsort(frames, kind="stable")
    sel, frames = sel[order], frames[order]
    sel, frames = sel[np.r_[True, np.diff(frames) > 0]], np.unique(frames)  # one row a frame
    betas = np.median(np.asarray(rec["betas"], np.float64)[sel], axis=0)
    rest = rest_joints(body, betas)
    offsets = rest.copy()
    offsets[1:] = rest[1:] - rest[list(SMPL_PARENTS[1:])]
    rot = np.asarray(rec["rotmat"], np.float64)[sel].copy()  # [n,24,3,3], camera frame root
    rot[:, 0] = CAMERA_TO_BVH @ rot[:, 0]
    # the root joint: the body model turns the body about its rest pelvis, then moves it by T
    root = (np.asarray(rec["transl_m"], np.float64)[sel] + rest[0]) @ CAMERA_TO_BVH.T
    first = int(frames[0]) if start is None else min(int(start), int(frames[0]))
    span = np.arange(first, frames[-1] + 1)
    root_span, rot_span = _fill(frames, span, root, rot)
    return TrackMotion(int(track_id), offsets, root_span, rot_span, first,
                       float(frame_time_s), int(len(span) - len(frames)))  # fmt: skip


def _fill(frames: np.ndarray, span: np.ndarray, root: np.ndarray,
          rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Root positions and rotations at every frame of ``span``: the rows of ``frames`` where
    there is one, between two rows interpolated (linearly; rotations by slerp, per joint),
    before the first row its pose."""
    from scipy.spatial.transform import Rotation, Slerp

    root_out = np.empty((len(span), 3))
    rot_out = np.empty((len(span), 24, 3, 3))
    for d in range(3):
        root_out[:, d] = np.interp(span, frames, root[:, d])  # flat before the first row
    if len(frames) == 1:
        rot_out[:] = rot[0]
        return root_out, rot_out
    t = np.clip(span, frames[0], frames[-1]).astype(np.float64)
    for j in range(24):
        rot_out[:, j] = Slerp(frames.astype(np.float64), Rotation.from_matrix(rot[:, j]))(t) \
            .as_matrix()  # fmt: skip
    return root_out, rot_out


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


def frame_time_of(rec: dict[str, np.ndarray], fps: float | None = None) -> float:
    """Seconds per frame index: ``fps``, else the recorded file's (meta "fps"), else the median
    of the capture time per frame index between recorded frames (frames dropped by a live
    source leave gaps in the indices), else 1/30."""
    import json

    if fps is not None:
        return 1.0 / float(fps)
    meta = json.loads(str(rec["meta_json"])) if "meta_json" in rec else {}
    if meta.get("fps"):
        return 1.0 / float(meta["fps"])
    t = np.asarray(rec.get("frames_t_capture_s", ()), np.float64).reshape(-1)
    k = np.asarray(rec.get("frames_index", np.arange(len(t))), np.float64).reshape(-1)
    if len(k) != len(t):
        return 1.0 / 30.0
    ok = np.isfinite(t)
    dt, dk = np.diff(t[ok]), np.diff(k[ok])
    good = (dt > 0) & (dk > 0)
    return float(np.median(dt[good] / dk[good])) if good.any() else 1.0 / 30.0


def export_recording(recording: str | Path, out_dir: str | Path | None = None,
                     tracks: list[int] | None = None, unit: str = "m", fps: float | None = None,
                     body: Any = None, align: bool = False) -> list[Path]:  # fmt: skip
    """Write one BVH per track of ``recording`` (all, or ``tracks``) into ``out_dir`` (default:
    the recording's folder), each atomically. align: every file starts at the recording's
    first frame (so files imported together line up). Returns the paths."""
    from realtime.score import _meta, load_npz

    recording = Path(recording)
    rec = load_npz(recording, "recording")
    needed = ("frame_index", "track_id", "rotmat", "betas", "transl_m")
    missing = [k for k in needed if k not in rec]
    if missing:
        raise ValueError(f"{recording} lacks {', '.join(missing)}: expected a recording written "
                         f"by run_camera.py --out DIR")  # fmt: skip
    if unit not in UNITS:
        raise ValueError(f"--unit must be one of {sorted(UNITS)}, got {unit!r}")
    if fps is not None and not fps > 0:
        raise ValueError(f"--fps must be above 0 (leave it out for the recording's), got {fps}")
    if body is None:
        from multiroi.body import load_body_model

        config = _meta(rec).get("config") or {}
        body = load_body_model((config.get("inference") or {}).get("body_model"))
    have = sorted(int(t) for t in np.unique(rec["track_id"]))
    if not have:
        raise ValueError(f"{recording} has no persons in any frame: nothing to write")
    wanted = have if tracks is None else [int(t) for t in tracks]
    unknown = sorted(set(wanted) - set(have))
    if unknown:
        raise ValueError(f"tracks {unknown} are not in {recording} (it has {have})")
    out_dir = Path(out_dir) if out_dir is not None else recording.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    step = frame_time_of(rec, fps)
    frames = np.asarray(rec.get("frames_index", rec["frame_index"]), np.int64)
    start = int(frames.min()) if align and len(frames) else None
    paths = []
    for tid in wanted:
        motion = track_motion(rec, tid, body, step, start)
        path = out_dir / f"{recording.stem}_track{tid}.bvh"
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(bvh_text(motion, unit))
        tmp.replace(path)
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
    ap.add_argument("--track", type=int, nargs="+", default=None, help="only these track ids")
    ap.add_argument("--unit", default="m", choices=sorted(UNITS), help="length unit (default m)")
    ap.add_argument("--fps", type=float, default=None, help="frame rate (default: the "
                    "recorded source's, else from the capture times)")  # fmt: skip
    ap.add_argument("--align", action="store_true", help="start every file at the recording's "
                    "first frame, so tracks imported together line up (a track's frames "
                    "before it appears repeat its first pose)")  # fmt: skip
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    try:
        paths = export_recording(args.recording, args.out, args.track, args.unit, args.fps,
                                 align=args.align)
    except (OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
