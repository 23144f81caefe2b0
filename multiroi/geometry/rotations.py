"""Rotation conversions in torch (batched over any leading dims, no SVD).

6D convention (Zhou et al., as SPIN / HMR 2.0): the 6 numbers are the first two COLUMNS of the
rotation matrix, read row-major from ``R[..., :, :2]``, i.e. ``x.reshape(-1, 3, 2)``.
Axis-angle: a 3-vector whose direction is the axis and whose norm is the angle in radians.
"""

from __future__ import annotations

import torch

_SMALL_ANGLE = 1e-4


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cross product over the last dim, from slices only (exports to plain ONNX ops)."""
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    return torch.stack((ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx), dim=-1)


def _normalize(v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    norm = torch.sqrt((v * v).sum(dim=-1, keepdim=True))
    return v / torch.clamp(norm, min=eps)


def rot6d_to_rotmat(x: torch.Tensor) -> torch.Tensor:
    """6D rotation [...,6] -> rotation matrix [...,3,3] by Gram-Schmidt on the two columns.

    Uses only reshape, slicing, mul/add/sqrt/div and stack so it exports to ONNX and TensorRT.
    """
    if not torch.jit.is_tracing() and x.shape[-1] != 6:
        raise ValueError(f"rot6d_to_rotmat expects [...,6], got {tuple(x.shape)}")
    cols = x.reshape(-1, 3, 2)
    a1, a2 = cols[:, :, 0], cols[:, :, 1]
    b1 = _normalize(a1)
    b2 = _normalize(a2 - (b1 * a2).sum(dim=-1, keepdim=True) * b1)
    b3 = _cross(b1, b2)
    rotmat = torch.stack((b1, b2, b3), dim=-1)
    return rotmat.reshape(x.shape[:-1] + (3, 3))


def rotmat_to_rot6d(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrix [...,3,3] -> 6D [...,6] (its first two columns, row-major)."""
    if rotmat.shape[-2:] != (3, 3):
        raise ValueError(f"rotmat_to_rot6d expects [...,3,3], got {tuple(rotmat.shape)}")
    return rotmat[..., :, :2].reshape(rotmat.shape[:-2] + (6,))


def _skew(v: torch.Tensor) -> torch.Tensor:
    """[...,3] -> skew-symmetric cross-product matrix [...,3,3]."""
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    rows = (
        torch.stack((zero, -z, y), dim=-1),
        torch.stack((z, zero, -x), dim=-1),
        torch.stack((-y, x, zero), dim=-1),
    )
    return torch.stack(rows, dim=-2)


def axis_angle_to_rotmat(axis_angle: torch.Tensor) -> torch.Tensor:
    """Axis-angle [...,3] (radians) -> rotation matrix [...,3,3] (Rodrigues).

    R = I + A K + B K^2 with K = skew(v), A = sin(t)/t, B = (1 - cos t)/t^2, t = |v|; Taylor
    series below 1e-4 rad keep the value and the gradient exact at zero.
    """
    if axis_angle.shape[-1] != 3:
        raise ValueError(f"axis_angle_to_rotmat expects [...,3], got {tuple(axis_angle.shape)}")
    theta2 = (axis_angle * axis_angle).sum(dim=-1)
    small = theta2 < _SMALL_ANGLE**2
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(theta2_safe)
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta2_safe)
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def rotmat_to_quaternion(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrix [...,3,3] -> unit quaternion [...,4] (w, x, y, z) with w >= 0.

    Shepperd's method: of the four candidate formulas, the one with the largest denominator is
    used, so the result is accurate for every angle including pi.
    """
    m = rotmat
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    m01, m02, m10 = m[..., 0, 1], m[..., 0, 2], m[..., 1, 0]
    m12, m20, m21 = m[..., 1, 2], m[..., 2, 0], m[..., 2, 1]
    four_sq = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22),
        dim=-1,
    )
    q_abs = torch.sqrt(torch.clamp(four_sq, min=1e-12))  # 2 |q_i|
    cands = torch.stack(
        (
            torch.stack((q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01), dim=-1),
            torch.stack((m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20), dim=-1),
            torch.stack((m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21), dim=-1),
            torch.stack((m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2), dim=-1),
        ),
        dim=-2,
    )
    cands = cands / (2.0 * q_abs[..., None])  # row i: 4 q_i q / (4 |q_i|) = sign(q_i) q
    best = q_abs.argmax(dim=-1)
    idx = best[..., None, None].expand(best.shape + (1, 4))
    quat = torch.gather(cands, -2, idx).squeeze(-2)
    quat = _normalize(quat)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_axis_angle(quat: torch.Tensor) -> torch.Tensor:
    """Unit quaternion [...,4] (w, x, y, z) -> axis-angle [...,3], angle in [0, pi]."""
    quat = torch.where(quat[..., :1] < 0, -quat, quat)
    xyz = quat[..., 1:]
    sin_half = torch.sqrt((xyz * xyz).sum(dim=-1))
    half = torch.atan2(sin_half, quat[..., 0])
    angle = 2.0 * half
    small = angle.abs() < _SMALL_ANGLE
    angle_safe = torch.where(small, torch.ones_like(angle), angle)
    # sin(angle/2) / angle, with its Taylor series near zero
    ratio = torch.where(small, 0.5 - angle * angle / 48.0, torch.sin(half) / angle_safe)
    return xyz / ratio[..., None]


def rotmat_to_axis_angle(rotmat: torch.Tensor) -> torch.Tensor:
    """Rotation matrix [...,3,3] -> axis-angle [...,3] (radians, angle in [0, pi]).

    Goes through a quaternion (Shepperd) and atan2, so it is stable near 0 and near pi; no SVD.
    """
    if rotmat.shape[-2:] != (3, 3):
        raise ValueError(f"rotmat_to_axis_angle expects [...,3,3], got {tuple(rotmat.shape)}")
    return quaternion_to_axis_angle(rotmat_to_quaternion(rotmat))
