"""Frame sources: webcams, video files, RTSP/HTTP streams, images and folders, the demo clip.

Every source is an iterable of :class:`multiroi.types.Frame`, a context manager with an
idempotent ``close()``, and has ``.is_live`` (frames may be dropped: the newest frame wins),
``.fps`` (float or None) and ``.size_wh`` ((W, H) px of the first frame, or of the request).
Live sources (cameras, URLs) read in their own thread and keep only the newest frame;
files give every frame unless ``realtime=True`` paces them at their native FPS.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from multiroi.types import Frame
from realtime.capture import (
    SourceError,
    list_video_devices,
    open_camera_capture,
    open_stream_capture,
)

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class Capture(Protocol):
    """The part of cv2.VideoCapture the live reader uses (fakes implement it in tests)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...


class _SourceBase:
    is_live: bool = False
    fps: float | None = None
    size_wh: tuple[int, int] = (0, 0)
    name: str = ""
    gt_path: Path | None = None
    camera: Any = None  # a multiroi Camera when the source knows its intrinsics (demo clip)
    dropped: int = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        pass


class VideoFileSource(_SourceBase):
    """Every frame of a video file, in order (or paced at its FPS with ``realtime=True``,
    skipping frames when the consumer falls behind). A truncated or corrupt file ends the
    stream with a warning after ``max_bad_reads`` consecutive failed reads."""

    def __init__(
        self, path: str | os.PathLike, realtime: bool = False, max_bad_reads: int = 25
    ) -> None:
        import cv2

        self.path = Path(path)
        self.name = self.path.stem
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(
                f"cannot open video {self.path} (not a video, or a codec OpenCV lacks); "
                "re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
            )
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.5 < fps < 1000 else None
        self.size_wh = (
            int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        )
        self.num_frames = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.realtime = realtime
        self.is_live = realtime
        self.max_bad_reads = max_bad_reads
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        period = 1.0 / (self.fps or 30.0)
        t0 = time.perf_counter()
        index = 0
        bad = 0
        while not self._closed:
            if self.realtime:
                index = self._pace(t0, period, index)
            ok, image = self._cap.read()
            if not ok or image is None:
                bad += 1
                if self.num_frames and index + bad < self.num_frames and bad < self.max_bad_reads:
                    continue  # a corrupt frame in the middle: try the next one
                if self.num_frames and index < self.num_frames:
                    logger.warning(
                        "%s: stream ended after %d of %d frames (truncated or corrupt file)",
                        self.path.name,
                        index,
                        self.num_frames,
                    )
                return
            index += bad
            bad = 0
            yield Frame(index, time.perf_counter(), image, self.name)
            index += 1

    def _pace(self, t0: float, period: float, index: int) -> int:
        """Sleep until frame ``index`` is due; skip (grab) frames that are already late."""
        due = t0 + index * period
        now = time.perf_counter()
        if now < due:
            time.sleep(due - now)
            return index
        late = int((now - due) / period)
        for _ in range(late):
            if not self._cap.grab():
                break
            index += 1
            self.dropped += 1
        return index

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._cap.release()


class ImageSource(_SourceBase):
    """One image or every image of a folder (sorted by name). Unreadable files are skipped with
    a warning; images may differ in size."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = self.path.stem or "images"
        if self.path.is_dir():
            files = [p for p in sorted(self.path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                raise SourceError(
                    f"folder {self.path} has no images ({', '.join(IMAGE_SUFFIXES)})"
                )
        elif self.path.is_file():
            files = [self.path]
        else:
            raise SourceError(f"no such image or folder: {self.path}")
        self.files = files
        self._closed = False
        first = self._read(files[0])
        self.size_wh = (first.shape[1], first.shape[0]) if first is not None else (0, 0)

    @staticmethod
    def _read(path: Path) -> np.ndarray | None:
        import cv2

        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or image.size == 0:
            logger.warning("skipping unreadable image %s", path)
            return None
        return image

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self.files:
            if self._closed:
                return
            image = self._read(path)
            if image is None:
                continue
            yield Frame(index, time.perf_counter(), image, path.stem)
            index += 1

    def close(self) -> None:
        self._closed = True


class LiveSource(_SourceBase):
    """A live capture (camera or stream) read in a background thread; only the newest frame is
    kept (older unread frames are counted in ``dropped``). After ``max_failed_reads``
    consecutive failed reads it reconnects with exponential backoff; when no reconnection
    succeeds within ``reconnect_timeout_s`` the stream ends (the loop stops cleanly).

    open_fn: returns an opened :class:`Capture` or raises SourceError.
    """

    def __init__(
        self,
        open_fn: Callable[[], Capture],
        name: str,
        fps: float | None = None,
        reconnect_timeout_s: float = 10.0,
        max_failed_reads: int = 10,
    ) -> None:
        self._open_fn = open_fn
        self.name = name
        self.fps = fps
        self.is_live = True
        self.reconnect_timeout_s = reconnect_timeout_s
        self.max_failed_reads = max_failed_reads
        self.reconnects = 0
        self._cap: Capture | None = open_fn()  # errors surface here, before any thread starts
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._ended = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_index = 0

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._reader, name=f"reader-{self.name}")
            self._thread.daemon = True
            self._thread.start()

    def _reader(self) -> None:
        failures = 0
        try:
            while not self._closed.is_set():
                ok, image = self._cap.read() if self._cap is not None else (False, None)
                if ok and image is not None:
                    failures = 0
                    self._publish(image)
                    continue
                failures += 1
                if failures >= self.max_failed_reads:
                    if not self._reconnect():
                        return
                    failures = 0
                else:
                    self._closed.wait(0.005)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _publish(self, image: np.ndarray) -> None:
        frame = Frame(self._next_index, time.perf_counter(), image, self.name)
        self._next_index += 1
        if self.size_wh == (0, 0):
            self.size_wh = frame.size_wh
        with self._cond:
            if self._latest is not None:
                self.dropped += 1
            self._latest = frame
            self._cond.notify_all()

    def _reconnect(self) -> bool:
        """Release and reopen with backoff; False when the timeout passed or we were closed."""
        logger.warning("%s: no frames; reconnecting (up to %.0f s)", self.name,
                       self.reconnect_timeout_s)  # fmt: skip
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        deadline = time.perf_counter() + self.reconnect_timeout_s
        delay = 0.05
        while not self._closed.is_set() and time.perf_counter() < deadline:
            try:
                self._cap = self._open_fn()
                self.reconnects += 1
                logger.info("%s: reconnected", self.name)
                return True
            except SourceError as exc:
                logger.debug("%s: reconnect failed: %s", self.name, exc)
            self._closed.wait(min(delay, max(0.0, deadline - time.perf_counter())))
            delay = min(delay * 2, 2.0)
        if not self._closed.is_set():
            logger.warning("%s: gone (no reconnection within %.0f s); ending the stream",
                           self.name, self.reconnect_timeout_s)  # fmt: skip
        return False

    def __iter__(self) -> Iterator[Frame]:
        self._start()
        while True:
            with self._cond:
                while self._latest is None and not self._ended and not self._closed.is_set():
                    self._cond.wait(0.1)
                frame, self._latest = self._latest, None
                if frame is None:
                    return
            yield frame

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def open_source(spec: Any) -> _SourceBase:
    """Open the source described by a :class:`realtime.config.SourceConfig`.

    "demo" -> the bundled clip (with ``.gt_path``), "demo:SCENARIO" another scripted clip
    (``realtime.demo.scene.SCENARIOS``); digits -> camera; "scheme://" -> stream;
    a folder or image -> images; any other file -> video.
    """
    src = str(spec.source)
    if src == "demo" or src.startswith("demo:"):
        scenario = src.partition(":")[2] or "default"
        return open_demo_source(realtime=spec.realtime, scenario=scenario)
    if src.isdigit():
        index = int(src)
        return LiveSource(
            lambda: open_camera_capture(index, spec.width, spec.height, spec.fps),
            name=f"camera{index}",
            fps=spec.fps,
            reconnect_timeout_s=spec.reconnect_timeout_s,
        )
    if "://" in src:
        return LiveSource(
            lambda: open_stream_capture(src),
            name=src.rsplit("/", 1)[-1] or "stream",
            reconnect_timeout_s=spec.reconnect_timeout_s,
        )
    path = Path(src)
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageSource(path)
    if path.is_file():
        return VideoFileSource(path, realtime=spec.realtime)
    devices = list_video_devices()
    raise SourceError(
        f"source {src!r} is not a camera index, URL, file or folder; cameras found: "
        f"{', '.join(devices) or 'none'}; try --source demo"
    )


def open_demo_source(realtime: bool = False, **clip_kwargs: Any) -> VideoFileSource:
    """The bundled demo clip (generated and cached on first use) as a video source whose
    ``gt_path`` points at its ground truth (boxes for the "given" detector)."""
    from realtime.demo import ensure_demo_clip

    clip = ensure_demo_clip(**clip_kwargs)
    source = VideoFileSource(clip.video_path, realtime=realtime)
    scenario = clip_kwargs.get("scenario", "default")
    source.name = "demo" if scenario == "default" else f"demo_{scenario}"
    source.gt_path = Path(clip.gt_path)
    source.camera = clip.camera()  # the clip's known intrinsics
    return source
