"""OpenCV captures for cameras and network streams, with errors that name what exists.

:mod:`realtime.sources` wraps them in threaded live sources.
"""

from __future__ import annotations

import glob
import logging
import os
import sys
from typing import Any

logger = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """A source could not be opened; the message says what exists and what to do."""


def list_video_devices() -> list[str]:
    """The camera device nodes present (``/dev/video*`` on Linux; empty elsewhere)."""
    return sorted(glob.glob("/dev/video*"), key=lambda p: (len(p), p))


def _no_camera_message(index: int) -> str:
    devices = list_video_devices()
    found = ", ".join(devices) if devices else "none (no /dev/video* device)"
    return (
        f"cannot open camera {index}; cameras found: {found}. Choose one with --source N "
        "(N from /dev/videoN), or use --source demo, a video file, a URL or an image folder"
    )


def open_camera_capture(index: int, width: int, height: int, fps: float) -> Any:
    """cv2.VideoCapture for camera ``index`` (V4L2 on Linux) asking for MJPG, the resolution and
    FPS, and a 1-frame driver buffer. Raises SourceError listing the cameras that exist."""
    import cv2

    if sys.platform.startswith("linux") and hasattr(cv2, "CAP_V4L2"):
        if not os.path.exists(f"/dev/video{index}"):
            raise SourceError(_no_camera_message(index))
        cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
    else:
        cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        raise SourceError(_no_camera_message(index))
    cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
    cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    cap.set(cv2.CAP_PROP_FPS, fps)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    got = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    logger.info("camera %d: asked %dx%d@%g, got %dx%d@%g", index, width, height, fps,
                got[0], got[1], cap.get(cv2.CAP_PROP_FPS))  # fmt: skip
    return cap


def open_stream_capture(url: str) -> Any:
    """cv2.VideoCapture for an RTSP/HTTP URL (FFmpeg backend), raising SourceError if closed."""
    import cv2

    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open stream {url}; check the URL and that the server is up")
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap
