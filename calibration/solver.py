"""Intrinsics from board views: cv2.calibrateCamera with checks a user can act on."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from calibration.boards import BoardView
from calibration.coverage import Coverage, measure_coverage
from multiroi.geometry.calibration_file import CalibrationData

logger = logging.getLogger(__name__)

DIST_FLAGS = {0: "none", 4: "k1 k2 p1 p2", 5: "k1 k2 p1 p2 k3", 8: "rational (8)"}


class CalibrationError(ValueError):
    """Calibration cannot be done with what was given (one-line message saying what to do)."""


@dataclass
class SolverSettings:
    """min_views: fewest usable views; min_coverage: image share below which a warning names
    the uncovered regions; dist_coeffs: 0, 4, 5 or 8 distortion coefficients;
    reject_factor: views whose RMS exceeds this times the median (and 1 px) are dropped once and
    the calibration rerun (0 disables)."""

    min_views: int = 5
    min_coverage: float = 0.5
    dist_coeffs: int = 5
    reject_factor: float = 3.0


@dataclass
class CalibrationResult:
    """data: the calibration; per_view_rms_px f64[V] for the views used; coverage; rejected:
    sources of the views dropped as outliers; warnings: one-line messages for the user."""

    data: CalibrationData
    per_view_rms_px: np.ndarray
    coverage: Coverage
    views: list[BoardView]
    rejected: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _flags(dist_coeffs: int) -> int:
    import cv2

    if dist_coeffs not in DIST_FLAGS:
        raise ValueError(f"dist_coeffs must be one of {sorted(DIST_FLAGS)}, got {dist_coeffs}")
    if dist_coeffs == 0:
        return cv2.CALIB_ZERO_TANGENT_DIST | cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3
    if dist_coeffs == 4:
        return cv2.CALIB_FIX_K3
    if dist_coeffs == 8:
        return cv2.CALIB_RATIONAL_MODEL
    return 0


def _solve(
    views: Sequence[BoardView], image_wh: tuple[int, int], dist_coeffs: int
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """-> (rms_px, K f64[3,3], dist f64[k], per_view_rms_px f64[V])."""
    import cv2

    obj = [v.object_points.reshape(-1, 1, 3).astype(np.float32) for v in views]
    img = [v.image_points.reshape(-1, 1, 2).astype(np.float32) for v in views]
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    rms, K, dist, rvecs, tvecs = cv2.calibrateCamera(
        obj, img, tuple(image_wh), None, None, flags=_flags(dist_coeffs), criteria=crit
    )
    per_view = np.empty(len(views))
    for i, (o, p, r, t) in enumerate(zip(obj, img, rvecs, tvecs, strict=True)):
        proj, _ = cv2.projectPoints(o, r, t, K, dist)
        per_view[i] = np.sqrt(np.mean(np.sum((proj - p).reshape(-1, 2) ** 2, axis=1)))
    dist = dist.reshape(-1)[:dist_coeffs]  # 0 -> none, 4 -> k1 k2 p1 p2, 5 -> + k3, 8 -> rational
    return float(rms), K.astype(np.float64), dist.astype(np.float64), per_view


def _solve_dropping_outliers(
    views: list[BoardView], image_wh: tuple[int, int], s: SolverSettings
) -> tuple[list[BoardView], list[str], tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
    """Solve; if some views' RMS exceeds ``s.reject_factor`` x the median (and enough views
    remain), drop them and solve again. Returns (views kept, sources rejected, _solve result)."""
    solved = _solve(views, image_wh, s.dist_coeffs)
    if s.reject_factor <= 0 or len(views) <= s.min_views:
        return views, [], solved
    per_view = solved[3]
    limit = max(1.0, s.reject_factor * float(np.median(per_view)))
    bad = per_view > limit
    if not bad.any() or len(views) - int(bad.sum()) < s.min_views:
        return views, [], solved
    rejected = [v.source for v, b in zip(views, bad, strict=True) if b]
    names = ", ".join(rejected)
    logger.warning("dropping %d outlier view(s) (RMS > %.2f px): %s", len(rejected), limit, names)
    views = [v for v, b in zip(views, bad, strict=True) if not b]
    return views, rejected, _solve(views, image_wh, s.dist_coeffs)


def calibrate_views(
    views: Sequence[BoardView],
    image_wh: tuple[int, int],
    settings: SolverSettings | None = None,
    board: str | None = None,
) -> CalibrationResult:
    """Calibrate from board views of one camera at ``image_wh`` (W, H) px.

    Raises CalibrationError when there are no views or fewer than ``settings.min_views``.
    Warns (logger and ``result.warnings``) when the views cover too little of the image.
    """
    s = settings or SolverSettings()
    views = [v for v in views if len(v) >= 4]
    if not views:
        raise CalibrationError(
            "no board found in any image: check --board (inner corners for a chessboard, e.g. "
            "9x6 for 10x7 squares), lighting, focus, and that the whole board is visible"
        )
    if len(views) < s.min_views:
        raise CalibrationError(
            f"too few usable views: {len(views)} < {s.min_views}; capture more images of the "
            "board at different positions and tilts (or lower --min-views)"
        )
    views, rejected, (rms, K, dist, per_view) = _solve_dropping_outliers(views, image_wh, s)
    coverage = measure_coverage(views, image_wh)
    warnings = []
    if coverage.fraction < s.min_coverage:
        msg = (
            f"the board views cover only {coverage.fraction:.0%} of the image "
            f"(< {s.min_coverage:.0%}); uncovered: {', '.join(coverage.uncovered) or 'scattered'}"
            "; add views there or the distortion and principal point will be poor"
        )
        logger.warning(msg)
        warnings.append(msg)
    data = CalibrationData(
        K=K,
        dist=dist,
        image_wh=(int(image_wh[0]), int(image_wh[1])),
        rms_px=rms,
        date=datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        board=board,
        num_views=len(views),
    )
    logger.info(
        "calibrated from %d views: fx=%.1f fy=%.1f cx=%.1f cy=%.1f rms=%.3f px",
        len(views),
        K[0, 0],
        K[1, 1],
        K[0, 2],
        K[1, 2],
        rms,
    )
    return CalibrationResult(data, per_view, coverage, list(views), rejected, warnings)
