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
