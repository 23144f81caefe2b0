"""realtime.reid: a person who comes back after the tracker gave up on them gets their old id,
by the colours of their clothes; a stranger does not."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.reid import Reidentifier, appearance, hellinger

SHIRTS = {"red": (40, 40, 200), "blue": (200, 60, 30), "green": (40, 170, 40)}  # BGR
TROUSERS = {"navy": (90, 30, 20), "khaki": (90, 160, 190)}


def _frame(people, seed=0):
    """A 480x640 grey-noise frame with a person (shirt over trousers, head) in each box."""
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 140, (480, 640, 3)).astype(np.uint8)
    img[..., 1] = img[..., 0]
    img[..., 2] = img[..., 0]  # grey background: no hue
    for (x0, y0, x1, y1), shirt, trousers in people:
        h = y1 - y0
        img[y0 : y0 + h // 6, x0 + (x1 - x0) // 3 : x1 - (x1 - x0) // 3] = (120, 150, 200)
        img[y0 + h // 6 : y0 + h // 2, x0:x1] = SHIRTS[shirt]
        img[y0 + h // 2 : y1, x0 + 5 : x1 - 5] = TROUSERS[trousers]
        region = img[y0:y1, x0:x1]  # the part in the picture
        noise = rng.integers(-12, 12, region.shape)
        img[y0:y1, x0:x1] = np.clip(region + noise, 0, 255)
    return img


def _run(reid, frames):
    """Feed (tracker ids, boxes, lost ids, people) per frame; returns the person ids per frame."""
    out = []
    for ids, people, lost in frames:
        boxes = np.array([p[0] for p in people], np.float32).reshape(-1, 4)
        out.append(reid(np.array(ids, np.int64), boxes, np.array(lost, np.int64),
                        _frame(people, len(out))).tolist())  # fmt: skip
    return out


def test_appearance_tells_clothes_apart():
    box = (100, 100, 180, 400)
    red_navy = appearance(_frame([(box, "red", "navy")]), np.array(box))
    again = appearance(_frame([(box, "red", "navy")], seed=5), np.array(box))
    blue_navy = appearance(_frame([(box, "blue", "navy")]), np.array(box))
    red_khaki = appearance(_frame([(box, "red", "khaki")]), np.array(box))
    assert red_navy.shape == (2 * (12 * 4 + 1),)
    assert np.allclose(red_navy.reshape(2, -1).sum(1), 1.0)
    assert hellinger(red_navy, again) < 0.15
    assert hellinger(red_navy, blue_navy) > 0.35 and hellinger(red_navy, red_khaki) > 0.35
    assert appearance(_frame([]), np.array([630, 10, 640, 12])) is None  # too small


def test_a_returning_person_gets_their_old_id():
    """Person 1 (red over navy) leaves; 40 frames later the tracker starts track 7 on her and
    track 8 on a stranger (blue over khaki): 7 becomes 1 again, 8 keeps its id."""
    a, b = (100, 100, 180, 400), (400, 120, 470, 390)
    reid = Reidentifier()
    seen = [([1, 2], [(a, "red", "navy"), (b, "green", "khaki")], [])] * 10
    gone = [([2], [(b, "green", "khaki")], [])] * 40
    back = [([2, 7, 8], [(b, "green", "khaki"), ((300, 100, 380, 400), "red", "navy"),
                         ((520, 90, 600, 400), "blue", "khaki")], [])] * 5  # fmt: skip
    ids = _run(reid, seen + gone + back)
    assert ids[-1] == [2, 1, 8] and reid.returned == 1


def test_no_old_id_while_its_owner_is_there_or_still_looked_for():
    """A look-alike (red over navy too) gets no id that is in use, nor the id of a person the
    tracker still holds as lost; after memory_frames a person is forgotten."""
    a, c = (100, 100, 180, 400), (300, 100, 380, 400)
    reid = Reidentifier(memory_frames=20)
    ids = _run(reid, [([1], [(a, "red", "navy")], [])] * 5
               + [([1, 3], [(a, "red", "navy"), (c, "red", "navy")], [])]  # 1 is there
               + [([4], [(c, "red", "navy")], [1, 3])]  # 1 and 3 are lost, not gone
               + [([], [], [])] * 25  # both forgotten
               + [([9], [(a, "red", "navy")], [])])  # fmt: skip
    assert ids[5] == [1, 3] and ids[6] == [4] and ids[-1] == [9]
    assert reid.returned == 0


def test_colours_are_learnt_only_from_uncovered_boxes():
    """While person 1's box lies inside person 2's, 2's colours do not leak into 1's look: after
    both leave, a track in 1's clothes comes back as 1."""
    a, b = (100, 100, 180, 400), (90, 80, 200, 420)
    reid = Reidentifier()
    frames = [([1, 2], [(a, "red", "navy"), ((400, 100, 470, 390), "blue", "khaki")], [])] * 3
    frames += [([1, 2], [(a, "blue", "khaki"), (b, "blue", "khaki")], [])] * 30  # 2 covers 1
    frames += [([], [], [])] * 40
    frames += [([5], [((300, 100, 380, 400), "red", "navy")], [])]
    assert _run(reid, frames)[-1] == [1]


def test_tracker_with_reid(monkeypatch):
    """PersonTracker maps ids through the re-identifier, lost ids included."""
    pytest.importorskip("ultralytics")
    from multiroi.types import Detections
    from realtime.track import PersonTracker

    tracker = PersonTracker(max_persons=4, reid=Reidentifier())
    box = np.float32([[100, 100, 180, 400]])
    img = _frame([((100, 100, 180, 400), "red", "navy")])
    for _ in range(5):
        tracks = tracker.update(Detections(box, np.float32([0.9])), img)
    first = tracks.track_ids.tolist()
    for _ in range(45):  # gone for longer than ByteTrack's buffer (30 frames)
        tracks = tracker.update(Detections.empty(), _frame([]))
    for _ in range(3):
        tracks = tracker.update(Detections(box + [150, 0, 150, 0], np.float32([0.9])),
                                _frame([((250, 100, 330, 400), "red", "navy")]))  # fmt: skip
    assert tracks.track_ids.tolist() == first and tracker.reid.returned == 1
    plain = PersonTracker(max_persons=4)
    for _ in range(5):
        ids = plain.update(Detections(box, np.float32([0.9])), img).track_ids.tolist()
    for _ in range(45):
        plain.update(Detections.empty(), _frame([]))
    for _ in range(3):
        back = plain.update(Detections(box + [150, 0, 150, 0], np.float32([0.9])), img)
    assert back.track_ids.tolist() != ids


def test_a_person_walking_in_is_recognised_once_clear_of_the_side():
    """A returning person's new track first touches the picture's side: it shows its own id
    until its box is clear of the side, then the old one (recorded as an alias); a track that
    stays at the side gives up after decide_frames and keeps its own; reset() forgets all."""
    a = (100, 100, 180, 400)
    reid = Reidentifier(decide_frames=5)
    frames = [([1], [(a, "red", "navy")], [])] * 5 + [([], [], [])] * 35
    frames += [([7], [((560, 100, 640, 400), "red", "navy")], [])] * 3  # at the right side
    frames += [([7], [((500, 100, 580, 400), "red", "navy")], [])] * 2  # clear of it
    ids = _run(reid, frames)
    assert [f[0] for f in ids[-5:]] == [7, 7, 7, 1, 1]
    assert reid.aliases == {7: 1} and reid.returned == reid.relabelled == 1
    frames = [([], [], [])] * 30 + [([9], [((560, 100, 640, 400), "red", "navy")], [])] * 8
    frames += [([9], [((500, 100, 580, 400), "red", "navy")], [])]
    assert [f[0] for f in _run(reid, frames)[-3:]] == [9, 9, 9]  # decided (own) at the side
    reid.reset()
    assert not reid.aliases and reid(np.array([3]), np.array([a]), np.zeros(0),
                                     _frame([(a, "red", "navy")])).tolist() == [3]  # fmt: skip


def test_a_person_the_cap_hides_is_not_gone():
    """With more people than the person cap, a track the tracker follows but does not show
    this frame (``others``) keeps its person: a look-alike's new track does not take the id,
    so no id is ever shown twice."""
    a, c = (100, 100, 180, 400), (300, 100, 380, 400)
    reid = Reidentifier()
    img = _frame([(a, "red", "navy"), (c, "red", "navy")])
    for _ in range(5):
        reid(np.array([1]), np.array([a], np.float32), np.zeros(0), img)
    out = reid(np.array([4]), np.array([c], np.float32), np.zeros(0), img, others=np.array([1]))
    assert out.tolist() == [4]
    both = reid(np.array([1, 4]), np.array([a, c], np.float32), np.zeros(0), img)
    assert both.tolist() == [1, 4] and reid.returned == 0


def test_forgotten_pending_tracks_are_dropped():
    """A track that leaves before it was decided does not stay pending forever."""
    reid = Reidentifier(memory_frames=5)
    edge = (600, 100, 640, 400)
    for t in range(20):
        reid(np.array([100 + t]), np.array([edge], np.float32), np.zeros(0),
             _frame([(edge, "red", "navy")]))  # fmt: skip
        for _ in range(7):
            reid(np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0), _frame([]))
    assert not reid._pending and not reid._people


def test_a_track_carried_onto_a_gone_person_takes_their_id():
    """Two people cross: the tracker's track 3 (green over khaki) goes on with person 2 (red
    over navy, whose own track was dropped): after 3 frames clearly nearer to 2's look than to
    3's it is shown as 2, and 3's look is not learnt from those frames."""
    a, b = (100, 100, 180, 400), (400, 100, 480, 400)
    reid = Reidentifier()
    frames = [([2, 3], [(a, "red", "navy"), (b, "green", "khaki")], [])] * 10
    frames += [([3], [(b, "green", "khaki")], [])] * 35  # 2 is gone
    frames += [([3], [((250, 100, 330, 400), "red", "navy")], [])] * 5  # 3 now on person 2
    ids = _run(reid, frames)
    assert [f[0] for f in ids[-5:]] == [3, 3, 2, 2, 2] and reid.jumps == 1
    look3 = reid._people[3].appearance
    green = appearance(_frame([(b, "green", "khaki")]), np.array(b))
    assert hellinger(look3, green) < 0.1  # the red frames did not leak into 3's look
    # a person whose look just varies does not jump while nobody like them is gone
    steady = Reidentifier()
    frames = [([1], [(a, "red", "navy")], [])] * 10 + [([1], [(a, "red", "khaki")], [])] * 10
    assert {f[0] for f in _run(steady, frames)} == {1} and steady.jumps == 0


def test_a_carried_look_is_not_learnt_while_its_owner_is_lost():
    """Track 3 goes on with person 2 while 2's own track is still lost in the tracker (as
    when two people cross): person 3's look stays theirs, the track takes 2's id once 2 is
    gone, and person 3, back under a new track, is recognised."""
    a, b, c = (100, 100, 180, 400), (400, 100, 480, 400), (250, 100, 330, 400)
    reid = Reidentifier()
    frames = [([2, 3], [(a, "red", "navy"), (b, "green", "khaki")], [])] * 10
    frames += [([3], [(c, "red", "navy")], [2])] * 30  # 2 lost, track 3 on person 2
    frames += [([3], [(c, "red", "navy")], [])] * 5  # 2 gone: 3 jumps
    frames += [([3, 9], [(c, "red", "navy"), (b, "green", "khaki")], [])] * 3
    ids = _run(reid, frames)
    green = appearance(_frame([(b, "green", "khaki")]), np.array(b))
    assert hellinger(reid._people[3].appearance, green) < 0.1
    assert ids[-1] == [2, 3] and reid.jumps == 1 and reid.returned == 1


def test_strikes_count_in_a_row_only():
    """Two odd frames, a long stretch at the picture's side (no telling look), one odd frame:
    no jump."""
    a, c = (100, 100, 180, 400), (250, 100, 330, 400)
    reid = Reidentifier()
    frames = [([2, 3], [(a, "red", "navy"), (c, "green", "khaki")], [])] * 10
    frames += [([3], [(c, "green", "khaki")], [])] * 35  # 2 gone
    odd = [([3], [(c, "red", "navy")], [])]
    frames += odd * 2 + [([3], [((560, 100, 640, 400), "green", "khaki")], [])] * 20 + odd
    assert _run(reid, frames)[-1] == [3] and reid.jumps == 0


def test_a_frame_with_nobody_shown_keeps_the_lost_ids():
    """One missed detection with nobody else in view: the tracker's lost person is still
    reported (the occlusion hold and the smoothing keep their state), with and without re-id."""
    pytest.importorskip("ultralytics")
    from multiroi.types import Detections
    from realtime.track import PersonTracker

    box = np.float32([[100, 100, 180, 400]])
    img = _frame([((100, 100, 180, 400), "red", "navy")])
    for reid in (None, Reidentifier()):
        tracker = PersonTracker(max_persons=4, reid=reid)
        for _ in range(5):
            shown = tracker.update(Detections(box, np.float32([0.9])), img).track_ids.tolist()
        missed = tracker.update(Detections.empty(), _frame([]))
        assert len(missed) == 0 and missed.lost_ids.tolist() == shown
        assert missed.lost_boxes.shape == (1, 4)


def test_a_whole_body_box_half_in_the_picture_tells_at_once():
    """A whole-body box running out of the picture says how much of the person is in it: with
    57% in, the returning person is recognised on the first frame; with 25% in, not yet."""
    a = (100, 100, 180, 400)
    for box, first in (((560, 100, 700, 400), 1), ((610, 100, 730, 400), 7)):
        reid = Reidentifier()
        frames = [([1], [(a, "red", "navy")], [])] * 5 + [([], [], [])] * 35
        frames += [([7], [(box, "red", "navy")], [])]
        assert _run(reid, frames)[-1] == [first]
