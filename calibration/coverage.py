"""Which parts of the image the board views cover, and which new views add something.

Coverage is measured on a coarse grid over the image: a cell is covered when the outline of some
board view (the quadrilateral through its outer corners) contains the cell centre. Uncovered
regions are reported by name on a 3x3 split (``top-left`` ... ``bottom-right``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from calibration.boards import BoardView

logger = logging.getLogger(__name__)

REGION_NAMES = (
    ("top-left", "top", "top-right"),
    ("left", "centre", "right"),
    ("bottom-left", "bottom", "bottom-right"),
)


@dataclass
class Coverage:
    """covered: bool[gh,gw] grid over the image; fraction: covered share in [0,1];
    region_fraction: f64[3,3] covered share of each third x third region; uncovered: names of the
    regions whose share is below the region threshold."""

    covered: np.ndarray
    fraction: float
    region_fraction: np.ndarray
    uncovered: list[str]


def coverage_grid(
    views: Sequence[BoardView], image_wh: tuple[int, int], grid_wh: tuple[int, int] = (24, 18)
) -> np.ndarray:
    """bool[gh,gw]: cells whose centre lies inside the outline of at least one view."""
    import cv2

    gw, gh = grid_wh
    w, h = image_wh
    mask = np.zeros((gh, gw), np.uint8)
    scale = np.array([gw / w, gh / h], np.float64)
    for v in views:
        # pixel centres of the grid are at (i + 0.5) cells; fillPoly fills pixels whose centre is
        # inside the polygon; shift 4 gives 1/16-cell precision
        poly = ((v.outline_px.astype(np.float64) * scale - 0.5) * 16).round().astype(np.int32)
        cv2.fillPoly(mask, [poly.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def measure_coverage(
    views: Sequence[BoardView],
    image_wh: tuple[int, int],
    grid_wh: tuple[int, int] = (24, 18),
    region_threshold: float = 0.25,
) -> Coverage:
    """Coverage of the image by the outlines of ``views`` (see the module docstring)."""
    covered = coverage_grid(views, image_wh, grid_wh)
    gh, gw = covered.shape
    regions = np.zeros((3, 3))
    for r in range(3):
        for c in range(3):
            cell = covered[r * gh // 3 : (r + 1) * gh // 3, c * gw // 3 : (c + 1) * gw // 3]
            regions[r, c] = float(cell.mean()) if cell.size else 0.0
    uncovered = [
        REGION_NAMES[r][c] for r in range(3) for c in range(3) if regions[r, c] < region_threshold
    ]
    return Coverage(covered, float(covered.mean()), regions, uncovered)


def view_distance(a: BoardView, b: BoardView, image_wh: tuple[int, int]) -> float:
    """How different two board poses look: mean distance of the four outline corners, as a
    fraction of the image diagonal. Position, size, in-plane rotation and tilt all change it."""
    diag = float(np.hypot(*image_wh))
    d = np.linalg.norm(a.outline_px.astype(np.float64) - b.outline_px, axis=1).mean()
    # a board seen rotated by 180 degrees is the same pose for our purpose: compare both orders
    d_rot = np.linalg.norm(a.outline_px.astype(np.float64) - b.outline_px[[2, 3, 0, 1]], axis=1)
    return float(min(d, d_rot.mean()) / diag)


class ViewSelector:
    """Keeps a view only when its pose differs enough from every kept view.

    min_distance: minimum ``view_distance`` (fraction of the image diagonal) to every kept view;
    max_views: hard cap (later views are refused); min_points: views with fewer corners refused.
    """

    def __init__(
        self,
        image_wh: tuple[int, int],
        min_distance: float = 0.06,
        max_views: int = 60,
        min_points: int = 6,
    ) -> None:
        self.image_wh = (int(image_wh[0]), int(image_wh[1]))
        self.min_distance = float(min_distance)
        self.max_views = int(max_views)
        self.min_points = int(min_points)
        self.views: list[BoardView] = []

    def novelty(self, view: BoardView) -> float:
        """Distance to the nearest kept view (inf when none is kept)."""
        if not self.views:
            return float("inf")
        return min(view_distance(view, k, self.image_wh) for k in self.views)

    def consider(self, view: BoardView) -> bool:
        """Keep ``view`` when it is new enough; returns whether it was kept."""
        if len(self.views) >= self.max_views or len(view) < self.min_points:
            return False
        if self.novelty(view) < self.min_distance:
            return False
        self.views.append(view)
        return True
