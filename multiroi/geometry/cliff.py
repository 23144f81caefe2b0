"""Local weak-perspective crop camera <-> full-image translation (CLIFF), and projection.

method.md section 3. A mesh point X (metres, camera axes) lands, in the weak-perspective model of
RoI k, at pixel ``c_k + (b_k / 2) s_k (X + t_k)``; in the full perspective camera (no rotation)
at ``p + f (X + T) / T_z``. Matching the two:

    T_z = 2 f / (b_k s_k),   T_xy = t_k + 2 (c_k - p) / (b_k s_k).

Torch first; numpy arrays in give numpy arrays out (computed in float64).
Shapes: cam_local [...,3] = (s, tx, ty); centers [...,2] px; sizes [...] px (window heights b_k);
focal px, a number or broadcastable to sizes; principal (px, py), or [...,2].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

EPS_BS = 1e-9  # epsilon on b * s (px)
MIN_SCALE = 1e-6  # s is clamped to at least this (it must stay positive)

ArrayLike = Any  # torch.Tensor | np.ndarray | float | sequence


def _numpy_friendly(fn: Callable[..., torch.Tensor]) -> Callable[..., Any]:
    """Run ``fn`` on torch; if its first argument is numpy, convert in (f64) and back out."""

    def wrapper(first: ArrayLike, *args: ArrayLike, **kwargs: Any) -> Any:
        if isinstance(first, torch.Tensor):
            return fn(first, *args, **kwargs)
        conv = lambda a: torch.from_numpy(np.array(a, dtype=np.float64))  # copy: may be read-only
        args_t = [a if a is None else conv(a) for a in args]
        kwargs_t = {k: (v if v is None else conv(v)) for k, v in kwargs.items()}
        return fn(conv(first), *args_t, **kwargs_t).numpy()

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper


def _as(x: ArrayLike, like: torch.Tensor) -> torch.Tensor:
    if isinstance(x, np.ndarray) and not x.flags.writeable:
        x = np.array(x)  # torch warns on read-only arrays (e.g. Camera.K)
    return torch.as_tensor(x, dtype=like.dtype, device=like.device)


def _check_last(x: torch.Tensor, n: int, name: str) -> None:
    if x.shape[-1] != n:
        raise ValueError(f"{name} must have shape [...,{n}], got {tuple(x.shape)}")


@_numpy_friendly
def local_to_full(
    cam_local: torch.Tensor,
    centers: ArrayLike,
    sizes: ArrayLike,
    focal: ArrayLike,
    principal: ArrayLike,
) -> torch.Tensor:
    """Full-image translation T [...,3] (metres, camera frame) of local cameras [...,3].

    s is clamped to >= MIN_SCALE and b s gets EPS_BS so T stays finite.
    """
    _check_last(cam_local, 3, "cam_local")
    centers, sizes = _as(centers, cam_local), _as(sizes, cam_local)
    focal, principal = _as(focal, cam_local), _as(principal, cam_local)
    _check_last(centers, 2, "centers")
    s = torch.clamp(cam_local[..., 0], min=MIN_SCALE)
    bs = sizes * s + EPS_BS
    tz = 2.0 * focal / bs
    txy = cam_local[..., 1:] + 2.0 * (centers - principal) / bs[..., None]
    return torch.stack(torch.broadcast_tensors(txy[..., 0], txy[..., 1], tz), dim=-1)


@_numpy_friendly
def full_to_local(
    transl: torch.Tensor,
    centers: ArrayLike,
    sizes: ArrayLike,
    focal: ArrayLike,
    principal: ArrayLike,
) -> torch.Tensor:
    """Local weak-perspective cameras (s, tx, ty) [...,3] of RoI windows for translation T [...,3].

    Inverse of :func:`local_to_full`: s = 2 f / (b T_z), t = T_xy - (c - p) T_z / f.
    T_z must be positive (the person is in front of the camera).
    """
    _check_last(transl, 3, "transl")
    centers, sizes = _as(centers, transl), _as(sizes, transl)
    focal, principal = _as(focal, transl), _as(principal, transl)
    _check_last(centers, 2, "centers")
    tz = transl[..., 2]
    s = 2.0 * focal / (sizes * tz)
    t = transl[..., :2] - (centers - principal) * (tz / focal)[..., None]
    return torch.stack(torch.broadcast_tensors(s, t[..., 0], t[..., 1]), dim=-1)


@_numpy_friendly
def project_points(
    points: torch.Tensor, K: ArrayLike, transl: ArrayLike | None = None, min_depth: float = 1e-6
) -> torch.Tensor:
    """Perspective projection of points [...,N,3] (metres, camera frame) -> pixels [...,N,2].

    K: [3,3] or [...,3,3] px intrinsics; transl: [...,3] added to every point first (the
    full-image translation T of a mesh). Depths are clamped to ``min_depth`` so points behind the
    camera give finite (meaningless) pixels; no lens distortion is applied.
    """
    _check_last(points, 3, "points")
    if transl is not None:
        points = points + _as(transl, points)[..., None, :]
    K = _as(K, points)
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K must have shape [...,3,3], got {tuple(K.shape)}")
    uvw = points @ K.transpose(-1, -2)
    depth = torch.clamp(uvw[..., 2:], min=min_depth)
    return uvw[..., :2] / depth


@_numpy_friendly
def weak_perspective_to_image(
    points: torch.Tensor, cam_local: ArrayLike, centers: ArrayLike, sizes: ArrayLike
) -> torch.Tensor:
    """Weak-perspective crop model in full-image pixels: c + (b / 2) s (X_xy + t).

    points [...,N,3] metres; cam_local [...,3]; centers [...,2] px; sizes [...] px.
    """
    _check_last(points, 3, "points")
    cam = _as(cam_local, points)
    centers, sizes = _as(centers, points), _as(sizes, points)
    scale = (0.5 * sizes * cam[..., 0])[..., None, None]
    return centers[..., None, :] + scale * (points[..., :2] + cam[..., None, 1:])
