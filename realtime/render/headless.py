"""Headless output: an MP4 of (overlay | 3D view) side by side, and single PNG snapshots.

The video is written to a hidden temporary name in the output folder and renamed at ``close()``, so
nothing half-written is ever left under the final name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from multiroi.geometry.camera import Camera
from multiroi.types import Frame, PersonState
from realtime.render.overlay import (
    CameraSource,
    RateMeter,
    camera_for,
    draw_overlay,
    draw_text_line,
)
from realtime.render.view3d import SideView

logger = logging.getLogger(__name__)


def compose_side_by_side(
    frame: Frame, people: list[PersonState], camera: Camera, faces: np.ndarray,
    side_view: SideView | None, text: str = "",
) -> np.ndarray:  # fmt: skip
    """(overlay | 3D view) as one image_bgr uint8[H, 2W, 3] (only the overlay if no side view)."""
    h, w = frame.image_bgr.shape[:2]
    left = draw_overlay(frame.image_bgr, people, camera_for(camera, (w, h)), faces)
    if text:
        draw_text_line(left, text)
    if side_view is None:
        return left
    right = side_view.render(people)
    if right.shape[:2] != (h, w):
        right = cv2.resize(right, (w, h), interpolation=cv2.INTER_AREA)
    return np.concatenate([left, right], axis=1)


def _fit(img: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """``img`` scaled to fit ``size_wh`` with its aspect kept, centred on black."""
    w, h = size_wh
    s = min(w / img.shape[1], h / img.shape[0])
    new = (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s)))
    small = cv2.resize(img, new, interpolation=cv2.INTER_AREA)
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - new[0]) // 2, (h - new[1]) // 2
    out[y0 : y0 + new[1], x0 : x0 + new[0]] = small
    return out


class HeadlessRenderer:
    """Writes ``out_dir/<name>.mp4`` (cv2 mp4v). ``update`` always returns True.

    fps: frame rate stored in the file (the source's rate; 30 if unknown). Frames the loop
    dropped (a gap in the frame indices, as with ``--realtime`` or a live camera) are filled by
    repeating the last frame written (up to 2 s), so the video plays in real time.
    side_view: add the 3D view on the right (default True); view_backend "raster" or "open3d".
    cameras: per-frame camera provider (see ``overlay.camera_for``).
    """

    def __init__(
        self, camera: Camera, faces: np.ndarray, out_dir: str | os.PathLike,
        name: str = "multiroi", fps: float | None = 30.0, side_view: bool = True,
        view_backend: str = "raster", cameras: CameraSource | None = None,
    ) -> None:  # fmt: skip
        self.camera = camera
        self.cameras = cameras
        self.faces = np.asarray(faces, np.int64)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / f"{name}.mp4"
        self.tmp_path = self.out_dir / f".{name}.partial.mp4"
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self._side_view = (
            SideView(camera, self.faces, camera.image_wh, backend=view_backend)
            if side_view
            else None
        )
        self._writer: cv2.VideoWriter | None = None
        self._size_wh: tuple[int, int] | None = None
        self._meter = RateMeter()
        self.frames_written = 0
        self.frames_repeated = 0
        self._last: tuple[int, np.ndarray] | None = None
        self._closed = False

    def update(self, frame: Frame, people: list[PersonState]) -> bool:
        if self._closed:
            raise RuntimeError("HeadlessRenderer.update() after close()")
        cam = camera_for(self.camera, frame.size_wh, self.cameras)
        img = compose_side_by_side(
            frame, people, cam, self.faces, self._side_view, self._meter.tick(frame)
        )
        if self._writer is None:
            self._open((img.shape[1], img.shape[0]))
        if (img.shape[1], img.shape[0]) != self._size_wh:  # a source that changed size
            img = _fit(img, self._size_wh)
        if self._last is not None:  # dropped frames: the last one again, to keep real time
            gap = min(int(frame.index) - self._last[0] - 1, int(2 * self.fps))
            for _ in range(max(gap, 0)):
                self._writer.write(self._last[1])
                self.frames_repeated += 1
        self._writer.write(img)
        self._last = (int(frame.index), img)
        self.frames_written += 1
        return True

    def _open(self, size_wh: tuple[int, int]) -> None:
        self._size_wh = size_wh
        self._writer = cv2.VideoWriter(
            str(self.tmp_path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size_wh
        )
        if not self._writer.isOpened():
            raise RuntimeError(f"cannot open a video writer for {self.tmp_path} (OpenCV mp4v)")
        logger.info("writing %s (%dx%d @ %.1f fps)", self.path, *size_wh, self.fps)

    def close(self) -> None:
        """Finish the file and move it to its final name (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._writer is None:
            logger.warning("no frames rendered; %s not written", self.path)
            return
        self._writer.release()
        os.replace(self.tmp_path, self.path)
        logger.info("wrote %s (%d frames%s)", self.path, self.frames_written,
                    f", {self.frames_repeated} more repeating the last one for dropped frames"
                    if self.frames_repeated else "")  # fmt: skip

    def __enter__(self) -> HeadlessRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def snapshot(
    path: str | os.PathLike, frame: Frame, people: list[PersonState], camera: Camera,
    faces: np.ndarray, side_view: bool = True, view_backend: str = "raster",
) -> Path:  # fmt: skip
    """Write one PNG still of (overlay | 3D view) atomically; returns the path."""
    path = Path(path)
    view = SideView(camera, faces, frame.size_wh, backend=view_backend) if side_view else None
    if view is not None:  # converge the view's follow state to this frame
        for _ in range(60):
            view._follow(people)
    img = compose_side_by_side(frame, people, camera, faces, view)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
    return path
