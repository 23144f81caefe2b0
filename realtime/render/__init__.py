"""Renderers for the live loop. All share ``update(frame, people) -> bool`` and ``close()``;
they are driven from the main thread only. ``PersonState.vertices_m`` are in the camera frame
(OpenCV axes, metres).

Modes: "open3d" (live 3D window + overlay window), "overlay" (OpenCV window), "headless" (MP4 of
overlay | 3D view in ``out_dir``), "none" (draws nothing).
"""

from __future__ import annotations

import os
import sys
from typing import Protocol

import numpy as np

from multiroi.geometry.camera import Camera
from multiroi.types import Frame, PersonState

RENDER_MODES = ("open3d", "overlay", "headless", "none")


class Renderer(Protocol):
    def update(self, frame: Frame, people: list[PersonState]) -> bool: ...

    def close(self) -> None: ...


class NullRenderer:
    """Draws nothing; ``update`` returns True until closed."""

    def __init__(self) -> None:
        self._closed = False

    def update(self, frame: Frame, people: list[PersonState]) -> bool:
        return not self._closed

    def close(self) -> None:
        self._closed = True


def require_display(mode: str) -> None:
    """On Linux a window needs X11 or Wayland; without one Qt aborts the process (core dump)."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise RuntimeError(f"render mode {mode!r} opens a window but there is no display "
                           "(DISPLAY is not set); use --headless --out DIR to write a video, "
                           "or --render none")  # fmt: skip


def create_renderer(
    mode: str,
    camera: Camera,
    faces: np.ndarray,
    out_dir: str | os.PathLike | None = None,
    fps: float | None = None,
    max_persons: int = 8,
    name: str = "multiroi",
    **kwargs,
) -> Renderer:
    """Build the renderer for ``mode`` (see ``RENDER_MODES``).

    camera: the full-image camera; faces: i64[F,3] of the body model; out_dir: required for
    "headless" (the MP4 goes to ``out_dir/<name>.mp4``); fps: frame rate of the written video;
    kwargs go to the renderer class.
    """
    if mode in ("headless", "overlay"):  # both draw with the rasteriser
        from multiroi.raster import warm_up

        warm_up()
    if mode == "headless":
        if out_dir is None:
            raise ValueError("headless rendering needs an output folder (--out DIR)")
        from realtime.render.headless import HeadlessRenderer

        return HeadlessRenderer(camera, faces, out_dir, name=name, fps=fps, **kwargs)
    if mode in ("overlay", "open3d"):
        require_display(mode)
    if mode == "overlay":
        from realtime.render.overlay import OverlayRenderer

        return OverlayRenderer(camera, faces, **kwargs)
    if mode == "open3d":
        from realtime.render.open3d_window import Open3DWindowRenderer

        return Open3DWindowRenderer(camera, faces, max_persons=max_persons, **kwargs)
    if mode == "none":
        return NullRenderer()
    raise ValueError(f"unknown render mode {mode!r}; choose one of {RENDER_MODES}")


__all__ = ["RENDER_MODES", "NullRenderer", "Renderer", "create_renderer", "require_display"]
