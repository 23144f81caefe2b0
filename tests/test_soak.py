"""Soak: 3,000 frames through the whole threaded loop; memory must stay flat, threads must end."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest

from multiroi.types import Frame, HmrOutput
from realtime.detect import GivenBoxesDetector
from realtime.infer import InferenceStage
from realtime.pipeline import Pipeline
from realtime.recording import Recorder
from realtime.smoothing import TrackSmoothers
from realtime.track import PersonTracker

N = 3000
WH = (160, 120)


class SyntheticSource:
    """N generated frames (a moving bright box per person); a file-like source (no drops)."""

    is_live, fps, size_wh, name, dropped = False, 30.0, WH, "soak", 0

    def __iter__(self):
        for i in range(N):
            img = np.full((WH[1], WH[0], 3), 40, np.uint8)
            img[20:100, 10 + i % 60 : 40 + i % 60] = 220
            yield Frame(i, time.perf_counter(), img, self.name)

    def close(self) -> None:
        pass


class LightBackend:
    name, device, num_rois = "light", "cpu", 2

    def __call__(self, batch):
        m = len(batch)
        rot = np.tile(np.eye(3, dtype=np.float32), (m, 24, 1, 1))
        rot[:, 0] = np.diag([1.0, -1.0, -1.0])
        cam = np.tile(np.array([0.9, 0.0, 0.0], np.float32), (m, 2, 1))
        return HmrOutput(rot, np.zeros((m, 10), np.float32), cam)


class RssProbe:
    def __init__(self) -> None:
        self.proc, self.n, self.rss_warm, self.rss_end = psutil.Process(), 0, 0, 0

    def update(self, frame, people) -> bool:
        self.n += 1
        if self.n == 300:
            self.rss_warm = self.proc.memory_info().rss
        self.rss_end = self.proc.memory_info().rss
        return True

    def close(self) -> None:
        pass


@pytest.mark.slow
def test_soak_3000_frames_memory_flat_and_no_thread_left(tmp_path, toy_body_model):
    before = {t.ident for t in threading.enumerate()}
    boxes = np.zeros((N, 2, 4), np.float32)
    x = 10 + np.arange(N) % 60
    boxes[:, 0] = np.stack([x, np.full(N, 20), x + 30, np.full(N, 100)], 1)
    boxes[:, 1] = [100, 10, 150, 110]
    boxes[N // 2 : N // 2 + 40, 1] = np.nan  # person 1 leaves for a while, then comes back
    probe = RssProbe()
    rec = Recorder(tmp_path / "soak.npz")
    infer = InferenceStage(
        LightBackend(), toy_body_model, smoothers=TrackSmoothers(), min_box_px=8
    )
    pipe = Pipeline(SyntheticSource(), GivenBoxesDetector(boxes), PersonTracker(), infer, probe,
                    rec)  # fmt: skip
    summary = pipe.run()
    rec.close()
    assert summary.frames == N and summary.dropped == 0
    growth_mb = (probe.rss_end - probe.rss_warm) / 2**20
    print(f"soak: {N} frames, memory growth {growth_mb:.1f} MB")  # shown with -s
    assert growth_mb < 50, f"memory grew {growth_mb:.1f} MB over {N} frames"
    assert len(infer.smoothers) <= 2  # filters of vanished tracks are pruned
    left = [t.name for t in threading.enumerate() if t.ident not in before]
    assert left == [], f"threads left behind: {left}"
    with np.load(tmp_path / "soak.npz", allow_pickle=False) as data:
        assert len(data["frames_index"]) == N
