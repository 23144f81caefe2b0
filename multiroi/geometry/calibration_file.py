"""Camera calibration files: read and write the intrinsics a board calibration produced.

The project's format is plain YAML (written by ``python -m calibration``)::

    K:                      # 3x3 intrinsics, pixels, OpenCV convention (x right, y down)
    - [fx, 0.0, cx]
    - [0.0, fy, cy]
    - [0.0, 0.0, 1.0]
    dist: [k1, k2, p1, p2, k3]   # OpenCV distortion coefficients (0, 4, 5, 8, 12 or 14 values)
    image_size: [W, H]      # pixels; K is valid for this resolution
    rms_px: 0.21            # reprojection error of the calibration, pixels
    date: '2025-01-31T12:00:00+00:00'
    board: chessboard 9x6 square 0.025 m   # optional
    num_views: 14                           # optional

Also read: OpenCV ``FileStorage`` YAML (``camera_matrix`` / ``distortion_coefficients`` as
``!!opencv-matrix``, ``image_width`` / ``image_height``) as written by OpenCV's calibration
sample, and ROS ``camera_info`` YAML (the same keys with ``data`` lists).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

VALID_DIST_LENGTHS = (0, 4, 5, 8, 12, 14)


class CalibrationFileError(ValueError):
    """A calibration file is missing, unreadable or incomplete (one-line message)."""


@dataclass(frozen=True)
class CalibrationData:
    """Intrinsics of one camera at one resolution.

    K: f64[3,3] px, [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (skew allowed).
    dist: f64[k] OpenCV distortion coefficients (k1, k2, p1, p2[, k3[, k4, k5, k6[, ...]]]),
      k in (0, 4, 5, 8, 12, 14).
    image_wh: (W, H) px, the resolution K belongs to.
    rms_px: reprojection RMS of the calibration in pixels (nan when unknown).
    date: ISO 8601 date of the calibration ('' when unknown).
    board: description of the board used, or None.
    num_views: number of board views used, or None.
    """

    K: np.ndarray
    dist: np.ndarray
    image_wh: tuple[int, int]
    rms_px: float = float("nan")
    date: str = ""
    board: str | None = None
    num_views: int | None = None

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3) or not np.all(np.isfinite(K)):
            raise ValueError(f"K must be a finite 3x3 matrix, got shape {K.shape}")
        if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0.0, 0.0, 1.0]):
            raise ValueError(
                f"K must look like [[fx,0,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0; got {K.tolist()}"
            )
        dist = np.asarray(self.dist, dtype=np.float64).reshape(-1)
        if dist.size not in VALID_DIST_LENGTHS or not np.all(np.isfinite(dist)):
            raise ValueError(
                f"dist must hold {VALID_DIST_LENGTHS} finite values (OpenCV order), "
                f"got {dist.size}"
            )
        wh = tuple(int(v) for v in self.image_wh)
        if len(wh) != 2 or wh[0] <= 0 or wh[1] <= 0:
            raise ValueError(f"image_wh must be (W, H) with positive pixels, got {self.image_wh}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "dist", dist)
        object.__setattr__(self, "image_wh", wh)
        object.__setattr__(self, "rms_px", float(self.rms_px))

    @property
    def focal_px(self) -> tuple[float, float]:
        """(fx, fy) in pixels."""
        return float(self.K[0, 0]), float(self.K[1, 1])

    @property
    def principal_px(self) -> tuple[float, float]:
        """(cx, cy) in pixels."""
        return float(self.K[0, 2]), float(self.K[1, 2])

    def fov_deg(self) -> tuple[float, float]:
        """Horizontal and vertical field of view in degrees (pinhole, ignoring distortion)."""
        w, h = self.image_wh
        fx, fy = self.focal_px
        return (
            float(np.degrees(2 * np.arctan2(w / 2, fx))),
            float(np.degrees(2 * np.arctan2(h / 2, fy))),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict in the file layout (lists and floats)."""
        out: dict[str, Any] = {
            "K": [[float(v) for v in row] for row in self.K],
            "dist": [float(v) for v in self.dist],
            "image_size": [int(self.image_wh[0]), int(self.image_wh[1])],
            "rms_px": float(self.rms_px),
            "date": str(self.date),
        }
        if self.board is not None:
            out["board"] = str(self.board)
        if self.num_views is not None:
            out["num_views"] = int(self.num_views)
        return out


def write_calibration(path: str | os.PathLike, data: CalibrationData) -> Path:
    """Write ``data`` as YAML to ``path`` atomically (temp file + rename); returns the path."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# multiroi camera calibration (K in pixels, OpenCV axes)\n" + yaml.safe_dump(
        data.to_dict(), default_flow_style=None, sort_keys=False
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote calibration %s", path)
    return path


def read_calibration(path: str | os.PathLike) -> CalibrationData:
    """Read a calibration file (project YAML, OpenCV FileStorage YAML or ROS camera_info YAML).

    Raises CalibrationFileError (a ValueError) with a one-line message for a missing file, bad
    YAML, a missing key or a malformed K / dist / image size.
    """
    path = Path(path)
    if not path.is_file():
        raise CalibrationFileError(
            f"calibration file not found: {path} (create one with `python -m calibration`)"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    if text.lstrip().startswith("%YAML") or "!!opencv-matrix" in text:
        fields = _read_opencv_filestorage(path)
    else:
        fields = _read_plain_yaml(path, text)
    try:
        return CalibrationData(**fields)
    except ValueError as e:
        raise CalibrationFileError(f"{path}: {e}") from None


def _read_plain_yaml(path: Path, text: str) -> dict[str, Any]:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CalibrationFileError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(doc, dict):
        raise CalibrationFileError(
            f"{path}: expected a YAML mapping with keys K, dist, image_size, got "
            f"{type(doc).__name__}"
        )
    if "K" not in doc and "camera_matrix" in doc:
        return _fields_from_ros(path, doc)
    for key in ("K", "dist", "image_size"):
        if key not in doc:
            raise CalibrationFileError(
                f"{path}: missing key '{key}' (expected K, dist, image_size, rms_px, date)"
            )
    return {
        "K": _matrix(path, "K", doc["K"], (3, 3)),
        "dist": _vector(path, "dist", doc["dist"]),
        "image_wh": _image_size(path, doc["image_size"]),
        "rms_px": _float_or_nan(doc.get("rms_px")),
        "date": "" if doc.get("date") is None else str(doc.get("date")),
        "board": None if doc.get("board") is None else str(doc["board"]),
        "num_views": None if doc.get("num_views") is None else int(doc["num_views"]),
    }


def _fields_from_ros(path: Path, doc: dict) -> dict[str, Any]:
    """ROS camera_info YAML: camera_matrix/distortion_coefficients as {rows, cols, data}."""
    for key in ("camera_matrix", "image_width", "image_height"):
        if key not in doc:
            raise CalibrationFileError(f"{path}: missing key '{key}' (ROS camera_info layout)")
    cm = doc["camera_matrix"]
    dc = doc.get("distortion_coefficients", {"data": []})
    k_data = cm.get("data") if isinstance(cm, dict) else cm
    d_data = dc.get("data") if isinstance(dc, dict) else dc
    return {
        "K": _matrix(path, "camera_matrix", k_data, (3, 3)),
        "dist": _vector(path, "distortion_coefficients", d_data),
        "image_wh": _image_size(path, [doc["image_width"], doc["image_height"]]),
        "rms_px": _float_or_nan(doc.get("avg_reprojection_error")),
        "date": str(doc.get("calibration_time", "") or ""),
    }


def _read_opencv_filestorage(path: Path) -> dict[str, Any]:
    import cv2

    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else "parse error"
        raise CalibrationFileError(f"{path}: not a valid OpenCV YAML file ({msg})") from None
    try:
        if not fs.isOpened():
            raise CalibrationFileError(f"{path}: OpenCV could not open this YAML file")
        K = fs.getNode("camera_matrix").mat()
        dist = fs.getNode("distortion_coefficients").mat()
        w, h = fs.getNode("image_width").real(), fs.getNode("image_height").real()
        rms = fs.getNode("avg_reprojection_error")
        date = fs.getNode("calibration_time")
        fields = {
            "K": K,
            "dist": np.zeros(0) if dist is None else dist.reshape(-1),
            "image_wh": (int(w), int(h)),
            "rms_px": float("nan") if rms.empty() else rms.real(),
            "date": "" if date.empty() else str(date.string()),
        }
    finally:
        fs.release()
    if fields["K"] is None:
        raise CalibrationFileError(f"{path}: missing key 'camera_matrix' (OpenCV layout)")
    if fields["image_wh"][0] <= 0:
        raise CalibrationFileError(
            f"{path}: missing key 'image_width'/'image_height' (OpenCV layout)"
        )
    fields["K"] = _matrix(path, "camera_matrix", fields["K"], (3, 3))
    return fields


def _matrix(path: Path, key: str, value: Any, shape: tuple[int, int]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationFileError(f"{path}: '{key}' must be a {shape} list of numbers") from None
    if arr.size == shape[0] * shape[1] and arr.ndim == 1:
        arr = arr.reshape(shape)
    if arr.shape != shape:
        raise CalibrationFileError(
            f"{path}: '{key}' must be {shape[0]}x{shape[1]}, got shape {arr.shape}"
        )
    return arr


def _vector(path: Path, key: str, value: Any) -> np.ndarray:
    if value is None:
        return np.zeros(0)
    try:
        return np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise CalibrationFileError(f"{path}: '{key}' must be a list of numbers") from None


def _image_size(path: Path, value: Any) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise CalibrationFileError(
            f"{path}: 'image_size' must be [W, H] in pixels, got {value!r}"
        ) from None
    if w <= 0 or h <= 0:
        raise CalibrationFileError(f"{path}: 'image_size' must be positive, got [{w}, {h}]")
    return w, h


def _float_or_nan(value: Any) -> float:
    try:
        return float("nan") if value is None else float(value)
    except (TypeError, ValueError):
        return float("nan")
