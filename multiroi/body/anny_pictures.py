"""Pictures of a body model for the docs (``python -m multiroi.body.anny_pictures``).

Renders, headless on the CPU, the template (front and side, joints and extra keypoints drawn),
the first shape components at -2 / +2 sigma, and 4 poses x 3 shapes. Open3D's offscreen
renderer (the ``viewer`` extra) is used when it works; otherwise a small OpenCV painter's
rasteriser draws the meshes (flat shading), with a warning.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from multiroi.body import load_body_model, load_mean_params
from multiroi.body.files import SMPL_JOINT_NAMES, SMPL_PARENTS, resolve_body_model_path
from multiroi.body.mean_params import mean_params_path_for
from multiroi.geometry.rotations import axis_angle_to_rotmat, rot6d_to_rotmat

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "docs" / "images" / "body"
_J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}


CELL_M = (1.9, 2.1)  # width, height of one grid cell in metres (T-pose span about 1.7 m)
PX_PER_M = 160.0


def _grid_camera(cols: int, rows: int, dist_m: float = 40.0):
    """A far, narrow front camera (nearly orthographic) framing a grid of cells: K f64[3,3],
    R f64[3,3], t f64[3] (OpenCV, world = SMPL axes), image (W, H)."""
    wh = (int(cols * CELL_M[0] * PX_PER_M), int(rows * CELL_M[1] * PX_PER_M))
    f = PX_PER_M * dist_m
    k = np.array([[f, 0, wh[0] / 2], [0, f, wh[1] / 2], [0, 0, 1.0]])
    center = np.array([cols * CELL_M[0] / 2, -rows * CELL_M[1] / 2, 0.0])
    rot = np.diag([1.0, -1.0, -1.0])
    return k, rot, -rot @ (center + [0, 0, dist_m]), wh


def _open3d_render(verts, faces, k, rot, t, wh) -> np.ndarray:
    """One Open3D offscreen render (BGR). Run in a fresh process: on llvmpipe, Open3D hangs
    after a few renders in one process."""
    import open3d as o3d
    from open3d.visualization import rendering

    renderer = rendering.OffscreenRenderer(*wh)
    material = rendering.MaterialRecord()
    material.shader = "defaultLit"
    material.base_color = (0.72, 0.76, 0.86, 1.0)
    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(verts.astype(np.float64)),
        o3d.utility.Vector3iVector(faces.astype(np.int32)),
    )
    mesh.compute_vertex_normals()
    renderer.scene.set_background([1.0, 1.0, 1.0, 1.0])
    renderer.scene.add_geometry("bodies", mesh, material)
    extr = np.eye(4)
    extr[:3, :3], extr[:3, 3] = rot, t
    renderer.setup_camera(k, extr, *wh)
    img = np.asarray(renderer.render_to_image())
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


def _cv_render(verts, faces, k, rot, t, wh) -> np.ndarray:
    """Painter's algorithm: faces far to near, flat Lambert shading from the camera."""
    cam = verts @ rot.T + t
    pix = cam[:, :2] / cam[:, 2:] * k[[0, 1], [0, 1]] + k[:2, 2]
    tri = cam[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
    shade = np.clip(np.abs(normal[:, 2]), 0.15, 1.0)
    img = np.full((wh[1], wh[0], 3), 255, np.uint8)
    for fi in np.argsort(-tri[:, :, 2].mean(1)):
        color = tuple(int(c * shade[fi]) for c in (215, 195, 185))
        poly = np.round(pix[faces[fi]] * 4).astype(np.int32)
        cv2.fillConvexPoly(img, poly, color, cv2.LINE_AA, 2)
    return img


def _render_mesh(verts, faces, k, rot, t, wh) -> np.ndarray:
    import concurrent.futures
    import multiprocessing

    try:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
            return pool.submit(_open3d_render, verts, faces, k, rot, t, wh).result(timeout=300)
    except Exception as exc:  # no open3d, no offscreen backend, or a hung renderer
        log.warning("Open3D offscreen rendering failed (%s); drawing with OpenCV", exc)
        return _cv_render(verts, faces, k, rot, t, wh)


def _project(points, k, rot, t) -> np.ndarray:
    cam = points @ rot.T + t
    return cam[:, :2] / cam[:, 2:] * k[[0, 1], [0, 1]] + k[:2, 2]


def render_grid(faces: np.ndarray, cells: list[list[dict]]) -> np.ndarray:
    """Render rows of cells in one scene. A cell: ``verts f32[V,3]``, ``joints f32[24,3]``,
    optional ``extra f32[K,3]``, ``label``, ``view`` ("front" or "side"); SMPL axes."""
    rows, cols = len(cells), max(len(r) for r in cells)
    k, rot, t, wh = _grid_camera(cols, rows)
    all_v, all_f, marks = [], [], []
    side = np.array([[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0]])  # turn the body to show its left
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            turn = side if cell.get("view") == "side" else np.eye(3)
            v = cell["verts"] @ turn.T
            lo, hi = v.min(0), v.max(0)
            shift = np.array([(c + 0.5) * CELL_M[0], -(r + 0.5) * CELL_M[1], 0.0])
            shift -= 0.5 * (lo + hi) * [1, 1, 0] + [0, 0, hi[2]]
            all_f.append(faces + sum(len(x) for x in all_v))
            all_v.append(v + shift)
            extra = cell.get("extra")
            marks.append((cell["joints"] @ turn.T + shift,
                          None if extra is None else extra @ turn.T + shift, cell.get("label", ""),
                          (c * CELL_M[0], -r * CELL_M[1])))  # fmt: skip
    img = _render_mesh(np.concatenate(all_v), np.concatenate(all_f), k, rot, t, wh)
    img = np.ascontiguousarray(img)
    for joints, extra, label, corner in marks:
        _draw_marks(img, _project(joints, k, rot, t), extra, (k, rot, t))
        x0, y0 = _project(np.array([[corner[0], corner[1], 0.0]]), k, rot, t)[0]
        cv2.putText(img, label, (int(x0) + 6, int(y0) + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (20, 20, 20), 1, cv2.LINE_AA)  # fmt: skip
    return img


def _draw_marks(img: np.ndarray, pj: np.ndarray, extra, cam) -> None:
    for j, p in enumerate(SMPL_PARENTS):
        if p >= 0:
            a, b = pj[j].round().astype(int), pj[p].round().astype(int)
            cv2.line(img, tuple(a), tuple(b), (40, 40, 200), 1, cv2.LINE_AA)
    for q in pj.round().astype(int):
        cv2.circle(img, tuple(q), 3, (0, 0, 220), -1, cv2.LINE_AA)
    if extra is not None:
        for q in _project(extra, *cam).round().astype(int):
            cv2.circle(img, tuple(q), 2, (0, 160, 0), -1, cv2.LINE_AA)


def demo_poses(mean_rotmat: np.ndarray) -> dict[str, np.ndarray]:
    """Four poses f32[24,3,3] (global orientation identity: upright, facing +z)."""

    def aa(**joints: tuple[float, float, float]) -> np.ndarray:
        vec = torch.zeros(24, 3)
        for name, deg in joints.items():
            vec[_J[name]] = torch.tensor(deg) * np.pi / 180.0
        return axis_angle_to_rotmat(vec).numpy()

    mean = mean_rotmat.copy()
    mean[0] = np.eye(3)
    walk = aa(
        left_hip=(-30, 0, 0), right_hip=(20, 0, 0), left_knee=(10, 0, 0), right_knee=(45, 0, 0),
        left_shoulder=(0, 0, -70), right_shoulder=(0, 0, 70), left_elbow=(0, -20, 0),
        right_elbow=(0, 20, 0), spine1=(5, 0, 0),
    )  # fmt: skip
    sit = aa(
        left_hip=(-90, 0, 0), right_hip=(-90, 0, 0), left_knee=(90, 0, 0), right_knee=(90, 0, 0),
        left_shoulder=(0, -80, 0), right_shoulder=(0, 80, 0), left_elbow=(0, -90, 0),
        right_elbow=(0, 90, 0), neck=(-15, 0, 0),
    )  # fmt: skip
    return {"zero (T-pose)": np.tile(np.eye(3), (24, 1, 1)), "mean pose": mean, "walk": walk,
            "sit, elbows 90": sit}  # fmt: skip


def render_pictures(model_path: str | None, out_dir: Path) -> list[Path]:
    """Write template.png, shape_components.png and poses_shapes.png into ``out_dir``."""
    body = load_body_model(model_path)
    mean_file = mean_params_path_for(resolve_body_model_path(model_path))
    mean_params = load_mean_params(mean_file if mean_file.is_file() else None)
    mean = rot6d_to_rotmat(torch.as_tensor(mean_params.pose6d)).numpy()
    out_dir.mkdir(parents=True, exist_ok=True)

    def cell(rotmat: np.ndarray, betas, label: str, view: str = "front", extra: bool = True):
        b = np.zeros((1, 10), np.float32)
        b[0, : len(betas)] = betas
        with torch.no_grad():
            o = body(torch.as_tensor(rotmat[None], dtype=torch.float32), torch.as_tensor(b))
        return {"verts": o.vertices[0].numpy(), "joints": o.joints[0].numpy(), "label": label,
                "extra": o.extra[0].numpy() if extra else None, "view": view}  # fmt: skip

    zero = np.tile(np.eye(3), (24, 1, 1))
    pictures = {
        "template.png": [[cell(zero, [], "template, front"),
                          cell(zero, [], "template, left side", view="side")]],
        "shape_components.png": [
            [cell(zero, [0.0] * c + [b], f"beta{c} = {b:+.0f}", extra=False)
             for c in cols for b in (-2.0, 2.0)] for cols in ((0, 1), (2, 3))
        ],
    }  # fmt: skip
    shapes = {"beta0=-2": [-2.0], "mean": [], "beta0=+2, beta1=+2": [2.0, 2.0]}
    pictures["poses_shapes.png"] = [
        [
            cell(pose, b, f"{pn} | {sn}", view="side" if "sit" in pn else "front")
            for sn, b in shapes.items()
        ]
        for pn, pose in demo_poses(mean).items()
    ]
    paths = []
    for name, cells in pictures.items():
        paths.append(out_dir / name)
        cv2.imwrite(str(paths[-1]), render_grid(body.faces, cells))
    return paths


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=os.environ.get("MULTIROI_BODY_MODEL"), help="body .npz")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_DIR)
    a = p.parse_args(argv)
    for path in render_pictures(a.model, a.out_dir):
        log.info("wrote %s", path)


if __name__ == "__main__":
    main()
