"""The display mesh: fewer faces over the original vertices, same silhouette."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.render.decimate import display_faces


def _sphere(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    o3d = pytest.importorskip("open3d")
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius=0.5, resolution=n)
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.triangles, np.int64)


def test_display_faces_index_original_vertices_and_keep_the_silhouette():
    from multiroi.raster import rasterize

    v, f = _sphere()
    small = display_faces(v, f, target_faces=len(f) // 4)
    assert len(small) <= len(f) // 4 and small.min() >= 0 and small.max() < len(v)
    K = np.array([[300.0, 0, 100], [0, 300.0, 100], [0, 0, 1]])
    placed = v + np.array([0, 0, 3.0], np.float32)
    full = rasterize(placed, f, K, 200, 200).mask
    light = rasterize(placed, small, K, 200, 200).mask
    iou = (full & light).sum() / (full | light).sum()
    assert iou > 0.97


def test_few_faces_are_returned_unchanged():
    v, f = _sphere(6)
    assert np.array_equal(display_faces(v, f, target_faces=10_000), f)
