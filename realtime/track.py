"""Stable person IDs from ultralytics' trackers (ByteTrack / BoT-SORT), with a cap on persons.

``tracker.update(Detections, image_bgr) -> Tracks``. The tracker is fed a small results-like
object (xyxy / xywh / conf / cls, boolean indexing), the form ultralytics' trackers take from
YOLO; its arguments are built from ultralytics' own default tracker YAML.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from multiroi.types import Detections, Tracks

logger = logging.getLogger(__name__)


class _DetResults:
    """The results interface ultralytics' trackers read: xyxy, xywh, conf, cls [N...]."""

    def __init__(self, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray | None = None) -> None:
        self.xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
        self.conf = np.asarray(conf, np.float32).reshape(-1)
        self.cls = np.zeros(len(self.conf), np.float32) if cls is None else np.asarray(cls)

    @property
    def xywh(self) -> np.ndarray:
        wh = self.xyxy[:, 2:] - self.xyxy[:, :2]
        return np.concatenate([self.xyxy[:, :2] + wh / 2, wh], axis=1)

    @property
    def data(self) -> np.ndarray:
        return np.concatenate([self.xyxy, self.conf[:, None], self.cls[:, None]], axis=1)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, idx: Any) -> _DetResults:
        return _DetResults(self.xyxy[idx], self.conf[idx], self.cls[idx])


def tracker_args(kind: str = "bytetrack", **overrides: Any) -> Any:
    """ultralytics' default tracker arguments (from its ``{kind}.yaml``) with overrides."""
    from ultralytics.utils import YAML, IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    cfg = dict(YAML.load(check_yaml(f"{kind}.yaml")))
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"unknown {kind} tracker options {unknown}; known: {sorted(cfg)}")
    cfg.update(overrides)
    if kind == "botsort":
        cfg["with_reid"] = False  # ReID would need a model download
    return IterableSimpleNamespace(**cfg)


class PersonTracker:
    """ByteTrack or BoT-SORT over person detections, keeping at most ``max_persons`` tracks per
    frame (by score; tracks kept on the previous frame win ties so IDs stay put). The returned
    boxes are this frame's detection boxes (not the Kalman-smoothed ones); a change of frame
    size resets the tracker (new IDs)."""

    def __init__(self, kind: str = "bytetrack", max_persons: int = 8, reid: Any = None,
                 **overrides: Any) -> None:  # fmt: skip
        from ultralytics.trackers import BOTSORT, BYTETracker

        classes = {"bytetrack": BYTETracker, "botsort": BOTSORT}
        if kind not in classes:
            raise ValueError(f"tracker must be one of {sorted(classes)}, got {kind!r}")
        self.kind, self.max_persons = kind, max_persons
        self.args = tracker_args(kind, **overrides)
        self._tracker = classes[kind](args=self.args)
        self._size_wh: tuple[int, int] | None = None
        self._kept: set[int] = set()
        self.reid = reid  # a realtime.reid.Reidentifier, or None

    def reset(self) -> None:
        self._tracker.reset()
        self._kept = set()
        if self.reid is not None:
            self.reid.reset()

    def update(self, detections: Detections, image_bgr: np.ndarray) -> Tracks:
        """Detections of this frame (boxes f32[N,4] px) -> Tracks (ids i64[M], M <= cap)."""
        size_wh = (int(image_bgr.shape[1]), int(image_bgr.shape[0]))
        if self._size_wh is not None and size_wh != self._size_wh:
            logger.info("frame size changed %s -> %s: tracker reset", self._size_wh, size_wh)
            self.reset()
        self._size_wh = size_wh
        boxes = np.asarray(detections.boxes_xyxy, np.float32).reshape(-1, 4)
        scores = np.asarray(detections.scores, np.float32).reshape(-1)
        finite = np.isfinite(boxes).all(1) & np.isfinite(scores)
        boxes, scores = boxes[finite], scores[finite]
        out = self._tracker.update(_DetResults(boxes, scores), image_bgr)
        if len(out) == 0:  # nobody shown, but the lost may come back: keep their ids
            self._kept = set()
            lost_ids, lost_boxes = self._lost()
            if self.reid is not None:  # the frame still counts for its memory
                self.reid(np.zeros(0, np.int64), np.zeros((0, 4)), lost_ids, image_bgr)
                lost_ids = self.reid.person_ids(lost_ids)
            empty = Tracks.empty()
            return Tracks(empty.track_ids, empty.boxes_xyxy, empty.scores, lost_ids, lost_boxes)
        out = np.asarray(out, np.float64)
        ids = out[:, 4].astype(np.int64)
        det_idx = out[:, 7].astype(np.int64)
        track_scores = out[:, 5].astype(np.float32)
        boxes_out = out[:, :4].astype(np.float32)
        fresh = (det_idx >= 0) & (det_idx < len(boxes))
        boxes_out[fresh] = boxes[det_idx[fresh]]
        order = self._cap_order(ids, track_scores)
        self._kept = {int(i) for i in ids[order]}
        lost_ids, lost_boxes = self._lost()
        ids, boxes_out, track_scores = ids[order], boxes_out[order], track_scores[order]
        if self.reid is not None:  # tracker ids -> person ids (returning people: their old one)
            hidden = ~np.isin(out[:, 4].astype(np.int64), ids)  # followed, not shown (cap)
            ids = self.reid(ids, boxes_out, lost_ids, image_bgr, out[hidden, 4].astype(np.int64),
                            out[hidden, :4])  # fmt: skip
            lost_ids = self.reid.person_ids(lost_ids)
            order = np.argsort(ids, kind="stable")
            ids, boxes_out, track_scores = ids[order], boxes_out[order], track_scores[order]
        return Tracks(ids, boxes_out, track_scores, lost_ids, lost_boxes)

    def _lost(self) -> tuple[np.ndarray, np.ndarray]:
        """The confirmed tracks lost but still looked for (ids i64[L]) and their boxes f32[L,4]
        px as the tracker's Kalman filter predicts them for this frame."""
        lost = [t for t in getattr(self._tracker, "lost_stracks", []) if t.is_activated]
        if not lost:
            return np.zeros((0,), np.int64), np.zeros((0, 4), np.float32)
        ids = np.array([t.track_id for t in lost], np.int64)
        return ids, np.stack([np.asarray(t.xyxy, np.float32) for t in lost])

    def _cap_order(self, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Indices of the tracks to keep (at most max_persons), sorted by track id."""
        was_kept = np.array([int(i) in self._kept for i in ids])
        rank = np.lexsort((ids, -scores, ~was_kept))  # kept-before first, then score, then id
        chosen = rank[: self.max_persons]
        return chosen[np.argsort(ids[chosen], kind="stable")]


def create_tracker(cfg: Any) -> PersonTracker:
    """A tracker from a :class:`realtime.config.TrackerConfig`."""
    reid = None
    if getattr(cfg, "reid", False):
        from realtime.reid import Reidentifier

        reid = Reidentifier(memory_frames=cfg.reid_memory_frames)
    return PersonTracker(cfg.kind, cfg.max_persons, reid, **cfg.overrides)
