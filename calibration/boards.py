"""Calibration boards: their description and their detection in one image.

Board frame: origin at the first inner corner, x along the columns, y along the rows, z = 0 on
the board, metres. Chessboard sizes count INNER corners (a 9x6 board has 10x7 squares); ChArUco
sizes count SQUARES (OpenCV convention).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BoardSpec:
    """kind: 'chessboard' or 'charuco'; cols x rows: inner corners (chessboard) or squares
    (charuco); square_m / marker_m: edge lengths in metres; dictionary: cv2.aruco name."""

    kind: str
    cols: int
    rows: int
    square_m: float
    marker_m: float | None = None
    dictionary: str = "DICT_5X5_100"
    legacy: bool = False

    def describe(self) -> str:
        if self.kind == "chessboard":
            return f"chessboard {self.cols}x{self.rows} inner corners, square {self.square_m} m"
        return (
            f"charuco {self.cols}x{self.rows} squares, square {self.square_m} m, "
            f"marker {self.marker_m} m, {self.dictionary}"
        )

    @property
    def corner_grid_shape(self) -> tuple[int, int]:
        """(cols, rows) of the inner-corner grid."""
        if self.kind == "chessboard":
            return self.cols, self.rows
        return self.cols - 1, self.rows - 1

    def object_points(self) -> np.ndarray:
        """f32[N,3] m, all inner corners in the board frame, row-major (x fastest)."""
        gc, gr = self.corner_grid_shape
        xs, ys = np.meshgrid(np.arange(gc), np.arange(gr))
        pts = np.stack([xs.ravel(), ys.ravel(), np.zeros(gc * gr)], axis=1) * self.square_m
        return pts.astype(np.float32)

    def outline_m(self) -> np.ndarray:
        """f32[4,3] m, the four outermost inner corners (tl, tr, br, bl) in the board frame."""
        gc, gr = self.corner_grid_shape
        s = self.square_m
        return np.array(
            [
                [0, 0, 0],
                [(gc - 1) * s, 0, 0],
                [(gc - 1) * s, (gr - 1) * s, 0],
                [0, (gr - 1) * s, 0],
            ],
            dtype=np.float32,
        )


_SIZE = re.compile(r"^\s*(?:(chessboard|charuco)\s*:)?\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_board(
    text: str,
    square_m: float,
    marker_m: float | None = None,
    dictionary: str = "DICT_5X5_100",
    legacy: bool = False,
) -> BoardSpec:
    """'9x6' / 'chessboard:9x6' (inner corners) or 'charuco:5x7' (squares) -> BoardSpec."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(
            f"bad board '{text}': expected COLSxROWS (chessboard inner corners, e.g. 9x6) or "
            "charuco:COLSxROWS (squares, e.g. charuco:5x7)"
        )
    kind = m.group(1) or "chessboard"
    cols, rows = int(m.group(2)), int(m.group(3))
    if not square_m or square_m <= 0:
        raise ValueError(f"--square must be the square edge in metres (> 0), got {square_m}")
    if kind == "chessboard":
        if cols < 3 or rows < 3:
            raise ValueError(f"chessboard needs at least 3x3 inner corners, got {cols}x{rows}")
        if cols == rows:
            logger.warning(
                "square chessboard %dx%d: orientation is ambiguous; prefer e.g. 9x6", cols, rows
            )
        return BoardSpec("chessboard", cols, rows, float(square_m))
    if cols < 3 or rows < 3:
        raise ValueError(f"charuco board needs at least 3x3 squares, got {cols}x{rows}")
    if marker_m is None or not 0 < marker_m < square_m:
        raise ValueError(
            f"charuco needs --marker (marker edge in metres, smaller than --square {square_m}), "
            f"got {marker_m}"
        )
    _aruco_dictionary(dictionary)  # validate the name early
    return BoardSpec("charuco", cols, rows, float(square_m), float(marker_m), dictionary, legacy)


def _aruco_dictionary(name: str):
    import cv2

    if not name.startswith("DICT_") or not hasattr(cv2.aruco, name):
        raise ValueError(f"unknown ArUco dictionary '{name}' (e.g. DICT_5X5_100, DICT_4X4_50)")
    return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))


@dataclass
class BoardView:
    """One detected board: image_points f32[N,2] px and object_points f32[N,3] m (matching rows),
    outline_px f32[4,2] px (where the board's outer inner corners land, tl tr br bl),
    source: file name or frame label."""

    image_points: np.ndarray
    object_points: np.ndarray
    outline_px: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return int(self.image_points.shape[0])


class ChessboardDetector:
    """Chessboard inner corners: findChessboardCornersSB (sub-pixel by design), falling back to
    findChessboardCorners + cornerSubPix."""

    def __init__(self, spec: BoardSpec, exhaustive: bool = True) -> None:
        self.spec = spec
        self.exhaustive = exhaustive  # slower second try; the live UI turns it off
        self._obj = spec.object_points()

    def detect(self, gray: np.ndarray, source: str = "") -> BoardView | None:
        """uint8[H,W] gray image -> BoardView with every inner corner, or None."""
        import cv2

        size = (self.spec.cols, self.spec.rows)
        ok, corners = cv2.findChessboardCornersSB(gray, size, flags=cv2.CALIB_CB_NORMALIZE_IMAGE)
        if not ok and self.exhaustive:
            flags = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE
            ok, corners = cv2.findChessboardCornersSB(gray, size, flags=flags)
        if not ok:
            classic = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
            ok, corners = cv2.findChessboardCorners(gray, size, flags=classic)
            if not ok:
                return None
        img = _refine_grid(gray, corners.reshape(-1, 2).astype(np.float32), size)
        outline = img[[0, size[0] - 1, size[0] * size[1] - 1, size[0] * (size[1] - 1)]]
        return BoardView(img, self._obj.copy(), outline.copy(), source)


def _refine_grid(gray: np.ndarray, corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cornerSubPix on a detected grid f32[N,2] px with a window below half the corner spacing
    (findChessboardCornersSB alone is off by 0.1-0.6 px on small, tilted boards)."""
    import cv2

    grid = corners.reshape(size[1], size[0], 2)
    spacing = min(
        float(np.linalg.norm(np.diff(grid, axis=1), axis=2).min()),
        float(np.linalg.norm(np.diff(grid, axis=0), axis=2).min()),
    )
    win = int(np.clip(0.3 * spacing, 2, 7))
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
    refined = cv2.cornerSubPix(gray, corners.reshape(-1, 1, 2).copy(), (win, win), (-1, -1), crit)
    return refined.reshape(-1, 2).astype(np.float32)


class CharucoBoardDetector:
    """ChArUco corners via cv2.aruco.CharucoDetector; partial views are kept (>= min_corners)."""

    def __init__(self, spec: BoardSpec, min_corners: int = 6) -> None:
        import cv2

        self.spec = spec
        self.min_corners = min_corners
        self.board = cv2.aruco.CharucoBoard(
            (spec.cols, spec.rows),
            spec.square_m,
            spec.marker_m,
            _aruco_dictionary(spec.dictionary),
        )
        if spec.legacy:
            self.board.setLegacyPattern(True)
        self.detector = cv2.aruco.CharucoDetector(self.board)

    def detect(self, gray: np.ndarray, source: str = "") -> BoardView | None:
        """uint8[H,W] gray image -> BoardView with the visible ChArUco corners, or None."""
        import cv2

        ch_corners, ch_ids, _, _ = self.detector.detectBoard(gray)
        if ch_ids is None or len(ch_ids) < self.min_corners:
            return None
        obj, img = self.board.matchImagePoints(ch_corners, ch_ids)
        obj = obj.reshape(-1, 3).astype(np.float32)
        img = img.reshape(-1, 2).astype(np.float32)
        # collinear corners give no homography and no calibration constraint
        if np.linalg.matrix_rank(obj[:, :2] - obj[:1, :2], tol=1e-9) < 2:
            return None
        H, _ = cv2.findHomography(obj[:, :2], img, 0)
        if H is None:
            return None
        # ChArUco object points start at the first inner corner = one square in: shift to origin 0
        outline_m = self.spec.outline_m()[:, :2] + self.spec.square_m
        outline = cv2.perspectiveTransform(outline_m[None].astype(np.float64), H)[0]
        return BoardView(img, obj, outline.astype(np.float32), source)


def make_detector(spec: BoardSpec) -> ChessboardDetector | CharucoBoardDetector:
    """The detector for ``spec.kind``."""
    if spec.kind == "chessboard":
        return ChessboardDetector(spec)
    if spec.kind == "charuco":
        return CharucoBoardDetector(spec)
    raise ValueError(f"unknown board kind '{spec.kind}' (chessboard or charuco)")
