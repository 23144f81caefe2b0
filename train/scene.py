"""One synthetic scene: camera, 1-4 posed and dressed people on a ground plane, occluders, render.

Frames: the *level* frame has OpenCV axes (x right, y down, z forward) with the camera at the
origin and the ground at y = camera height; the camera frame is the level frame pitched and
rolled (``R_cam_level``). The body model's own frame is y up, facing +z, so an upright person
facing the camera has root rotation ``R_cam_level @ Rx(pi) @ Ry(yaw) @ R_posture``.
Ground truth is in the camera frame: ``vertices = body(rotmat, betas).vertices + transl``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from multiroi import raster
from train import textures
from train.pose_prior import sample_pose

logger = logging.getLogger(__name__)

BOX_FACES = np.array([
    [0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
    [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7],
])  # fmt: skip


RANGE_FIELDS = ("fov_deg", "distance_m", "cam_height_m", "tilt_deg", "roll_deg", "yaw_deg")


@dataclass
class SceneConfig:
    """What the scenes look like. Angles in degrees, distances in metres, sizes in pixels."""

    width: int = 512
    height: int = 512
    fov_deg: tuple[float, float] = (40.0, 90.0)
    distance_m: tuple[float, float] = (2.0, 12.0)
    cam_height_m: tuple[float, float] = (0.3, 3.0)
    tilt_deg: tuple[float, float] = (-10.0, 30.0)  # positive: looking down
    roll_deg: tuple[float, float] = (-5.0, 5.0)
    yaw_deg: tuple[float, float] = (0.0, 360.0)  # about the vertical; 0 = facing the camera
    num_people: tuple[int, int] = (1, 4)
    lateral_margin: float = 1.15  # people up to this times the half FOV off-axis (truncation)
    min_separation_m: float = 0.7
    occluder_prob: float = 0.35
    betas_std: float = 1.0
    photo_dir: str | None = None
    photo_prob: float = 0.5
    noise_std: float = 3.0  # sensor noise, in 8-bit steps

    def __post_init__(self) -> None:
        for name in RANGE_FIELDS + ("num_people",):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"--{name.replace('_', '-')} expects LO HI with LO <= HI, "
                                 f"got {lo} {hi}")  # fmt: skip


@dataclass
class PersonGT:
    """Ground truth of one person (camera frame, metres, pixels).

    pose_aa f32[24,3] axis-angle (joint 0 = global orientation in the camera frame);
    betas f32[10]; transl f32[3] (vertices = body(pose, betas) + transl); joints3d f32[24,3];
    joints2d f32[24,3] (x px, y px, visible 0/1); box_xyxy f32[4] of the visible pixels
    (zeros when none); box_amodal f32[4] of all projected vertices; visible_px int.
    """

    pose_aa: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    joints3d: np.ndarray
    joints2d: np.ndarray
    box_xyxy: np.ndarray
    box_amodal: np.ndarray
    visible_px: int
    activity: str


@dataclass
class Scene:
    """A rendered image (uint8[H,W,3] RGB), its intrinsics K f64[3,3] and the people in it."""

    image_rgb: np.ndarray
    K: np.ndarray
    people: list[PersonGT]
    meta: dict = field(default_factory=dict)


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def camera_rotation(tilt: float, roll: float) -> np.ndarray:
    """Level frame -> camera (radians): pitched down by ``tilt``, rolled by ``roll``."""
    return rot_z(roll) @ rot_x(tilt)


def body_root(cam_R: np.ndarray, yaw: float, posture_aa: np.ndarray) -> np.ndarray:
    """A body's global orientation in the camera: upright body turned by ``yaw`` (radians,
    0 = facing the camera), tilted by its posture (axis-angle, lying), seen through cam_R."""
    return cam_R @ rot_x(np.pi) @ rot_y(yaw) @ cv2.Rodrigues(np.asarray(posture_aa, np.float64))[0]


def _is_outward(verts: np.ndarray, faces: np.ndarray, weights: np.ndarray, joints: np.ndarray):
    """True when nearly all faces are wound with normals pointing away from their bone."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    normal = np.cross(v1 - v0, v2 - v0)
    centre = (v0 + v1 + v2) / 3
    owner = joints[weights[faces[:, 0]].argmax(axis=1)]
    return float(np.mean((normal * (centre - owner)).sum(axis=1) > 0)) > 0.95


class SceneRenderer:
    """Draws and renders random scenes with one body model: ``render(rng) -> Scene``."""

    def __init__(self, body_model, cfg: SceneConfig | None = None) -> None:
        self.body = body_model
        self.cfg = cfg or SceneConfig()
        layer = body_model.layer
        self.faces = np.asarray(body_model.faces, np.int64)
        self.v_template = layer.v_template.detach().cpu().numpy().astype(np.float64)
        weights = layer.lbs_weights.detach().cpu().numpy()
        jreg = layer.J_regressor.detach().cpu().numpy()
        self.joints_rest = jreg @ self.v_template
        self.groups, self.hair = textures.vertex_groups(weights, self.v_template, self.joints_rest)
        self.cull = _is_outward(self.v_template, self.faces, weights, self.joints_rest)
        self.photos = textures.list_photos(self.cfg.photo_dir)
        logger.debug("scene renderer: %d vertices, back-face culling %s", len(self.v_template),
                     self.cull)  # fmt: skip

    def _camera(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
        c = self.cfg
        fov = rng.uniform(*c.fov_deg)
        f = 0.5 * c.width / np.tan(np.radians(fov) / 2)
        K = np.array([[f, 0, c.width / 2], [0, f, c.height / 2], [0, 0, 1.0]])
        tilt, roll = np.radians(rng.uniform(*c.tilt_deg)), np.radians(rng.uniform(*c.roll_deg))
        R = camera_rotation(tilt, roll)
        meta = {"fov_deg": fov, "tilt_deg": np.degrees(tilt), "roll_deg": np.degrees(roll),
                "cam_height_m": rng.uniform(*c.cam_height_m)}  # fmt: skip
        return K, R, meta

    def _positions(self, rng, K, R, cam_h: float, n: int) -> list[np.ndarray]:
        """Ground positions (level frame) whose standing pelvis projects near the image."""
        c = self.cfg
        half = np.arctan(0.5 * c.width / K[0, 0]) * c.lateral_margin
        out: list[np.ndarray] = []
        for _ in range(40 * n):
            d, az = rng.uniform(*c.distance_m), rng.uniform(-half, half)
            p = np.array([d * np.sin(az), cam_h, d * np.cos(az)])
            pel = R @ (p - [0, 0.9, 0])
            y = K[1, 1] * pel[1] / max(pel[2], 1e-3) + K[1, 2]
            if pel[2] < 1.0 or not (-0.1 * c.height < y < 1.1 * c.height):
                continue
            if all(np.hypot(*(p - q)[[0, 2]]) > c.min_separation_m for q in out):
                out.append(p)
            if len(out) == n:
                break
        return out

    def _pose_people(self, rng, R: np.ndarray, positions: list[np.ndarray]):
        n = len(positions)
        poses = [sample_pose(rng) for _ in range(n)]
        body_pose = torch.as_tensor(np.stack([p.body_pose for p in poses]), dtype=torch.float32)
        from multiroi.geometry.rotations import axis_angle_to_rotmat

        rotmat = axis_angle_to_rotmat(body_pose)  # [n,24,3,3]
        yaw = self.cfg.yaw_deg
        roots = [body_root(R, np.radians(rng.uniform(*yaw)), p.root_posture) for p in poses]
        rotmat[:, 0] = torch.as_tensor(np.stack(roots), dtype=torch.float32)
        betas = np.clip(rng.normal(0, self.cfg.betas_std, (n, 10)), -2.5, 2.5).astype(np.float32)
        with torch.no_grad():
            out = self.body(rotmat, torch.as_tensor(betas))
        verts, joints = out.vertices.numpy().astype(np.float64), out.joints.numpy()
        transl = np.zeros((n, 3))
        for i, p in enumerate(positions):
            lv, lj = verts[i] @ R, joints[i, 0] @ R  # level frame (R^T x)
            shift = np.array([p[0] - lj[0], p[1] - lv[:, 1].max(), p[2] - lj[2]])
            transl[i] = R @ shift
        aa = np.stack([p.body_pose for p in poses]).astype(np.float32)
        from multiroi.geometry.rotations import rotmat_to_axis_angle

        aa[:, 0] = rotmat_to_axis_angle(rotmat[:, 0]).numpy()
        return verts + transl[:, None], joints + transl[:, None], aa, betas, transl, poses

    def _occluders(self, rng, R, positions, cam_h: float) -> list[np.ndarray]:
        """Boxes on the ground between the camera and some people: f64[8,3] each, camera frame."""
        boxes = []
        for p in positions:
            if rng.random() >= self.cfg.occluder_prob:
                continue
            centre = p * rng.uniform(0.3, 0.8)
            w, h, d = rng.uniform(0.3, 1.2), rng.uniform(0.4, 2.0), rng.uniform(0.3, 1.0)
            x = np.array([-w, w, w, -w, -w, w, w, -w]) / 2
            y = np.array([0, 0, 0, 0, -h, -h, -h, -h])
            z = np.array([-d, -d, d, d, -d, -d, d, d]) / 2
            corners = np.stack([x, y, z], 1) @ rot_y(rng.uniform(0, np.pi)).T
            corners += [centre[0], cam_h, centre[2]]
            boxes.append(corners @ R.T)
        return boxes

    def render(self, rng: np.random.Generator) -> Scene:
        """Draw and render one scene."""
        c = self.cfg
        n = int(rng.integers(c.num_people[0], c.num_people[1] + 1))
        for _ in range(50):  # a camera that sees at least one person
            K, R, meta = self._camera(rng)
            positions = self._positions(rng, K, R, meta["cam_height_m"], n)
            if positions:
                break
        verts, joints, aa, betas, transl, poses = self._pose_people(rng, R, positions)
        boxes = self._occluders(rng, R, positions, meta["cam_height_m"])
        image, obj, depth = self._shade(rng, K, R, meta["cam_height_m"], verts, boxes)
        people = [
            self._person_gt(i, K, obj, depth, verts[i], joints[i], aa[i], betas[i], transl[i],
                            poses[i].activity)
            for i in range(len(positions))
        ]  # fmt: skip
        meta["num_occluders"] = len(boxes)
        return Scene(image, K, people, meta)

    def _shade(self, rng, K, R, cam_h, verts, boxes):
        c = self.cfg
        n, nv = len(verts), len(self.v_template)
        all_v = np.concatenate([verts.reshape(-1, 3)] + boxes) if n or boxes else np.zeros((0, 3))
        faces = [self.faces + i * nv for i in range(n)]
        faces += [BOX_FACES + n * nv + 8 * k for k in range(len(boxes))]
        faces = np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)
        frag = raster.rasterize(all_v, faces, K, c.width, c.height, cull_back=self.cull)
        if self.photos and rng.random() < c.photo_prob:
            bg = textures.photo_background(rng, self.photos[rng.integers(len(self.photos))],
                                           c.width, c.height)  # fmt: skip
        else:
            bg = textures.procedural_background(rng, K, R, cam_h, c.width, c.height)
        nf_people = n * len(self.faces)
        mask = frag.mask
        fid = frag.face_id[mask]
        obj = np.full(mask.shape, -1, np.int64)
        obj[mask] = np.where(fid < nf_people, fid // max(len(self.faces), 1),
                             n + (fid - nf_people) // 12)  # fmt: skip
        if mask.any():
            bg[mask] = self._surface_colour(rng, K, frag, all_v, faces, obj[mask], n)
        bank = self._noise_bank()
        y0, x0 = rng.integers(0, bank.shape[0] - c.height + 1), rng.integers(0, 64)
        noise = bank[y0 : y0 + c.height, x0 : x0 + c.width * 3].reshape(bg.shape)
        img = np.clip(bg * 255 + c.noise_std * noise, 0, 255).astype(np.uint8)
        return img, obj, frag.depth

    def _noise_bank(self) -> np.ndarray:
        """Unit Gaussian noise f32[H+256, 3W+64], drawn once; scenes take random windows."""
        if getattr(self, "_bank", None) is None:
            shape = (self.cfg.height + 256, 3 * self.cfg.width + 64)
            self._bank = np.random.default_rng(12345).standard_normal(shape, dtype=np.float32)
        return self._bank

    def _surface_colour(self, rng, K, frag, all_v, faces, obj_px, n):
        """Shaded colours f32[K,3] of the covered pixels."""
        nv = len(self.v_template)
        normals = raster.vertex_normals(all_v, faces)
        pts = frag.interpolate(all_v.astype(np.float32), faces)
        nrm = frag.interpolate(normals, faces)
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-9)
        rest = np.concatenate([np.tile(self.v_template, (n, 1)),
                               np.zeros((len(all_v) - n * nv, 3))]).astype(np.float32)  # fmt: skip
        rest_px = frag.interpolate(rest, faces)
        fid_px = frag.face_id[frag.mask]
        vert0 = faces[fid_px, 0]
        alb = np.empty((len(obj_px), 3), np.float32)
        for i in range(n):
            sel = obj_px == i
            outfit = textures.sample_outfit(rng)
            region = textures.region_of_vertices(outfit, self.groups, self.hair)
            alb[sel] = textures.albedo(outfit, region[vert0[sel] - i * nv], rest_px[sel])
        for k in range(n, obj_px.max(initial=-1) + 1):
            alb[obj_px == k] = textures._random_colour(rng) * 0.8 + 0.1
        num_lights = int(rng.integers(1, 3))
        dirs = np.stack([rng.normal([0, 1, 0.6], 0.5) for _ in range(num_lights)])
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        light = rng.uniform(0.5, 0.9, (num_lights, 1)) * rng.uniform(0.85, 1.0, (num_lights, 3))
        shade = raster.lambert(nrm, pts, dirs, light, np.full(3, rng.uniform(0.25, 0.5)))
        return np.clip(alb * shade, 0, 1)

    def _person_gt(self, i, K, obj, depth, verts, joints, aa, betas, transl, activity):
        h, w = obj.shape
        j2d = raster.project(joints, K)
        ji = np.floor(j2d).astype(np.int64)
        inside = (ji[:, 0] >= 0) & (ji[:, 0] < w) & (ji[:, 1] >= 0) & (ji[:, 1] < h)
        vis = inside.copy()
        for k in np.flatnonzero(inside):
            o, dz = obj[ji[k, 1], ji[k, 0]], depth[ji[k, 1], ji[k, 0]]
            vis[k] = not (o >= 0 and o != i and dz < joints[k, 2])
        ys, xs = np.nonzero(obj == i)
        box = (np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
               if len(xs) else np.zeros(4, np.float32))  # fmt: skip
        v2d = raster.project(verts, K)
        amodal = np.concatenate([v2d.min(0), v2d.max(0)]).astype(np.float32)
        return PersonGT(
            pose_aa=aa, betas=betas, transl=transl.astype(np.float32),
            joints3d=joints.astype(np.float32),
            joints2d=np.concatenate([j2d, vis[:, None]], 1).astype(np.float32),
            box_xyxy=box, box_amodal=amodal, visible_px=int(len(xs)), activity=activity,
        )  # fmt: skip


def default_body_model(path: str | Path | None = None):
    """The body model for rendering: explicit path > $MULTIROI_BODY_MODEL > the free model."""
    from multiroi.body import load_body_model

    return load_body_model(path)
