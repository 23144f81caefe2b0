"""A live Open3D window: one pre-allocated mesh per track slot, vertices updated in place.

The view camera is set from the intrinsics (identity extrinsics: the meshes are in the camera
frame) so each mesh sits where its person is in the video. 'q' / Esc or closing the window ends
the loop.
The legacy Open3D visualiser cannot draw text, so the FPS / latency line goes to the optional
overlay window (``show_overlay=True``, default) and to the log every few seconds.
Main thread only.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from multiroi.geometry.camera import Camera
from multiroi.types import Frame, PersonState
from realtime.render.offscreen import import_open3d
from realtime.render.overlay import CameraSource, OverlayRenderer, RateMeter, track_color_rgb

logger = logging.getLogger(__name__)

GLFW_KEY_ESCAPE = 256


class Open3DWindowRenderer:
    """``update(frame, people) -> bool`` (False once the user closed the window); ``close()``."""

    def __init__(
        self, camera: Camera, faces: np.ndarray, num_vertices: int | None = None,
        max_persons: int = 8, show_overlay: bool = True, window_name: str = "multiroi 3D",
        cameras: CameraSource | None = None,
    ) -> None:  # fmt: skip
        self._o3d = import_open3d()
        self.camera = camera
        self.faces = np.asarray(faces, np.int64)
        self.max_persons = int(max_persons)
        self._num_vertices = num_vertices or int(self.faces.max()) + 1
        self._quit = False
        self._closed = False
        self._meter = RateMeter()
        self._t_log = time.perf_counter()
        self._slots: dict[int, int] = {}  # track id -> slot
        self._overlay = OverlayRenderer(camera, faces, cameras=cameras) if show_overlay else None
        self._vis = self._make_window(window_name)
        self._meshes = [self._add_slot_mesh(first=i == 0) for i in range(self.max_persons)]
        self._set_view()

    def _make_window(self, name: str):
        vis = self._o3d.visualization.VisualizerWithKeyCallback()
        w, h = self.camera.image_wh
        if not vis.create_window(window_name=name, width=w, height=h):
            raise RuntimeError("Open3D could not open a window (no display?); use --headless")

        def _stop(_vis) -> bool:
            self._quit = True
            return False

        for key in (ord("Q"), GLFW_KEY_ESCAPE):
            vis.register_key_callback(key, _stop)
        opt = vis.get_render_option()
        opt.background_color = np.array([0.12, 0.12, 0.14])
        opt.mesh_show_back_face = True
        return vis

    def _add_slot_mesh(self, first: bool):
        o3d = self._o3d
        verts = np.zeros((self._num_vertices, 3))
        # the view control needs a non-empty scene box, or its extrinsics become NaN
        verts[0], verts[-1] = (-5.0, -3.0, 0.3), (5.0, 3.0, 30.0)
        mesh = o3d.geometry.TriangleMesh(
            o3d.utility.Vector3dVector(verts),
            o3d.utility.Vector3iVector(self.faces.astype(np.int32)),
        )
        mesh.compute_vertex_normals()
        self._vis.add_geometry(mesh, reset_bounding_box=first)
        return mesh

    def _set_view(self) -> None:
        o3d = self._o3d
        w, h = self.camera.image_wh
        (cx, cy), K = self.camera.principal, self.camera.K
        params = o3d.camera.PinholeCameraParameters()
        params.intrinsic = o3d.camera.PinholeCameraIntrinsic(w, h, K[0, 0], K[1, 1], cx, cy)
        params.extrinsic = np.eye(4)
        ctr = self._vis.get_view_control()
        ctr.convert_from_pinhole_camera_parameters(params, allow_arbitrary=True)
        ctr.set_constant_z_near(0.05)
        ctr.set_constant_z_far(100.0)

    def _assign_slots(self, people: list[PersonState]) -> dict[int, PersonState]:
        ids = {p.track_id for p in people if p.vertices_m is not None}
        self._slots = {t: s for t, s in self._slots.items() if t in ids}
        free = [s for s in range(self.max_persons) if s not in self._slots.values()]
        by_slot = {}
        for p in people:
            if p.vertices_m is None:
                continue
            if p.track_id not in self._slots:
                if not free:
                    continue  # more persons than slots: the extra ones are not drawn
                self._slots[p.track_id] = free.pop(0)
            by_slot[self._slots[p.track_id]] = p
        return by_slot

    def update(self, frame: Frame, people: list[PersonState]) -> bool:
        if self._closed:
            return False
        by_slot = self._assign_slots(people)
        for slot, mesh in enumerate(self._meshes):
            verts = np.asarray(mesh.vertices)
            person = by_slot.get(slot)
            if person is None:
                verts[:] = 0.0  # collapsed onto the camera centre: invisible
            else:
                v = np.asarray(person.vertices_m, np.float64)
                if len(v) == len(verts):
                    verts[:] = v
                else:  # display faces need not use every vertex: size the slot to the body
                    mesh.vertices = self._o3d.utility.Vector3dVector(v)
                mesh.compute_vertex_normals()
                mesh.paint_uniform_color(track_color_rgb(person.track_id))
            self._vis.update_geometry(mesh)
        alive = self._vis.poll_events()
        self._vis.update_renderer()
        text = self._meter.tick(frame)
        if time.perf_counter() - self._t_log > 5.0:
            logger.info("render: %s", text)
            self._t_log = time.perf_counter()
        if self._overlay is not None and not self._overlay.update(frame, people):
            self._quit = True
        return bool(alive) and not self._quit

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._overlay is not None:
            self._overlay.close()
        self._vis.destroy_window()
