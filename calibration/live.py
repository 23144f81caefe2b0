"""Live calibration from a camera: show the board, capture views that add coverage, stop when done.

Keys in the window: SPACE capture the current view even if it is not new, ENTER/q finish now and
calibrate with what was captured, ESC abort without a result. The loop stops by itself when the
views reach ``target_views``, the coverage ``target_coverage`` and the RMS ``target_rms_px``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from calibration.boards import BoardView
from calibration.coverage import ViewSelector, measure_coverage
from calibration.solver import CalibrationError, CalibrationResult, SolverSettings, calibrate_views

logger = logging.getLogger(__name__)

WINDOW = "multiroi calibration"


@dataclass
class LiveSettings:
    """target_views / target_coverage (fraction) / target_rms_px: when to stop by itself;
    min_distance: novelty needed to keep a view (fraction of the image diagonal);
    max_motion: largest board motion between two frames for a capture (fraction of the
    diagonal; avoids motion blur); resolution_wh: requested capture size or None."""

    target_views: int = 20
    target_coverage: float = 0.7
    target_rms_px: float = 0.5
    min_distance: float = 0.08
    max_motion: float = 0.006
    resolution_wh: tuple[int, int] | None = None


class _State:
    def __init__(self, image_wh: tuple[int, int], s: LiveSettings, solver: SolverSettings):
        self.selector = ViewSelector(image_wh, min_distance=s.min_distance, max_views=200)
        self.image_wh = image_wh
        self.solver = solver
        self.result: CalibrationResult | None = None
        self.previous: BoardView | None = None
        self.flash = 0

    def add(self, view: BoardView, force: bool = False) -> bool:
        if force:
            self.selector.views.append(view)
            kept = True
        else:
            kept = self.selector.consider(view)
        if kept:
            self.flash = 4
            if len(self.selector.views) >= self.solver.min_views:
                try:
                    self.result = calibrate_views(self.selector.views, self.image_wh, self.solver)
                except CalibrationError as e:
                    logger.warning("%s", e)
        return kept

    def done(self, s: LiveSettings) -> bool:
        r = self.result
        return (
            r is not None
            and len(self.selector.views) >= s.target_views
            and r.coverage.fraction >= s.target_coverage
            and r.data.rms_px <= s.target_rms_px
        )


def _open_camera(index: int, resolution_wh: tuple[int, int] | None):
    import cv2

    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        raise ValueError(f"--camera {index}: cannot open the camera (is it connected / in use?)")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    if resolution_wh:
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, resolution_wh[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, resolution_wh[1])
    return cap


def draw_overlay(frame: np.ndarray, state: _State, view: BoardView | None) -> np.ndarray:
    """BGR frame with the covered cells tinted, the detected corners and a status line."""
    import cv2

    out = frame.copy()
    views = state.selector.views
    cov = measure_coverage(views, state.image_wh)
    mask = cv2.resize(
        cov.covered.astype(np.uint8), state.image_wh, interpolation=cv2.INTER_NEAREST
    )
    out[mask > 0] = (0.7 * out[mask > 0] + 0.3 * np.array([0, 255, 0])).astype(np.uint8)
    if view is not None:
        for p in view.image_points.astype(int):
            cv2.circle(out, (int(p[0]), int(p[1])), 3, (0, 0, 255), -1)
        cv2.polylines(
            out, [view.outline_px.astype(np.int32).reshape(-1, 1, 2)], True, (0, 255, 255), 2
        )
    if state.flash > 0:
        cv2.rectangle(out, (0, 0), (out.shape[1] - 1, out.shape[0] - 1), (255, 255, 255), 8)
        state.flash -= 1
    rms = f"{state.result.data.rms_px:.3f} px" if state.result else "-"
    text = f"views {len(views)}  coverage {cov.fraction:.0%}  rms {rms}   [space] add [q] done"
    cv2.putText(out, text, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 4)
    cv2.putText(out, text, (10, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1)
    return out


def run_live(
    camera_index: int,
    detector,
    settings: LiveSettings | None = None,
    solver: SolverSettings | None = None,
    board: str | None = None,
) -> CalibrationResult:
    """Interactive calibration from camera ``camera_index`` (needs a display)."""
    import cv2

    from calibration.coverage import view_distance

    s, solver = settings or LiveSettings(), solver or SolverSettings()
    cap = _open_camera(camera_index, s.resolution_wh)
    state: _State | None = None
    aborted = False
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                raise ValueError(f"--camera {camera_index}: the camera stopped delivering frames")
            wh = (frame.shape[1], frame.shape[0])
            state = state or _State(wh, s, solver)
            view = detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), "live")
            steady = (
                view is not None
                and state.previous is not None
                and view_distance(view, state.previous, wh) < s.max_motion
            )
            if steady:
                state.add(view)
            state.previous = view
            try:
                cv2.imshow(WINDOW, draw_overlay(frame, state, view))
            except cv2.error:
                raise ValueError(
                    "--camera needs a display for the live window; record a video and use "
                    "--video FILE instead"
                ) from None
            key = cv2.waitKey(1) & 0xFF
            if key == 32 and view is not None:
                state.add(view, force=True)
            elif key in (13, ord("q")):
                break
            elif key == 27:
                aborted = True
                break
            if state.done(s):
                logger.info("enough views, coverage and accuracy: finishing")
                break
    finally:
        cap.release()
        cv2.destroyAllWindows()
    if aborted or state is None:
        raise CalibrationError("calibration aborted (ESC); nothing written")
    return calibrate_views(state.selector.views, state.image_wh, solver, board=board)
