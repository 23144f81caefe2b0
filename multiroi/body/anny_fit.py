"""Fits that turn T-posed Anny samples into SMPL's arrays: the shape space (PCA), the joint
regressor (sparse non-negative least squares), the extra keypoint vertices and the mean pose.

Pure numpy/scipy; all arrays in SMPL's frame (metres, y up, facing +z, pelvis at the origin).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from multiroi.body.files import EXTRA_NAMES, SMPL_JOINT_NAMES

log = logging.getLogger(__name__)

_J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}


@dataclass
class ShapeSpace:
    """v_template f32[V,3] (population mean); shapedirs f32[V,3,K] (component k scaled by its
    standard deviation, so betas ~ N(0,1) span the population); explained f64[K] (share of the
    shape variance of each component)."""

    v_template: np.ndarray
    shapedirs: np.ndarray
    explained: np.ndarray

    def project(self, vertices_m: np.ndarray) -> np.ndarray:
        """Least-squares betas f32[S,K] of vertices f32[S,V,3]."""
        basis = self.shapedirs.reshape(-1, self.shapedirs.shape[-1]).astype(np.float64)
        diff = (vertices_m - self.v_template[None]).reshape(len(vertices_m), -1)
        return np.linalg.lstsq(basis, diff.T.astype(np.float64), rcond=None)[0].T.astype(
            np.float32
        )


def shape_pca(vertices_m: np.ndarray, num_components: int = 10) -> ShapeSpace:
    """PCA of T-posed bodies f32[S,V,3]; component signs: +beta makes the body taller (or, for
    components that barely change height, wider)."""
    s, v, _ = vertices_m.shape
    mean = vertices_m.mean(0, dtype=np.float64)
    x = (vertices_m.reshape(s, -1) - mean.reshape(1, -1)).astype(np.float64)
    gram = x @ x.T
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    k = num_components
    units = (x.T @ evecs[:, :k]) / np.sqrt(evals[:k])[None]  # [3V,k] orthonormal directions
    std = np.sqrt(evals[:k] / (s - 1))
    dirs = (units * std[None]).reshape(v, 3, k)
    for i in range(k):
        if _size_change(mean, dirs[:, :, i]) < 0:
            dirs[:, :, i] *= -1.0
    explained = evals[:k] / evals.sum()
    return ShapeSpace(mean.astype(np.float32), dirs.astype(np.float32), explained)


def stature_m(vertices_m: np.ndarray) -> np.ndarray:
    """Height (top of head to sole) of T-posed bodies [...,V,3] -> [...]."""
    return vertices_m[..., 1].max(-1) - vertices_m[..., 1].min(-1)


def _size_change(mean: np.ndarray, direction: np.ndarray) -> float:
    plus, minus = mean + direction, mean - direction
    height = float(stature_m(plus) - stature_m(minus))
    if abs(height) > 0.005:
        return height

    def girth(verts: np.ndarray) -> float:
        return float(np.linalg.norm(verts[:, [0, 2]], axis=1).mean())

    return girth(plus) - girth(minus)


def fit_joint_regressor(
    vertices_m: np.ndarray,
    joints_m: np.ndarray,
    template_m: np.ndarray,
    neighbours: int = 600,
    tolerance_m: float = 0.002,
) -> np.ndarray:
    """Sparse regressor f32[J,V] with rows summing to 1, such that
    ``regressor @ vertices[s] ~ joints[s]`` for every sample s.

    vertices_m f32[S,V,3], joints_m f32[S,J,3]. Each joint uses the ``neighbours`` template
    vertices nearest to its mean position. First non-negative least squares (a convex
    combination of surface points); Anny's joints slide against the surface as the shape changes,
    which that leaves 1-4 cm off, so the weights are then refitted by least squares with a ridge
    pulling them towards the non-negative solution: the strongest ridge whose worst error over
    the samples is below ``tolerance_m``.
    """
    num_joints, num_verts = joints_m.shape[1], vertices_m.shape[1]
    mean_joints = joints_m.mean(0)
    reg = np.zeros((num_joints, num_verts), np.float64)
    for j in range(num_joints):
        dist = np.linalg.norm(template_m - mean_joints[j], axis=1)
        nbr = np.argsort(dist, kind="stable")[:neighbours]
        a = vertices_m[:, nbr, :].transpose(0, 2, 1).reshape(-1, len(nbr)).astype(np.float64)
        reg[j, nbr] = _fit_one_joint(a, joints_m[:, j, :].reshape(-1), tolerance_m)
    return reg.astype(np.float32)


def _fit_one_joint(a: np.ndarray, b: np.ndarray, tolerance_m: float) -> np.ndarray:
    """Weights w[K] (sum 1) with ``a @ w ~ b``; a f64[3S,K] rows (sample, axis), b f64[3S]."""
    from scipy.optimize import nnls

    k = a.shape[1]
    penalty = 1000.0  # sum-to-one, as a heavily weighted extra row
    ap = np.vstack([a, np.full((1, k), penalty)])
    bp = np.concatenate([b, [penalty]])
    w0, _ = nnls(ap, bp, maxiter=50 * k)
    hess, grad = ap.T @ ap, ap.T @ bp
    scale = np.trace(a.T @ a) / k
    w = w0
    for ridge in (1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9):
        if np.linalg.norm((a @ w - b).reshape(-1, 3), axis=1).max() < tolerance_m:
            break
        w = np.linalg.solve(hess + ridge * scale * np.eye(k), grad + ridge * scale * w0)
    return w / w.sum()


def regressor_errors_m(reg: np.ndarray, vertices_m: np.ndarray, joints_m: np.ndarray):
    """Per-sample, per-joint distance f32[S,J] between regressed and true joints."""
    pred = np.einsum("jv,svc->sjc", reg, vertices_m)
    return np.linalg.norm(pred - joints_m, axis=-1)


def extra_keypoint_ids(
    template_m: np.ndarray,
    dominant: np.ndarray,
    bone_labels: list[str],
    bone_heads_m: np.ndarray,
) -> np.ndarray:
    """Vertex ids i64[21] of smplx's extra keypoints (``files.EXTRA_NAMES`` order).

    template_m f32[V,3]; dominant i64[V] (each vertex's main Anny bone); bone_heads_m f32[Nb,3]
    (T-posed, same frame as the template).
    """
    idx = {b: i for i, b in enumerate(bone_labels)}
    owners = np.array(bone_labels, dtype=object)[dominant]

    def verts_of(prefixes: tuple[str, ...], side: str = "") -> np.ndarray:
        ok = [o.startswith(prefixes) and o.endswith(side) for o in owners]
        found = np.flatnonzero(ok)
        if found.size == 0:
            raise ValueError(f"no vertex is skinned mainly to bones {prefixes}{side}")
        return found

    def extreme(cands: np.ndarray, score: np.ndarray) -> int:
        return int(cands[np.argmax(score[cands])])

    x, y, z = template_m.T
    ids = {}
    head = verts_of(("head",))
    ids["nose"] = extreme(head[np.abs(x[head]) < 0.01], z)
    for side, s, sign in (("L", "l", 1.0), ("R", "r", -1.0)):
        eye_head = bone_heads_m[idx[f"eye.{side}"]]
        near_eye = head[np.linalg.norm(template_m[head, :2] - eye_head[:2], axis=1) < 0.012]
        ids[f"{s}eye"] = extreme(near_eye, z)
        ear_band = head[np.abs(y[head] - eye_head[1] + 0.02) < 0.015]
        ids[f"{s}ear"] = extreme(ear_band, sign * x)
        big, small = verts_of(("toe1-",), f".{side}"), verts_of(("toe5-",), f".{side}")
        ids[f"{side}BigToe"], ids[f"{side}SmallToe"] = extreme(big, z), extreme(small, z)
        foot = verts_of(("foot",), f".{side}")
        sole = foot[y[foot] < y[foot].min() + 0.03]
        ids[f"{side}Heel"] = extreme(sole, -z)
        for k, name in enumerate(("thumb", "index", "middle", "ring", "pinky"), start=1):
            tip = verts_of((f"finger{k}-3",), f".{side}")
            heads = bone_heads_m[[idx[f"finger{k}-3.{side}"], idx[f"finger{k}-2.{side}"]]]
            axis = heads[0] - heads[1]
            ids[f"{s}{name}"] = extreme(tip, template_m @ axis)
    return np.array([ids[n] for n in EXTRA_NAMES], np.int64)


def _rot(axis: str, deg: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def mean_pose_rotmat(arm_down_deg: float = 65.0, elbow_deg: float = 15.0) -> np.ndarray:
    """The relaxed mean pose f32[24,3,3] (SMPL parent-relative rotations): global orientation =
    rotation of pi about x (upright in OpenCV camera axes), arms lowered by ``arm_down_deg``
    (an A-pose), elbows bent forward by ``elbow_deg``, every other joint at rest."""
    rot = np.tile(np.eye(3), (24, 1, 1))
    rot[0] = _rot("x", 180.0)
    rot[_J["left_shoulder"]] = _rot("z", -arm_down_deg)
    rot[_J["right_shoulder"]] = _rot("z", arm_down_deg)
    rot[_J["left_elbow"]] = _rot("y", -elbow_deg)
    rot[_J["right_elbow"]] = _rot("y", elbow_deg)
    return rot.astype(np.float32)


def mean_params_arrays(rotmat: np.ndarray) -> dict[str, np.ndarray]:
    """SPIN's mean-parameter keys: pose f32[144] (6D = ``rotmat[..., :2]`` row-major), shape
    f32[10] zeros, cam f32[3] = (0.9, 0, 0)."""
    return {
        "pose": rotmat[:, :, :2].reshape(-1).astype(np.float32),
        "shape": np.zeros(10, np.float32),
        "cam": np.array([0.9, 0.0, 0.0], np.float32),
    }
