"""The threaded loop on generated videos with a fake backend and the toy body model: ordering,
drop policy, shutdown paths, error propagation, recording, and every kind of bad input."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from pipeline_fakes import (
    UPRIGHT,
    WH,
    FakeBackend,
    FakeRenderer,
    make_pipeline,
    no_stage_threads,
    person_boxes,
    write_video,
)

from multiroi.types import Detections, Frame
from realtime.detect import GivenBoxesDetector
from realtime.pipeline import PipelineError, StageQueue
from realtime.recording import Recorder
from realtime.sources import ImageSource, LiveSource, VideoFileSource


def test_file_every_frame_in_order_with_recording(tmp_path, toy_body_model):
    src = VideoFileSource(write_video(tmp_path / "v.avi", 15))
    rec = Recorder(tmp_path / "out" / "rec.npz")
    ren = FakeRenderer()
    summary = make_pipeline(src, toy_body_model, renderer=ren, recorder=rec).run()
    rec.close()
    assert [c[0] for c in ren.calls] == list(range(15))
    assert ren.threads == {threading.main_thread().name}
    assert all(len(c[1]) == 2 for c in ren.calls[1:])  # both persons, one cut by the border
    assert "FPS" in ren.status
    assert summary.frames == 15 and summary.dropped == 0
    assert 0 < summary.latency_p50_ms <= summary.latency_p95_ms < 10_000
    assert {"detect", "track", "infer", "render", "model", "body"} <= set(summary.stage_ms)
    with np.load(tmp_path / "out" / "rec.npz", allow_pickle=False) as data:
        assert data["frames_index"].tolist() == list(range(15))
        n = len(data["track_id"])
        assert n == int(data["frames_num_persons"].sum()) >= 28
        assert data["rotmat"].shape == (n, 24, 3, 3) and data["pose_axis_angle"].shape == (
            n,
            24,
            3,
        )
        np.testing.assert_allclose(data["rotmat"][0, 0], UPRIGHT, atol=1e-5)
        np.testing.assert_allclose(np.abs(data["pose_axis_angle"][0, 0]), [np.pi, 0, 0], atol=1e-4)
        assert (data["transl_m"][:, 2] > 0).all()
        assert (data["t_done_s"] >= data["t_capture_s"]).all()
    assert not list((tmp_path / "out").glob("*.partial*"))
    assert no_stage_threads()


def test_one_bad_frame_is_skipped_and_a_failing_stage_ends_the_loop(tmp_path, toy_body_model,
                                                                     caplog):  # fmt: skip
    src = VideoFileSource(write_video(tmp_path / "v.avi", 12))
    ren = FakeRenderer()
    with caplog.at_level("WARNING", logger="realtime.pipeline"):
        summary = make_pipeline(src, toy_body_model, backend=FakeBackend(fail_at=3),
                                renderer=ren).run()  # fmt: skip
    assert [c[0] for c in ren.calls] == [i for i in range(12) if i != 2]  # frame 2 skipped
    assert summary.failed == 1 and summary.dropped == 1 and "(1 failed)" in summary.describe()
    assert sum("stage infer failed on a frame" in r.message for r in caplog.records) == 1
    assert no_stage_threads()

    class Flaky:  # fails on every other frame: never ten in a row
        def __init__(self):
            self.calls = 0
            self.boxes = GivenBoxesDetector(np.stack([person_boxes(t) for t in range(500)]))

        def __call__(self, image, frame_index=None):
            self.calls += 1
            if self.calls % 2:
                raise ValueError("glitch")
            return self.boxes(image, frame_index)

    src = VideoFileSource(write_video(tmp_path / "f.avi", 30))
    summary = make_pipeline(src, toy_body_model, detector=Flaky()).run()
    assert summary.frames == 15 and summary.failed == 15

    def bad_detector(image, frame_index=None):
        raise ValueError("detector broke")

    src = VideoFileSource(write_video(tmp_path / "w.avi", 30))
    with pytest.raises(PipelineError, match="stage 'detect' failed: ValueError: detector broke"):
        make_pipeline(src, toy_body_model, detector=bad_detector,
                      max_consecutive_errors=4).run()  # fmt: skip
    assert no_stage_threads()

    src = VideoFileSource(write_video(tmp_path / "r.avi", 30))

    class BrokenRenderer(FakeRenderer):
        def update(self, frame, people):
            super().update(frame, people)
            raise RuntimeError("cannot draw")

    broken = BrokenRenderer()
    with pytest.raises(PipelineError) as err:
        make_pipeline(src, toy_body_model, renderer=broken).run()
    assert err.value.stage == "render" and len(broken.calls) == 10  # ten frames in a row
    assert no_stage_threads()

    # a frame the renderer fails on once is counted as failed, not as shown
    once = FakeRenderer(raise_at=4)
    once.raise_at_exc = RuntimeError("one bad draw")
    summary = make_pipeline(VideoFileSource(write_video(tmp_path / "o.avi", 8)), toy_body_model,
                            renderer=once).run()  # fmt: skip
    assert len(once.calls) == 8 and summary.frames == 7 and summary.failed == 1
    assert no_stage_threads()


def test_window_close_and_ctrl_c_stop_cleanly(tmp_path, toy_body_model):
    src = VideoFileSource(write_video(tmp_path / "v.avi", 40))
    ren = FakeRenderer(close_after=3)
    pipe = make_pipeline(src, toy_body_model, renderer=ren)
    summary = pipe.run()
    assert pipe.stop_reason == "window closed" and summary.frames == 3 and len(ren.calls) == 3
    assert no_stage_threads()
    ren = FakeRenderer(raise_at=2)
    ren.raise_at_exc = KeyboardInterrupt()
    pipe = make_pipeline(VideoFileSource(tmp_path / "v.avi"), toy_body_model, renderer=ren)
    pipe.run()
    assert pipe.stop_reason == "interrupted" and len(ren.calls) == 2
    assert no_stage_threads()


def test_max_frames(tmp_path, toy_body_model):
    src = VideoFileSource(write_video(tmp_path / "v.avi", 40))
    assert make_pipeline(src, toy_body_model, max_frames=7).run().frames == 7


class EndlessCapture:
    def __init__(self):
        self.n = 0

    def isOpened(self):  # noqa: N802
        return True

    def read(self):
        time.sleep(0.002)
        self.n += 1
        img = np.full((WH[1], WH[0], 3), 40, np.uint8)
        return True, img

    def release(self):
        pass


def test_live_source_drops_instead_of_building_a_backlog(toy_body_model):
    src = LiveSource(EndlessCapture, "fake")
    ren = FakeRenderer(close_after=12, delay_s=0.03)  # a slow renderer
    pipe = make_pipeline(src, toy_body_model, renderer=ren, queue_size=2)
    summary = pipe.run()
    assert pipe.drop and summary.frames == 12
    assert summary.dropped > 20  # the source ran at ~500 FPS, the renderer at ~30
    assert summary.latency_p95_ms < 1000  # no growing backlog
    idx = [c[0] for c in ren.calls]
    assert idx == sorted(idx) and idx[-1] - idx[0] > 20
    assert no_stage_threads()


def test_stage_queue_policies():
    stop = threading.Event()
    drops = []
    q = StageQueue("q", 2, True, stop, drops.append)
    for i in range(5):
        assert q.put(i)
    assert q.qsize() == 2 and len(drops) == 3 and q.dropped == 3
    assert [q.get(), q.get()] == [3, 4]
    blocking = StageQueue("b", 1, False, stop)
    assert blocking.put(1)
    threading.Timer(0.1, stop.set).start()
    t0 = time.perf_counter()
    assert blocking.put(2) is False  # gave up when the pipeline stopped
    assert 0.05 < time.perf_counter() - t0 < 2.0


def test_nan_outputs_skip_that_person_and_log_once(tmp_path, toy_body_model, caplog):
    src = VideoFileSource(write_video(tmp_path / "v.avi", 10))
    ren = FakeRenderer()
    make_pipeline(src, toy_body_model, backend=FakeBackend(nan_left_of_px=100), renderer=ren).run()
    assert len(ren.calls) == 10 and all(len(c[1]) == 1 for c in ren.calls)
    warnings = [r for r in caplog.records if "non-finite" in r.getMessage()]
    assert len([r for r in warnings if r.levelname == "WARNING"]) == 1


def test_zero_persons_tiny_boxes_and_size_changes(tmp_path, toy_body_model):
    d = tmp_path / "imgs"
    d.mkdir()
    for i, wh in enumerate([(160, 120), (160, 120), (320, 240), (100, 100)]):
        cv2.imwrite(str(d / f"{i}.png"), np.full((wh[1], wh[0], 3), 60, np.uint8))
    boxes = np.full((4, 2, 4), np.nan, np.float32)
    boxes[0] = person_boxes(0)  # two persons
    boxes[1, 0] = [10, 10, 14, 13]  # a tiny box only
    boxes[2] = [[50, 20, 150, 230], [-40, 30, 40, 200]]  # bigger frame; one cut by the border
    ren = FakeRenderer()  # frame 3: nobody
    make_pipeline(ImageSource(d), toy_body_model, detector=GivenBoxesDetector(boxes),
                  renderer=ren).run()  # fmt: skip
    counts = [len(c[1]) for c in ren.calls]
    assert counts == [2, 0, 2, 0]
    assert [c[2] for c in ren.calls] == [(160, 120), (160, 120), (320, 240), (100, 100)]


def test_detections_none_is_treated_as_empty(tmp_path, toy_body_model):
    src = VideoFileSource(write_video(tmp_path / "v.avi", 4))
    ren = FakeRenderer()
    make_pipeline(src, toy_body_model, detector=lambda img, i=None: Detections.empty(),
                  renderer=ren).run()  # fmt: skip
    assert [len(c[1]) for c in ren.calls] == [0, 0, 0, 0]


class StaleFrames:
    """A non-live source whose frames carry a capture stamp 100 s in the past."""

    is_live = False

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        for i in range(self.n):
            yield Frame(i, time.perf_counter() - 100.0, np.full((WH[1], WH[0], 3), 40, np.uint8))

    def close(self) -> None:
        pass


def test_latency_is_from_first_stage_for_files_and_from_capture_when_dropping(toy_body_model):
    """Files block and are read ahead, so their latency starts when detection takes the frame
    (queue backlog is not latency); with the drop policy it starts at the capture stamp."""
    summary = make_pipeline(StaleFrames(4), toy_body_model).run()
    assert summary.frames == 4 and summary.latency_from == "first stage"
    assert 0 < summary.latency_p95_ms < 10_000  # the 100 s before the pipeline are not counted
    assert "latency (first stage -> shown)" in summary.describe()
    live = make_pipeline(StaleFrames(4), toy_body_model, drop_frames=True).run()
    assert live.latency_from == "capture" and live.latency_p50_ms > 100_000
    assert "latency (capture -> shown)" in live.describe()


def test_a_failed_start_closes_the_source_and_renderer(monkeypatch, tmp_path):
    """build_pipeline: if a step after opening the source fails, nothing is left open."""
    import realtime
    from realtime import infer as infer_mod
    from realtime.config import build_arg_parser, config_from_args

    closed = []

    class Source:
        is_live, fps, size_wh, name = False, 30.0, (64, 48), "x"

        def close(self):
            closed.append("source")

    monkeypatch.setattr("realtime.sources.open_source", lambda cfg: Source())

    def broken(*a, **k):
        raise RuntimeError("no backend")

    monkeypatch.setattr(infer_mod, "build_inference_stage", broken)
    cfg = config_from_args(build_arg_parser().parse_args(["--source", "demo", "--render", "none"]))
    with pytest.raises(RuntimeError, match="no backend"):
        realtime.build_pipeline(cfg)
    assert closed == ["source"]
