"""Qualitative check on real photos that ship with installed packages (ultralytics' bus.jpg and
zidane.jpg, scikit-image's astronaut): the network's meshes drawn over each photo.

    python -m train.qualitative [--checkpoint CKPT] --out docs/images/real

The person boxes of these three photos are given by hand (below), so that every person is
scored; pass ``--detect`` to use the live loop's detector instead (offline: MediaPipe's pose
detector, which finds 5 of the 7 people; OpenCV's HOG draws one box, half on a walker of
bus.jpg, and finds nobody in the other two). The hand-drawn boxes hold the visible part of each
person. A model trained on whole-body boxes (``ModelConfig.box_extent`` "amodal") gets the
whole-body box that MediaPipe's pose detector estimates for each hand-drawn person it finds
(the detection whose box, clipped to the photo, overlaps the hand-drawn one most, IoU > 0.3),
and the hand-drawn box for the others.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from multiroi.types import Frame, Tracks

logger = logging.getLogger(__name__)

# Hand-drawn person boxes (x1, y1, x2, y2 px) for the bundled photos.
PHOTO_BOXES = {
    "bus": [[46, 392, 243, 900], [216, 405, 351, 865], [668, 270, 810, 870], [0, 594, 68, 891]],
    "zidane": [[126, 198, 700, 720], [737, 36, 1151, 720]],
    "astronaut": [[17, 13, 369, 512]],
}


def bundled_photos() -> dict[str, np.ndarray]:
    """The photos as BGR images; those whose package is missing are left out."""
    photos: dict[str, np.ndarray] = {}
    try:
        import ultralytics

        assets = Path(os.path.dirname(ultralytics.__file__)) / "assets"
        for name in ("bus", "zidane"):
            img = cv2.imread(str(assets / f"{name}.jpg"))
            if img is not None:
                photos[name] = img
    except ImportError:
        logger.warning("ultralytics not installed: bus.jpg and zidane.jpg skipped")
    try:
        from skimage import data

        photos["astronaut"] = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    except ImportError:
        logger.warning("scikit-image not installed: astronaut skipped")
    return photos


def whole_body_boxes(
    hand: np.ndarray, detected: np.ndarray, image_wh: tuple[int, int], min_iou: float = 0.3
) -> np.ndarray:
    """f32[M,4]: for each hand-drawn (visible) box, the detected whole-body box f32[K,4] that,
    clipped to the image, overlaps it most (IoU > ``min_iou``), else the hand-drawn box."""
    from realtime.boxes import box_iou

    out = np.array(hand, np.float32, copy=True)
    if len(detected) and len(out):
        clipped = np.asarray(detected, np.float32).copy()
        clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, image_wh[0])
        clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, image_wh[1])
        iou = box_iou(out, clipped)
        best = iou.argmax(1)
        hit = iou[np.arange(len(out)), best] > min_iou
        out[hit] = np.asarray(detected, np.float32)[best[hit]]
    return out


def render_photos(checkpoint: str | None, out_dir: Path, detect: bool = False) -> list[Path]:
    """Write ``out_dir/<name>.png`` (photo | meshes drawn over it) for each bundled photo."""
    from multiroi.backends import create_backend
    from multiroi.body import load_body_model
    from realtime.cameras import CameraProvider
    from realtime.config import DetectorConfig
    from realtime.detect import create_detector
    from realtime.infer import InferenceStage
    from realtime.render.overlay import draw_overlay

    backend = create_backend("auto", checkpoint)  # with the checkpoint's RoI count
    body = load_body_model()
    stage = InferenceStage(backend, body, CameraProvider(), None, 8.0, None)
    detector = create_detector(DetectorConfig(kind="auto"), box_extent=stage.box_extent) if (
        detect) else None  # fmt: skip
    whole = None
    if not detect and stage.box_extent == "amodal":
        whole = create_detector(DetectorConfig(kind="blazepose"), box_extent="amodal")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, img) in enumerate(bundled_photos().items()):
        boxes = detector(img).boxes_xyxy if detector else np.float32(PHOTO_BOXES[name])
        if whole is not None:
            wh = (img.shape[1], img.shape[0])
            boxes = whole_body_boxes(boxes, whole(img).boxes_xyxy, wh)
        tracks = Tracks(np.arange(len(boxes), dtype=np.int64), np.asarray(boxes, np.float32))
        frame = Frame(i, 0.0, img, name)
        people = stage(frame, tracks)
        overlay = draw_overlay(img, people, stage.cameras(frame.size_wh), body.faces)
        path = out_dir / f"{name}.png"
        cv2.imwrite(str(path), np.concatenate([img, overlay], axis=1))
        logger.info("%s: %d persons -> %s", name, len(people), path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None, help="default: the shipped model")
    ap.add_argument("--out", type=Path, default=Path("docs/images/real"))
    ap.add_argument("--detect", action="store_true", help="detect people instead of hand boxes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    render_photos(args.checkpoint, args.out, args.detect)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
