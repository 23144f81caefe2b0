"""The rasteriser (multiroi.raster), both paths (compiled numba loop and numpy bins): coverage,
depth test, barycentrics, shading, errors, and the two paths agreeing pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest

from multiroi import raster_jit
from multiroi.raster import RasterMesh, rasterize, render_meshes, vertex_normals

K128 = np.array([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]])
SQUARE_F = np.array([[0, 1, 2], [0, 2, 3]])  # normal +z: seen from its back by the camera


def uv_sphere(radius: float, n_lat: int = 24, n_lon: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A closed sphere (vertices f64[V,3], faces i64[F,3], counter-clockwise from outside)."""
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(th, ph, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.cos(t), np.sin(t) * np.sin(p)], -1).reshape(-1, 3)
    v = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * radius
    idx = 1 + np.arange((n_lat - 1) * n_lon).reshape(n_lat - 1, n_lon)
    nxt = np.roll(idx, -1, axis=1)
    faces = [np.stack([np.zeros(n_lon, int), nxt[0], idx[0]], 1)]
    for i in range(n_lat - 2):
        faces += [
            np.stack([idx[i], nxt[i], nxt[i + 1]], 1),
            np.stack([idx[i], nxt[i + 1], idx[i + 1]], 1),
        ]
    faces.append(np.stack([np.full(n_lon, len(v) - 1), idx[-1], nxt[-1]], 1))
    return v, np.concatenate(faces).astype(np.int64)


def _use_numpy_path(monkeypatch, numpy_path: bool) -> None:
    if numpy_path:
        monkeypatch.setattr(raster_jit, "_tried", True)
        monkeypatch.setattr(raster_jit, "_kernel", None)
    elif not raster_jit.available():
        pytest.skip("numba is not installed")


@pytest.fixture(autouse=True, params=["jit", "numpy"])
def raster_path(request, monkeypatch):
    """Every test runs on both rasteriser paths."""
    _use_numpy_path(monkeypatch, request.param == "numpy")
    return request.param


def test_square_covers_the_right_pixels_and_depth():
    # a 2 x 2 m square at z = 4 m seen with f = 100 px: 50 px wide, centred at (64, 64)
    v = np.array([[-1, -1, 4.0], [1, -1, 4.0], [1, 1, 4.0], [-1, 1, 4.0]])
    frag = rasterize(v, SQUARE_F, K128, 128, 128)
    assert frag.mask.sum() == 50 * 50  # the shared diagonal leaves no hole and no overlap
    ys, xs = np.nonzero(frag.mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (39, 88, 39, 88)
    assert np.allclose(frag.depth[frag.mask], 4.0, atol=1e-5)
    assert np.allclose(frag.bary[frag.mask].sum(-1), 1.0, atol=1e-5)


def test_nearer_triangle_wins():
    far = np.array([[-1, -1, 5.0], [1, -1, 5.0], [0, 1, 5.0]])
    near = far * [0.5, 0.5, 0.6]  # smaller, at 3 m
    v = np.concatenate([far, near])
    f = np.array([[0, 1, 2], [3, 4, 5]])
    K = np.array([[60.0, 0, 32], [0, 60.0, 32], [0, 0, 1]])
    frag = rasterize(v, f, K, 64, 64)
    centre = frag.face_id[32, 32], frag.depth[32, 32]
    assert centre[0] == 1 and abs(centre[1] - 3.0) < 1e-5
    assert (frag.face_id == 0).sum() > 0  # the far one still shows around it


def test_slanted_plane_depth_and_barycentrics_are_perspective_correct():
    # plane z = 4 + 0.5 x, seen at a slant: the exact depth of each pixel ray is known
    xs = np.array([-1.5, 1.5])
    v = np.array([[xs[0], -1, 4 + 0.5 * xs[0]], [xs[1], -1, 4 + 0.5 * xs[1]],
                  [xs[1], 1, 4 + 0.5 * xs[1]], [xs[0], 1, 4 + 0.5 * xs[0]]])  # fmt: skip
    frag = rasterize(v, SQUARE_F, K128, 128, 128)
    rows, cols = np.nonzero(frag.mask)
    rx = (cols + 0.5 - 64) / 100.0  # ray direction x / z of each pixel centre
    z_exact = 4.0 / (1.0 - 0.5 * rx)
    assert np.allclose(frag.depth[frag.mask], z_exact, rtol=1e-5)
    # interpolating the vertices with the barycentrics gives the 3D point on that ray
    pts = frag.interpolate(v.astype(np.float32), SQUARE_F)
    assert np.allclose(pts[:, 2], z_exact, rtol=1e-5)
    assert np.allclose(pts[:, 0] / pts[:, 2], rx, atol=1e-5)


def test_backface_culling_and_near_plane():
    v = np.array([[-1, -1, 4.0], [1, -1, 4.0], [1, 1, 4.0], [-1, 1, 4.0]])
    front = SQUARE_F[:, ::-1]
    assert rasterize(v, front, K128, 128, 128, cull_back=True).mask.sum() == 2500
    assert not rasterize(v, SQUARE_F, K128, 128, 128, cull_back=True).mask.any()
    assert rasterize(v, SQUARE_F, K128, 128, 128).mask.sum() == 2500  # no culling: two-sided
    behind = v * [1, 1, 0.01]  # z = 0.04 m < NEAR_M
    assert not rasterize(behind, SQUARE_F, K128, 128, 128).mask.any()


def test_render_meshes_sphere_silhouette_depth_occlusion_and_colour():
    sv, sf = uv_sphere(0.4)
    centre = np.array([0.5, -0.3, 4.0])
    K = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
    near = RasterMesh(sv + centre, sf, (1, 0, 0))
    far = RasterMesh(sv * 2 + centre + [0.2, 0, 2.0], sf, (0, 1, 0))
    res = render_meshes([far, near], K, (160, 120))
    uv = K @ centre
    cx, cy = uv[:2] / uv[2]
    r = 100.0 * 0.4 / np.sqrt(centre @ centre - 0.4**2)
    m = res.mesh_id == 1
    ys, xs = np.nonzero(m)
    assert abs(xs.mean() + 0.5 - cx) < 0.5 and abs(ys.mean() + 0.5 - cy) < 0.5
    assert abs(m.sum() / (np.pi * r**2) - 1.0) < 0.05
    assert abs(res.depth_m[int(cy), int(cx)] - (centre[2] - 0.4)) < 0.02
    assert (res.mesh_id == 0).sum() > 0 and np.all(res.depth_m[m] < centre[2] + 0.01)
    assert np.isinf(res.depth_m[0, 0]) and res.mesh_id[0, 0] == -1
    assert np.all(res.color_rgb[~res.mask] == 0)
    red, green = res.color_rgb[m], res.color_rgb[res.mesh_id == 0]
    assert red[:, 0].mean() > 0.4 > red[:, 1].mean() + 0.2  # plus a small white highlight
    assert green[:, 1].mean() > green[:, 0].mean() + 0.3


def test_render_meshes_shading_follows_the_headlight_and_per_vertex_colours():
    sv, sf = uv_sphere(0.5)
    rgb = np.where(sv[:, :1] < 0, [[0.0, 0.0, 1.0]], [[1.0, 1.0, 0.0]])  # blue left, yellow right
    res = render_meshes([RasterMesh(sv + [0, 0, 3.0], sf, rgb)], K128, (128, 128), ambient=0.2)
    lum = res.color_rgb.sum(-1)
    # the light comes from the upper left (y down): that quadrant of the disc is brighter
    assert lum[50:60, 50:60].mean() > lum[68:78, 68:78].mean() + 0.3
    assert res.color_rgb[64, 54, 2] > 0.2 and res.color_rgb[64, 54, 0] < 0.1  # blue side
    assert res.color_rgb[64, 74, 0] > 0.2 and res.color_rgb[64, 74, 2] < 0.1  # yellow side


def test_render_meshes_matches_rasterize_and_handles_empty_input():
    sv, sf = uv_sphere(0.5, 8, 16)
    a, b = sv + [-0.6, 0, 3.0], sv + [0.6, 0, 4.0]
    res = render_meshes([RasterMesh(a, sf), RasterMesh(b, sf)], K128, (128, 96))
    frag = rasterize(np.concatenate([a, b]), np.concatenate([sf, sf + len(sv)]), K128, 128, 96,
                     cull_back=True)  # fmt: skip
    assert np.array_equal(res.mask, frag.mask) and np.array_equal(res.depth_m, frag.depth)
    assert np.array_equal(res.mesh_id[frag.mask], frag.face_id[frag.mask] // len(sf))
    empty = render_meshes([], K128, (32, 16))
    assert empty.color_rgb.shape == (16, 32, 3) and not empty.mask.any()
    assert not rasterize(np.zeros((0, 3)), np.zeros((0, 3), int), K128, 32, 16).mask.any()


def test_vertex_normals_point_outwards():
    sv, sf = uv_sphere(1.0, 12, 24)
    n = vertex_normals(sv, sf)
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    assert (n * sv).sum(1).min() > 0.95  # unit sphere: normal ~ position


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match=r"faces \[F,3\]"):
        rasterize(np.zeros((4, 3)), np.zeros((2, 4), int), K128, 8, 8)
    with pytest.raises(ValueError, match="K"):
        rasterize(np.zeros((4, 3)), SQUARE_F, np.eye(2), 8, 8)
    with pytest.raises(ValueError, match="per-vertex"):
        render_meshes([RasterMesh(np.zeros((4, 3)), SQUARE_F, np.zeros((3, 3)))], K128, (8, 8))


def test_compiled_and_numpy_paths_agree_pixel_for_pixel(monkeypatch, raster_path):
    """Three overlapping spheres at different depths, partly outside the image."""
    if raster_path == "numpy":
        pytest.skip("compares the two paths once")
    v, f = uv_sphere(0.4, 32, 64)
    verts = np.concatenate([v + [-0.3, 0.1, 2.0], v + [0.2, 0.0, 2.3], v + [0.75, -0.2, 1.6]])
    faces = np.concatenate([f + i * len(v) for i in range(3)])
    jit = rasterize(verts, faces, K128, 128, 96, cull_back=True)
    _use_numpy_path(monkeypatch, True)
    ref = rasterize(verts, faces, K128, 128, 96, cull_back=True)
    assert jit.mask.sum() > 2000
    np.testing.assert_array_equal(jit.face_id, ref.face_id)
    np.testing.assert_allclose(jit.depth, ref.depth, rtol=1e-6)
    np.testing.assert_allclose(jit.bary, ref.bary, atol=1e-6)


def test_compiled_and_numpy_shading_agree(monkeypatch, raster_path):
    if raster_path == "numpy":
        pytest.skip("compares the two paths once")
    v, f = uv_sphere(0.4, 32, 64)
    rgb = np.abs(np.sin(v * 7.0)).astype(np.float32)  # per-vertex colours
    meshes = [RasterMesh(v + [-0.2, 0.0, 2.0], f, rgb), RasterMesh(v + [0.3, 0.1, 2.4], f)]
    jit = render_meshes(meshes, K128, (128, 96))
    np.testing.assert_allclose(vertex_normals(v, f), _numpy_normals(monkeypatch, v, f), atol=1e-6)
    _use_numpy_path(monkeypatch, True)
    ref = render_meshes(meshes, K128, (128, 96))
    np.testing.assert_array_equal(jit.mesh_id, ref.mesh_id)
    assert (jit.mesh_id == 1).sum() > 500 and (jit.mesh_id == 0).sum() > 500
    np.testing.assert_allclose(jit.color_rgb, ref.color_rgb, atol=2e-5)


def _numpy_normals(monkeypatch, v, f):
    with monkeypatch.context() as m:
        _use_numpy_path(m, True)
        return vertex_normals(v, f)


def test_warm_up_runs_on_either_path():
    from multiroi.raster import warm_up

    warm_up()
