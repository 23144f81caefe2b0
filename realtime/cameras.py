"""The camera of each frame size: calibration, a FOV, a focal length or the default."""

from __future__ import annotations

import logging
import threading
from typing import Any

from multiroi.geometry.camera import Camera

logger = logging.getLogger(__name__)


class CameraProvider:
    """The camera for each frame size (cached): calibration scaled to the size, a FOV, a focal
    length, the source's own camera (``source_camera``, e.g. the demo clip's), or the default
    f = sqrt(W^2 + H^2). With ``undistort`` it also gives an
    :class:`multiroi.geometry.undistort.Undistorter` per size, and the camera it returns is
    the undistorted (distortion-free) one. Thread-safe: the detect (undistortion), infer and
    render threads all ask it, and every caller gets the same Camera object for a size."""

    def __init__(self, cfg: Any = None, source_camera: Camera | None = None) -> None:
        self.calib = getattr(cfg, "calib", None)
        self.fov_deg = getattr(cfg, "fov_deg", None)
        self.focal_px = getattr(cfg, "focal_px", None)
        self._focal_width: int | None = None  # --focal is in pixels of the first frame size
        self.undistort = bool(getattr(cfg, "undistort", False))
        self._base = Camera.from_file(self.calib) if self.calib else None
        if self._base is None and self.fov_deg is None and self.focal_px is None:
            self._base = source_camera  # e.g. the demo clip's known intrinsics
        self._cache: dict[tuple[int, int], tuple[Camera, Any]] = {}
        self._lock = threading.Lock()

    def _build(self, wh: tuple[int, int]) -> tuple[Camera, Any]:
        if self._base is not None:
            cam = self._base.scaled_to(wh)
        elif self.fov_deg is not None:
            cam = Camera.from_fov(self.fov_deg, wh)
        elif self.focal_px is not None:
            # the focal was given for the frames as first delivered; a later size (a source
            # that changes resolution) sees the same lens, so the focal scales with the width
            self._focal_width = self._focal_width or wh[0]
            cam = Camera.from_focal(self.focal_px * wh[0] / self._focal_width, wh)
        else:
            cam = Camera.default(wh)
        undistorter = None
        if self.undistort and cam.has_distortion:
            from multiroi.geometry.undistort import Undistorter

            undistorter = Undistorter(cam.K, cam.dist, wh)
            cam = Camera(undistorter.new_K, wh)
        logger.info("camera for %dx%d: %s", wh[0], wh[1], cam.describe())
        return cam, undistorter

    def __call__(self, size_wh: tuple[int, int]) -> Camera:
        wh = (int(size_wh[0]), int(size_wh[1]))
        with self._lock:
            if wh not in self._cache:
                self._cache[wh] = self._build(wh)
            return self._cache[wh][0]

    def undistorter(self, size_wh: tuple[int, int]) -> Any:
        """The undistorter for this size, or None (no --undistort / no distortion)."""
        self(size_wh)
        with self._lock:
            return self._cache[(int(size_wh[0]), int(size_wh[1]))][1]
