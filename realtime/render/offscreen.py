"""Render triangle meshes seen by a `Camera` into an image (Open3D offscreen or numpy).

``MeshRenderer(camera, width, height)`` renders ``(vertices_m [V,3] camera frame, faces [F,3],
rgb)`` triples and returns ``(color_bgr uint8[H,W,3], depth_m f32[H,W])`` (depth = z in metres,
inf where no mesh), composited over an optional background image. Two backends share the interface:

- ``"open3d"``: Open3D's Filament renderer (``OffscreenRenderer``; on a machine without a GPU it
  runs on Mesa's Vulkan llvmpipe driver; needs ``pip install multiroi[viewer]`` and, on
  Debian/Ubuntu, ``apt-get install libegl1 libgl1 mesa-vulkan-drivers``). Nicer lighting; on a
  busy 2-core CPU the first frame takes 10-30 s (shader compilation), then ~0.6 s per 640x480
  frame.
- ``"raster"``: ``multiroi.raster`` (numpy only; tens of ms per frame).

Used by the headless renderer, the overlay and the demo-clip / training-data generators.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from multiroi.geometry.camera import Camera
from multiroi.raster import RasterMesh, render_meshes

logger = logging.getLogger(__name__)

# (vertices_m f32[V,3] camera frame, faces i64[F,3], rgb in [0,1]: [3] or per vertex [V,3])
MeshSpec = tuple[np.ndarray, np.ndarray, Sequence[float] | np.ndarray]
BACKENDS = ("open3d", "raster")


def import_open3d():
    """Import open3d or raise a one-line error naming the extra to install."""
    try:
        import open3d
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this renderer needs Open3D: pip install 'multiroi[viewer]' (or use the 'raster' "
            "backend / the overlay renderer, which need only numpy and OpenCV)"
        ) from exc
    return open3d


class MeshRenderer:
    """Renders meshes in the camera frame (OpenCV axes, metres) with the intrinsics of ``camera``
    scaled to ``width`` x ``height`` px. ``backend``: "open3d" or "raster" (see module docstring).
    """

    def __init__(self, camera: Camera, width: int, height: int, backend: str = "open3d") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown render backend {backend!r}; choose one of {BACKENDS}")
        self.camera = camera.scaled_to((int(width), int(height)))
        self.width, self.height = int(width), int(height)
        self.backend = backend
        self._o3d = _Open3DScene(self.camera) if backend == "open3d" else None

    def render(
        self, meshes: Sequence[MeshSpec], background_bgr: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Render ``meshes`` -> (color_bgr uint8[H,W,3], depth_m f32[H,W], inf where empty).

        rgb of each mesh: 3 floats in [0,1]. ``background_bgr`` uint8[H,W,3] (default black) shows
        where no mesh is.
        """
        h, w = self.height, self.width
        if background_bgr is None:
            background_bgr = np.zeros((h, w, 3), np.uint8)
        elif background_bgr.shape != (h, w, 3):
            raise ValueError(f"background must be uint8[{h},{w},3], got {background_bgr.shape}")
        if self._o3d is not None:
            color_rgb, depth = self._o3d.render(meshes)
        else:
            res = render_meshes(
                [RasterMesh(v, f, rgb) for v, f, rgb in meshes], self.camera.K, (w, h)
            )
            color_rgb = (res.color_rgb * 255.0 + 0.5).astype(np.uint8)
            depth = res.depth_m
        mask = np.isfinite(depth)
        out = background_bgr.copy()
        out[mask] = color_rgb[mask][:, ::-1]
        return out, depth.astype(np.float32)

    def close(self) -> None:
        self._o3d = None


class _Open3DScene:
    """An Open3D OffscreenRenderer with fixed intrinsics; meshes are replaced every call."""

    def __init__(self, camera: Camera) -> None:
        o3d = import_open3d()
        rendering = o3d.visualization.rendering
        w, h = camera.image_wh
        self._o3d = o3d
        self._renderer = rendering.OffscreenRenderer(w, h)
        scene = self._renderer.scene
        scene.set_background([0.0, 0.0, 0.0, 1.0])
        scene.set_lighting(scene.LightingProfile.SOFT_SHADOWS, np.array([0.3, 0.8, 0.6]))
        scene.view.set_ambient_occlusion(False)
        self._camera = camera
        self._names: list[str] = []
        self._material = rendering.MaterialRecord()
        self._material.shader = "defaultLit"
        self._material.base_roughness = 0.7

    def render(self, meshes: Sequence[MeshSpec]) -> tuple[np.ndarray, np.ndarray]:
        o3d = self._o3d
        scene = self._renderer.scene
        for name in self._names:
            scene.remove_geometry(name)
        self._names = []
        for i, (verts, faces, rgb) in enumerate(meshes):
            mesh = o3d.geometry.TriangleMesh(
                o3d.utility.Vector3dVector(np.asarray(verts, np.float64)),
                o3d.utility.Vector3iVector(np.asarray(faces, np.int32)),
            )
            mesh.compute_vertex_normals()
            rgb = np.asarray(rgb, np.float64)
            if rgb.ndim == 2:  # per-vertex colours, multiplied by a white base colour
                mesh.vertex_colors = o3d.utility.Vector3dVector(rgb)
                rgb = np.ones(3)
            self._material.base_color = [*map(float, rgb), 1.0]
            name = f"mesh{i}"
            scene.add_geometry(name, mesh, self._material)
            self._names.append(name)
        # after the meshes: Open3D derives the near/far planes from the scene bounds
        w, h = self._camera.image_wh
        K = np.array(self._camera.K)
        self._renderer.setup_camera(K, np.eye(4), w, h)  # vertices already in the camera frame
        color = np.asarray(self._renderer.render_to_image())
        depth = np.asarray(self._renderer.render_to_depth_image(z_in_view_space=True))
        return color, depth
