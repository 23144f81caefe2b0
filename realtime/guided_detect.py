"""Look again where each person was: track-guided search for the people a detector missed.

MediaPipe's pose detector sees the whole frame at 224 x 224, where the face of a person 5-7 m
away is a few pixels wide, and it finds the most prominent person first: on the demo clip it
finds 69% of the people in view (docs/benchmarks.md). Run on the square around where a person
was in the last frame (``GROW`` times the longer side of their box), it finds the far person of
the demo clip in 24 of the 24 frames it had missed and the walker in 17 of 31 (the others
behind the person in front).

:class:`TrackGuidedDetector` wraps a detector: the live loop hands it the boxes of the persons
it placed (:meth:`carry`, the projections of their meshes). After the inner detector's pass,
the carried boxes and the detections are paired one to one by IoU (a person behind a nearer
one overlaps the nearer one's box, but that box is taken by the nearer one); each carried box
left over gets up to two pose-detector passes on its window (the first often finds the nearer
person), and a person found there who fits the carried box (IoU > ``MATCH_IOU``) and is none
of the detections already (IoU < ``PERSON_NMS_IOU``) is added. At most ``max_windows``
windows a frame (15 ms a pass on a CPU core); the boxes of the last ``max_age`` frames are
carried, so a person missed in one frame is looked for in the next ones. Not searched for:
people never placed, and people behind a nearer one whose face is hidden (that takes coasting
the track, which the live loop does not do).
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from multiroi.types import Detections
from realtime.boxes import box_iou

GROW = 1.3  # the window: this many times the carried box's longer side, around its centre
MATCH_IOU = 0.3  # a person found in the window must overlap the carried box this much
PERSON_NMS_IOU = 0.6  # ... and overlap less than this every detection already made
MIN_WINDOW_PX = 32
SEARCH_PASSES = 2  # pose-detector passes per window


class TrackGuidedDetector:
    """``TrackGuidedDetector(inner, pose)(image_bgr, frame_index) -> Detections``: ``inner``'s
    detections plus the persons ``pose`` (a ``realtime.pose_detector.BlazePoseDetector``;
    default: ``inner`` itself) finds around the carried boxes that ``inner`` missed (see module
    doc)."""

    def __init__(self, inner, pose=None, max_windows: int = 3, max_age: int = 10) -> None:
        self.inner, self.pose = inner, inner if pose is None else pose
        self.box_extent = getattr(inner, "box_extent", "visible")
        self.max_windows, self.max_age = int(max_windows), int(max_age)
        self._carried: deque[tuple[int | None, np.ndarray]] = deque(maxlen=self.max_age)
        self._lock = threading.Lock()
        self._calls = 0
        self.found = 0  # persons added so far

    def carry(self, detections: Detections, frame_index: int | None = None) -> None:
        """The boxes f32[M,4] px of the persons placed in frame ``frame_index``. The carries
        of the last ``max_age`` frames are kept, so a person missed once is looked for again."""
        boxes = np.asarray(detections.boxes_xyxy, np.float32).reshape(-1, 4)
        with self._lock:
            if frame_index is not None and self._carried and self._carried[-1][0] is not None \
                    and frame_index <= self._carried[-1][0]:  # fmt: skip
                return
            self._carried.append((frame_index, boxes))

    def guides(self, frame_index: int | None) -> np.ndarray:
        """f32[G,4]: the carried boxes to look around, newest first, one per person (a box
        overlapping a newer one by IoU > 0.5 is that person's older place)."""
        with self._lock:
            carried = list(self._carried)
        out: list[np.ndarray] = []
        for index, boxes in reversed(carried):
            if None not in (frame_index, index) and frame_index - index > self.max_age:
                break
            for box in boxes:
                if not out or box_iou(box[None], np.stack(out))[0].max() <= 0.5:
                    out.append(box)
        return np.stack(out) if out else np.zeros((0, 4), np.float32)

    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections:
        dets = self.inner(image_bgr, frame_index)
        index = self._calls if frame_index is None else int(frame_index)
        self._calls += 1
        carried = self.guides(index)
        if not len(carried):
            return dets
        boxes = np.asarray(dets.boxes_xyxy, np.float32).reshape(-1, 4)
        scores = np.asarray(dets.scores, np.float32).reshape(-1)
        windows = 0
        for box in carried[~_matched(carried, boxes)]:
            if windows >= self.max_windows:
                break
            windows += 1
            hit = self._search(image_bgr, box, boxes)
            if hit is None:
                continue
            boxes = np.concatenate([boxes, hit[0][None]])
            scores = np.concatenate([scores, np.float32([hit[1]])])
            self.found += 1
        if len(boxes) == len(dets):
            return dets
        return Detections(boxes, scores)

    def _search(self, image_bgr: np.ndarray, box: np.ndarray,
                taken: np.ndarray) -> tuple[np.ndarray, float] | None:  # fmt: skip
        """The person (box f32[4], score) found around ``box`` that fits it and is none of the
        boxes ``taken`` f32[D,4], or None. Two passes: behind a nearer person the window's
        first find is that person."""
        scores, seen, whole = self.pose.around(image_bgr, box, GROW, SEARCH_PASSES, MIN_WINDOW_PX)
        if not len(scores):
            return None
        found = seen if self.box_extent == "visible" else whole
        iou = box_iou(np.asarray(box, np.float32)[None], found)[0]
        if len(taken):
            iou[box_iou(found, taken).max(1) >= PERSON_NMS_IOU] = 0.0  # one of them already
        best = int(np.argmax(iou))
        return (found[best], float(scores[best])) if iou[best] > MATCH_IOU else None


def _matched(carried: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """bool[G]: the carried boxes f32[G,4] that a detection (f32[D,4]) is assigned to, one to
    one (Hungarian on IoU, pairs with IoU > ``MATCH_IOU``): a person behind a nearer one
    overlaps that one's box, but the box is the nearer one's."""
    from scipy.optimize import linear_sum_assignment

    out = np.zeros(len(carried), bool)
    if not len(carried) or not len(boxes):
        return out
    iou = box_iou(carried, boxes)
    r, c = linear_sum_assignment(-iou)
    out[r[iou[r, c] > MATCH_IOU]] = True
    return out
