"""Axis-aligned boxes xyxy in pixels: intersections, areas, IoU and greedy non-maximum
suppression (the detectors, the benchmark of detectors and the qualitative overlays)."""

from __future__ import annotations

import numpy as np


def box_intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas f64[len(a), len(b)] of boxes xyxy f[N,4] and f[M,4]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    return np.prod(np.clip(rb - lt, 0, None), -1)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas f64[N] of boxes xyxy f[N,4] (0 for an inverted box)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), -1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU f64[len(a), len(b)] of boxes xyxy f[N,4] and f[M,4]."""
    inter = box_intersection(a, b)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / np.maximum(union, 1e-9)


def nms_xyxy(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_thresh: float = 0.5) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices i64[K], best score first."""
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i : i + 1], boxes[rest])[0] <= iou_thresh]
    return np.asarray(keep, np.int64)
