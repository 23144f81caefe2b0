"""realtime.occlusion: a track covered by a nearer person keeps its last reliable state."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.occlusion import OcclusionGuard

F, C = (500.0, 500.0), (320.0, 240.0)


def _state(n: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    rot = np.tile(np.eye(3, dtype=np.float32), (n, 24, 1, 1)) * np.float32(fill)
    return rot, np.full((n, 10), fill, np.float32)


def test_a_covered_rear_track_is_held_and_follows_its_box():
    guard = OcclusionGuard(threshold=0.5, max_hold_s=2.0)
    ids = np.array([1, 2])
    front, rear = [100, 100, 200, 400], [400, 120, 480, 360]
    rot, betas = _state(2, 1.0)
    transl = np.float32([[-0.5, 0.1, 3.0], [0.6, 0.1, 6.0]])
    guard(0.0, ids, np.float32([front, rear]), rot, betas, transl, F, C)  # both in view
    # the rear person walks 260 px left, behind the front one; the network gives it the front
    # person's pose and depth
    rear2 = [140, 120, 220, 360]
    rot2, betas2 = _state(2, 2.0)
    transl2 = np.float32([[-0.5, 0.1, 3.0], [-0.4, 0.1, 3.1]])
    r, b, t, held = guard(0.1, ids, np.float32([front, rear2]), rot2, betas2, transl2, F, C)
    assert held.tolist() == [False, True]
    np.testing.assert_array_equal(r[1], rot[1])
    np.testing.assert_array_equal(b[1], betas[1])
    assert t[1, 2] == pytest.approx(6.0)
    # its origin keeps its place relative to the box: 260 px left at 6 m is 3.12 m
    assert t[1, 0] == pytest.approx(0.6 - 260 * 6.0 / 500, abs=1e-5)
    assert t[1, 1] == pytest.approx(0.1, abs=1e-5)
    np.testing.assert_array_equal(r[0], rot2[0])  # the front person is not held
    np.testing.assert_array_equal(t[0], transl2[0])
    assert guard.held_rows == 1


def test_the_front_track_the_partly_covered_and_the_long_held_are_not_held():
    guard = OcclusionGuard(threshold=0.5, max_hold_s=0.5)
    ids = np.array([1, 2])
    rot, betas = _state(2, 1.0)
    transl = np.float32([[0, 0, 3.0], [0, 0, 6.0]])
    boxes = np.float32([[100, 100, 200, 400], [400, 120, 480, 360]])
    guard(0.0, ids, boxes, rot, betas, transl, F, C)
    # the front person inside the rear one's box: the front one is not held
    inside = np.float32([[410, 130, 470, 350], [400, 120, 480, 360]])
    *_, held = guard(0.1, ids, inside, rot, betas, transl, F, C)
    assert not held[0]
    # the rear person a third covered: not held
    third = np.float32([[100, 100, 200, 400], [173, 120, 253, 360]])
    *_, held = guard(0.2, ids, third, rot, betas, transl, F, C)
    assert held.tolist() == [False, False]
    # covered, but the last reliable state is older than max_hold_s: the network again
    covered = np.float32([[100, 100, 200, 400], [110, 120, 190, 360]])
    *_, held = guard(0.3, ids, covered, rot, betas, transl, F, C)
    assert held.tolist() == [False, True]
    *_, held = guard(0.71, ids, covered, rot, betas, transl, F, C)
    assert held.tolist() == [False, False]


def test_pruned_tracks_are_forgotten_and_the_threshold_is_checked():
    guard = OcclusionGuard()
    ids = np.array([1, 2])
    rot, betas = _state(2, 1.0)
    transl = np.float32([[0, 0, 3.0], [0, 0, 6.0]])
    apart = np.float32([[100, 100, 200, 400], [400, 120, 480, 360]])
    covered = np.float32([[100, 100, 200, 400], [110, 120, 190, 360]])
    guard(0.0, ids, apart, rot, betas, transl, F, C)
    guard.prune([1])
    *_, held = guard(0.1, ids, covered, rot, betas, transl, F, C)
    assert not held.any()  # track 2 was forgotten: nothing to hold
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="threshold"):
            OcclusionGuard(threshold=bad)


def test_the_cli_option_reaches_the_inference_stage():
    from realtime.config import build_arg_parser, config_from_args

    parser = build_arg_parser()
    cfg = config_from_args(parser.parse_args(["--source", "demo"]))
    assert cfg.inference.hold_occluded == 0.5
    cfg = config_from_args(parser.parse_args(["--source", "demo", "--hold-occluded", "0"]))
    assert cfg.inference.hold_occluded == 0.0
    with pytest.raises(ValueError, match="hold-occluded"):
        config_from_args(parser.parse_args(["--source", "demo", "--hold-occluded", "2"]))


def test_a_lost_person_behind_a_nearer_one_is_shown_held_at_the_predicted_box():
    """Track 2 walks behind track 1 and is lost; the tracker predicts its box. While a person
    at least 0.3 m nearer covers half of that box, it is shown with its last reliable pose,
    shape and depth; not when the coverer is about as far (a duplicate of the front person),
    nor once the hold's time is up, nor with coasting off."""
    guard = OcclusionGuard(threshold=0.5, max_hold_s=1.0)
    rot, betas = _state(2, 1.0)
    transl = np.float32([[-0.5, 0.1, 3.0], [0.6, 0.1, 6.0]])
    front, rear = [100, 100, 200, 400], [400, 120, 480, 360]
    guard(0.0, np.array([1, 2]), np.float32([front, rear]), rot, betas, transl, F, C)
    front_only = np.float32([front])
    predicted = np.float32([[130, 120, 210, 360]])  # 270 px left of where it was seen
    nowhere = predicted + 300  # a predicted box behind nobody
    assert guard.coast(0.1, front_only, np.float64([3.0]), np.array([2]), nowhere, F, C) is None
    ids, boxes, r, b, t = guard.coast(0.1, front_only, np.float64([3.0]), np.array([2]),
                                      predicted, F, C)  # fmt: skip
    assert ids.tolist() == [2] and guard.coasted_rows == 1
    np.testing.assert_array_equal(boxes, predicted)
    # a predicted box that has grown (it took in the front person's): the size seen last
    grown = np.float32([[100, 60, 240, 420]])
    _, boxes, *_ = guard.coast(0.1, front_only, np.float64([3.0]), np.array([2]), grown, F, C)
    np.testing.assert_array_equal(boxes, [[130, 120, 210, 360]])
    np.testing.assert_array_equal(r[0], rot[1])
    np.testing.assert_array_equal(b[0], betas[1])
    assert t[0, 2] == pytest.approx(6.0)
    assert t[0, 0] == pytest.approx(0.6 - 270 * 6.0 / 500, abs=1e-5)
    assert guard.coasted_rows == 2
    assert guard.coast(0.1, front_only, np.float64([5.8]), np.array([2]), predicted, F, C) is None
    assert guard.coast(1.1, front_only, np.float64([3.0]), np.array([2]), predicted, F, C) is None
    assert guard.coast(0.1, front_only, np.float64([3.0]), np.array([7]), predicted, F, C) is None
    off = OcclusionGuard(threshold=0.5, coast=False)
    off(0.0, np.array([1, 2]), np.float32([front, rear]), rot, betas, transl, F, C)
    assert off.coast(0.1, front_only, np.float64([3.0]), np.array([2]), predicted, F, C) is None


def test_the_tracker_reports_a_lost_track_at_its_predicted_box():
    from multiroi.types import Detections
    from realtime.track import PersonTracker

    tracker = PersonTracker("bytetrack")
    image = np.zeros((480, 640, 3), np.uint8)
    a, b = np.float32([100, 100, 200, 400]), np.float32([400, 120, 480, 360])
    for k in range(6):  # b walks left 10 px a frame
        tracks = tracker.update(Detections(np.stack([a, b - [10 * k, 0, 10 * k, 0]]),
                                           np.float32([0.9, 0.9])), image)  # fmt: skip
    assert len(tracks) == 2 and len(tracks.lost_ids) == 0
    b_id = int(tracks.track_ids[np.argmax(tracks.boxes_xyxy[:, 0])])
    tracks = tracker.update(Detections(a[None], np.float32([0.9])), image)
    tracks = tracker.update(Detections(a[None], np.float32([0.9])), image)
    assert tracks.lost_ids.tolist() == [b_id]
    x0 = float(tracks.lost_boxes[0, 0])
    assert 400 - 10 * 8 - 15 < x0 < 400 - 10 * 5  # carried on to the left


def test_the_inference_stage_shows_the_lost_person_behind_the_front_one(toy_body_model):
    """Frame 0: a near person (tall box) and a far one (short box); frame 1: the far one is
    lost behind the near one. It is shown, at its frame-0 depth and pose; with the hold off,
    or coasting off, it is not."""
    from pipeline_fakes import WH, FakeBackend

    from multiroi.types import Frame, Tracks
    from realtime.infer import InferenceStage

    img = np.zeros((WH[1], WH[0], 3), np.uint8)
    near, far = [20, 5, 80, 115], [100, 40, 125, 85]
    first = Tracks(np.array([1, 2]), np.float32([near, far]), np.ones(2, np.float32))
    behind = Tracks(np.array([1]), np.float32([near]), np.ones(1, np.float32),
                    lost_ids=np.array([2]), lost_boxes=np.float32([[40, 40, 65, 85]]))  # fmt: skip
    for guard, shown in ((OcclusionGuard(), [1, 2]), (OcclusionGuard(coast=False), [1]),
                         (None, [1])):  # fmt: skip
        stage = InferenceStage(FakeBackend(), toy_body_model, smoothers=None, occlusion=guard)
        p0 = stage(Frame(0, 0.0, img), first)
        assert p0[1].transl_m[2] > p0[0].transl_m[2] + 1  # the short box is farther
        p1 = stage(Frame(1, 0.033, img), behind)
        assert [p.track_id for p in p1] == shown
        assert not any(p.held for p in p0) and not p1[0].held
        if len(shown) == 2:
            assert p1[1].held  # shown, with an earlier frame's pose
            assert p1[1].transl_m[2] == pytest.approx(p0[1].transl_m[2])
            np.testing.assert_array_equal(p1[1].box_xyxy, [40, 40, 65, 85])
            assert p1[1].vertices_m.shape == p0[1].vertices_m.shape
