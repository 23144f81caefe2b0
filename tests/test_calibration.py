"""Calibration: boards rendered through a known camera are calibrated back; files; undistortion."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from calibration.__main__ import main as calibrate_main
from calibration.boards import BoardView, make_detector, parse_board
from calibration.collect import views_from_video
from calibration.coverage import ViewSelector, measure_coverage
from calibration.solver import CalibrationError, SolverSettings, calibrate_views
from calibration.synthetic import (
    SyntheticCamera,
    charuco_texture,
    chessboard_texture,
    random_poses,
)
from multiroi.geometry.calibration_file import (
    read_calibration,
)
from multiroi.geometry.undistort import Undistorter

WH = (640, 480)
K_TRUE = np.array([[600.0, 0.0, 322.0], [0.0, 600.0, 236.0], [0.0, 0.0, 1.0]])
DIST_TRUE = np.array([-0.28, 0.09, 0.0008, -0.0005, 0.0])


@pytest.fixture(scope="module")
def cam() -> SyntheticCamera:
    return SyntheticCamera(K_TRUE, DIST_TRUE, WH)


@pytest.fixture(scope="module")
def chess():
    spec = parse_board("9x6", 0.025)
    return spec, chessboard_texture(spec)


@pytest.fixture(scope="module")
def rendered(cam, chess):
    """12 views spread over the image: (images uint8[H,W], poses, views)."""
    spec, tex = chess
    rng = np.random.default_rng(0)
    poses = random_poses(cam, tex, spec.object_points().mean(0), 12, rng)
    images = [cam.render(tex, r, t, noise_sigma=1.0, rng=rng) for r, t in poses]
    det = make_detector(spec)
    views = [det.detect(img, f"view{i}") for i, img in enumerate(images)]
    return images, poses, views


def _align(view_pts: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The detector may number a symmetric grid from the other end; match the ground truth."""
    if np.linalg.norm(view_pts[0] - gt[0]) > np.linalg.norm(view_pts[-1] - gt[0]):
        return view_pts[::-1]
    return view_pts


# ----- the renderer and the detector -----


def test_renderer_inverse_distortion_is_exact(cam):
    xy = cam._xy_norm[::997]
    pts3 = np.ascontiguousarray(np.column_stack([xy, np.ones(len(xy))]))
    back, _ = cv2.projectPoints(pts3, np.zeros(3), np.zeros(3), K_TRUE, DIST_TRUE)
    u = (np.arange(WH[0] * cam.ss) + 0.5) / cam.ss - 0.5
    v = (np.arange(WH[1] * cam.ss) + 0.5) / cam.ss - 0.5
    uu, vv = np.meshgrid(u, v)
    target = np.column_stack([uu.ravel(), vv.ravel()])[::997]
    assert np.abs(back.reshape(-1, 2) - target).max() < 1e-4


def test_detected_corners_match_known_projection(cam, chess, rendered):
    spec, _ = chess
    _, poses, views = rendered
    assert all(v is not None for v in views), "board missed in a rendered image"
    errs = []
    for view, (r, t) in zip(views, poses, strict=True):
        gt = cam.project(spec.object_points(), r, t)
        errs.append(np.linalg.norm(_align(view.image_points, gt) - gt, axis=1))
    errs = np.concatenate(errs)
    assert np.sqrt(np.mean(errs**2)) < 0.15
    assert errs.max() < 0.5


# ----- calibration -----


def test_calibration_recovers_known_intrinsics(rendered):
    _, _, views = rendered
    result = calibrate_views(views, WH, board="chessboard 9x6")
    K = result.data.K
    assert abs(K[0, 0] / K_TRUE[0, 0] - 1) < 0.01
    assert abs(K[1, 1] / K_TRUE[1, 1] - 1) < 0.01
    assert abs(K[0, 2] / K_TRUE[0, 2] - 1) < 0.02
    assert abs(K[1, 2] / K_TRUE[1, 2] - 1) < 0.02
    assert result.data.rms_px < 0.5
    assert result.data.dist.shape == (5,)
    assert abs(result.data.dist[0] - DIST_TRUE[0]) < 0.05  # k1 is well determined
    assert result.data.num_views == 12
    assert not result.warnings
    assert result.data.image_wh == WH


def test_outlier_view_is_dropped_and_named(rendered):
    """One view with corners shifted by up to 6 px (a bad detection) is rejected by name and the
    intrinsics come out as without it."""
    import dataclasses

    _, _, views = rendered
    rng = np.random.default_rng(3)
    noisy = views[5].image_points + rng.uniform(-6, 6, views[5].image_points.shape)
    bad = dataclasses.replace(views[5], image_points=noisy.astype(np.float32))
    result = calibrate_views([*views[:5], bad, *views[6:]], WH)
    assert result.rejected == [views[5].source] and result.data.num_views == 11
    assert abs(result.data.K[0, 0] / K_TRUE[0, 0] - 1) < 0.01 and result.data.rms_px < 0.5
    kept = calibrate_views([*views[:5], bad, *views[6:]], WH, SolverSettings(reject_factor=0))
    assert kept.rejected == [] and kept.data.rms_px > 2 * result.data.rms_px


def test_cli_images_writes_yaml(tmp_path, rendered):
    images, _, _ = rendered
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, img in enumerate(images):
        cv2.imwrite(str(folder / f"img{i:02d}.png"), img)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "camera.yaml"
    argv = ["--images", str(folder), "--board", "9x6", "--square", "0.025", "--out", str(out)]
    assert calibrate_main([*argv, "--no-progress"]) == 0
    data = read_calibration(out)
    assert data.image_wh == WH
    assert abs(data.K[0, 0] / 600.0 - 1) < 0.01
    assert abs(data.K[0, 2] / 322.0 - 1) < 0.02 and abs(data.K[1, 2] / 236.0 - 1) < 0.02
    assert data.rms_px < 0.5
    assert data.date[:4].isdigit() and "T" in data.date
    assert "9x6" in (data.board or "")


def test_no_board_found_is_a_clear_error(tmp_path, caplog):
    with pytest.raises(CalibrationError, match="no board found"):
        calibrate_views([], WH)
    folder = tmp_path / "empty_scene"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(folder / f"n{i}.png"), rng.integers(0, 255, (120, 160), dtype=np.uint8))
    argv = ["--images", str(folder), "--board", "9x6", "--square", "0.025"]
    with caplog.at_level(logging.ERROR):
        rc = calibrate_main([*argv, "--out", str(tmp_path / "c.yaml"), "--no-progress"])
    assert rc == 2
    assert "no board found" in caplog.text
    assert not (tmp_path / "c.yaml").exists()


def test_too_few_views_is_a_clear_error(rendered):
    _, _, views = rendered
    with pytest.raises(CalibrationError, match="too few usable views: 3 < 5"):
        calibrate_views(views[:3], WH)
    # the limit is configurable
    result = calibrate_views(views[:4], WH, SolverSettings(min_views=4, min_coverage=0.0))
    assert result.data.num_views == 4


def test_views_in_one_corner_warn_with_region_names(cam, chess, caplog):
    spec, tex = chess
    rng = np.random.default_rng(3)
    poses = random_poses(
        cam,
        tex,
        spec.object_points().mean(0),
        6,
        rng,
        region_xyxy=(0.05, 0.05, 0.35, 0.35),
        width_frac=(0.22, 0.28),
        max_tilt_deg=30,
    )
    det = make_detector(spec)
    views = [det.detect(cam.render(tex, r, t), f"c{i}") for i, (r, t) in enumerate(poses)]
    views = [v for v in views if v is not None]
    assert len(views) >= 5
    with caplog.at_level(logging.WARNING):
        result = calibrate_views(views, WH)
    assert result.coverage.fraction < 0.2
    assert len(result.warnings) == 1
    for region in ("bottom-right", "right", "bottom", "centre"):
        assert region in result.coverage.uncovered
    assert "top-left" not in result.coverage.uncovered
    assert "bottom-right" in caplog.text and "cover only" in caplog.text


def test_coverage_of_a_full_image_outline():
    full = BoardView(
        np.zeros((4, 2), np.float32),
        np.zeros((4, 3), np.float32),
        np.array([[0, 0], [639, 0], [639, 479], [0, 479]], np.float32),
    )
    left = BoardView(
        full.image_points,
        full.object_points,
        np.array([[0, 0], [319, 0], [319, 479], [0, 479]], np.float32),
    )
    assert measure_coverage([full], WH).fraction == pytest.approx(1.0)
    cov = measure_coverage([left], WH)
    assert cov.fraction == pytest.approx(0.5, abs=0.03)
    assert set(cov.uncovered) == {"top-right", "right", "bottom-right"}


def test_view_selector_keeps_only_new_poses(rendered):
    _, _, views = rendered
    sel = ViewSelector(WH, min_distance=0.05)
    assert sel.consider(views[0])
    shifted = BoardView(
        views[0].image_points + 1.0, views[0].object_points, views[0].outline_px + 1.0
    )
    assert not sel.consider(shifted)  # 1 px away: the same pose
    assert sel.consider(views[1])
    assert len(sel.views) == 2


def test_video_source_keeps_distinct_views(tmp_path, rendered):
    images, _, _ = rendered
    path = tmp_path / "board.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, WH)
    assert writer.isOpened()
    for img in images[:6]:
        for _ in range(3):  # each pose held for three frames
            writer.write(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    writer.release()
    det = make_detector(parse_board("9x6", 0.025))
    views, wh = views_from_video(path, det, stride=1, progress=False)
    assert wh == WH
    assert len(views) == 6


def test_charuco_board_calibrates(cam):
    spec = parse_board("charuco:7x5", 0.04, 0.03, "DICT_5X5_100")
    tex = charuco_texture(spec)
    rng = np.random.default_rng(5)
    center = np.array([spec.cols, spec.rows, 0.0]) * spec.square_m / 2
    poses = random_poses(cam, tex, center, 10, rng, width_frac=(0.5, 0.75), max_tilt_deg=30)
    det = make_detector(spec)
    views = [det.detect(cam.render(tex, r, t), f"c{i}") for i, (r, t) in enumerate(poses)]
    views = [v for v in views if v is not None]
    assert len(views) >= 8
    for v, (r, t) in zip(views[:3], poses[:3], strict=False):
        gt = cam.project(v.object_points, r, t)
        assert np.abs(v.image_points - gt).max() < 0.5
    data = calibrate_views(views, WH).data
    assert abs(data.K[0, 0] / 600.0 - 1) < 0.01
    assert data.rms_px < 0.5


def test_parse_board_errors():
    assert parse_board("chessboard:7x5", 0.03).cols == 7
    with pytest.raises(ValueError, match="COLSxROWS"):
        parse_board("9by6", 0.025)
    with pytest.raises(ValueError, match="--square"):
        parse_board("9x6", 0.0)
    with pytest.raises(ValueError, match="--marker"):
        parse_board("charuco:5x7", 0.04)
    with pytest.raises(ValueError, match="dictionary"):
        parse_board("charuco:5x7", 0.04, 0.03, "DICT_NOPE")


# ----- undistortion -----


def _row_straightness_px(points: np.ndarray, cols: int) -> float:
    """Largest distance of a corner from the straight line fitted through its grid row."""
    worst = 0.0
    for row in points.reshape(-1, cols, 2):
        centred = row - row.mean(0)
        _, _, vt = np.linalg.svd(centred)
        worst = max(worst, float(np.abs(centred @ vt[1]).max()))
    return worst


def test_undistorter_straightens_lines(cam, chess):
    spec, tex = chess
    rng = np.random.default_rng(11)
    # a big board reaching the image edges, where barrel distortion bends lines most
    ((r, t),) = random_poses(
        cam,
        tex,
        spec.object_points().mean(0),
        1,
        rng,
        region_xyxy=(0.4, 0.4, 0.6, 0.6),
        width_frac=(0.85, 0.9),
        max_tilt_deg=5,
    )
    image = cam.render(tex, r, t)
    undistorter = Undistorter(K_TRUE, DIST_TRUE, WH)
    straight = undistorter(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    assert straight.shape == (480, 640, 3)
    det = make_detector(spec)
    before = det.detect(image)
    after = det.detect(cv2.cvtColor(straight, cv2.COLOR_BGR2GRAY))
    assert before is not None and after is not None
    bent, flat = (
        _row_straightness_px(before.image_points, 9),
        _row_straightness_px(after.image_points, 9),
    )
    assert bent > 2.0  # the distortion is visible
    assert flat < 0.25  # and undone
    # corners land where a pinhole camera with the same K puts them
    gt, _ = cv2.projectPoints(spec.object_points().astype(np.float64), r, t, K_TRUE, None)
    gt = gt.reshape(-1, 2)
    assert np.abs(_align(after.image_points, gt) - gt).max() < 0.35


def test_undistorter_checks_frame_size_and_skips_zero_distortion():
    und = Undistorter(K_TRUE, DIST_TRUE, WH)
    with pytest.raises(ValueError, match="320x240 but the undistorter was built for 640x480"):
        und(np.zeros((240, 320, 3), np.uint8))
    ident = Undistorter(K_TRUE, np.zeros(5), WH)
    frame = np.zeros((480, 640, 3), np.uint8)
    assert ident.is_identity and ident(frame) is frame
    wide = Undistorter(K_TRUE, DIST_TRUE, WH, alpha=1.0)
    assert wide.new_K[0, 0] < K_TRUE[0, 0]  # all source pixels kept: a wider view


def test_make_board_writes_a_detectable_printable_board(tmp_path):
    out = tmp_path / "board.png"
    argv = ["--make-board", str(out), "--board", "9x6", "--square", "0.025", "--dpi", "100"]
    assert calibrate_main(argv) == 0
    image = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    pps = round(0.025 / 0.0254 * 100)  # whole px per square at 100 dpi
    assert image.shape == (8 * pps, 11 * pps)  # 10x7 squares + half-square margins
    view = make_detector(parse_board("9x6", 0.025)).detect(image)
    assert view is not None and len(view) == 54


class _FakeCapture:
    """cv2.VideoCapture stand-in that plays BGR frames, then fails."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = list(frames)
        self.released = False

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self) -> None:
        self.released = True


def test_live_loop_captures_steady_new_views_and_stops_by_itself(monkeypatch, rendered):
    from calibration import live

    images, _, _ = rendered
    # each pose held for two frames (steady), the first pose shown again later (not new)
    frames = [cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) for img in images for _ in range(2)]
    frames[4:4] = frames[0:2]
    cap = _FakeCapture(frames)
    monkeypatch.setattr(live, "_open_camera", lambda index, wh: cap)
    monkeypatch.setattr(cv2, "imshow", lambda *a: None)
    monkeypatch.setattr(cv2, "waitKey", lambda *a: -1)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    settings = live.LiveSettings(target_views=8, target_coverage=0.3, target_rms_px=0.5)
    det = make_detector(parse_board("9x6", 0.025))
    result = live.run_live(0, det, settings)
    assert result.data.num_views == 8  # stopped at the target, before the frames ran out
    # 18 frames read: 8 poses x 2 plus the repeated pose, which was not captured again
    assert len(cap.frames) == len(frames) - 18 and cap.released
    assert abs(result.data.K[0, 0] / 600.0 - 1) < 0.02
