"""Int8 entropy calibration data for TensorRT: batches of (crops, box_info) from a folder of
crop images, or generated ones when no folder is given; the calibration cache is saved so a
rebuild skips calibration."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def crop_files(folder: str | os.PathLike) -> list[Path]:
    """Sorted crop images in ``folder`` (each resized to 256x192 and used as every RoI)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in calibration folder {root}")
    return files


def _load_crop(path: Path) -> np.ndarray:
    """f32[3,256,192], ImageNet-normalised RGB."""
    import cv2

    from multiroi.rois import normalize_crops

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read calibration image {path}")
    img = cv2.resize(img, (192, 256), interpolation=cv2.INTER_AREA)
    return normalize_crops(img[None], input_bgr=True)[0]


def calibration_batches(
    num_rois: int,
    batch_persons: int,
    num_batches: int,
    folder: str | os.PathLike | None = None,
    seed: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``num_batches`` of (crops f32[B,R,3,256,192], box_info f32[B,R,3]).

    With ``folder``: real crops (cycled), RoI k a slight zoom of the crop; without: smooth
    random images (low-frequency noise, roughly the statistics of normalised photos)."""
    rng = np.random.default_rng(seed)
    files = crop_files(folder) if folder is not None else []
    for b in range(num_batches):
        if files:
            idx = [(b * batch_persons + i) % len(files) for i in range(batch_persons)]
            one = np.stack([_load_crop(files[i]) for i in idx])  # [B,3,H,W]
            crops = np.repeat(one[:, None], num_rois, axis=1)
        else:
            low = rng.normal(0.0, 1.0, (batch_persons, num_rois, 3, 16, 12)).astype(np.float32)
            crops = np.repeat(np.repeat(low, 16, axis=3), 16, axis=4)
        info = rng.uniform([-0.5, -0.5, -2.0], [0.5, 0.5, 5.0], (batch_persons, num_rois, 3))
        yield np.ascontiguousarray(crops, np.float32), info.astype(np.float32)


def make_entropy_calibrator(
    trt: object,
    batches: Iterator[tuple[np.ndarray, np.ndarray]],
    cache_path: str | os.PathLike,
) -> object:
    """A ``trt.IInt8EntropyCalibrator2`` feeding ``batches`` through torch CUDA buffers and
    reading/writing ``cache_path``."""
    import torch

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[attr-defined, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter(batches)
            self.cache_path = Path(cache_path)
            self.device_tensors: dict[str, torch.Tensor] = {}
            self.count = 0

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks ignore this

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                crops, info = next(self.batches)
            except StopIteration:
                logger.info("int8 calibration used %d batches", self.count)
                return None
            self.count += 1
            host = {"crops": crops, "box_info": info}
            self.device_tensors = {n: torch.from_numpy(host[n]).cuda() for n in names}
            return [int(self.device_tensors[n].data_ptr()) for n in names]

        def read_calibration_cache(self) -> bytes | None:
            if self.cache_path.is_file():
                logger.info("using int8 calibration cache %s", self.cache_path)
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            self.cache_path.write_bytes(bytes(cache))
            logger.info("wrote int8 calibration cache %s", self.cache_path)

    return _Calibrator()
