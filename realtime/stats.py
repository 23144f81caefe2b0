"""Per-stage timings, end-to-end latency (capture -> rendered), FPS and dropped frames.

Thread-safe: every stage calls :meth:`PipelineStats.add_time`; the main thread calls
:meth:`PipelineStats.frame_done` once a frame is rendered. Memory is bounded (rolling windows),
so a run of any length keeps the same footprint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class StatsSummary:
    """What a run did. fps: frames rendered per second of wall time; latency_*_ms: from
    ``latency_from`` to rendered, where latency_from is "capture" (the capture timestamp; live
    sources) or "first stage" (when detection took the frame; files, which are read ahead so
    queue backlog is not counted); stage_ms: mean milliseconds per call of each stage; dropped:
    frames dropped by the source, by the queues and by stages that failed on them; failed: the
    last of these (a stage raised on the frame; it was skipped)."""

    frames: int
    wall_s: float
    fps: float
    latency_p50_ms: float
    latency_p95_ms: float
    dropped: int
    stage_ms: dict[str, float] = field(default_factory=dict)
    persons_mean: float = 0.0
    latency_from: str = "capture"
    failed: int = 0

    def describe(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        return (
            f"{self.frames} frames in {self.wall_s:.1f} s: {self.fps:.1f} FPS, latency "
            f"({self.latency_from} -> shown) p50 "
            f"{self.latency_p50_ms:.0f} ms / p95 {self.latency_p95_ms:.0f} ms, "
            f"{self.dropped} dropped{f' ({self.failed} failed)' if self.failed else ''}, "
            f"{self.persons_mean:.1f} persons/frame; "
            f"ms per stage: {stages}"
        )


class PipelineStats:
    """Collects timings. ``window``: how many recent samples the percentiles and the live line
    use (the whole run's means are kept as running sums). ``latency_from``: what the
    ``t_ref_s`` given to :meth:`frame_done` is ("capture" or "first stage"; see StatsSummary)."""

    def __init__(self, window: int = 20000, log_every_s: float = 2.0) -> None:
        self._lock = threading.Lock()
        self._latency_s: deque[float] = deque(maxlen=window)
        self._recent_done: deque[float] = deque(maxlen=256)
        self._stage_sum: dict[str, float] = defaultdict(float)
        self._stage_n: dict[str, int] = defaultdict(int)
        self._stage_recent: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=64))
        self._dropped: dict[str, int] = defaultdict(int)
        self._persons_sum = 0
        self.frames = 0
        self.t_start = time.perf_counter()
        self.t_last_done: float | None = None
        self.log_every_s = log_every_s
        self._t_last_log = self.t_start
        self.latency_from = "capture"

    def reset_clock(self) -> None:
        """Start the run's wall clock now (call when the pipeline starts)."""
        self.t_start = self._t_last_log = time.perf_counter()

    def add_time(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._stage_sum[stage] += seconds
            self._stage_n[stage] += 1
            self._stage_recent[stage].append(seconds)

    def add_dropped(self, where: str, n: int = 1) -> None:
        with self._lock:
            self._dropped[where] += n

    def set_dropped(self, where: str, n: int) -> None:
        """Absolute count kept elsewhere (e.g. by a live source's reader thread)."""
        with self._lock:
            self._dropped[where] = n

    def frame_done(self, t_ref_s: float, num_persons: int = 0, t_done_s: float | None = None
                   ) -> None:  # fmt: skip
        """One frame shown; latency = t_done_s - t_ref_s (t_ref_s: see ``latency_from``)."""
        t_done = time.perf_counter() if t_done_s is None else t_done_s
        with self._lock:
            self.frames += 1
            self._persons_sum += num_persons
            self._latency_s.append(t_done - t_ref_s)
            self._recent_done.append(t_done)
            self.t_last_done = t_done

    @property
    def dropped(self) -> int:
        with self._lock:
            return int(sum(self._dropped.values()))

    def live_text(self) -> str:
        """One short line for the log and the renderer: FPS, latency, per-stage ms."""
        with self._lock:
            done = list(self._recent_done)
            lat = list(self._latency_s)[-64:]
            stages = {k: 1000 * float(np.mean(v)) for k, v in self._stage_recent.items() if v}
            dropped = int(sum(self._dropped.values()))
        fps = (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 and done[-1] > done[0] else 0
        lat_ms = 1000 * float(np.median(lat)) if lat else 0.0
        parts = " ".join(f"{k} {v:.0f}" for k, v in stages.items())
        return f"{fps:.1f} FPS | latency {lat_ms:.0f} ms | ms: {parts} | dropped {dropped}"

    def maybe_log(self, now: float | None = None) -> bool:
        """Log the live line if ``log_every_s`` passed since the last one; True if it logged."""
        now = time.perf_counter() if now is None else now
        if now - self._t_last_log < self.log_every_s:
            return False
        self._t_last_log = now
        logger.info("%s", self.live_text())
        return True

    def summary(self) -> StatsSummary:
        with self._lock:
            lat = np.asarray(self._latency_s, np.float64)
            t_end = self.t_last_done or time.perf_counter()
            wall = max(t_end - self.t_start, 1e-9)
            stage_ms = {k: 1000 * self._stage_sum[k] / max(self._stage_n[k], 1)
                        for k in self._stage_sum}  # fmt: skip
            return StatsSummary(
                frames=self.frames,
                wall_s=wall,
                fps=self.frames / wall if self.frames else 0.0,
                latency_p50_ms=1000 * float(np.percentile(lat, 50)) if lat.size else 0.0,
                latency_p95_ms=1000 * float(np.percentile(lat, 95)) if lat.size else 0.0,
                dropped=int(sum(self._dropped.values())),
                stage_ms=stage_ms,
                persons_mean=self._persons_sum / self.frames if self.frames else 0.0,
                latency_from=self.latency_from,
                failed=int(sum(v for k, v in self._dropped.items() if k.startswith("failed:"))),
            )
