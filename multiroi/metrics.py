"""Evaluation metrics (method.md section 5), per person, in millimetres.

Inputs are metres (torch or numpy, camera frame); outputs are numpy f64 arrays [P] in mm so they
can be averaged over a data set. Joints are pelvis-aligned on ``pelvis_index`` unless stated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from multiroi.geometry.procrustes import similarity_procrustes


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, np.float64)


def _check(pred: np.ndarray, gt: np.ndarray, what: str) -> None:
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
        raise ValueError(f"{what}: expected pred and gt [P,N,3], got {pred.shape} and {gt.shape}")


def mpjpe(pred: Any, gt: Any, pelvis_index: int = 0) -> np.ndarray:
    """Mean per-joint position error after aligning the pelvis: [P] mm. pred, gt [P,J,3] m."""
    p, g = _np(pred), _np(gt)
    _check(p, g, "mpjpe")
    p = p - p[:, pelvis_index : pelvis_index + 1]
    g = g - g[:, pelvis_index : pelvis_index + 1]
    return 1000.0 * np.linalg.norm(p - g, axis=-1).mean(axis=1)


def pa_mpjpe(pred: Any, gt: Any) -> np.ndarray:
    """MPJPE after a similarity Procrustes alignment of pred onto gt: [P] mm."""
    p, g = _np(pred), _np(gt)
    _check(p, g, "pa_mpjpe")
    if len(p) == 0:
        return np.zeros(0)
    aligned = similarity_procrustes(p, g)
    return 1000.0 * np.linalg.norm(aligned - g, axis=-1).mean(axis=1)


def pve(pred_verts: Any, gt_verts: Any, pred_pelvis: Any, gt_pelvis: Any) -> np.ndarray:
    """Per-vertex error after aligning the pelvis joints [P,3]: [P] mm. verts [P,V,3] m."""
    p, g = _np(pred_verts), _np(gt_verts)
    _check(p, g, "pve")
    p = p - _np(pred_pelvis)[:, None]
    g = g - _np(gt_pelvis)[:, None]
    return 1000.0 * np.linalg.norm(p - g, axis=-1).mean(axis=1)


def translation_error(pred_transl: Any, gt_transl: Any) -> np.ndarray:
    """Euclidean error of the full-camera translation [P,3] m: [P] mm."""
    return 1000.0 * np.linalg.norm(_np(pred_transl) - _np(gt_transl), axis=-1)


def depth_error(pred_transl: Any, gt_transl: Any) -> np.ndarray:
    """Absolute error of the depth T_z: [P] mm."""
    return 1000.0 * np.abs(_np(pred_transl)[..., 2] - _np(gt_transl)[..., 2])


def roi_disagreement(transl_per_roi: Any) -> np.ndarray:
    """How far the RoIs' full translations [P,R,3] m lie from their mean: [P] mm (mean norm)."""
    t = _np(transl_per_roi)
    if t.ndim != 3 or t.shape[-1] != 3:
        raise ValueError(f"expected transl_per_roi [P,R,3], got {t.shape}")
    return 1000.0 * np.linalg.norm(t - t.mean(axis=1, keepdims=True), axis=-1).mean(axis=1)
