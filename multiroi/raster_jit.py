"""The rasteriser's compiled inner loop (numba): same algorithm and pixel rules as the numpy path.

:func:`multiroi.raster.rasterize` calls :func:`rasterize_into` when numba is importable (it is a
core dependency) and falls back to its numpy bins otherwise, or when ``MULTIROI_RASTER=numpy``.
One scan-converted loop per face: no fragment arrays, no ``np.minimum.at``; it releases the GIL,
so the render thread does not stall the inference thread. The first call compiles (a few
seconds, then cached on disk).
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np

logger = logging.getLogger(__name__)

_kernel = None  # the compiled functions (a _Kernels), None when unavailable
_tried = False


class _Kernels:
    def __init__(self, numba) -> None:
        # cache=True: numba keeps the machine code in __pycache__ (or a user cache dir)
        jit = numba.njit(cache=True, nogil=True)
        self.raster = jit(_raster_loop)
        self.normals = jit(_normals_loop)
        self.shade = jit(_shade_loop)


def available() -> bool:
    """Whether the compiled kernels can be used (numba importable, not disabled by env)."""
    return _get_kernel() is not None


def _get_kernel() -> _Kernels | None:
    global _kernel, _tried
    if _tried:
        return _kernel
    _tried = True
    if os.environ.get("MULTIROI_RASTER", "").lower() == "numpy":
        return None
    try:
        import numba
    except ImportError:
        logger.info("numba is not installed: the rasteriser runs its numpy path (slower)")
        return None
    _kernel = _Kernels(numba)
    return _kernel


def _normals_loop(verts, faces, out):  # pragma: no cover - compiled
    """Area-weighted vertex normals into out f64[V,3] (zeroed by the caller), then unit."""
    for f in range(faces.shape[0]):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        e1x, e1y, e1z = (
            verts[b, 0] - verts[a, 0],
            verts[b, 1] - verts[a, 1],
            verts[b, 2] - verts[a, 2],
        )
        e2x, e2y, e2z = (
            verts[c, 0] - verts[a, 0],
            verts[c, 1] - verts[a, 1],
            verts[c, 2] - verts[a, 2],
        )
        nx, ny, nz = e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
        for v in (a, b, c):
            out[v, 0] += nx
            out[v, 1] += ny
            out[v, 2] += nz
    for v in range(out.shape[0]):
        n = math.sqrt(out[v, 0] ** 2 + out[v, 1] ** 2 + out[v, 2] ** 2)
        n = max(n, 1e-12)
        out[v, 0] /= n
        out[v, 1] /= n
        out[v, 2] /= n


def _shade_loop(
    face_id, bary, faces, normals, verts, albedo, ambient, light, out
):  # pragma: no cover
    """Per covered pixel: interpolate normal, point and albedo; two-sided Lambert from
    ``light`` plus a Blinn-Phong highlight (the numpy path's ``_shade``); out f32[H,W,3]."""
    height, width = face_id.shape
    for r in range(height):
        for c in range(width):
            f = face_id[r, c]
            if f < 0:
                continue
            nx = ny = nz = px = py = pz = ar = ag = ab = 0.0
            for k in range(3):
                v = faces[f, k]
                w = bary[r, c, k]
                nx += w * normals[v, 0]
                ny += w * normals[v, 1]
                nz += w * normals[v, 2]
                px += w * verts[v, 0]
                py += w * verts[v, 1]
                pz += w * verts[v, 2]
                ar += w * albedo[v, 0]
                ag += w * albedo[v, 1]
                ab += w * albedo[v, 2]
            n = max(math.sqrt(nx * nx + ny * ny + nz * nz), 1e-12)
            nx, ny, nz = nx / n, ny / n, nz / n
            d = max(math.sqrt(px * px + py * py + pz * pz), 1e-9)
            vx, vy, vz = -px / d, -py / d, -pz / d
            if nx * vx + ny * vy + nz * vz < 0:
                nx, ny, nz = -nx, -ny, -nz
            lam = min(max(nx * light[0] + ny * light[1] + nz * light[2], 0.0), 1.0)
            hx, hy, hz = light[0] + vx, light[1] + vy, light[2] + vz
            h = max(math.sqrt(hx * hx + hy * hy + hz * hz), 1e-9)
            spec = 0.25 * min(max((nx * hx + ny * hy + nz * hz) / h, 0.0), 1.0) ** 24
            diffuse = ambient + (1.0 - ambient) * lam
            out[r, c, 0] = min(max(ar * diffuse + spec, 0.0), 1.0)
            out[r, c, 1] = min(max(ag * diffuse + spec, 0.0), 1.0)
            out[r, c, 2] = min(max(ab * diffuse + spec, 0.0), 1.0)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Compiled :func:`multiroi.raster.vertex_normals`: f32[V,3] unit area-weighted normals."""
    out = np.zeros((len(verts), 3), np.float64)
    _require().normals(np.ascontiguousarray(verts, np.float64),
                       np.ascontiguousarray(faces, np.int64), out)  # fmt: skip
    return out.astype(np.float32)


def shade(
    face_id: np.ndarray, bary: np.ndarray, faces: np.ndarray, normals: np.ndarray,
    verts: np.ndarray, albedo: np.ndarray, ambient: float, light_dir: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Headlight shading of rasterised fragments -> colour f32[H,W,3] in [0,1] (0 where empty);
    per-vertex normals, points (camera frame) and albedo f32[V,3]."""
    h, w = face_id.shape
    out = np.zeros((h, w, 3), np.float32)
    _require().shade(
        face_id, bary, np.ascontiguousarray(faces, np.int64),
        np.ascontiguousarray(normals, np.float64), np.ascontiguousarray(verts, np.float64),
        np.ascontiguousarray(albedo, np.float64), float(ambient),
        np.ascontiguousarray(light_dir, np.float64), out,
    )  # fmt: skip
    return out


def _require() -> _Kernels:
    kernels = _get_kernel()
    if kernels is None:
        raise RuntimeError("the compiled rasteriser is unavailable (numba missing or disabled)")
    return kernels


def _raster_loop(xy, inv_z, faces, face_ok, edge_eps, face_id, bary, depth):  # pragma: no cover
    """For every face with face_ok: z-test all pixel centres inside it (barycentric slack
    edge_eps), keeping the nearest; writes face_id i64[H,W], bary f32[H,W,3], depth f64[H,W]."""
    height, width = depth.shape
    for f in range(faces.shape[0]):
        if not face_ok[f]:
            continue
        i0, i1, i2 = faces[f, 0], faces[f, 1], faces[f, 2]
        x0, y0 = xy[i0, 0], xy[i0, 1]
        x1, y1 = xy[i1, 0], xy[i1, 1]
        x2, y2 = xy[i2, 0], xy[i2, 1]
        c0 = max(math.ceil(min(x0, x1, x2) - 0.5), 0)
        c1 = min(math.floor(max(x0, x1, x2) - 0.5), width - 1)
        r0 = max(math.ceil(min(y0, y1, y2) - 0.5), 0)
        r1 = min(math.floor(max(y0, y1, y2) - 0.5), height - 1)
        if c1 < c0 or r1 < r0:
            continue
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if abs(area) < 1e-12:
            area = 1e-12
        iz0, iz1, iz2 = inv_z[i0], inv_z[i1], inv_z[i2]
        for r in range(r0, r1 + 1):
            cy = r + 0.5
            for c in range(c0, c1 + 1):
                cx = c + 0.5
                w0 = ((x1 - cx) * (y2 - cy) - (x2 - cx) * (y1 - cy)) / area
                if w0 < -edge_eps:
                    continue
                w1 = ((x2 - cx) * (y0 - cy) - (x0 - cx) * (y2 - cy)) / area
                if w1 < -edge_eps:
                    continue
                w2 = 1.0 - w0 - w1
                if w2 < -edge_eps:
                    continue
                a, b, d = w0 * iz0, w1 * iz1, w2 * iz2
                s = a + b + d
                z = 1.0 / s
                if z < depth[r, c]:
                    depth[r, c] = z
                    face_id[r, c] = f
                    bary[r, c, 0] = a / s
                    bary[r, c, 1] = b / s
                    bary[r, c, 2] = d / s


def rasterize_into(
    xy: np.ndarray, inv_z: np.ndarray, faces: np.ndarray, face_ok: np.ndarray, edge_eps: float,
    width: int, height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Run the kernel: xy f64[V,2] px, inv_z f64[V], faces i64[F,3], face_ok bool[F] ->
    (face_id i64[H,W], bary f32[H,W,3], depth f64[H,W]). Raises if the kernel is unavailable."""
    kernel = _require().raster
    face_id = np.full((height, width), -1, np.int64)
    bary = np.zeros((height, width, 3), np.float32)
    depth = np.full((height, width), np.inf, np.float64)
    kernel(
        np.ascontiguousarray(xy, np.float64), np.ascontiguousarray(inv_z, np.float64),
        np.ascontiguousarray(faces, np.int64), np.ascontiguousarray(face_ok, np.bool_),
        float(edge_eps), face_id, bary, depth,
    )  # fmt: skip
    return face_id, bary, depth
