"""Camera intrinsics from a chessboard or ChArUco board (``python -m calibration``).

Library use::

    from calibration import parse_board, make_detector, calibrate_views
    spec = parse_board("9x6", square_m=0.025)
    views = [v for img in grays if (v := make_detector(spec).detect(img)) is not None]
    result = calibrate_views(views, image_wh=(640, 480))
    write_calibration("camera.yaml", result.data)
"""

from calibration.boards import BoardSpec, BoardView, make_detector, parse_board
from calibration.coverage import Coverage, ViewSelector, measure_coverage
from calibration.solver import (
    CalibrationError,
    CalibrationResult,
    SolverSettings,
    calibrate_views,
)
from multiroi.geometry.calibration_file import (
    CalibrationData,
    read_calibration,
    write_calibration,
)

__all__ = [
    "BoardSpec",
    "BoardView",
    "CalibrationData",
    "CalibrationError",
    "CalibrationResult",
    "Coverage",
    "SolverSettings",
    "ViewSelector",
    "calibrate_views",
    "make_detector",
    "measure_coverage",
    "parse_board",
    "read_calibration",
    "write_calibration",
]
