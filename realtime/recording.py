"""Per-frame, per-track results to an ``.npz`` that loads back with plain numpy (no pickle).

Layout (N = person rows over the whole run, F = frames):
  rows:   frame_index i64[N], track_id i64[N], box_xyxy f32[N,4] px, rotmat f32[N,24,3,3],
          pose_axis_angle f32[N,24,3] rad, betas f32[N,10], transl_m f32[N,3] (camera frame),
          held bool[N] (pose, shape and depth held from an earlier frame: realtime.occlusion),
          t_capture_s f64[N], t_done_s f64[N]
  frames: frames_index i64[F], frames_t_capture_s f64[F], frames_t_done_s f64[F],
          frames_num_persons i64[F] (frames with nobody are recorded too)
  meta:   K f64[3,3] (the camera of the first frame; zeros if unknown), image_wh i64[2],
          meta_json str (the run's config; "fps" for files, "ground_truth" for the demo clip)
The file is written to a temporary name and renamed at close, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from multiroi.types import PersonState

logger = logging.getLogger(__name__)


def rotmat_to_axis_angle_np(rotmat: np.ndarray) -> np.ndarray:
    """f32[...,3,3] rotation matrices -> f32[...,3] axis-angle (radians), robust near pi."""
    import cv2

    flat = np.asarray(rotmat, np.float64).reshape(-1, 3, 3)
    out = np.zeros((len(flat), 3), np.float64)
    for i, r in enumerate(flat):
        out[i] = cv2.Rodrigues(r)[0].reshape(3)
    return out.reshape(*np.shape(rotmat)[:-2], 3).astype(np.float32)


def load_npz(path: str | Path, what: str,
             hint: str = "give the .npz file a run wrote") -> dict[str, np.ndarray]:  # fmt: skip
    """All arrays of an .npz, never unpickling; a missing or foreign file says so in one line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found: {hint}")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise ValueError(f"{what} {path} is not an .npz file (not a zip archive): {hint}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise ValueError(f"{what} {path} is not a readable .npz file ({exc}): {hint}") from None


def recording_meta(rec: dict[str, np.ndarray]) -> dict[str, Any]:
    """The recording's meta (its ``meta_json``) as a dict; {} when missing or not a JSON object."""
    try:
        meta = json.loads(str(rec.get("meta_json", "{}")))
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def body_model_path(rec: dict[str, np.ndarray]) -> str | None:
    """The body model the recorded run drove (its config's), or None (the default model)."""
    config = recording_meta(rec).get("config") or {}
    inference = config.get("inference") if isinstance(config, dict) else None
    return (inference or {}).get("body_model") if isinstance(inference, dict) else None


class Recorder:
    """Collects rows in memory (about 1 KB per person per frame) and writes them at close.

    cameras: ``(W, H) px -> Camera``, the provider that placed the meshes (the pipeline passes
    the inference stage's); the first :meth:`add` with ``image_wh`` records its camera, so the
    stored K is the one used, even when a live source gave another size than was asked for.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        meta: dict[str, Any] | None = None,
        cameras: Callable[[tuple[int, int]], Any] | None = None,
    ) -> None:
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise ValueError(f"recording path must end in .npz, got {self.path}")
        self.meta = dict(meta or {})
        self._rows: dict[str, list[Any]] = {k: [] for k in _ROW_KEYS}
        self._frames: dict[str, list[Any]] = {k: [] for k in _FRAME_KEYS}
        self.K = np.zeros((3, 3))
        self.image_wh = np.zeros(2, np.int64)
        self._cameras = cameras
        self._closed = False

    def set_camera(self, K: np.ndarray, image_wh: tuple[int, int]) -> None:
        self.K = np.asarray(K, np.float64).reshape(3, 3)
        self.image_wh = np.asarray(image_wh, np.int64)

    def add(
        self,
        frame_index: int,
        t_capture_s: float,
        t_done_s: float,
        people: list[PersonState],
        image_wh: tuple[int, int] | None = None,
    ) -> None:
        """One rendered frame and its persons; image_wh: its size (W, H) px."""
        if self._closed:
            raise RuntimeError("recorder is closed")
        if self._cameras is not None and image_wh is not None:
            camera = self._cameras((int(image_wh[0]), int(image_wh[1])))
            self.set_camera(camera.K, camera.image_wh)
            self._cameras = None  # the first frame's camera is the one stored
        f = self._frames
        f["frames_index"].append(frame_index)
        f["frames_t_capture_s"].append(t_capture_s)
        f["frames_t_done_s"].append(t_done_s)
        f["frames_num_persons"].append(len(people))
        r = self._rows
        for p in people:
            r["frame_index"].append(frame_index)
            r["track_id"].append(int(p.track_id))
            r["box_xyxy"].append(np.asarray(p.box_xyxy, np.float32).reshape(4))
            r["rotmat"].append(np.asarray(p.rotmat, np.float32).reshape(24, 3, 3))
            r["betas"].append(np.asarray(p.betas, np.float32).reshape(-1)[:10])
            r["transl_m"].append(np.asarray(p.transl_m, np.float32).reshape(3))
            r["held"].append(bool(getattr(p, "held", False)))
            r["t_capture_s"].append(t_capture_s)
            r["t_done_s"].append(t_done_s)

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything :meth:`close` writes, as arrays."""
        r, f = self._rows, self._frames
        rotmat = _stack(r["rotmat"], (24, 3, 3), np.float32)
        out = {
            "frame_index": np.asarray(r["frame_index"], np.int64),
            "track_id": np.asarray(r["track_id"], np.int64),
            "box_xyxy": _stack(r["box_xyxy"], (4,), np.float32),
            "rotmat": rotmat,
            "pose_axis_angle": rotmat_to_axis_angle_np(rotmat),
            "betas": _stack([np.pad(b, (0, 10 - len(b))) for b in r["betas"]], (10,), np.float32),
            "transl_m": _stack(r["transl_m"], (3,), np.float32),
            "held": np.asarray(r["held"], bool).reshape(-1),
            "t_capture_s": np.asarray(r["t_capture_s"], np.float64),
            "t_done_s": np.asarray(r["t_done_s"], np.float64),
            "frames_index": np.asarray(f["frames_index"], np.int64),
            "frames_t_capture_s": np.asarray(f["frames_t_capture_s"], np.float64),
            "frames_t_done_s": np.asarray(f["frames_t_done_s"], np.float64),
            "frames_num_persons": np.asarray(f["frames_num_persons"], np.int64),
            "K": self.K,
            "image_wh": self.image_wh,
            "meta_json": np.asarray(json.dumps(self.meta, default=str)),
        }
        return out

    def close(self) -> Path | None:
        """Write the file atomically (temp name, then rename); idempotent. Returns the path."""
        if self._closed:
            return None
        self._closed = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.stem + ".partial.npz")
        try:
            np.savez_compressed(tmp, **self.arrays())
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
        logger.info("recording: %d rows over %d frames -> %s", len(self._rows["track_id"]),
                    len(self._frames["frames_index"]), self.path)  # fmt: skip
        return self.path

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ROW_KEYS = ("frame_index", "track_id", "box_xyxy", "rotmat", "betas", "transl_m", "held",
             "t_capture_s", "t_done_s")  # fmt: skip
_FRAME_KEYS = ("frames_index", "frames_t_capture_s", "frames_t_done_s", "frames_num_persons")


def _stack(items: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if not items:
        return np.zeros((0, *shape), dtype)
    return np.stack(items).astype(dtype)
