"""RoIs of a person: base box, the R shifted/resized windows, batched crops, CLIFF box info.

method.md section 1. Pure numpy/OpenCV functions, no torch.

Pixel convention (the whole project): continuous image coordinates in which the image spans
``[0, W] x [0, H]`` and pixel ``(i, j)`` (column, row) covers ``[i, i+1) x [j, j+1)``, so its
centre is at ``(i + 0.5, j + 0.5)``. Detector boxes use it, and CLIFF's image centre ``(W/2, H/2)``
is the exact centre in it. A RoI window of height ``b`` (px) centred at ``(cx, cy)`` covers
``[cx - 0.375 b, cx + 0.375 b] x [cy - 0.5 b, cy + 0.5 b]`` and maps onto the whole
``CROP_H x CROP_W`` crop.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import cv2
import numpy as np

from multiroi.types import RoiBatch

if TYPE_CHECKING:
    from multiroi.geometry.camera import Camera

logger = logging.getLogger(__name__)

CROP_H = 256
CROP_W = 192
CROP_ASPECT_W_OVER_H = CROP_W / CROP_H  # 0.75: the window is b tall and 0.75 b wide
BOX_ASPECT_H_OVER_W = 4.0 / 3.0
BOX_ENLARGE = 1.2
MAX_MIP_LEVEL = 5  # antialiased crops sample from at most a 1/32-size image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# method.md 1.2: offsets d_k (units of the base size b, x and y) and resize factors r_k.
_OFFSETS_5 = [(0.0, 0.0), (0.1, 0.0), (-0.1, 0.0), (0.0, 0.1), (0.0, -0.1)]
_FACTORS_5 = [1.0, 1.5, 1.25, 0.8, 0.65]
_OFFSETS_9 = _OFFSETS_5 + [(0.1, 0.1), (-0.1, -0.1), (0.1, -0.1), (-0.1, 0.1)]
_FACTORS_9 = [1.0, 1.6, 1.45, 1.3, 1.15, 0.85, 0.7, 0.55, 0.4]

#: num_rois -> (offsets f32[R,2] in units of b, factors f32[R]); RoI 0 is always the base box.
ROI_TABLE: dict[int, tuple[np.ndarray, np.ndarray]] = {
    r: (np.array(_OFFSETS_5[:r], np.float32), np.array(_FACTORS_5[:r], np.float32))
    for r in range(1, 6)
}
ROI_TABLE[9] = (np.array(_OFFSETS_9, np.float32), np.array(_FACTORS_9, np.float32))
SUPPORTED_NUM_ROIS = tuple(sorted(ROI_TABLE))


def roi_offsets_factors(num_rois: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets f32[R,2] (units of the base size b) and resize factors f32[R] for R RoIs."""
    if num_rois not in ROI_TABLE:
        raise ValueError(
            f"num_rois={num_rois} is not supported; use one of {SUPPORTED_NUM_ROIS} "
            "(method.md section 1.2)"
        )
    offsets, factors = ROI_TABLE[num_rois]
    return offsets.copy(), factors.copy()


def _as_boxes(boxes_xyxy: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes_xyxy, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(
            f"boxes_xyxy must have shape [N,4] (x1, y1, x2, y2 px), got {boxes.shape}"
        )
    return boxes


def valid_box_mask(boxes_xyxy: np.ndarray, min_size_px: float = 1.0) -> np.ndarray:
    """bool[N]: True where a box is finite and at least ``min_size_px`` wide and tall.

    Use it to drop bad boxes before :func:`base_boxes`, which raises on them.
    """
    boxes = _as_boxes(boxes_xyxy)
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        big = (w >= min_size_px) & (h >= min_size_px)
    return finite & big


def _check_boxes(boxes: np.ndarray) -> None:
    """Raise ValueError naming the first box that is not finite or has w <= 0 or h <= 0."""
    bad = ~valid_box_mask(boxes, min_size_px=np.finfo(np.float64).tiny)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"box {i} = {boxes[i].tolist()} is invalid: expected finite (x1, y1, x2, y2) px with "
            "x2 > x1 and y2 > y1; drop such boxes first with rois.valid_box_mask(boxes)"
        )


def base_boxes(boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base RoI of each detector box (method.md 1.1).

    boxes_xyxy: f32[N,4] px. Returns centers f32[N,2] px (box centres) and sizes f32[N] px,
    the window height b = max(w * 4/3, h) * 1.2 (the window is b tall, 0.75 b wide).
    Raises ValueError for non-finite boxes or boxes with zero/negative width or height.
    """
    boxes = _as_boxes(boxes_xyxy)
    _check_boxes(boxes)
    centers = 0.5 * (boxes[:, :2] + boxes[:, 2:])
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    sizes = np.maximum(w * BOX_ASPECT_H_OVER_W, h) * BOX_ENLARGE
    return centers.astype(np.float32), sizes.astype(np.float32)


def keypoints_to_boxes(keypoints_2d: np.ndarray, min_conf: float = 0.0) -> np.ndarray:
    """Tight boxes f32[N,4] (x1, y1, x2, y2 px) of the visible keypoints, for training.

    keypoints_2d: f32[N,J,3] (x, y, conf) px; a keypoint is visible when conf > min_conf.
    Persons with fewer than 2 visible keypoints get a NaN box (dropped by
    :func:`valid_box_mask`). Feed the result to :func:`base_boxes` (method.md 1.1).
    """
    kp = np.asarray(keypoints_2d, np.float64)
    if kp.ndim != 3 or kp.shape[2] != 3:
        raise ValueError(f"keypoints_2d must have shape [N,J,3] (x, y, conf), got {kp.shape}")
    visible = (kp[..., 2] > min_conf) & np.isfinite(kp[..., :2]).all(axis=-1)
    xy = np.where(visible[..., None], kp[..., :2], np.nan)
    boxes = np.full((kp.shape[0], 4), np.nan)
    ok = visible.sum(axis=1) >= 2
    if ok.any():
        boxes[ok, :2] = np.nanmin(xy[ok], axis=1)
        boxes[ok, 2:] = np.nanmax(xy[ok], axis=1)
    return boxes.astype(np.float32)


def roi_windows(
    centers: np.ndarray, sizes: np.ndarray, num_rois: int
) -> tuple[np.ndarray, np.ndarray]:
    """The R RoI windows of each base box (method.md 1.2).

    centers f32[N,2] px, sizes f32[N] px -> centers f32[N,R,2] px (c + b d_k),
    sizes f32[N,R] px (b r_k). RoI 0 is the base box itself.
    """
    centers = np.asarray(centers, np.float32)
    sizes = np.asarray(sizes, np.float32)
    if centers.ndim != 2 or centers.shape[1] != 2 or sizes.shape != centers.shape[:1]:
        raise ValueError(
            f"expected centers [N,2] and sizes [N], got {centers.shape} and {sizes.shape}"
        )
    offsets, factors = roi_offsets_factors(num_rois)
    roi_centers = centers[:, None, :] + sizes[:, None, None] * offsets[None]
    roi_sizes = sizes[:, None] * factors[None]
    return roi_centers.astype(np.float32), roi_sizes.astype(np.float32)


def crop_matrices(centers: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Affine matrices f64[K,2,3] mapping image pixel indices to crop pixel indices.

    centers f64[K,2] px, sizes f64[K] px (window heights). With the project's pixel convention
    (pixel index i has its centre at i + 0.5) a point x maps to crop coordinate
    CROP_W/2 + (x - cx) * CROP_H / b, and index u = coordinate - 0.5 (OpenCV indices).
    """
    centers = np.asarray(centers, np.float64).reshape(-1, 2)
    sizes = np.asarray(sizes, np.float64).reshape(-1)
    scale = CROP_H / sizes  # crop px per image px, same on both axes
    mats = np.zeros((len(sizes), 2, 3), np.float64)
    mats[:, 0, 0] = scale
    mats[:, 1, 1] = scale
    mats[:, 0, 2] = scale * (0.5 - centers[:, 0]) + CROP_W / 2 - 0.5
    mats[:, 1, 2] = scale * (0.5 - centers[:, 1]) + CROP_H / 2 - 0.5
    return mats


def _check_windows(centers: np.ndarray, sizes: np.ndarray) -> None:
    if centers.shape[-1] != 2 or centers.shape[:-1] != sizes.shape:
        raise ValueError(
            f"expected centers [...,2] and sizes [...] with matching leading shapes, "
            f"got {centers.shape} and {sizes.shape}"
        )
    bad = ~(np.isfinite(sizes) & (sizes > 0) & np.isfinite(centers).all(axis=-1))
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"RoI window {idx} is invalid (center {centers[idx].tolist()}, size "
            f"{float(sizes[idx])}): expected finite centres and positive sizes in px"
        )


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(
            f"image must be a uint8 numpy array [H,W,3], got {type(image).__name__} "
            f"{getattr(image, 'dtype', '')}"
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must have shape [H,W,3], got {image.shape}")


def _mip_levels(sizes: np.ndarray, antialias: bool) -> np.ndarray:
    """int[K] pyramid level per window: the largest L with 2^L <= (image px per crop px)."""
    if not antialias:
        return np.zeros(len(sizes), np.int64)
    shrink = np.maximum(sizes / CROP_H, 1.0)
    return np.clip(np.floor(np.log2(shrink)), 0, MAX_MIP_LEVEL).astype(np.int64)


def _mip(image: np.ndarray, level: int, cache: dict[int, np.ndarray]) -> np.ndarray:
    """Image halved ``level`` times with 2x2 box averaging (exact in the project convention)."""
    if level not in cache:
        prev = _mip(image, level - 1, cache)
        if min(prev.shape[:2]) < 2:
            cache[level] = prev
        else:
            cache[level] = cv2.resize(prev, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    return cache[level]


def warp_crops_u8(
    image: np.ndarray, centers: np.ndarray, sizes: np.ndarray, antialias: bool = False
) -> np.ndarray:
    """Raw crops uint8[K,CROP_H,CROP_W,3] (same channel order as ``image``), zero outside.

    One cv2.warpAffine (bilinear, constant-0 border) per window; windows wholly outside the
    image are left all-zero without warping. centers f32[K,2] px, sizes f32[K] px.
    antialias: windows more than 2x larger than the crop are sampled from a 2x2-box-averaged
    half/quarter/... image (one shared pyramid per call, built lazily), so bilinear never
    shrinks by more than 2x; otherwise large windows alias (plain bilinear, as CLIFF does).
    """
    centers = np.asarray(centers, np.float64).reshape(-1, 2)
    sizes = np.asarray(sizes, np.float64).reshape(-1)
    height, width = image.shape[:2]
    out = np.zeros((len(sizes), CROP_H, CROP_W, 3), np.uint8)
    half_w = 0.5 * CROP_ASPECT_W_OVER_H * sizes
    half_h = 0.5 * sizes
    overlaps = (
        (centers[:, 0] + half_w > 0)
        & (centers[:, 0] - half_w < width)
        & (centers[:, 1] + half_h > 0)
        & (centers[:, 1] - half_h < height)
    )
    levels = _mip_levels(sizes, antialias)
    cache = {0: image}
    for k in np.flatnonzero(overlaps):
        src = _mip(image, int(levels[k]), cache)
        shrink = (width / src.shape[1], height / src.shape[0])
        mat = crop_matrices(centers[k] / shrink, sizes[k : k + 1] / shrink[1])[0]
        cv2.warpAffine(
            src,
            mat,
            (CROP_W, CROP_H),
            dst=out[k],
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
    return out


def normalize_crops(crops_u8: np.ndarray, input_bgr: bool = False) -> np.ndarray:
    """uint8[K,H,W,3] -> f32[K,3,H,W]: RGB/255, minus ImageNet mean, over ImageNet std.

    input_bgr: the crops are in BGR order (OpenCV); channels are swapped to RGB here.
    """
    rgb = crops_u8[..., ::-1] if input_bgr else crops_u8
    scale = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
    bias = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
    chw = np.ascontiguousarray(np.moveaxis(rgb, -1, 1), dtype=np.float32)
    chw *= scale[:, None, None]
    chw += bias[:, None, None]
    return chw


def crop_rois(
    image_rgb: np.ndarray,
    centers: np.ndarray,
    sizes: np.ndarray,
    input_bgr: bool = False,
    antialias: bool = False,
) -> np.ndarray:
    """Crop and normalise all RoI windows: f32[N,R,3,256,192] (RGB, ImageNet-normalised).

    image_rgb: uint8[H,W,3] RGB (or BGR with ``input_bgr=True``, swapped to RGB after warping).
    centers: f32[N,R,2] px window centres; sizes: f32[N,R] px window heights (width 0.75 b).
    Pixels outside the image are zero before normalisation (i.e. -mean/std after it).
    antialias: see :func:`warp_crops_u8` (use the same setting in training and inference).
    """
    _check_image(image_rgb)
    centers = np.asarray(centers, np.float32)
    sizes = np.asarray(sizes, np.float32)
    _check_windows(centers, sizes)
    lead = sizes.shape
    crops_u8 = warp_crops_u8(image_rgb, centers.reshape(-1, 2), sizes.reshape(-1), antialias)
    crops = normalize_crops(crops_u8, input_bgr=input_bgr)
    return crops.reshape(*lead, 3, CROP_H, CROP_W)


def box_info_from_focal(
    centers: np.ndarray,
    sizes: np.ndarray,
    focal_px: float | np.ndarray,
    principal_px: tuple[float, float] | np.ndarray,
) -> np.ndarray:
    """CLIFF box information f32[...,3] (method.md 1.4), with explicit intrinsics.

    [2.8 (cx - px) / f, 2.8 (cy - py) / f, (b - 0.24 f) / (0.06 f)]; centers [...,2] px,
    sizes [...] px, focal_px scalar or broadcastable to sizes, principal_px (px, py) or [...,2].
    """
    centers = np.asarray(centers, np.float64)
    sizes = np.asarray(sizes, np.float64)
    f = np.asarray(focal_px, np.float64)
    principal = np.asarray(principal_px, np.float64)
    if np.any(~np.isfinite(f)) or np.any(f <= 0):
        raise ValueError(f"focal_px must be finite and positive, got {focal_px}")
    out = np.empty(sizes.shape + (3,), np.float64)
    out[..., 0] = 2.8 * (centers[..., 0] - principal[..., 0]) / f
    out[..., 1] = 2.8 * (centers[..., 1] - principal[..., 1]) / f
    out[..., 2] = (sizes - 0.24 * f) / (0.06 * f)
    return out.astype(np.float32)


def box_info(centers: np.ndarray, sizes: np.ndarray, camera: Camera) -> np.ndarray:
    """CLIFF box information f32[...,3] of RoI windows seen by ``camera``.

    Uses camera.focal (mean of fx, fy) and camera.principal where method.md writes W/2, H/2.
    """
    return box_info_from_focal(centers, sizes, camera.focal, camera.principal)


def make_roi_batch(
    image_bgr: np.ndarray,
    boxes_xyxy: np.ndarray,
    num_rois: int,
    camera: Camera,
    antialias: bool = False,
) -> RoiBatch:
    """Everything the network needs for M persons of one frame.

    image_bgr: uint8[H,W,3] BGR (OpenCV); boxes_xyxy: f32[M,4] px (drop bad boxes first with
    :func:`valid_box_mask`); camera: intrinsics for this image size (``camera.scaled_to``);
    antialias: pyramid sampling for windows > 2x the crop (:func:`warp_crops_u8`).
    """
    _check_image(image_bgr)
    image_wh = (int(image_bgr.shape[1]), int(image_bgr.shape[0]))
    if tuple(camera.image_wh) != image_wh:
        raise ValueError(
            f"camera is for image size {tuple(camera.image_wh)} but the image is {image_wh}; "
            f"pass camera.scaled_to({image_wh})"
        )
    base_c, base_b = base_boxes(boxes_xyxy)
    centers, sizes = roi_windows(base_c, base_b, num_rois)
    crops = crop_rois(image_bgr, centers, sizes, input_bgr=True, antialias=antialias)
    return RoiBatch(
        crops=crops,
        box_info=box_info(centers, sizes, camera),
        centers=centers,
        sizes=sizes,
        focal_px=float(camera.focal),
        image_wh=image_wh,
    )
