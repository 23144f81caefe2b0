"""Meshes projected onto the video frame: filled, shaded, alpha-blended, one colour per track.

``draw_overlay`` is the pure function (used by the headless writer and ``snapshot``);
``OverlayRenderer`` shows it in an OpenCV window ('q' / Esc or closing the window ends the loop).
"""

from __future__ import annotations

import colorsys
import logging
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from multiroi.geometry.camera import Camera
from multiroi.raster import RasterMesh, render_meshes
from multiroi.types import Frame, PersonState

logger = logging.getLogger(__name__)

#: ``(W, H) px -> Camera`` for a frame of that size, e.g. ``realtime.cameras.CameraProvider``.
CameraSource = Callable[[tuple[int, int]], Camera]


def track_color_rgb(track_id: int) -> tuple[float, float, float]:
    """A stable, well-separated colour (RGB in [0,1]) for a track id (golden-ratio hues)."""
    hue = (0.08 + 0.618034 * int(track_id)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.6, 0.95)
    return (r, g, b)


def camera_for(
    camera: Camera, image_wh: tuple[int, int], cameras: CameraSource | None = None
) -> Camera:
    """The camera for an image of size image_wh.

    cameras: the provider that placed the meshes (the pipeline passes the inference stage's);
    when given it decides, so meshes are drawn with the very camera that placed them. Without
    it: ``camera`` rescaled, or the default one if the aspect ratio changed (logged)."""
    if cameras is not None:
        return cameras((int(image_wh[0]), int(image_wh[1])))
    if tuple(camera.image_wh) == tuple(image_wh):
        return camera
    try:
        return camera.scaled_to(image_wh)
    except ValueError:
        logger.warning("frame size %s does not match the camera %s; using the default camera",
                       image_wh, camera.image_wh)  # fmt: skip
        return Camera.default(image_wh)


def draw_overlay(
    image_bgr: np.ndarray,
    people: Sequence[PersonState],
    camera: Camera,
    faces: np.ndarray,
    alpha: float = 0.7,
    draw_boxes: bool = True,
) -> np.ndarray:
    """Return a copy of image_bgr uint8[H,W,3] with every person's mesh (``vertices_m`` in the
    camera frame) shaded in its track colour and blended with weight ``alpha``; boxes and ids on
    top. Persons without vertices get only their box."""
    h, w = image_bgr.shape[:2]
    cam = camera_for(camera, (w, h))
    with_mesh = [p for p in people if p.vertices_m is not None]
    meshes = [RasterMesh(p.vertices_m, faces, track_color_rgb(p.track_id)) for p in with_mesh]
    out = image_bgr.copy()
    if meshes:
        res = render_meshes(meshes, cam.K, (w, h))
        m = res.mask
        mesh_bgr = res.color_rgb[m][:, ::-1] * 255.0
        out[m] = (alpha * mesh_bgr + (1.0 - alpha) * out[m]).clip(0, 255).astype(np.uint8)
    if draw_boxes:
        for p in people:
            _draw_box(out, p)
    return out


def _draw_box(image: np.ndarray, person: PersonState) -> None:
    r, g, b = track_color_rgb(person.track_id)
    color = (int(b * 255), int(g * 255), int(r * 255))
    x1, y1, x2, y2 = (int(round(float(v))) for v in person.box_xyxy)
    cv2.rectangle(image, (x1, y1), (x2, y2), color, 2, cv2.LINE_AA)
    label = f"id {person.track_id}  z {float(person.transl_m[2]):.1f} m"
    if getattr(person, "held", False):
        label += "  held"  # behind a nearer person: the pose of an earlier frame
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    y_text = max(y1, th + 4)
    cv2.rectangle(image, (x1, y_text - th - 4), (x1 + tw + 4, y_text), color, -1)
    cv2.putText(image, label, (x1 + 2, y_text - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                cv2.LINE_AA)  # fmt: skip


def draw_text_line(image: np.ndarray, text: str) -> None:
    """Write one status line (e.g. FPS / latency) at the top-left of image, in place."""
    cv2.putText(image, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1,
                cv2.LINE_AA)  # fmt: skip


class RateMeter:
    """Rendered FPS (exponential average) and capture-to-render latency for the status line."""

    def __init__(self) -> None:
        self._t_last: float | None = None
        self.fps = 0.0
        self.latency_ms = 0.0

    def tick(self, frame: Frame) -> str:
        now = time.perf_counter()
        if self._t_last is not None and now > self._t_last:
            inst = 1.0 / (now - self._t_last)
            self.fps = inst if self.fps == 0 else 0.9 * self.fps + 0.1 * inst
        self._t_last = now
        self.latency_ms = max(0.0, (now - frame.t_capture_s) * 1e3)
        return f"{self.fps:5.1f} FPS  latency {self.latency_ms:4.0f} ms  frame {frame.index}"


class OverlayRenderer:
    """An OpenCV window showing the overlay; ``update`` returns False once the user closed it.
    Main thread only."""

    def __init__(
        self, camera: Camera, faces: np.ndarray, window_name: str = "multiroi overlay",
        alpha: float = 0.7, cameras: CameraSource | None = None,
    ) -> None:  # fmt: skip
        self.camera = camera
        self.cameras = cameras  # per-frame camera provider (see camera_for)
        self.faces = np.asarray(faces, np.int64)
        self.window_name = window_name
        self.alpha = alpha
        self.status_text = ""  # extra text the pipeline may set (e.g. stage timings)
        self._meter = RateMeter()
        self._open = False
        self._closed = False

    def update(self, frame: Frame, people: list[PersonState]) -> bool:
        if self._closed:
            return False
        cam = camera_for(self.camera, frame.size_wh, self.cameras)
        img = draw_overlay(frame.image_bgr, people, cam, self.faces, self.alpha)
        draw_text_line(img, f"{self._meter.tick(frame)}  {self.status_text}".strip())
        if not self._open:
            cv2.namedWindow(self.window_name, cv2.WINDOW_NORMAL)
            self._open = True
        cv2.imshow(self.window_name, img)
        key = cv2.waitKey(1) & 0xFF
        visible = cv2.getWindowProperty(self.window_name, cv2.WND_PROP_VISIBLE) >= 1
        return key not in (ord("q"), 27) and visible

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._open:
            cv2.destroyWindow(self.window_name)
            cv2.waitKey(1)
