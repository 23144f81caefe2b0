"""Detectors (given boxes, motion, YOLO fallback, every-N) and the ultralytics tracker wrapper."""

from __future__ import annotations

import numpy as np
import pytest

from multiroi.types import Detections
from realtime.boxes import box_iou, nms_xyxy
from realtime.config import DetectorConfig
from realtime.detect import (
    EveryNDetector,
    GivenBoxesDetector,
    HogDetector,
    MotionDetector,
    create_detector,
    hog_available,
)
from realtime.pose_detector import BlazePoseDetector
from realtime.track import PersonTracker


def moving_boxes(t: int) -> np.ndarray:
    """Three persons: two walking towards each other (crossing at t ~ 20), one standing."""
    return np.array(
        [
            [20 + 4 * t, 40, 70 + 4 * t, 180],
            [220 - 4 * t, 50, 268 - 4 * t, 190],
            [280, 20, 310, 100],
        ],
        np.float32,
    )


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    keep = nms_xyxy(boxes, np.array([0.5, 0.9, 0.8]), 0.5)
    assert keep.tolist() == [1, 2]
    iou = box_iou(boxes, boxes[:2])
    assert iou.shape == (3, 2) and np.allclose(np.diag(iou), 1) and iou[2].max() == 0
    assert np.isclose(iou[0, 1], 81 / (100 + 100 - 81))
    assert box_iou(boxes, np.zeros((0, 4))).shape == (3, 0)


def test_given_boxes_by_frame_index_and_npz(tmp_path):
    boxes = np.stack([moving_boxes(t) for t in range(5)])
    boxes[2, 1] = np.nan  # person 1 absent in frame 2
    path = tmp_path / "gt.npz"
    np.savez(path, box_xyxy=boxes, visible=np.ones((5, 3), bool))
    det = GivenBoxesDetector.from_npz(path)
    d3 = det(np.zeros((10, 10, 3), np.uint8), frame_index=3)
    assert np.allclose(d3.boxes_xyxy, moving_boxes(3)) and d3.scores.shape == (3,)
    assert len(det(None, frame_index=2)) == 2
    assert len(det(None, frame_index=99)) == 0
    with pytest.raises(ValueError, match="box_xyxy"):
        np.savez(tmp_path / "bad.npz", other=boxes)
        GivenBoxesDetector.from_npz(tmp_path / "bad.npz")
    # a model trained on whole-body boxes reads the whole bodies' boxes (the demo clip has both)
    np.savez(path, box_xyxy=boxes, box_amodal=boxes * 2, visible=np.ones((5, 3), bool))
    whole = GivenBoxesDetector.from_npz(path, box_extent="amodal")
    assert whole.box_extent == "amodal" and det.box_extent == "visible"
    assert np.allclose(whole(None, frame_index=3).boxes_xyxy, 2 * moving_boxes(3))
    with pytest.raises(ValueError, match="box_amodal"):
        GivenBoxesDetector.from_npz(tmp_path / "bad.npz", box_extent="amodal")


def test_motion_detector_finds_a_moving_blob():
    det = MotionDetector(scale=1.0)
    rng = np.random.default_rng(0)
    bg = rng.integers(90, 110, (120, 160, 3), dtype=np.uint8)
    for _ in range(5):
        det(bg.copy())
    img = bg.copy()
    img[30:100, 60:90] = 250  # a tall bright "person"
    d = det(img)
    assert len(d) >= 1
    b = d.boxes_xyxy[np.argmax(d.boxes_xyxy[:, 2] - d.boxes_xyxy[:, 0])]
    assert abs(b[0] - 60) < 8 and abs(b[1] - 30) < 8 and abs(b[2] - 90) < 8 and abs(b[3] - 100) < 8


def test_yolo_without_weights_warns_once_and_falls_back_unless_asked_for(tmp_path, caplog):
    det = create_detector(DetectorConfig(kind="auto", weights=str(tmp_path / "nope.pt")))
    base = getattr(det, "inner", det)  # MediaPipe's if here, wrapped by the track-guided search
    assert isinstance(base, (BlazePoseDetector, HogDetector, MotionDetector))
    warnings = [r for r in caplog.records if "YOLO weights" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"
    assert isinstance(det(np.zeros((240, 320, 3), np.uint8)), Detections)
    assert "fetch them once with" in warnings[0].getMessage()
    with pytest.raises(FileNotFoundError, match="--detector yolo: the YOLO weights .* are not"):
        create_detector(DetectorConfig(kind="yolo", weights=str(tmp_path / "nope.pt")))


@pytest.mark.skipif(not hog_available(), reason="this OpenCV has no HOG people detector")
def test_hog_on_a_blank_image_finds_nobody():
    d = HogDetector(scale=0.5)(np.zeros((480, 640, 3), np.uint8))
    assert len(d) == 0


def test_every_n_detector_runs_every_nth_frame_and_carries_boxes():
    calls = []

    def inner(image, frame_index=None):
        calls.append(frame_index)
        return Detections(moving_boxes(frame_index)[:1], np.ones(1, np.float32))

    det = EveryNDetector(inner, 3)
    outs = [det(None, t) for t in range(7)]
    assert calls == [0, 3, 6]
    assert np.allclose(outs[1].boxes_xyxy, moving_boxes(0)[:1])
    carried = Detections(np.array([[1, 2, 30, 40]], np.float32), np.ones(1, np.float32))
    det.carry(carried)
    assert det(None, 7) is carried
    # the inference thread lags: boxes of a frame before the last detection are stale
    det(None, 8)
    det(None, 9)  # the 10th call: a real detection, at frame 9
    stale = Detections(np.array([[5, 5, 50, 60]], np.float32), np.ones(1, np.float32))
    det.carry(stale, frame_index=8)
    assert np.allclose(det(None, 10).boxes_xyxy, moving_boxes(9)[:1])
    det.carry(carried, frame_index=10)
    assert det(None, 11) is carried


def test_tracker_ids_stay_stable_through_crossing():
    tracker = PersonTracker("bytetrack", max_persons=8)
    img = np.zeros((240, 320, 3), np.uint8)
    first = None
    for t in range(40):
        boxes = moving_boxes(t)
        tr = tracker.update(Detections(boxes, np.array([0.9, 0.85, 0.8], np.float32)), img)
        assert len(tr) == 3
        # each returned box is this frame's detection box: map it back to the person
        person = [int(np.argmin(np.abs(boxes - b).sum(1))) for b in tr.boxes_xyxy]
        ids = dict(zip(person, tr.track_ids.tolist(), strict=True))
        first = first or ids
        assert ids == first, f"id switch at frame {t}: {ids} vs {first}"


def test_tracker_cap_zero_persons_and_size_change():
    tracker = PersonTracker("bytetrack", max_persons=2)
    img = np.zeros((240, 320, 3), np.uint8)
    scores = np.array([0.9, 0.5, 0.7], np.float32)
    tr = tracker.update(Detections(moving_boxes(0), scores), img)
    assert len(tr) == 2 and sorted(tr.scores.tolist()) == pytest.approx([0.7, 0.9])
    assert len(tracker.update(Detections.empty(), img)) == 0
    nan_boxes = moving_boxes(1).copy()
    nan_boxes[0] = np.nan
    assert len(tracker.update(Detections(nan_boxes, scores), img)) <= 2
    tracker.update(Detections(moving_boxes(2), scores), np.zeros((100, 100, 3), np.uint8))
    assert tracker._tracker.frame_id == 1  # reset on the new size, then one update


def test_botsort_runs_without_reid():
    tracker = PersonTracker("botsort", max_persons=4)
    img = np.zeros((240, 320, 3), np.uint8)
    for t in range(3):
        tr = tracker.update(Detections(moving_boxes(t), np.full(3, 0.9, np.float32)), img)
    assert sorted(tr.track_ids.tolist()) == [1, 2, 3]
