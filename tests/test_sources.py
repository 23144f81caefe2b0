"""Frame sources on generated videos, images and fake live captures (no camera needed)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.config import SourceConfig
from realtime.sources import (
    ImageSource,
    LiveSource,
    SourceError,
    VideoFileSource,
    open_source,
)


def write_video(path: Path, n: int, wh=(64, 48), fps: float = 25.0) -> Path:
    """MJPG AVI whose frame i is a flat grey of level 10 * i."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, wh)
    assert w.isOpened()
    for i in range(n):
        w.write(np.full((wh[1], wh[0], 3), (10 * i) % 256, np.uint8))
    w.release()
    return path


def test_video_file_gives_every_frame_in_order(tmp_path):
    path = write_video(tmp_path / "v.avi", 12)
    with VideoFileSource(path) as src:
        assert not src.is_live and src.fps == pytest.approx(25.0) and src.size_wh == (64, 48)
        frames = list(src)
    assert [f.index for f in frames] == list(range(12))
    levels = [float(f.image_bgr.mean()) for f in frames]
    assert np.allclose(levels, 10 * np.arange(12), atol=3)
    times = [f.t_capture_s for f in frames]
    assert all(b >= a for a, b in zip(times, times[1:], strict=False))


def test_realtime_pacing_skips_frames_when_consumer_is_slow(tmp_path):
    path = write_video(tmp_path / "v.avi", 20, fps=100.0)
    with VideoFileSource(path, realtime=True) as src:
        assert src.is_live
        got = []
        for f in src:
            got.append(f.index)
            time.sleep(0.03)  # 3 frame periods per frame
    assert got[0] == 0 and got == sorted(got)
    assert len(got) < 12 and src.dropped >= 20 - len(got) - 1


def test_truncated_video_ends_cleanly(tmp_path, caplog):
    path = write_video(tmp_path / "v.avi", 40, wh=(96, 64))
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.5)])
    with VideoFileSource(path) as src:
        frames = list(src)
    assert 0 < len(frames) < 40
    assert [f.index for f in frames] == sorted({f.index for f in frames})


def test_unreadable_and_missing_video_raise_clear_errors(tmp_path):
    bad = tmp_path / "notavideo.mp4"
    bad.write_text("hello")
    with pytest.raises(SourceError, match="cannot open video"):
        VideoFileSource(bad)
    with pytest.raises(SourceError, match="not found"):
        VideoFileSource(tmp_path / "missing.mp4")


def test_image_folder_mixed_sizes_and_a_corrupt_file(tmp_path, caplog):
    d = tmp_path / "imgs"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), np.full((40, 50, 3), 7, np.uint8))
    (d / "b.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(d / "c.png"), np.full((30, 80, 3), 9, np.uint8))
    (d / "notes.txt").write_text("ignored")
    with open_source(SourceConfig(str(d))) as src:
        assert isinstance(src, ImageSource) and src.size_wh == (50, 40)
        frames = list(src)
    assert [f.size_wh for f in frames] == [(50, 40), (80, 30)]
    assert [f.index for f in frames] == [0, 1]
    assert "unreadable image" in caplog.text
    single = open_source(SourceConfig(str(d / "c.png")))
    assert len(list(single)) == 1


def test_missing_camera_lists_sources_and_how_to_choose():
    with pytest.raises(SourceError) as err:
        open_source(SourceConfig("7"))
    msg = str(err.value)
    assert "camera 7" in msg and "cameras found" in msg and "--source" in msg


def test_unknown_source_and_dead_url(tmp_path):
    with pytest.raises(SourceError, match="try --source demo"):
        open_source(SourceConfig(str(tmp_path / "nothing_here")))
    with pytest.raises(SourceError, match="cannot open stream"):
        open_source(SourceConfig("rtsp://127.0.0.1:9/none"))


class FakeCapture:
    """A capture giving ``n`` frames (then failing forever), each after ``period_s``."""

    def __init__(self, n: int, period_s: float = 0.002, level: int = 0) -> None:
        self.n, self.period_s, self.level, self.reads, self.released = n, period_s, level, 0, False

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def read(self):
        time.sleep(self.period_s)
        if self.reads >= self.n:
            return False, None
        self.reads += 1
        return True, np.full((24, 32, 3), self.level, np.uint8)

    def release(self) -> None:
        self.released = True


def test_live_source_keeps_only_the_newest_frame():
    cap = FakeCapture(400, period_s=0.001)
    src = LiveSource(lambda: cap, "fake", reconnect_timeout_s=0.05)
    got = []
    with src:
        for f in src:
            got.append(f.index)
            time.sleep(0.02)  # a slow consumer
            if len(got) == 5:
                break
    assert got == sorted(got) and len(set(got)) == 5
    assert got[-1] - got[0] > 10  # frames in between were skipped, not queued
    assert src.dropped > 10
    assert cap.released


def test_camera_disappearing_mid_run_ends_the_stream():
    opened = []

    def open_fn():
        if opened:
            raise SourceError("camera gone")
        opened.append(FakeCapture(6, period_s=0.003))
        return opened[0]

    src = LiveSource(open_fn, "fake", reconnect_timeout_s=0.3, max_failed_reads=3)
    t0 = time.perf_counter()
    with src:
        frames = list(src)
    assert 1 <= len(frames) <= 6 and frames[-1].index <= 5
    assert time.perf_counter() - t0 < 3.0
    assert src.reconnects == 0 and opened[0].released


def test_live_source_reconnects_after_a_drop():
    caps = [FakeCapture(5, 0.003, level=10), FakeCapture(5, 0.003, level=200)]

    def open_fn():
        if not caps:
            raise SourceError("no more")
        return caps.pop(0)

    src = LiveSource(open_fn, "fake", reconnect_timeout_s=0.3, max_failed_reads=2)
    with src:
        frames = [f for f in src if not time.sleep(0.001)]
    levels = {int(f.image_bgr[0, 0, 0]) for f in frames}
    assert src.reconnects == 1 and levels == {10, 200}
    idx = [f.index for f in frames]
    assert idx == sorted(idx) and len(set(idx)) == len(idx)


def test_close_is_idempotent_and_stops_the_reader_thread():
    before = threading.active_count()
    src = LiveSource(lambda: FakeCapture(10**6, 0.001), "fake")
    it = iter(src)
    next(it)
    src.close()
    src.close()
    assert len(list(it)) <= 1  # at most the frame already waiting, then the stream ends
    assert threading.active_count() <= before
