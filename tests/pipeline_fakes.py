"""Fakes for the threaded loop's tests (test_pipeline, test_pipeline_placement): generated
videos of box persons, a backend that always answers the upright mean pose, a renderer that
records what it was shown."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np

from multiroi.types import Frame, HmrOutput
from realtime.detect import GivenBoxesDetector
from realtime.infer import InferenceStage
from realtime.pipeline import Pipeline
from realtime.track import PersonTracker

WH = (160, 120)
UPRIGHT = np.diag([1.0, -1.0, -1.0]).astype(np.float32)  # body y-up -> camera y-down


def person_boxes(t: int) -> np.ndarray:
    """Two persons; the second one half outside the right border."""
    return np.array([[20 + t, 20, 60 + t, 110], [130, 10, 190, 115]], np.float32)


def write_video(path: Path, n: int) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, WH)
    for t in range(n):
        img = np.full((WH[1], WH[0], 3), 40, np.uint8)
        for b in person_boxes(t).astype(int):
            cv2.rectangle(img, tuple(b[:2]), tuple(b[2:]), (200, 180, 160), -1)
        w.write(img)
    w.release()
    return path


class FakeBackend:
    """Upright mean pose, zero betas, s = 0.9 for every RoI; NaN for persons left of
    ``nan_left_of_px`` (RoI 0 centre x)."""

    name, device = "fake", "cpu"

    def __init__(self, num_rois: int = 2, nan_left_of_px: float = -1.0, fail_at: int = -1):
        self.num_rois, self.nan_left_of_px, self.fail_at, self.calls = (
            num_rois,
            nan_left_of_px,
            fail_at,
            0,
        )

    def __call__(self, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("backend exploded")
        m = len(batch)
        rotmat = np.tile(np.eye(3, dtype=np.float32), (m, 24, 1, 1))
        rotmat[:, 0] = UPRIGHT
        cam = np.tile(np.array([0.9, 0.0, 0.0], np.float32), (m, self.num_rois, 1))
        bad = batch.centers[:, 0, 0] < self.nan_left_of_px
        rotmat[bad] = np.nan
        return HmrOutput(rotmat, np.zeros((m, 10), np.float32), cam)

    def close(self):
        pass


class FakeRenderer:
    def __init__(self, close_after: int | None = None, delay_s: float = 0.0, raise_at=None):
        self.calls, self.threads, self.close_after, self.delay_s = [], set(), close_after, delay_s
        self.raise_at, self.status = raise_at, ""

    def set_status(self, text: str) -> None:
        self.status = text

    def update(self, frame: Frame, people) -> bool:
        self.threads.add(threading.current_thread().name)
        self.calls.append((frame.index, [p.track_id for p in people], frame.size_wh))
        if self.raise_at is not None and len(self.calls) == self.raise_at:
            raise self.raise_at_exc
        time.sleep(self.delay_s)
        return self.close_after is None or len(self.calls) < self.close_after

    def close(self) -> None:
        pass


def make_pipeline(source, toy_body_model, backend=None, detector=None, renderer=None, **kw):
    det = detector or GivenBoxesDetector(np.stack([person_boxes(t) for t in range(500)]))
    infer = InferenceStage(backend or FakeBackend(), toy_body_model, min_box_px=8)
    return Pipeline(source, det, PersonTracker(max_persons=4), infer, renderer, **kw)


def no_stage_threads() -> bool:
    return not any(t.name.startswith(("multiroi-", "reader-")) for t in threading.enumerate())
