"""Fit each person's global orientation and translation to its estimated 2D joints.

The network's body is placed by the RoIs' weak-perspective cameras (method.md 3) and turned by
the mesh decoder's global orientation. Both ignore what the lifter's 2D stage already knows
(the joints' positions in the base crop, 0.017 box heights median error on rendered persons):
a rigid fit of the body's 3D joints to those 2D joints, under the full-perspective camera,
corrects the turn and the distance (docs/experiments.md, "After run R").

Per person, with the body's joints X f32[24,3] (its own frame, pelvis at X0), the translation T
and the camera (f, principal): find the rotation R about the pelvis and the shift t minimising

    sum_j w_j rho(|pi(R (X_j - X0) + X0 + T + t) - u_j|^2 / b^2) + lam^2 |log R|^2

with u_j the 2D joints in pixels, b the base box height, rho soft-L1 (scale ``f_scale`` box
heights) and ``lam`` (per radian) the pull towards the network's own orientation: from the
front a body's turn about its vertical axis shows in 2D only weakly. Gauss-Newton, all persons
at once (6 x 6 systems). Persons with fewer than ``min_joints`` weighted joints, and fits that
fail (non-finite, a joint behind the camera), keep the network's values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from multiroi.geometry.rotations import axis_angle_to_rotmat, rotmat_to_axis_angle


@dataclass(frozen=True)
class Fit2DConfig:
    """rot_prior: lam per radian (larger: the network's orientation is kept more); f_scale:
    soft-L1 scale in box heights; iters: Gauss-Newton steps; min_joints: weighted joints
    needed to fit; max_turn_deg: a fit that turns the body further is dropped, and so is one
    that moves it more than max_depth_ratio times nearer or further (2D joints that collapse
    to a point, from a person the 2D stage cannot read, pull the body away without end)."""

    rot_prior: float = 0.3
    f_scale: float = 0.05
    iters: int = 10
    min_joints: int = 6
    max_turn_deg: float = 60.0
    max_depth_ratio: float = 2.0

    def __post_init__(self) -> None:
        if not (self.rot_prior >= 0 and np.isfinite(self.rot_prior)):
            raise ValueError(f"rot_prior must be finite and >= 0, got {self.rot_prior}")
        if not self.f_scale > 0:
            raise ValueError(f"f_scale must be > 0 (box heights), got {self.f_scale}")
        if not self.max_depth_ratio > 1:
            raise ValueError(f"max_depth_ratio must be > 1, got {self.max_depth_ratio}")
        if self.iters < 1 or self.min_joints < 3:
            raise ValueError("iters must be >= 1 and min_joints >= 3")


@dataclass
class Fit2DResult:
    """turn f64[P,3,3]: rotation applied about the pelvis (body -> new body, camera axes);
    transl f64[P,3] m: the new translation; fitted bool[P]: persons whose fit was kept."""

    turn: np.ndarray
    transl: np.ndarray
    fitted: np.ndarray


def _skew(v: np.ndarray) -> np.ndarray:
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -v[..., 2], v[..., 1]
    out[..., 1, 0], out[..., 1, 2] = v[..., 2], -v[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -v[..., 1], v[..., 0]
    return out


def _so3_exp(w: np.ndarray) -> np.ndarray:
    import torch

    return axis_angle_to_rotmat(torch.from_numpy(w)).numpy()


def _so3_log(r: np.ndarray) -> np.ndarray:
    import torch

    return rotmat_to_axis_angle(torch.from_numpy(r)).numpy()


def fit_to_2d(
    joints: np.ndarray, transl: np.ndarray, points_2d: np.ndarray, weights: np.ndarray,
    box_size: np.ndarray, focal: np.ndarray | float, principal: np.ndarray,
    cfg: Fit2DConfig = Fit2DConfig(),
) -> Fit2DResult:  # fmt: skip
    """joints f[P,24,3] m (the body's joints without translation, camera axes); transl f[P,3]
    m; points_2d f[P,24,2] px; weights f[P,24] (0: not used); box_size f[P] px; focal px,
    scalar or f[P]; principal f[2] or f[P,2] px -> :class:`Fit2DResult`."""
    x = np.asarray(joints, np.float64)
    p = x.shape[0]
    if x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"joints must be [P,J,3], got {x.shape}")
    j = x.shape[1]
    t0 = np.asarray(transl, np.float64).reshape(p, 3)
    uv = np.asarray(points_2d, np.float64).reshape(p, j, 2)
    w = np.asarray(weights, np.float64).reshape(p, j)
    b = np.asarray(box_size, np.float64).reshape(p)
    f = np.broadcast_to(np.asarray(focal, np.float64), (p,))
    pp = np.broadcast_to(np.asarray(principal, np.float64), (p, 2))
    pelvis = x[:, :1]
    rel = x - pelvis  # about the pelvis
    w = np.where(np.isfinite(uv).all(-1) & np.isfinite(w), w, 0.0)  # unknown joints: left out
    usable = (w > 0).sum(1) >= cfg.min_joints
    usable &= np.isfinite(rel).all((1, 2)) & np.isfinite(t0).all(1) & (b > 0) & (f > 0)
    uv = np.nan_to_num(uv)
    rel, t0 = np.nan_to_num(rel), np.nan_to_num(t0)
    rot = np.broadcast_to(np.eye(3), (p, 3, 3)).copy()
    shift = np.zeros((p, 3))
    base = pelvis[:, 0] + t0
    lam = cfg.rot_prior
    eye6 = np.eye(6)
    ok = usable.copy()
    for _ in range(cfg.iters):
        rx = np.einsum("pij,pkj->pki", rot, rel)  # R (X - X0) [P,J,3]
        pts = rx + (base + shift)[:, None]
        z = pts[..., 2]
        ok &= (z > 1e-3).all(1)
        zs = np.where(z > 1e-3, z, 1.0)
        proj = pts[..., :2] / zs[..., None] * f[:, None, None] + pp[:, None]
        res = (proj - uv) / b[:, None, None]  # [P,J,2] box heights
        sq = (res**2).sum(-1) / cfg.f_scale**2
        irls = w / np.sqrt(1.0 + sq)  # soft-L1 as reweighted least squares
        # d proj / d pts (over b): [P,J,2,3]
        k = (f / b)[:, None]
        dp = np.zeros(pts.shape[:2] + (2, 3))
        dp[..., 0, 0] = k / zs
        dp[..., 1, 1] = k / zs
        dp[..., 0, 2] = -k * pts[..., 0] / zs**2
        dp[..., 1, 2] = -k * pts[..., 1] / zs**2
        # d pts / d (left-multiplied turn dw, shift): [-(R rel)x | I]
        dpts = np.concatenate([-_skew(rx), np.broadcast_to(np.eye(3), rx.shape + (3,))], -1)
        jac = np.einsum("pjab,pjbc->pjac", dp, dpts)  # [P,J,2,6]
        jw = jac * irls[..., None, None]
        h = np.einsum("pjai,pjak->pik", jw, jac)
        g = np.einsum("pjai,pja->pi", jw, res)
        w_now = _so3_log(rot)
        h[:, :3, :3] += lam**2 * np.eye(3)
        g[:, :3] += lam**2 * w_now
        h += 1e-9 * eye6
        step = -np.linalg.solve(h, g[..., None])[..., 0]
        step = np.where(ok[:, None] & np.isfinite(step).all(1, keepdims=True), step, 0.0)
        rot = np.einsum("pij,pjk->pik", _so3_exp(step[:, :3]), rot)
        shift = shift + step[:, 3:]
    turn_deg = np.degrees(np.linalg.norm(_so3_log(rot), axis=-1))
    final_z = (np.einsum("pij,pkj->pki", rot, rel) + (base + shift)[:, None])[..., 2]
    ok &= (final_z > 1e-3).all(1) & (turn_deg <= cfg.max_turn_deg)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (base[:, 2] + shift[:, 2]) / base[:, 2]
    ok &= (ratio <= cfg.max_depth_ratio) & (ratio >= 1.0 / cfg.max_depth_ratio)
    ok &= np.isfinite(rot).all((1, 2)) & np.isfinite(shift).all(1)
    rot = np.where(ok[:, None, None], rot, np.eye(3))
    new_t = np.where(ok[:, None], t0 + shift, t0)
    # the pelvis stays at X0 + T + t: turning about it leaves the translation as it is
    return Fit2DResult(turn=rot, transl=new_t, fitted=ok)


def crop_weights(joints_2d: np.ndarray) -> np.ndarray:
    """f32[P,24,2] box heights from the base crop's centre -> f64[P,24]: 1 for the joints
    inside the crop window, 0 for the guesses beyond it (they only add noise to the fit)."""
    from multiroi.model.lifter import CROP_HALF_H, CROP_HALF_W

    j = np.asarray(joints_2d, np.float64)
    return ((np.abs(j[..., 0]) < CROP_HALF_W) & (np.abs(j[..., 1]) < CROP_HALF_H)).astype(float)


def fit_people(
    rotmat: np.ndarray, joints: np.ndarray, transl: np.ndarray, joints_2d: np.ndarray,
    centers: np.ndarray, sizes: np.ndarray, focal: np.ndarray | float, principal: np.ndarray,
    cfg: Fit2DConfig = Fit2DConfig(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The network's people fitted to their 2D joints: rotmat f[P,24,3,3] (local; joint 0 the
    global orientation, camera axes), joints f[P,24,3] m (the body's joints of that pose, no
    translation), transl f[P,3] m, joints_2d f[P,24,2] (HmrOutput.joints_2d), centers f[P,2]
    and sizes f[P] px (the base RoI's window), focal and principal px -> (rotmat f32 with the
    global orientation turned, transl f32, fitted bool[P])."""
    j2 = np.asarray(joints_2d, np.float64)
    sizes = np.asarray(sizes, np.float64).reshape(-1)
    uv = np.asarray(centers, np.float64).reshape(-1, 1, 2) + j2 * sizes[:, None, None]
    res = fit_to_2d(joints, transl, uv, crop_weights(j2), sizes, focal, principal, cfg)
    out = np.array(rotmat, np.float32, copy=True)
    out[:, 0] = np.einsum("pij,pjk->pik", res.turn, np.asarray(rotmat, np.float64)[:, 0])
    return out, res.transl.astype(np.float32), res.fitted
