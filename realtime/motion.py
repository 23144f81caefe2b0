"""One track of a live-loop recording as skeletal motion: the body model's 24-joint skeleton
with the track's shape, its root path and local joint rotations at every frame of its span (gaps
interpolated, and listed: a viewer can hide the long ones), in Y-up axes. Shared by the motion
exports (``realtime.bvh``, ``realtime.gltf``).

Axes (those of BVH and glTF alike): by default the camera frame (OpenCV: x right, y down, z
forward) turned about x by 180 degrees: x right, y up, z towards the camera; the person stands
where the camera saw them, the camera at the origin looking down -z. With a ``WorldFrame``
from ``realtime.floor`` the same axes stand on the floor found under the people's feet: y up
along its normal, the origin on it below the camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multiroi.body.files import SMPL_PARENTS

CAMERA_TO_YUP = np.diag([1.0, -1.0, -1.0])  # OpenCV camera axes -> Y-up, z towards the camera


@dataclass
class WorldFrame:
    """Where the exports put the camera's points: p_world = rotation f64[3,3] @ p_cam +
    offset_m f64[3] (Y up). The default is the camera's own frame turned to Y up."""

    rotation: np.ndarray
    offset_m: np.ndarray

    @classmethod
    def camera(cls) -> WorldFrame:
        return cls(CAMERA_TO_YUP.copy(), np.zeros(3))


@dataclass
class TrackMotion:
    """One track's motion, ready to write: rest offsets f64[24,3] m of each joint from its
    parent (the root's: its rest position), root positions f64[F,3] m and local rotations
    f64[F,24,3,3] in Y-up axes, the first frame's index and the frame time (s)."""

    track_id: int
    offsets_m: np.ndarray
    root_m: np.ndarray
    rotmat: np.ndarray
    first_frame: int
    frame_time_s: float
    filled: int  # frames without a row (interpolated, or before the first: its first pose)
    betas: np.ndarray  # f64[B]: the track's median shape (the offsets' and a mesh's)
    gaps: list[tuple[int, int]] = field(default_factory=list)  # [first, last] frames, no row

    def long_gaps(self, min_frames: int) -> list[tuple[int, int]]:
        """The gaps of at least ``min_frames`` frames (a person out of view, not a missed
        detection): a viewer hides them rather than sliding the body across."""
        return [(a, b) for a, b in self.gaps if b - a + 1 >= min_frames]


def rest_joints(body: Any, betas: np.ndarray) -> np.ndarray:
    """f64[24,3] m: the body model's rest joints for ``betas`` f[B] (its own axes)."""
    import torch

    rot = torch.eye(3, dtype=torch.float32).expand(1, 24, 3, 3).contiguous()
    b = torch.as_tensor(np.asarray(betas, np.float32).reshape(1, -1))
    with torch.no_grad():
        return body.joints(rot, b)[0].double().numpy()


def track_motion(
    rec: dict[str, np.ndarray],
    track_id: int,
    body: Any,
    frame_time_s: float,
    start: int | None = None,
    world: WorldFrame | None = None,
) -> TrackMotion:
    """The motion of one track of a recording (see module doc); ``start``: the first frame of
    the file (default: the track's first; frames before it repeat its first pose); ``world``:
    the frame to write it in (default: the camera's, Y up; ``realtime.floor``: the floor's)."""
    world = world or WorldFrame.camera()
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
    rot[:, 0] = world.rotation @ rot[:, 0]
    # the root joint: the body model turns the body about its rest pelvis, then moves it by T
    root = (np.asarray(rec["transl_m"], np.float64)[sel] + rest[0]) @ world.rotation.T
    root += world.offset_m
    first = int(frames[0]) if start is None else min(int(start), int(frames[0]))
    span = np.arange(first, frames[-1] + 1)
    root_span, rot_span = _fill(frames, span, root, rot)
    jumps = np.flatnonzero(np.diff(frames) > 1)
    gaps = [(int(frames[i]) + 1, int(frames[i + 1]) - 1) for i in jumps]
    return TrackMotion(int(track_id), offsets, root_span, rot_span, first,
                       float(frame_time_s), int(len(span) - len(frames)), betas,
                       gaps)  # fmt: skip


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


def frame_time_of(rec: dict[str, np.ndarray], fps: float | None = None) -> float:
    """Seconds per frame index: ``fps``, else the recorded file's (meta "fps"), else the median
    of the capture time per frame index between recorded frames (frames dropped by a live
    source leave gaps in the indices), else 1/30."""
    from realtime.recording import recording_meta

    if fps is not None:
        return 1.0 / float(fps)
    recorded = recording_meta(rec).get("fps")
    if isinstance(recorded, (int, float)) and np.isfinite(recorded) and recorded > 0:
        return 1.0 / float(recorded)
    t = np.asarray(rec.get("frames_t_capture_s", ()), np.float64).reshape(-1)
    k = np.asarray(rec.get("frames_index", np.arange(len(t))), np.float64).reshape(-1)
    if len(k) != len(t):
        return 1.0 / 30.0
    ok = np.isfinite(t)
    dt, dk = np.diff(t[ok]), np.diff(k[ok])
    good = (dt > 0) & (dk > 0)
    return float(np.median(dt[good] / dk[good])) if good.any() else 1.0 / 30.0


@dataclass
class MotionRecording:
    """A recording opened for export: its arrays, the body model that made it, the track ids
    asked for (sorted), seconds per frame index and the first and last frame indices of the
    recording."""

    path: Path
    rec: dict[str, np.ndarray]
    body: Any
    track_ids: list[int]
    frame_time_s: float
    first_frame: int
    last_frame: int


def open_recording(recording: str | Path, tracks: list[int] | None = None,
                   fps: float | None = None, body: Any = None) -> MotionRecording:  # fmt: skip
    """Load and check a live-loop recording for export (a clear ValueError for a file that is
    not one, has nobody in it, or lacks the tracks asked for; ``fps`` must be above 0)."""
    from realtime.recording import body_model_path, load_npz

    recording = Path(recording)
    rec = load_npz(recording, "recording")
    needed = ("frame_index", "track_id", "rotmat", "betas", "transl_m")
    missing = [k for k in needed if k not in rec]
    if missing:
        raise ValueError(f"{recording} lacks {', '.join(missing)}: expected a recording written "
                         f"by run_camera.py --out DIR")  # fmt: skip
    if fps is not None and not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"--fps must be a number above 0 (leave it out for the recording's), "
                         f"got {fps}")  # fmt: skip
    rec = _usable_rows(recording, rec)
    have = sorted(int(t) for t in np.unique(rec["track_id"]))
    if not have:
        raise ValueError(f"{recording} has no persons in any frame: nothing to write")
    wanted = have if tracks is None else sorted({int(t) for t in tracks})
    unknown = sorted(set(wanted) - set(have))
    if unknown:
        raise ValueError(f"tracks {unknown} are not in {recording} (it has {have})")
    if body is None:
        from multiroi.body import load_body_model

        body = load_body_model(body_model_path(rec))
    frames = np.concatenate([np.asarray(rec.get("frames_index", ()), np.int64).reshape(-1),
                             np.asarray(rec["frame_index"], np.int64).reshape(-1)])  # fmt: skip
    return MotionRecording(recording, rec, body, wanted, frame_time_of(rec, fps),
                           int(frames.min()), int(frames.max()))  # fmt: skip


def _usable_rows(path: Path, rec: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The recording with its rows' track ids merged as the live loop's re-identification
    decided (meta "reid_aliases": a track shown under its own id before it was recognised
    joins the person's), and rows with non-finite values left out (with a warning)."""
    import logging

    from realtime.recording import recording_meta

    rec = dict(rec)
    n = len(np.asarray(rec["track_id"]).reshape(-1))
    if n == 0:
        return rec
    aliases = recording_meta(rec).get("reid_aliases") or {}
    if isinstance(aliases, dict) and aliases:
        ids = np.asarray(rec["track_id"], np.int64).copy()
        for own, person in aliases.items():
            ids[ids == int(own)] = int(person)
        rec["track_id"] = ids
    ok = np.ones(n, bool)
    for key in ("rotmat", "betas", "transl_m"):
        ok &= np.isfinite(np.asarray(rec[key], np.float64).reshape(n, -1)).all(1)
    if not ok.all():
        logging.getLogger(__name__).warning(
            "%s: %d of %d rows hold non-finite values and are left out", path, n - ok.sum(), n)
        for key, value in list(rec.items()):
            if np.ndim(value) and len(value) == n and not key.startswith("frames_"):
                rec[key] = np.asarray(value)[ok]
    return rec
