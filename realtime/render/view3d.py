"""A 3D view of the people from a virtual camera beside the real one, with a floor grid.

Used as the right half of the headless video and the snapshot. The virtual camera orbits a point
in front of the real camera (``yaw_deg`` around the vertical, ``pitch_deg`` above); the target and
floor height follow the people slowly so the view does not jump.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from multiroi.geometry.camera import Camera
from multiroi.types import PersonState
from realtime.render.offscreen import MeshRenderer
from realtime.render.overlay import track_color_rgb

BG_BGR = (48, 44, 40)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World->view rotation f64[3,3] (OpenCV axes, up = -y) looking from eye at target."""
    z = (target - eye) / max(np.linalg.norm(target - eye), 1e-9)
    x = np.cross(z, [0.0, -1.0, 0.0])
    x /= max(np.linalg.norm(x), 1e-9)
    return np.stack([x, np.cross(z, x), z])


class SideView:
    """Renders ``PersonState`` meshes (camera frame) from an orbiting virtual camera."""

    def __init__(
        self, camera: Camera, faces: np.ndarray, size_wh: tuple[int, int],
        yaw_deg: float = 50.0, pitch_deg: float = 25.0, backend: str = "raster",
    ) -> None:  # fmt: skip
        w, h = int(size_wh[0]), int(size_wh[1])
        self.size_wh = (w, h)
        self.view_camera = Camera.from_fov(60.0, (w, h))
        self.renderer = MeshRenderer(self.view_camera, w, h, backend=backend)
        self.faces = np.asarray(faces, np.int64)
        self.yaw, self.pitch = np.deg2rad(yaw_deg), np.deg2rad(pitch_deg)
        self.target = np.array([0.0, 0.3, 4.0])
        self.floor_y = 1.2
        self._bg = np.empty((h, w, 3), np.uint8)
        self._bg[:] = BG_BGR
        self._scene: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (rot, eye, image)

    def _follow(self, people: Sequence[PersonState]) -> None:
        verts = [p.vertices_m for p in people if p.vertices_m is not None]
        if not verts:
            return
        allv = np.concatenate(verts)
        centre = np.array([allv[:, 0].mean(), allv[:, 1].mean(), np.median(allv[:, 2])])
        self.target += 0.1 * (np.clip(centre, [-5, -3, 1], [5, 3, 15]) - self.target)
        self.floor_y += 0.1 * (float(allv[:, 1].max()) - self.floor_y)

    def _pose(self) -> tuple[np.ndarray, np.ndarray]:
        dist = 1.3 * self.target[2] + 1.0
        d = np.array([np.sin(self.yaw) * np.cos(self.pitch), -np.sin(self.pitch),
                      -np.cos(self.yaw) * np.cos(self.pitch)])  # fmt: skip
        eye = self.target + dist * d
        return look_at(eye, self.target), eye

    def render(self, people: Sequence[PersonState]) -> np.ndarray:
        """-> image_bgr uint8[H,W,3] of the people seen from the virtual camera."""
        self._follow(people)
        rot, eye = self._pose()
        bg = self._background(rot, eye)
        meshes = [
            ((p.vertices_m - eye) @ rot.T, self.faces, track_color_rgb(p.track_id))
            for p in people
            if p.vertices_m is not None
        ]
        img, _ = self.renderer.render(meshes, background_bgr=bg)
        return img

    def _background(self, rot: np.ndarray, eye: np.ndarray) -> np.ndarray:
        """Grid and camera frustum, redrawn only when the view moved (by > 2 mm or ~0.06 deg):
        once the view has settled on the people this saves ~10 ms per frame."""
        if self._scene is not None:
            old_rot, old_eye, image = self._scene
            if np.abs(old_eye - eye).max() < 2e-3 and np.abs(old_rot - rot).max() < 1e-3:
                return image
        bg = self._bg.copy()
        self._draw_grid(bg, rot, eye)
        self._draw_real_camera(bg, rot, eye)
        self._scene = (rot, eye, bg)
        return bg

    def _project(self, pts: np.ndarray, rot: np.ndarray, eye: np.ndarray):
        pv = (pts - eye) @ rot.T
        ok = pv[:, 2] > 0.1
        uv = pv[:, :2] / np.maximum(pv[:, 2:], 0.1) * self.view_camera.focal
        return uv + np.array(self.view_camera.principal), ok

    def _polylines(self, img, lines, rot, eye, color, thickness=1) -> None:
        """Draw polylines (each f[N,3] world points) in one OpenCV call; segments with an end
        behind the view camera or absurdly far off-screen are left out."""
        segs = []
        for pts in lines:
            uv, ok = self._project(np.asarray(pts, np.float64), rot, eye)
            ok &= (np.abs(uv) < 1e5).all(1)
            good = ok[:-1] & ok[1:]
            a = np.flatnonzero(good)
            segs.append(np.stack([uv[a], uv[a + 1]], axis=1))
        segs = np.concatenate(segs).astype(np.int32) if segs else np.zeros((0, 2, 2), np.int32)
        if len(segs):
            cv2.polylines(img, list(segs), False, color, thickness, cv2.LINE_AA)

    def _draw_grid(self, img: np.ndarray, rot: np.ndarray, eye: np.ndarray) -> None:
        s = np.linspace(0.0, 1.0, 21)
        y = self.floor_y
        lines = [np.stack([np.full_like(s, x), np.full_like(s, y), 0.5 + 11.5 * s], 1)
                 for x in np.arange(-5.0, 5.01, 1.0)]  # fmt: skip
        lines += [np.stack([-5.0 + 10.0 * s, np.full_like(s, y), np.full_like(s, z)], 1)
                  for z in np.arange(1.0, 12.01, 1.0)]  # fmt: skip
        self._polylines(img, lines, rot, eye, (90, 90, 90))

    def _draw_real_camera(self, img: np.ndarray, rot: np.ndarray, eye: np.ndarray) -> None:
        """The real camera as a small frustum at the origin."""
        c = np.array([[-0.16, -0.12, 0.3], [0.16, -0.12, 0.3], [0.16, 0.12, 0.3],
                      [-0.16, 0.12, 0.3]])  # fmt: skip
        o = np.zeros(3)
        lines = [np.stack([o, c[a], c[(a + 1) % 4]]) for a in range(4)]
        self._polylines(img, lines, rot, eye, (0, 200, 255), 2)
