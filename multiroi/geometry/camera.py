"""The camera value object: intrinsics, image size and lens distortion of the full image.

Convention: OpenCV pinhole model, axes x right, y down, z forward, metres in 3D;
``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixels; ``dist`` holds OpenCV's distortion
coefficients (k1, k2, p1, p2[, k3, ...]). Pixel coordinates: boxes and crops use the project
convention (``multiroi.rois``: the image spans ``[0, W] x [0, H]``), so the default principal
point (W/2, H/2) is the image centre, as in CLIFF. OpenCV puts pixel centres at integers instead;
K from a calibration is used as it is, and the resulting half-pixel offset is ignored (it is far
below calibration and detection accuracy). K from this class can go to OpenCV functions as is.
Crop cameras and full-image translations are derived from one Camera (``geometry.cliff``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

FOV_AXES = ("horizontal", "vertical", "diag")
_ASPECT_TOLERANCE = 0.01


def _check_image_wh(image_wh: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in image_wh)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"image_wh must be (width, height) in px, got {image_wh!r}") from exc
    if w <= 0 or h <= 0 or (w, h) != tuple(image_wh):
        raise ValueError(f"image_wh must be two positive integers (W, H) px, got {image_wh!r}")
    return w, h


def _frozen_array(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Camera:
    """Pinhole camera of the full image (see module docstring for the convention).

    K: f64[3,3] px intrinsics; image_wh: (W, H) px; dist: f64[k] OpenCV distortion (zeros: none).
    Immutable; arrays are read-only copies.
    """

    K: np.ndarray
    image_wh: tuple[int, int]
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))

    def __post_init__(self) -> None:
        K = np.asarray(self.K, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all():
            raise ValueError(f"Camera K must be a finite 3x3 matrix, got shape {K.shape}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(
                f"Camera focal lengths must be positive, got fx={K[0, 0]}, fy={K[1, 1]}"
            )
        if not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
            raise ValueError(f"Camera K must look like [[fx,s,cx],[0,fy,cy],[0,0,1]], got {K}")
        dist = np.asarray(self.dist, dtype=np.float64).reshape(-1)
        if not np.isfinite(dist).all():
            raise ValueError(f"Camera dist must be finite, got {dist}")
        object.__setattr__(self, "K", _frozen_array(K))
        object.__setattr__(self, "dist", _frozen_array(dist))
        object.__setattr__(self, "image_wh", _check_image_wh(self.image_wh))

    # ----- constructors -----
    @classmethod
    def from_focal(
        cls,
        f_px: float,
        image_wh: tuple[int, int],
        principal: tuple[float, float] | None = None,
    ) -> Camera:
        """Square pixels with focal length f_px; principal point at the image centre by default."""
        w, h = _check_image_wh(image_wh)
        f = float(f_px)
        if not math.isfinite(f) or f <= 0:
            raise ValueError(f"focal length must be a positive number of pixels, got {f_px}")
        cx, cy = (w / 2.0, h / 2.0) if principal is None else principal
        K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
        return cls(K, (w, h))

    @classmethod
    def from_fov(
        cls, fov_deg: float, image_wh: tuple[int, int], axis: str = "horizontal"
    ) -> Camera:
        """Square pixels with the given field of view (degrees) across ``axis``.

        axis: "horizontal" (across the width; what ``--fov`` means in this project),
        "vertical" (across the height) or "diag" (across the diagonal).
        """
        w, h = _check_image_wh(image_wh)
        fov = float(fov_deg)
        if not 0.0 < fov < 180.0:
            raise ValueError(f"fov_deg must be in (0, 180) degrees, got {fov_deg}")
        extent = _extent_px(w, h, axis)
        f = 0.5 * extent / math.tan(math.radians(fov) / 2.0)
        return cls.from_focal(f, (w, h))

    @classmethod
    def default(cls, image_wh: tuple[int, int]) -> Camera:
        """CLIFF's default: f = sqrt(W^2 + H^2) px (about 53 deg diagonal FOV), centred."""
        w, h = _check_image_wh(image_wh)
        return cls.from_focal(math.hypot(w, h), (w, h))

    @classmethod
    def from_file(cls, path: str | Path, image_wh: tuple[int, int] | None = None) -> Camera:
        """Load a calibration file (``multiroi.geometry.calibration_file``).

        With ``image_wh`` the camera is rescaled to that size (:meth:`scaled_to`; the aspect
        ratio must match within 1%).
        """
        from multiroi.geometry.calibration_file import read_calibration

        data = read_calibration(path)
        cam = cls(
            np.asarray(data.K, dtype=np.float64),
            tuple(data.image_wh),
            np.asarray(data.dist, dtype=np.float64),
        )
        logger.info(
            "calibration %s: rms %.3f px, date %s",
            path,
            float(getattr(data, "rms_px", float("nan"))),
            getattr(data, "date", "?"),
        )
        return cam if image_wh is None else cam.scaled_to(image_wh)

    # ----- derived cameras -----
    def scaled_to(self, image_wh: tuple[int, int]) -> Camera:
        """The same camera for a resized image of size ``image_wh`` (K scaled, dist kept).

        Raises ValueError if the aspect ratio differs by more than 1% (a crop, not a resize).
        """
        w, h = _check_image_wh(image_wh)
        w0, h0 = self.image_wh
        if (w, h) == (w0, h0):
            return self
        sx, sy = w / w0, h / h0
        if abs(sx / sy - 1.0) > _ASPECT_TOLERANCE:
            raise ValueError(
                f"cannot rescale a camera calibrated at {w0}x{h0} to {w}x{h}: the aspect ratio "
                "differs (the image was cropped, not resized); calibrate at this resolution or "
                "give a focal length / FOV instead"
            )
        K = np.diag([sx, sy, 1.0]) @ self.K
        return Camera(K, (w, h), self.dist)

    # ----- properties -----
    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def focal(self) -> float:
        """Mean focal length (fx + fy) / 2 in px."""
        return 0.5 * (self.fx + self.fy)

    @property
    def principal(self) -> tuple[float, float]:
        """Principal point (cx, cy) in px (project convention)."""
        return float(self.K[0, 2]), float(self.K[1, 2])

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    def fov_deg(self, axis: str = "horizontal") -> float:
        """Field of view in degrees across ``axis`` ("horizontal", "vertical", "diag")."""
        w, h = self.image_wh
        f = {"horizontal": self.fx, "vertical": self.fy, "diag": self.focal}.get(axis)
        extent = _extent_px(w, h, axis)
        return math.degrees(2.0 * math.atan(0.5 * extent / f))

    def describe(self) -> str:
        """One line for logs: size, focal, principal point, FOVs, distortion."""
        w, h = self.image_wh
        cx, cy = self.principal
        dist = "none" if not self.has_distortion else np.array2string(self.dist, precision=4)
        return (
            f"camera {w}x{h}: f={self.focal:.1f}px (fx={self.fx:.1f}, fy={self.fy:.1f}), "
            f"c=({cx:.1f}, {cy:.1f}), FOV h/v/diag={self.fov_deg('horizontal'):.1f}/"
            f"{self.fov_deg('vertical'):.1f}/{self.fov_deg('diag'):.1f} deg, dist={dist}"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Camera):
            return NotImplemented
        return (
            self.image_wh == other.image_wh
            and np.array_equal(self.K, other.K)
            and self.dist.shape == other.dist.shape
            and np.array_equal(self.dist, other.dist)
        )

    __hash__ = None  # type: ignore[assignment]


def _extent_px(w: int, h: int, axis: str) -> float:
    if axis == "horizontal":
        return float(w)
    if axis == "vertical":
        return float(h)
    if axis == "diag":
        return math.hypot(w, h)
    raise ValueError(f"axis must be one of {FOV_AXES}, got {axis!r}")
