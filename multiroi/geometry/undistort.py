"""Lens undistortion of whole frames with maps precomputed once.

After undistortion the frame is a pinhole image with intrinsics ``Undistorter.new_K`` and no
distortion; every later stage must use that K (and zero distortion).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


class Undistorter:
    """Remove lens distortion from BGR frames of one fixed size.

    K: f64[3,3] px intrinsics of the distorted frames; dist: OpenCV coefficients (k1, k2, p1,
    p2[, k3, ...]); image_wh: (W, H) px of the frames. ``alpha=None`` keeps K as the camera of the
    undistorted frame (same focal and principal point, corners cropped/stretched a little);
    ``alpha`` in [0, 1] uses cv2.getOptimalNewCameraMatrix (0: only valid pixels, 1: all source
    pixels kept, black borders). The cv2 maps are built once here; ``__call__`` is one remap.
    """

    def __init__(
        self,
        K: np.ndarray,
        dist: np.ndarray,
        image_wh: tuple[int, int],
        *,
        alpha: float | None = None,
        interpolation: int | None = None,
    ) -> None:
        import cv2

        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise ValueError(f"K must be 3x3, got shape {K.shape}")
        dist = np.asarray(dist if dist is not None else [], dtype=np.float64).reshape(-1)
        w, h = (int(v) for v in image_wh)
        if w <= 0 or h <= 0:
            raise ValueError(f"image_wh must be positive (W, H), got {image_wh}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be None or in [0, 1], got {alpha}")
        self.K = K
        self.dist = dist
        self.image_wh = (w, h)
        self.interpolation = cv2.INTER_LINEAR if interpolation is None else interpolation
        if alpha is None:
            self.new_K = K.copy()
        else:
            self.new_K, _ = cv2.getOptimalNewCameraMatrix(K, dist, (w, h), alpha, (w, h))
        self.is_identity = bool(dist.size == 0 or not np.any(dist)) and alpha is None
        self._map1 = self._map2 = None
        if not self.is_identity:
            self._map1, self._map2 = cv2.initUndistortRectifyMap(
                K, dist, None, self.new_K, (w, h), cv2.CV_16SC2
            )
        logger.debug("undistorter %dx%d identity=%s", w, h, self.is_identity)

    @classmethod
    def from_camera(cls, camera: object, *, alpha: float | None = None) -> Undistorter:
        """Build from any object with ``K``, ``dist`` and ``image_wh`` (e.g. geometry Camera or
        CalibrationData)."""
        for name in ("K", "dist", "image_wh"):
            if not hasattr(camera, name):
                raise ValueError(f"camera object lacks '{name}'; pass K, dist, image_wh directly")
        return cls(camera.K, camera.dist, camera.image_wh, alpha=alpha)  # type: ignore[attr-defined]

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        """uint8[H,W,3] (or [H,W]) distorted frame -> undistorted frame of the same size.

        Returns the input object itself when there is no distortion to remove.
        """
        import cv2

        h, w = image_bgr.shape[:2]
        if (w, h) != self.image_wh:
            raise ValueError(
                f"frame is {w}x{h} but the undistorter was built for "
                f"{self.image_wh[0]}x{self.image_wh[1]}; build it for the capture resolution "
                "(scale K with Camera.scaled_to first)"
            )
        if self.is_identity:
            return image_bgr
        return cv2.remap(
            image_bgr, self._map1, self._map2, self.interpolation, borderMode=cv2.BORDER_CONSTANT
        )
