"""Board views from a folder of images or from a video file (with progress bars)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from calibration.boards import BoardView
from calibration.coverage import ViewSelector

logger = logging.getLogger(__name__)

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files (by extension) directly inside ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--images: not a folder: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not paths:
        raise ValueError(
            f"--images: no image files in {folder} (looked for {', '.join(sorted(IMAGE_EXTS))})"
        )
    return paths


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def views_from_images(
    paths: list[Path], detector, progress: bool = True
) -> tuple[list[BoardView], tuple[int, int]]:
    """Detect the board in every image -> (views, image_wh). All images must share one size."""
    import cv2
    from tqdm import tqdm

    views: list[BoardView] = []
    image_wh: tuple[int, int] | None = None
    missed: list[str] = []
    for path in tqdm(paths, desc="detecting board", unit="img", disable=not progress):
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            logger.warning("cannot read image %s; skipped", path)
            continue
        wh = (img.shape[1], img.shape[0])
        if image_wh is None:
            image_wh = wh
        elif wh != image_wh:
            raise ValueError(
                f"{path.name} is {wh[0]}x{wh[1]} but earlier images are "
                f"{image_wh[0]}x{image_wh[1]}; calibrate one resolution at a time"
            )
        view = detector.detect(img, path.name)
        if view is None:
            missed.append(path.name)
        else:
            views.append(view)
    if image_wh is None:
        raise ValueError("--images: none of the image files could be read")
    if missed:
        logger.info(
            "no board in %d of %d images: %s",
            len(missed),
            len(paths),
            ", ".join(missed[:10]) + (" ..." if len(missed) > 10 else ""),
        )
    return views, image_wh


def views_from_video(
    path: str | Path,
    detector,
    stride: int = 0,
    min_distance: float = 0.06,
    max_views: int = 40,
    progress: bool = True,
) -> tuple[list[BoardView], tuple[int, int]]:
    """Detect the board in every ``stride``-th frame (0: about 300 frames examined) and keep the
    views that add a new pose (ViewSelector) -> (views, image_wh)."""
    import cv2
    from tqdm import tqdm

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"--video: cannot open {path} (missing file or unsupported codec)")
    try:
        n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
        stride = stride or max(1, n_frames // 300)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        selector = ViewSelector((w, h), min_distance=min_distance, max_views=max_views)
        bar = tqdm(
            total=n_frames or None, desc="scanning video", unit="frame", disable=not progress
        )
        index = 0
        while True:
            ok = cap.grab()
            if not ok:
                break
            if index % stride == 0:
                ok, frame = cap.retrieve()
                if ok:
                    view = detector.detect(_gray(frame), f"frame {index}")
                    if view is not None and selector.consider(view):
                        bar.set_postfix(views=len(selector.views))
            index += 1
            bar.update(1)
        bar.close()
    finally:
        cap.release()
    if index == 0:
        raise ValueError(f"--video: no frames could be read from {path}")
    logger.info("video: %d frames, %d distinct board views kept", index, len(selector.views))
    return selector.views, (w, h)
