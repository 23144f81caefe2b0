"""The threaded live loop: capture -> detect+track -> infer -> render/record (main thread).

Stages run in their own threads, joined by bounded queues. Inference that comes in three steps
(:class:`realtime.infer.InferenceStage`) is spread over three threads: the RoI crops after
tracking, the network alone in its thread, and camera + smoothing + body model in a "body"
thread, so the network never waits for the rest of the loop. Live sources use drop-oldest
queues (the newest frame wins, there is never a backlog); files block (every frame is
processed) unless paced in real time. Latency is measured from the capture timestamp when
frames are dropped (live), and from when the first stage took the frame when they are not
(files: a file is read ahead of need, so time spent waiting for room in the first queue is
backlog, not latency); the summary line names which. The loop ends on end of input,
``max_frames``, Ctrl-C, the window being closed, or a stage that keeps failing. One bad frame
never ends it: a stage that raises on a frame skips that frame (logged, counted as dropped);
only ``max_consecutive_errors`` failures of one stage in a row end the loop, and that error
is re-raised in the main thread as :class:`PipelineError` naming the stage. Every thread is
joined at exit.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from multiroi.types import Detections, Frame, PersonState
from realtime.stats import PipelineStats, StatsSummary

logger = logging.getLogger(__name__)

_END = object()  # end of input; travels down the queues
_STOPPED = object()  # returned by StageQueue.get when the pipeline is stopping
_SKIP = object()  # a stage failed on this frame (Pipeline._per_frame)


class PipelineError(RuntimeError):
    """A stage raised; ``stage`` names it and ``__cause__`` is the original exception."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(f"stage '{stage}' failed: {type(exc).__name__}: {exc}")
        self.stage = stage


@dataclass
class Tracked:
    """Between detect+track and infer. tracks: the Tracks, or with split inference the
    ``realtime.infer.Prepared`` RoI batch made from them. t_start_s: perf_counter() when the
    first stage (detect) took the frame."""

    frame: Frame
    tracks: Any
    t_start_s: float


@dataclass
class Result:
    """Between infer and the main thread."""

    frame: Frame
    people: list[PersonState]
    t_start_s: float


class StageQueue:
    """Bounded queue with an explicit policy. ``drop_oldest=True``: a full queue discards its
    oldest item (counted by ``on_drop``); False: ``put`` blocks until there is room. Both give
    up when ``stop`` is set, so no thread can hang on a queue at shutdown."""

    def __init__(self, name: str, maxsize: int, drop_oldest: bool, stop: threading.Event,
                 on_drop: Callable[[str], None] | None = None) -> None:  # fmt: skip
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self.name, self.drop_oldest, self._stop = name, drop_oldest, stop
        self._q: queue.Queue = queue.Queue(maxsize)
        self._on_drop = on_drop
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Enqueue; False if the pipeline stopped first (the item is then discarded)."""
        while True:
            if self.drop_oldest:
                try:
                    self._q.put_nowait(item)
                    return True
                except queue.Full:
                    self._drop_one()
                    continue
            if self._stop.is_set():
                return False
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue

    def _drop_one(self) -> None:
        try:
            old = self._q.get_nowait()
        except queue.Empty:
            return
        if old is _END:  # never lose the end marker
            self._q.put_nowait(old)
            return
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(self.name)

    def get(self, timeout_s: float = 0.05) -> Any:
        """Next item, or ``_STOPPED`` once the pipeline is stopping."""
        while not self._stop.is_set():
            try:
                return self._q.get(timeout=timeout_s)
            except queue.Empty:
                continue
        return _STOPPED

    def qsize(self) -> int:
        return self._q.qsize()


class Pipeline:
    """``Pipeline(source, detector, tracker, infer, renderer=None, recorder=None, ...).run()``.

    source: iterable of Frame with ``is_live`` and ``close()``; detector:
    ``(image, frame_index) -> Detections``; tracker: ``.update(Detections, image) -> Tracks``;
    infer: ``(frame, tracks) -> list[PersonState]``; renderer: ``.update(frame, people) ->
    bool`` (False = the user closed it) and ``.close()``, driven from the calling thread;
    recorder: ``.add(index, t_capture_s, t_done_s, people, image_wh=)``. preprocess: optional
    ``image -> image`` (e.g. undistortion) applied before detection. drop_frames: None = the
    source decides (``source.is_live``). max_consecutive_errors: failures of one stage on
    that many frames in a row end the loop (a single bad frame is skipped).
    """

    def __init__(
        self,
        source: Any,
        detector: Any,
        tracker: Any,
        infer: Any,
        renderer: Any = None,
        recorder: Any = None,
        *,
        max_frames: int | None = None,
        queue_size: int = 2,
        drop_frames: bool | None = None,
        preprocess: Callable[[Any], Any] | None = None,
        on_people: Callable[[Frame, list[PersonState]], None] | None = None,
        stats: PipelineStats | None = None,
        log_every_s: float = 2.0,
        join_timeout_s: float = 10.0,
        max_consecutive_errors: int = 10,
    ) -> None:
        self.source, self.detector, self.tracker, self.infer = source, detector, tracker, infer
        self.renderer, self.recorder = renderer, recorder
        self.max_frames, self.preprocess, self.on_people = max_frames, preprocess, on_people
        self.drop = bool(getattr(source, "is_live", False)) if drop_frames is None else drop_frames
        self.stats = stats or PipelineStats(log_every_s=log_every_s)
        self.stats.latency_from = "capture" if self.drop else "first stage"
        self.join_timeout_s = join_timeout_s
        self.max_consecutive_errors = max(1, int(max_consecutive_errors))
        self._failures: dict[str, int] = {}  # stage -> failures in a row
        self._warned: dict[str, float] = {}  # stage -> when its last failure was logged
        if getattr(infer, "timer", False) is None:
            infer.timer = self.stats.add_time  # sub-stage timings (rois, model, body)
        self._stop = threading.Event()
        self._error: tuple[str, BaseException] | None = None
        self._error_lock = threading.Lock()
        self.stop_reason = ""

        def mk(name: str) -> StageQueue:
            return StageQueue(name, queue_size, self.drop, self._stop, self._count_drop)

        self._q_frames, self._q_tracked, self._q_results = mk("frames"), mk("tracked"), mk("out")
        # an infer with prepare / run_network / finish gets three threads (crops | network |
        # body model); a plain callable gets one
        self._split = all(callable(getattr(infer, n, None))
                          for n in ("prepare", "run_network", "finish"))  # fmt: skip
        self._q_net = mk("network") if self._split else None
        self.threads: list[threading.Thread] = []

    def _count_drop(self, name: str) -> None:
        self.stats.add_dropped(f"queue:{name}")

    def _per_frame(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, or ``_SKIP`` when it raised: the frame is skipped (logged, counted).
        The ``max_consecutive_errors``-th failure of the stage in a row is raised."""
        try:
            out = fn(*args)
        except Exception as exc:
            n = self._failures[stage] = self._failures.get(stage, 0) + 1
            self.stats.add_dropped(f"failed:{stage}")
            if n >= self.max_consecutive_errors:
                raise
            now = time.monotonic()
            if n == 1 and now - self._warned.get(stage, -1e9) >= 5.0:  # at most every 5 s
                self._warned[stage] = now
                verbose = logger.isEnabledFor(logging.DEBUG)  # --verbose: the traceback
                logger.warning("stage %s failed on a frame (%s: %s); frame skipped", stage,
                               type(exc).__name__, exc, exc_info=verbose)  # fmt: skip
            return _SKIP
        self._failures[stage] = 0
        return out

    def stop(self, reason: str = "stopped") -> None:
        """Ask every stage to stop (thread-safe, idempotent)."""
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    # ----- stages (each in its own thread) -----
    def _guard(self, name: str, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except Exception as exc:  # noqa: BLE001 - re-raised in the main thread
                with self._error_lock:
                    if self._error is None:
                        self._error = (name, exc)
                logger.debug("stage %s failed", name, exc_info=True)
                self.stop(f"error in {name}")

        return run

    def _capture(self) -> None:
        count = 0
        try:
            for frame in self.source:
                if self._stop.is_set():
                    break
                if not self._q_frames.put(frame):
                    break
                count += 1
                if self.max_frames is not None and count >= self.max_frames:
                    break
        finally:
            self._q_frames.put(_END)

    def _detect_track(self) -> None:
        try:
            while (item := self._q_frames.get()) not in (_END, _STOPPED):
                t0 = time.perf_counter()  # the frame enters the first stage
                tracks = self._per_frame("detect", self._detect_one, item, t0)
                if tracks is _SKIP:
                    continue
                if not self._q_tracked.put(Tracked(item, tracks, t0)):
                    break
        finally:
            self._q_tracked.put(_END)

    def _detect_one(self, item: Frame, t0: float) -> Any:
        if self.preprocess is not None:
            item.image_bgr = self.preprocess(item.image_bgr)
        dets = self.detector(item.image_bgr, item.index)
        t1 = time.perf_counter()
        tracks = self.tracker.update(dets if dets is not None else Detections.empty(),
                                     item.image_bgr)  # fmt: skip
        self.stats.add_time("detect", t1 - t0)
        self.stats.add_time("track", time.perf_counter() - t1)
        if self._split:  # the crops, here: the network's thread only runs the network
            tracks = self.infer.prepare(item, tracks)
        return tracks

    def _infer(self) -> None:
        if self._split:
            return self._network()
        try:
            while (item := self._q_tracked.get()) not in (_END, _STOPPED):
                t0 = time.perf_counter()
                people = self._per_frame("infer", self.infer, item.frame, item.tracks)
                if people is _SKIP:
                    continue
                self.stats.add_time("infer", time.perf_counter() - t0)
                if not self._emit(item, people):
                    break
        finally:
            self._q_results.put(_END)

    def _network(self) -> None:
        """Split inference, step 2: ``item.tracks`` holds the prepared RoI batch."""
        try:
            while (item := self._q_tracked.get()) not in (_END, _STOPPED):
                out = self._per_frame("infer", self.infer.run_network, item.tracks)
                if out is _SKIP:
                    continue
                if not self._q_net.put((item, out)):
                    break
        finally:
            self._q_net.put(_END)

    def _body(self) -> None:
        """Split inference, step 3: camera, smoothing and body model, in frame order."""
        try:
            while (got := self._q_net.get()) not in (_END, _STOPPED):
                item, out = got
                people = self._per_frame("body", self.infer.finish, item.tracks, out)
                if people is _SKIP:
                    continue
                self.stats.add_time("infer", item.tracks.seconds)
                if not self._emit(item, people):
                    break
        finally:
            self._q_results.put(_END)

    def _emit(self, item: Tracked, people: list[PersonState]) -> bool:
        if self.on_people is not None:
            self.on_people(item.frame, people)
        return self._q_results.put(Result(item.frame, people, item.t_start_s))

    # ----- main thread -----
    def run(self) -> StatsSummary:
        """Run until the input ends or the loop is stopped; returns the run's summary.

        Raises :class:`PipelineError` if a stage failed (after every thread is joined)."""
        self.stats.reset_clock()
        stages = [("capture", self._capture), ("detect", self._detect_track),
                  ("infer", self._infer)]  # fmt: skip
        if self._split:
            stages.append(("body", self._body))
        for name, body in stages:
            t = threading.Thread(target=self._guard(name, body), name=f"multiroi-{name}",
                                 daemon=True)  # fmt: skip
            self.threads.append(t)
            t.start()
        try:
            self._guard("render", self._main_loop)()
        except KeyboardInterrupt:
            logger.info("interrupted (Ctrl-C); shutting down")
            self.stop("interrupted")
        finally:
            self.stop(self.stop_reason or "done")
            self._shutdown()
        summary = self.stats.summary()
        logger.info("summary (%s): %s", self.stop_reason, summary.describe())
        if self._error is not None:
            stage, exc = self._error
            raise PipelineError(stage, exc) from exc
        return summary

    def _main_loop(self) -> None:
        while True:
            item = self._q_results.get()
            if item is _STOPPED:
                return
            if item is _END:
                self.stop("end of input")
                return
            self._deliver(item)

    def _deliver(self, item: Result) -> None:
        t0 = time.perf_counter()
        keep_going, shown = True, None
        if self.renderer is not None:
            if hasattr(self.renderer, "set_status"):
                self.renderer.set_status(self.stats.live_text())
            elif hasattr(self.renderer, "status_text"):
                self.renderer.status_text = self.stats.live_text()
            shown = self._per_frame("render", self.renderer.update, item.frame, item.people)
            keep_going = shown is not False  # _SKIP: the frame was not drawn, go on
        t_done = time.perf_counter()
        self.stats.add_time("render", t_done - t0)
        if self.recorder is not None:
            self.recorder.add(item.frame.index, item.frame.t_capture_s, t_done, item.people,
                              image_wh=item.frame.size_wh)  # fmt: skip
        t_ref = item.frame.t_capture_s if self.drop else item.t_start_s  # see module docstring
        if shown is not _SKIP:  # a frame the renderer failed on is counted as failed, not shown
            self.stats.frame_done(t_ref, len(item.people), t_done)
        self.stats.set_dropped("source", int(getattr(self.source, "dropped", 0)))
        self.stats.maybe_log(t_done)
        if not keep_going:
            self.stop("window closed")

    def _shutdown(self) -> None:
        if getattr(self.source, "is_live", False):
            self.source.close()  # unblocks a live source waiting for its next frame
        for t in self.threads:
            t.join(self.join_timeout_s)
            if t.is_alive():
                logger.warning("thread %s did not stop within %.0f s", t.name,
                               self.join_timeout_s)  # fmt: skip
        self.source.close()
        self.stats.set_dropped("source", int(getattr(self.source, "dropped", 0)))
