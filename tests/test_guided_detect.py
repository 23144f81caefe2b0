"""Track-guided search (realtime.guided_detect): the pose detector looks again where each placed
person was, for the persons the first pass missed."""

from __future__ import annotations

import numpy as np
import pytest

from multiroi.types import Detections
from realtime.boxes import box_iou
from realtime.config import DetectorConfig
from realtime.detect import EveryNDetector
from realtime.guided_detect import GROW, TrackGuidedDetector, _matched

FRAME = np.zeros((480, 640, 3), np.uint8)
A = np.float32([100, 50, 200, 400])  # three persons side by side
B = np.float32([300, 60, 400, 420])
C = np.float32([480, 80, 560, 300])


def dets(*boxes) -> Detections:
    b = np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)
    return Detections(b, np.full(len(b), 0.8, np.float32))


class Inner:
    """Finds what it is told, frame by frame."""

    def __init__(self, found: dict[int, list[np.ndarray]]):
        self.found = found

    def __call__(self, image, frame_index=None):
        return dets(*self.found.get(frame_index, []))


class Pose:
    """Finds the persons in ``people`` whose box lies inside the searched window; records the
    windows (the carried boxes it was asked about)."""

    def __init__(self, people, first=None):
        self.people, self.first = [np.float32(p) for p in people], first
        self.asked: list[np.ndarray] = []

    def around(self, image, box, grow, max_passes=1, min_px=2):
        assert grow == GROW and max_passes == 2
        self.asked.append(np.float32(box))
        centre, half = (box[:2] + box[2:]) / 2, grow * max(box[2] - box[0], box[3] - box[1]) / 2
        lo, hi = centre - half, centre + half
        inside = [p for p in self.people if (p[:2] >= lo).all() and (p[2:] <= hi).all()]
        if self.first is not None:  # the nearer person in front is found first
            inside = [self.first, *inside]
        b = np.stack(inside) if inside else np.zeros((0, 4), np.float32)
        return np.full(len(b), 0.7, np.float32), b, b


def test_a_missed_person_is_found_where_they_were_and_nothing_else_is_searched():
    pose = Pose([A + 4, B + 2, C - 3])  # each a little away from their carried box
    det = TrackGuidedDetector(Inner({5: [A, C]}), pose)
    assert len(det(FRAME, 4)) == 0 and pose.asked == []  # nothing carried yet: no search
    det.carry(dets(A, B, C), frame_index=4)
    got = det(FRAME, 5).boxes_xyxy
    assert len(got) == 3 and det.found == 1
    np.testing.assert_array_equal(got[:2], [A, C])  # the inner detections first, as they were
    np.testing.assert_array_equal(got[2], B + 2)  # where the pose detector found B now
    assert len(pose.asked) == 1 and np.array_equal(pose.asked[0], B)  # only B's window


def test_a_person_behind_a_nearer_one_is_searched_and_the_nearer_one_not_added_twice():
    """B stands behind A: B's carried box overlaps A's detection (IoU 0.44 > 0.3), yet the
    detection is A's, so B is looked for; the window's first find is A, which is not added."""
    behind = np.float32([105, 60, 170, 300])
    assert box_iou(behind[None], A[None])[0, 0] > 0.3
    pose = Pose([behind + 2], first=A + 1)
    det = TrackGuidedDetector(Inner({1: [A]}), pose)
    det.carry(dets(A, behind), frame_index=0)
    got = det(FRAME, 1).boxes_xyxy
    assert len(got) == 2
    np.testing.assert_array_equal(got[1], behind + 2)
    # nobody behind: the window finds only A again, and A is not added a second time
    det = TrackGuidedDetector(Inner({1: [A]}), Pose([], first=A + 1))
    det.carry(dets(A, behind), frame_index=0)
    assert len(det(FRAME, 1)) == 1


def test_a_find_that_does_not_fit_the_carried_box_is_dropped():
    far_off = np.float32([150, 250, 190, 400])  # in A's window, but a small part of A's box
    det = TrackGuidedDetector(Inner({}), Pose([far_off]))
    det.carry(dets(A), frame_index=0)
    assert box_iou(far_off[None], A[None])[0, 0] < 0.3
    assert len(det(FRAME, 1)) == 0 and det.found == 0


def test_carried_boxes_age_out_and_the_windows_per_frame_are_capped():
    pose = Pose([A, B, C])
    det = TrackGuidedDetector(Inner({}), pose, max_windows=2, max_age=3)
    det.carry(dets(A, B, C), frame_index=0)
    assert len(det(FRAME, 1)) == 2 and len(pose.asked) == 2  # two of three windows
    pose.asked.clear()
    assert len(det(FRAME, 3)) == 2  # missed in frames 1-2 (no carry since): still looked for
    assert len(det(FRAME, 4)) == 0 and len(pose.asked) == 2  # 4 frames old: forgotten


def test_guides_are_one_box_per_person_newest_first():
    det = TrackGuidedDetector(Inner({}), Pose([]), max_age=10)
    det.carry(dets(A, B), frame_index=0)
    det.carry(dets(A + 10), frame_index=1)  # A moved, B missed in frame 1
    det.carry(dets(C), frame_index=1)  # a late carry of an older frame: ignored
    guides = det.guides(2)
    np.testing.assert_array_equal(guides, [A + 10, B])
    assert len(det.guides(20)) == 0  # all too old


def test_pairing_is_one_to_one():
    carried = np.stack([A, A + 5])  # two persons where one detection is
    assert _matched(carried, np.stack([A])).tolist() == [True, False]
    assert _matched(carried, np.zeros((0, 4), np.float32)).tolist() == [False, False]
    assert _matched(np.stack([A]), np.stack([C])).tolist() == [False]


def test_detect_every_n_hands_its_carries_to_the_search():
    pose = Pose([B])
    guided = TrackGuidedDetector(Inner({0: [A]}), pose)
    det = EveryNDetector(guided, 2)
    det(FRAME, 0)
    det.carry(dets(A, B), frame_index=0)
    assert len(guided.guides(1)) == 2


def test_the_live_loop_wraps_the_pose_detector_unless_told_not_to(monkeypatch):
    import realtime.detect as detect
    from realtime.config import build_arg_parser, config_from_args
    from realtime.pose_detector import BlazePoseDetector

    class FakePose(BlazePoseDetector):
        def __init__(self, *args, **kwargs):
            self.box_extent = kwargs.get("box_extent", "visible")

    monkeypatch.setattr(detect, "_create_base_detector", lambda cfg, gt, extent: FakePose())
    got = detect.create_detector(DetectorConfig(kind="blazepose"))
    assert isinstance(got, TrackGuidedDetector) and isinstance(got.inner, FakePose)
    assert got.pose is got.inner
    assert isinstance(detect.create_detector(DetectorConfig(kind="blazepose", every_n=3)).inner,
                      TrackGuidedDetector)  # fmt: skip
    off = config_from_args(build_arg_parser().parse_args(["--no-track-search"])).detector
    assert not off.track_search
    assert isinstance(detect.create_detector(off), FakePose)


# --- with MediaPipe's file ----------------------------------------------------------------------


def test_the_man_a_detector_missed_is_found_in_a_real_photo():
    """zidane.jpg: the inner detector finds only the man on the left; where the man on the
    right was (his hand-drawn box) the pose detector finds him."""
    from test_pose_detector import _photos

    from multiroi.model.blazepose import BlazePoseWeightsError
    from realtime.pose_detector import BlazePoseDetector
    from train.qualitative import PHOTO_BOXES

    pytest.importorskip("tflite")
    try:
        pose = BlazePoseDetector(download=False)
    except BlazePoseWeightsError:
        pytest.skip("MediaPipe's pose_detection.tflite is not here (make setup fetches it)")
    photo = _photos()["zidane"]
    hand = np.array(PHOTO_BOXES["zidane"], np.float32)
    left = int(np.argmin(hand[:, 0]))
    right = 1 - left
    det = TrackGuidedDetector(Inner({1: [hand[left]]}), pose)
    det.carry(dets(*hand), frame_index=0)
    got = det(photo, 1).boxes_xyxy
    assert len(got) == 2, got.round()
    assert box_iou(got[1:], hand[right][None])[0, 0] > 0.45, got.round()
