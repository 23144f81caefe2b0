"""A person who comes back gets their old id: re-identification by the colours of their clothes.

ByteTrack looks for a lost person for about a second (its track buffer); someone who leaves the
picture, or stays hidden behind another person, for longer comes back under a new id, and with
it a new colour in the viewer, a restarted smoothing and a new file in the exports.
:class:`Reidentifier` sits after the tracker and keeps, for every person it has seen, an
appearance: colour histograms (hue x saturation, 12 x 4 bins, of pixels neither too dark nor
too grey) of the upper and the lower part of their box's central strip (shirt and trousers),
averaged over the frames in which no other box covers theirs. A new track shows its own id
until its look can tell: its box clear of other boxes and of the picture's sides, or, for a
whole-body box running out of the picture, with at least 40% of it in (someone walking in is
half outside for a while; at most ``decide_frames``); then its appearance is compared (Hellinger
distance) with the people gone for longer than the tracker still looks for them and less than
``memory_frames`` ago, and the nearest, if near enough (``max_distance``) and clearly nearer
than the next (``margin``), lends the track their id from then on (the log says so, and for
how many frames it was shown under its own). Ids are never given to two tracks at once, and a
person whom the tracker still holds as lost is not a candidate.

The same looks catch the tracker carrying a track over onto someone else, as when two people
cross and one hides the other: a track whose look has been clearly nearer (by ``margin``) to a
gone person's than to its own person's for JUMP_FRAMES frames in a row takes that person's id
from then on, and the person it left keeps the look learnt before, ready for when they are
found again: a look is learnt only when it is within ``max_distance + margin`` of the track's
person's and not clearly nearer anyone else's (held or gone). People the tracker follows
without showing them (lost for now, or over the person cap) are not forgotten meanwhile.

On the ``demo:return`` clip (given boxes, every third frame) a person's colours after frame 150
lie at a distance of 0.14 from their own average before it (median; 90% under 0.24), and of
0.47 or more from anyone else's (docs/benchmarks.md). Two people dressed alike can be
confused: ``--no-reid`` turns it off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from realtime.boxes import box_area, box_intersection

logger = logging.getLogger(__name__)

HUE_BINS, SAT_BINS = 12, 4
MIN_VALUE, MIN_SATURATION = 40, 30  # of 255: darker or greyer pixels carry no hue
STRIP = (0.2, 0.8)  # the central share of the box's width (the body, not the background)
PARTS = ((0.15, 0.5), (0.5, 0.85))  # shares of the box's height: shirt, trousers
COVERED = 0.3  # share of a box inside another box from which its colours are not learnt
JUMP_FRAMES = 3  # frames in a row unlike its person before a track is checked for a jump
MIN_WEIGHT = 5.0  # frames a person's look is averaged over before a jump can be told
MIN_SHARE = 0.4  # of a whole-body box in the picture, for its look to tell who it is
STRIKE_GAP_FRAMES = 5  # frames without a telling look that still count as "in a row"
FRESH_IDS = 1_000_000  # made-up person ids start above this (tracker ids stay far below)


def appearance(image_bgr: np.ndarray, box_xyxy: np.ndarray) -> np.ndarray | None:
    """f32[2 * (HUE_BINS * SAT_BINS + 1)]: per part, the hue x saturation histogram of its
    coloured pixels and the share of grey or dark ones, each part summing to 1; None when the
    box holds too few pixels."""
    import cv2

    h_img, w_img = image_bgr.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box_xyxy).reshape(4))
    if not np.isfinite([x0, y0, x1, y1]).all():
        return None
    bw, bh = x1 - x0, y1 - y0
    parts = []
    for top, bottom in PARTS:
        xa, xb = int(max(0, x0 + STRIP[0] * bw)), int(min(w_img, x0 + STRIP[1] * bw))
        ya, yb = int(max(0, y0 + top * bh)), int(min(h_img, y0 + bottom * bh))
        if xb - xa < 4 or yb - ya < 4:
            return None
        patch = image_bgr[ya:yb, xa:xb]
        if patch.shape[0] * patch.shape[1] > 64 * 64:  # the histogram needs no more pixels
            patch = cv2.resize(
                patch,
                (min(64, patch.shape[1]), min(64, patch.shape[0])),
                interpolation=cv2.INTER_AREA,
            )
        hsv = cv2.cvtColor(patch, cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(np.int64)
        coloured = (hsv[:, 2] >= MIN_VALUE) & (hsv[:, 1] >= MIN_SATURATION)
        hue = np.minimum(hsv[coloured, 0] * HUE_BINS // 180, HUE_BINS - 1)
        sat = np.minimum(hsv[coloured, 1] * SAT_BINS // 256, SAT_BINS - 1)
        hist = np.bincount(hue * SAT_BINS + sat, minlength=HUE_BINS * SAT_BINS).astype(np.float64)
        grey = float((~coloured).sum())
        total = hist.sum() + grey
        parts.append(np.r_[hist, grey] / max(total, 1.0))
    return np.concatenate(parts).astype(np.float32)


def hellinger(a: np.ndarray, b: np.ndarray) -> float:
    """Distance in [0, 1] between two appearances (the mean over their parts)."""
    n = len(PARTS)
    pa, pb = np.asarray(a, np.float64).reshape(n, -1), np.asarray(b, np.float64).reshape(n, -1)
    bc = np.sqrt(pa * pb).sum(1)
    return float(np.mean(np.sqrt(np.clip(1.0 - bc, 0.0, 1.0))))


@dataclass
class _Person:
    appearance: np.ndarray | None
    weight: float  # frames averaged so far (capped: old looks fade)
    last_frame: int
    tracker_ids: set[int] = field(default_factory=set)


class Reidentifier:
    """``reid(ids i64[M], boxes f32[M,4], lost_ids i64[L], image_bgr) -> ids i64[M]``: the
    tracker's ids with returning people given their old ones (see module doc)."""

    def __init__(
        self,
        memory_frames: int = 600,
        max_distance: float = 0.4,
        margin: float = 0.1,
        max_weight: float = 30.0,
        decide_frames: int = 45,
    ) -> None:
        if memory_frames < 1:
            raise ValueError(f"reid memory must be >= 1 frame, got {memory_frames}")
        if not 0 < max_distance <= 1:
            raise ValueError(f"reid max_distance must be in (0, 1], got {max_distance}")
        self.memory_frames, self.max_distance = int(memory_frames), float(max_distance)
        self.margin, self.max_weight = float(margin), float(max_weight)
        self.decide_frames = int(decide_frames)
        self._people: dict[int, _Person] = {}  # person id -> what is known of them
        self._of_track: dict[int, int] = {}  # tracker id -> person id
        self._pending: dict[int, int] = {}  # new tracker id -> frames seen before deciding
        self._strikes: dict[int, tuple[int, int, int]] = {}  # tracker id -> (frames in a row
        # nearer a gone person's look than its own, that person, the last such frame)
        self._top_fresh = 0  # the last person id made up (see _fresh_id)
        self.jumps = 0  # tracks carried onto someone else, given that person's id
        self._frame = -1
        self.returned = 0  # tracks given an old id
        self.relabelled = 0  # of them, tracks shown under their own id first
        self.aliases: dict[int, int] = {}  # those tracks' own ids -> the person ids they got

    def reset(self) -> None:
        self._people.clear()
        self._of_track.clear()
        self._pending.clear()
        self._strikes.clear()
        self.aliases.clear()
        self._frame = -1

    def __call__(
        self,
        ids: np.ndarray,
        boxes: np.ndarray,
        lost_ids: np.ndarray,
        image_bgr: np.ndarray,
        others: np.ndarray | None = None,
        others_boxes: np.ndarray | None = None,
    ) -> np.ndarray:
        """others: tracker ids the tracker still follows but does not show this frame (the
        person cap): their people are not gone either; others_boxes f[K,4]: their boxes (they
        cover the people shown like anyone else)."""
        self._frame += 1
        ids = np.asarray(ids, np.int64).reshape(-1)
        if image_bgr.ndim == 2 or image_bgr.shape[2] == 1:  # grey frames: no colours to tell
            image_bgr = np.repeat(image_bgr.reshape(*image_bgr.shape[:2], 1), 3, axis=2)
        h, w = image_bgr.shape[:2]
        full = np.asarray(boxes, np.float64).reshape(-1, 4)
        boxes = np.clip(full, 0, [w, h, w, h])  # the visible part (whole-body boxes run out)
        looks = [appearance(image_bgr[..., :3], b) for b in boxes]
        hidden = np.asarray(others_boxes if others_boxes is not None else (), np.float64)
        clear = self._uncovered(np.concatenate([boxes, hidden.reshape(-1, 4)]))[: len(boxes)]
        whole = self._in_view(full, boxes, (w, h))
        still = np.concatenate([np.asarray(lost_ids, np.int64).reshape(-1),
                                np.asarray(others if others is not None else (), np.int64)
                                .reshape(-1)])  # fmt: skip
        held = {self._of_track[int(t)] for t in still if int(t) in self._of_track}
        for pid in held:  # followed by the tracker, if not shown: not to be forgotten
            if pid in self._people:
                self._people[pid].last_frame = self._frame
        active = {self._of_track[int(t)] for t in ids if int(t) in self._of_track}
        out = np.empty_like(ids)
        for i, t in enumerate(ids.tolist()):
            if t not in self._of_track:  # a new track: its own id until it is recognised
                self._of_track[t] = t if t not in self._people else self._fresh_id()
                self._pending[t] = 0
                active.add(self._of_track[t])
            look = looks[i] if clear[i] and whole[i] else None
            if t in self._pending:
                self._decide(t, look, active | held)
                active.add(self._of_track[t])
            elif look is not None:
                jump = self._jumped(t, look, active | held)
                if jump is not None:
                    self._rejoin(t, jump)
                    active.add(self._of_track[t])
            pid = self._of_track[t]
            out[i] = pid
            learn = clear[i] and self._like_own(pid, looks[i])
            self._learn(pid, t, looks[i] if learn else None)
        self._forget()
        return out

    def _fresh_id(self) -> int:
        """A person id no tracker id can take: counted up in a range of its own (FRESH_IDS+)."""
        self._top_fresh = max(self._top_fresh, FRESH_IDS, max(self._people, default=0)) + 1
        return self._top_fresh

    def _like_own(self, pid: int, look: np.ndarray | None) -> bool:
        """Whether ``look`` may be learnt as person ``pid``'s: within max_distance + margin of
        their look, and not clearly nearer (by margin) anyone else's, held or gone; a look
        carried over onto someone else is never learnt."""
        p = self._people.get(pid)
        if look is None or p is None or p.appearance is None or p.weight < MIN_WEIGHT:
            return look is not None
        own = hellinger(look, p.appearance)
        if own > self.max_distance + self.margin:
            return False
        return not any(
            hellinger(look, q.appearance) < own - self.margin
            for qid, q in self._people.items()
            if qid != pid and q.appearance is not None and q.weight >= MIN_WEIGHT
        )

    def person_ids(self, tracker_ids: np.ndarray) -> np.ndarray:
        """i64[L]: the person id of each tracker id (its own when it has none yet)."""
        ids = [self._of_track.get(int(t), int(t)) for t in np.ravel(tracker_ids)]
        return np.array(ids, np.int64)

    def _gone_match(self, look: np.ndarray, taken: set[int], own: int) -> tuple[float, int] | None:
        """(distance, id) of the gone person ``look`` is clearly theirs, or None."""
        gone = sorted(
            (hellinger(look, p.appearance), pid)
            for pid, p in self._people.items()
            if pid not in taken and pid != own and p.appearance is not None
        )
        if not gone or gone[0][0] > self.max_distance:
            return None
        if len(gone) > 1 and gone[1][0] - gone[0][0] < self.margin:
            return None
        return gone[0]

    def _jumped(self, track_id: int, look: np.ndarray, taken: set[int]) -> tuple | None:
        """The gone person (distance, id) the track's look has been clearly nearer to than to
        its own person's for JUMP_FRAMES frames in a row (the tracker carried it over onto
        them, as when two people cross), or None."""
        own = self._of_track[track_id]
        p = self._people.get(own)
        if p is None or p.appearance is None or p.weight < MIN_WEIGHT:
            return None
        match = self._gone_match(look, taken, own)
        if match is None or hellinger(look, p.appearance) - match[0] < self.margin:
            self._strikes.pop(track_id, None)
            return None
        count, target, last = self._strikes.get(track_id, (0, match[1], self._frame))
        if target != match[1] or self._frame - last > STRIKE_GAP_FRAMES:
            count = 0  # strikes count in a row, at one person
        self._strikes[track_id] = (count + 1, match[1], self._frame)
        return match if count + 1 >= JUMP_FRAMES else None

    def _rejoin(self, track_id: int, match: tuple[float, int]) -> None:
        """A track that jumped onto a gone person takes their id from now on; the person it
        left keeps their look (it was not learnt while the track looked unlike them)."""
        old = self._of_track[track_id]
        dist, pid = match
        self._of_track[track_id] = pid
        self._people[old].tracker_ids.discard(track_id)
        self._people[pid].tracker_ids.add(track_id)
        self._strikes.pop(track_id, None)
        self.jumps += 1
        logger.info(
            "track %d jumped from person %d to person %d (appearance distance %.2f): shown "
            "as %d from now on",
            track_id,
            old,
            pid,
            dist,
            pid,
        )

    def _decide(self, track_id: int, look: np.ndarray | None, taken: set[int]) -> None:
        """Give a new track a gone person's id once its look can tell (its box whole in the
        picture and uncovered), or stop trying after ``decide_frames``."""
        shown = self._pending[track_id]
        self._pending[track_id] = shown + 1
        if look is None:
            if shown + 1 >= self.decide_frames:
                del self._pending[track_id]
            return
        del self._pending[track_id]
        own = self._of_track[track_id]
        match = self._gone_match(look, taken, own)
        if match is None:
            return
        dist, pid = match
        self._of_track[track_id] = pid
        mine = self._people.pop(own, None)
        if mine is not None:
            self._people[pid].tracker_ids |= mine.tracker_ids
        self.returned += 1
        self.relabelled += shown > 0
        if shown:
            self.aliases[own] = pid
        logger.info(
            "track %d is person %d again (appearance distance %.2f, gone %d frames)%s",
            track_id,
            pid,
            dist,
            self._frame - self._people[pid].last_frame,
            f"; shown as {own} for {shown} frames first" if shown else "",
        )

    @staticmethod
    def _in_view(full: np.ndarray, visible: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
        """bool[M]: boxes whose look tells who it is. People come in from the sides: a box
        cut at a side (a detector's visible box touching it) shows an unknown share of the
        person, so it must be clear of the sides; a whole-body box running out of the
        picture says how much is in it, and at least MIN_SHARE must be (a waist-up person,
        cut off by the bottom edge, counts)."""
        w, _ = size_wh
        share = box_area(visible) / np.maximum(box_area(full), 1e-9)
        at_side = (visible[:, 0] <= 2) | (visible[:, 2] >= w - 2)
        runs_out = share < 0.999
        return (share >= MIN_SHARE) & (~at_side | runs_out)

    def _learn(self, pid: int, track_id: int, look: np.ndarray | None) -> None:
        p = self._people.setdefault(pid, _Person(None, 0.0, self._frame))
        p.last_frame = self._frame
        p.tracker_ids.add(track_id)
        if look is None:
            return
        if p.appearance is None:
            p.appearance, p.weight = look, 1.0
            return
        p.weight = min(p.weight + 1.0, self.max_weight)
        p.appearance = p.appearance + (look - p.appearance) / p.weight

    def _forget(self) -> None:
        for pid in [
            k for k, p in self._people.items() if self._frame - p.last_frame > self.memory_frames
        ]:
            for t in self._people.pop(pid).tracker_ids:
                self._of_track.pop(t, None)
                self._pending.pop(t, None)
                self._strikes.pop(t, None)

    @staticmethod
    def _uncovered(boxes: np.ndarray) -> np.ndarray:
        """bool[M]: boxes of which less than COVERED lies inside any other box."""
        share = box_intersection(boxes, boxes) / np.maximum(box_area(boxes), 1e-9)[:, None]
        np.fill_diagonal(share, 0.0)
        return ~(share >= COVERED).any(1) if len(boxes) else np.zeros(0, bool)
