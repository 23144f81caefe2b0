"""Per-track temporal smoothing of body parameters with the One-Euro filter.

The One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) is a first-order low-pass filter whose
cutoff frequency rises with the signal's speed: slow signals (a person standing still) are smoothed
hard, fast ones (a step, a wave) follow with little lag:

    alpha(fc, dt) = 1 / (1 + 1 / (2 pi fc dt))
    dx_hat  <- lowpass((x - x_hat) / dt, alpha(d_cutoff, dt))
    fc       = min_cutoff + beta * |dx_hat|
    x_hat   <- lowpass(x, alpha(fc, dt))

Translation (metres; depth is the noisiest coordinate) and betas are filtered element-wise.
The 24 joint rotations are filtered on the rotation manifold: the step from the previous estimate
to the new measurement is a rotation vector ``log(R_hat^T R)`` in the tangent space, the joint's
angular speed drives its cutoff, and the estimate moves by ``exp(alpha * step)``; the result is
re-orthonormalised.

One knob, ``strength`` (>0; 1 = default, 2 = smoother, 0.5 = snappier; 0 or ``enabled=False``
passes through), maps to ``min_cutoff = 1 Hz / strength`` and ``beta = 0.5 / strength``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# Defaults at strength 1 (Hz, 1 / (unit/s)); translation and rotation speeds are of order 1 m/s and
# a few rad/s, so one beta fits both. Shape does not change over time: it is smoothed harder.
BASE_MIN_CUTOFF_HZ = 1.0
BASE_BETA = 0.5
BETAS_CUTOFF_SCALE = 0.3


@dataclass(frozen=True)
class OneEuroParams:
    """min_cutoff_hz: cutoff at rest; beta: cutoff gain per unit/s of speed; d_cutoff_hz: cutoff of
    the speed estimate."""

    min_cutoff_hz: float = BASE_MIN_CUTOFF_HZ
    beta: float = BASE_BETA
    d_cutoff_hz: float = 1.0

    def __post_init__(self) -> None:
        if not (self.min_cutoff_hz > 0 and self.d_cutoff_hz > 0 and self.beta >= 0):
            raise ValueError(
                f"One-Euro parameters need min_cutoff_hz > 0, d_cutoff_hz > 0, beta >= 0; got "
                f"{self.min_cutoff_hz}, {self.d_cutoff_hz}, {self.beta}"
            )

    @staticmethod
    def from_strength(strength: float) -> OneEuroParams:
        """Map one knob (> 0; larger = smoother, more lag) to the filter parameters."""
        if not strength > 0:
            raise ValueError(f"smoothing strength must be > 0 (got {strength}); use --no-smooth")
        return OneEuroParams(BASE_MIN_CUTOFF_HZ / strength, BASE_BETA / strength)


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray:
    """Smoothing factor of a first-order low-pass with the given cutoff for a step of dt_s."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff_hz, np.float64))
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Element-wise One-Euro filter over arrays of a fixed shape (float64 state)."""

    def __init__(self, params: OneEuroParams) -> None:
        self.params = params
        self.x_hat: np.ndarray | None = None
        self.dx_hat: np.ndarray | None = None

    def reset(self) -> None:
        self.x_hat = None
        self.dx_hat = None

    def __call__(self, x: np.ndarray, dt_s: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x_hat is None or self.x_hat.shape != x.shape:
            self.x_hat, self.dx_hat = x.copy(), np.zeros_like(x)
            return x.copy()
        p = self.params
        dx = (x - self.x_hat) / dt_s
        self.dx_hat = self.dx_hat + _alpha(p.d_cutoff_hz, dt_s) * (dx - self.dx_hat)
        cutoff = p.min_cutoff_hz + p.beta * np.abs(self.dx_hat)
        self.x_hat = self.x_hat + _alpha(cutoff, dt_s) * (x - self.x_hat)
        return self.x_hat.copy()


def so3_log(rotmat: np.ndarray) -> np.ndarray:
    """Rotation matrices f64[...,3,3] -> rotation vectors f64[...,3] (axis * angle, rad)."""
    r = np.asarray(rotmat, np.float64)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1.0) * 0.5, -1.0, 1.0)
    angle = np.arccos(cos)
    skew = np.stack(
        [r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1
    )
    sin = np.sin(angle)
    small = sin < 1e-6
    scale = np.where(small, 0.5, angle / (2.0 * np.where(small, 1.0, sin)))
    vec = skew * scale[..., None]
    near_pi = small & (cos < 0)
    if np.any(near_pi):  # angle ~ pi: axis from the symmetric part
        sym = (r[near_pi] + np.eye(3)) * 0.5
        axis = np.sqrt(np.clip(np.diagonal(sym, axis1=-2, axis2=-1), 0.0, None))
        col = np.argmax(axis, -1)
        axis = (
            sym[np.arange(len(col)), :, col]
            / np.maximum(axis[np.arange(len(col)), col], 1e-9)[:, None]
        )
        vec[near_pi] = axis / np.linalg.norm(axis, axis=-1, keepdims=True) * angle[near_pi, None]
    return vec


def so3_exp(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vectors f64[...,3] (rad) -> rotation matrices f64[...,3,3] (Rodrigues)."""
    v = np.asarray(rotvec, np.float64)
    angle = np.linalg.norm(v, axis=-1)
    small = angle < 1e-8
    safe = np.where(small, 1.0, angle)
    a = np.where(small, 1.0, np.sin(angle) / safe)
    b = np.where(small, 0.5, (1.0 - np.cos(angle)) / safe**2)
    k = np.zeros(v.shape[:-1] + (3, 3))
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    k[..., 1, 0], k[..., 2, 0], k[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    return np.eye(3) + a[..., None, None] * k + b[..., None, None] * (k @ k)


def orthonormalize(rotmat: np.ndarray) -> np.ndarray:
    """Nearest rotation matrices f64[...,3,3] (SVD with the determinant fixed to +1)."""
    u, _, vt = np.linalg.svd(rotmat)
    d = np.sign(np.linalg.det(u @ vt))
    u[..., :, 2] *= d[..., None]
    return u @ vt


class RotationOneEuroFilter:
    """One-Euro filter for rotations f[J,3,3], in the tangent space at the current estimate."""

    def __init__(self, params: OneEuroParams) -> None:
        self.params = params
        self.r_hat: np.ndarray | None = None
        self.w_hat: np.ndarray | None = None  # filtered angular velocity f64[J,3] rad/s

    def reset(self) -> None:
        self.r_hat = None
        self.w_hat = None

    def __call__(self, rotmat: np.ndarray, dt_s: float) -> np.ndarray:
        r = np.asarray(rotmat, np.float64)
        if self.r_hat is None or self.r_hat.shape != r.shape:
            self.r_hat = orthonormalize(r)
            self.w_hat = np.zeros(r.shape[:-1])
            return self.r_hat.copy()
        p = self.params
        step = so3_log(np.swapaxes(self.r_hat, -1, -2) @ r)  # [J,3] in the estimate's frame
        self.w_hat = self.w_hat + _alpha(p.d_cutoff_hz, dt_s) * (step / dt_s - self.w_hat)
        cutoff = p.min_cutoff_hz + p.beta * np.linalg.norm(self.w_hat, axis=-1)
        a = _alpha(cutoff, dt_s)[..., None]
        self.r_hat = orthonormalize(self.r_hat @ so3_exp(a * step))
        return self.r_hat.copy()


class PersonSmoother:
    """Smooths one track's (rotmat f32[24,3,3], betas f32[10], transl_m f32[3]) over time.

    ``__call__(t_s, rotmat, betas, transl)`` takes the frame time in seconds (capture clock) and
    returns the smoothed triple (float32). A repeated or backwards timestamp returns the last
    output; a gap longer than ``max_gap_s`` restarts the filter (the person was lost).
    """

    def __init__(
        self, params: OneEuroParams | None = None, enabled: bool = True, max_gap_s: float = 1.0
    ) -> None:
        self.params = params or OneEuroParams()
        self.enabled = enabled
        self.max_gap_s = max_gap_s
        p = self.params
        betas_p = OneEuroParams(p.min_cutoff_hz * BETAS_CUTOFF_SCALE, 0.0, p.d_cutoff_hz)
        self._rot = RotationOneEuroFilter(p)
        self._betas = OneEuroFilter(betas_p)
        self._transl = OneEuroFilter(p)
        self._t_last: float | None = None
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        """Forget the history; the next call passes its input through."""
        for f in (self._rot, self._betas, self._transl):
            f.reset()
        self._t_last = None
        self._last = None

    def __call__(
        self, t_s: float, rotmat: np.ndarray, betas: np.ndarray, transl: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rotmat, betas, transl = _check_inputs(rotmat, betas, transl)
        if not self.enabled:
            return rotmat, betas, transl
        if self._t_last is not None and t_s - self._t_last > self.max_gap_s:
            self.reset()
        if self._t_last is not None and t_s <= self._t_last:
            return self._last
        dt = 1.0 if self._t_last is None else t_s - self._t_last
        out = (
            self._rot(rotmat, dt).astype(np.float32),
            self._betas(betas, dt).astype(np.float32),
            self._transl(transl, dt).astype(np.float32),
        )
        self._t_last, self._last = t_s, out
        return out


def _check_inputs(
    rotmat: np.ndarray, betas: np.ndarray, transl: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rotmat = np.asarray(rotmat, np.float32)
    betas = np.asarray(betas, np.float32)
    transl = np.asarray(transl, np.float32)
    if rotmat.ndim != 3 or rotmat.shape[1:] != (3, 3) or betas.ndim != 1 or transl.shape != (3,):
        raise ValueError(
            "PersonSmoother expects rotmat [J,3,3], betas [B], transl [3] for ONE person; got "
            f"{rotmat.shape}, {betas.shape}, {transl.shape}"
        )
    return rotmat, betas, transl


class TrackSmoothers:
    """One ``PersonSmoother`` per track id; a new id starts a fresh filter.

    ``strength`` (if given) overrides ``min_cutoff``/``beta`` via ``OneEuroParams.from_strength``;
    ``strength=0`` or ``enabled=False`` passes everything through. Call ``prune(active_ids)`` once
    per frame so a track that vanished starts fresh if its id comes back.
    """

    def __init__(
        self,
        min_cutoff: float = BASE_MIN_CUTOFF_HZ,
        beta: float = BASE_BETA,
        d_cutoff: float = 1.0,
        enabled: bool = True,
        strength: float | None = None,
        max_gap_s: float = 1.0,
    ) -> None:
        if strength is not None and strength <= 0:
            enabled = False
        if strength is not None and enabled:
            self.params = OneEuroParams.from_strength(strength)
        else:
            self.params = OneEuroParams(min_cutoff, beta, d_cutoff)
        self.enabled = enabled
        self.max_gap_s = max_gap_s
        self._smoothers: dict[int, PersonSmoother] = {}

    def get(self, track_id: int) -> PersonSmoother:
        tid = int(track_id)
        if tid not in self._smoothers:
            self._smoothers[tid] = PersonSmoother(self.params, self.enabled, self.max_gap_s)
        return self._smoothers[tid]

    def __call__(
        self, track_id: int, t_s: float, rotmat: np.ndarray, betas: np.ndarray, transl: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Smooth one person of track ``track_id`` at time t_s (s); see ``PersonSmoother``."""
        return self.get(track_id)(t_s, rotmat, betas, transl)

    def reset(self, track_id: int) -> None:
        """Forget one track's history (e.g. after an id switch)."""
        self._smoothers.pop(int(track_id), None)

    def prune(self, active_ids) -> None:
        """Drop the filters of tracks not in ``active_ids`` (iterable of ints)."""
        keep = {int(t) for t in active_ids}
        for tid in [t for t in self._smoothers if t not in keep]:
            del self._smoothers[tid]

    def __len__(self) -> int:
        return len(self._smoothers)
