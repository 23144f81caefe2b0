"""Image grids for TensorBoard: each person's RoI-0 crop with the predicted mesh drawn on it."""

from __future__ import annotations

import numpy as np
import torch

from multiroi import raster
from multiroi.rois import CROP_H, CROP_W, IMAGENET_MEAN, IMAGENET_STD


def crop_camera(K: np.ndarray, center: np.ndarray, size: float) -> np.ndarray:
    """Intrinsics f64[3,3] of a crop window (centre [2] px, height b px) of a full image."""
    s = CROP_H / size
    S = np.array([[s, 0, CROP_W / 2 - s * center[0]], [0, s, CROP_H / 2 - s * center[1]],
                  [0, 0, 1.0]])  # fmt: skip
    return S @ K


def draw_mesh(crop_rgb: np.ndarray, verts_cam: np.ndarray, faces: np.ndarray, K_crop: np.ndarray,
              colour=(0.55, 0.75, 1.0), alpha: float = 0.6) -> np.ndarray:  # fmt: skip
    """Blend a shaded mesh (camera frame, m) over crop_rgb f32[H,W,3] in [0,1]."""
    h, w = crop_rgb.shape[:2]
    frag = raster.rasterize(verts_cam, faces, K_crop, w, h)
    out = crop_rgb.copy()
    if frag.mask.any():
        nrm = frag.interpolate(raster.vertex_normals(verts_cam, faces), faces)
        pts = frag.interpolate(verts_cam.astype(np.float32), faces)
        shade = raster.lambert(nrm, pts, np.array([[0.0, 0.3, 1.0]]) / np.hypot(0.3, 1.0),
                               np.array([[0.8, 0.8, 0.8]]), np.full(3, 0.3))  # fmt: skip
        out[frag.mask] = (1 - alpha) * out[frag.mask] + alpha * shade * np.asarray(colour)
    return out


def mesh_grid(batch, step_out, body, max_items: int = 8) -> np.ndarray:
    """uint8[H,W,3] grid: top row the RoI-0 crops, bottom row with the predicted meshes."""
    n = min(len(batch), max_items)
    crops = batch.crops[:n, 0].detach().cpu().float().numpy().transpose(0, 2, 3, 1)
    crops = np.clip(crops * IMAGENET_STD + IMAGENET_MEAN, 0, 1)
    with torch.no_grad():
        verts = body(step_out.pred_rotmat[:n], step_out.pred_betas[:n]).vertices.cpu().numpy()
    transl = step_out.transl_roi[:n, 0].cpu().numpy()
    K = batch.K[:n].cpu().numpy().astype(np.float64)
    centers = batch.centers[:n, 0].cpu().numpy()
    sizes = batch.sizes[:n, 0].cpu().numpy()
    faces = np.asarray(body.faces)
    drawn = [
        draw_mesh(
            crops[i], verts[i] + transl[i], faces, crop_camera(K[i], centers[i], float(sizes[i]))
        )
        for i in range(n)
    ]
    grid = np.concatenate([np.concatenate(list(crops), 1), np.concatenate(drawn, 1)], 0)
    return (grid * 255).astype(np.uint8)
