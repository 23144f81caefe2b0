"""ultralytics YOLO as a person detector, from a weights file on disk only (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from multiroi.types import Detections


class YoloDetector:
    """ultralytics YOLO restricted to the person class (COCO class 0)."""

    def __init__(self, weights: str | os.PathLike, conf: float = 0.3, device: str = "cpu",
                 imgsz: int = 640) -> None:  # fmt: skip
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"YOLO weights not found: {path}")
        os.environ.setdefault("YOLO_OFFLINE", "1")  # never try to reach the hub at run time
        from ultralytics import YOLO

        self.model = YOLO(str(path))
        self.conf, self.device, self.imgsz = conf, device, imgsz

    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections:
        res = self.model.predict(
            image_bgr, classes=[0], conf=self.conf, device=self.device, imgsz=self.imgsz,
            verbose=False,
        )[0]  # fmt: skip
        boxes = res.boxes
        if boxes is None or len(boxes) == 0:
            return Detections.empty()
        return Detections(np.asarray(boxes.xyxy.cpu().numpy(), np.float32).reshape(-1, 4),
                          np.asarray(boxes.conf.cpu().numpy(), np.float32).reshape(-1))


def find_yolo_weights(weights: str | os.PathLike) -> Path | None:
    """The YOLO weights file if it is on disk: the path as given, or the bare name in
    ultralytics' weights folder. Never downloads (no network wait on an offline machine)."""
    path = Path(weights)
    if path.is_file():
        return path
    if path.parent == Path("."):
        try:
            from ultralytics.utils import SETTINGS

            alt = Path(SETTINGS.get("weights_dir", "")) / path.name
            if alt.is_file():
                return alt
        except Exception:  # noqa: BLE001 - settings unreadable: treat as absent
            return None
    return None
