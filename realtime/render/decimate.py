"""A lighter triangle list for display: fewer faces over the same vertices.

Drawing costs grow with the face count (the free body model has 24,540 faces), while a person
a few hundred pixels tall looks the same with a third of them. The template mesh is simplified
once (Open3D's quadric decimation) and every simplified vertex is snapped to its nearest original
vertex, so the new faces index the ORIGINAL vertices: the posed vertices of every frame can be
drawn with them unchanged.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def display_faces(
    vertices_m: np.ndarray, faces: np.ndarray, target_faces: int = 8000
) -> np.ndarray:
    """faces i64[F',3] (F' <= target_faces) indexing ``vertices_m`` f32[V,3]; the input faces
    when they are few enough already, or when Open3D is not installed."""
    faces = np.asarray(faces, np.int64)
    if len(faces) <= target_faces:
        return faces
    try:
        import open3d as o3d
    except ImportError:
        logger.debug("open3d not installed: drawing all %d faces", len(faces))
        return faces
    v = np.asarray(vertices_m, np.float64)
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(faces.astype(np.int32))
    )
    simple = mesh.simplify_quadric_decimation(int(target_faces))
    tree = o3d.geometry.KDTreeFlann(mesh)
    nearest = np.array(
        [tree.search_knn_vector_3d(p, 1)[1][0] for p in np.asarray(simple.vertices)], np.int64
    )
    out = nearest[np.asarray(simple.triangles, np.int64)]
    keep = (out[:, 0] != out[:, 1]) & (out[:, 1] != out[:, 2]) & (out[:, 0] != out[:, 2])
    logger.info("display mesh: %d of %d faces", int(keep.sum()), len(faces))
    return out[keep]
