"""Augmentation shared by the R RoIs of one person: one draw, applied to the full image.

Flip and rotation act on the whole image about the principal point, so they are exact camera
operations (a mirror, a roll about the optical axis) and the ground truth follows them exactly:
2D points through the 3x3 image transform ``A``, 3D points and the root rotation through
``R3 = Rz(angle) @ diag(-1, 1, 1)^flip``, left/right joints swapped on a flip. Box scale and shift
jitter move the base box; colour gains and a synthetic occluder (a textured rectangle or ellipse
pasted near the person) change pixels. Crops are one warp per RoI from the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from multiroi.body.files import FLIP_PERM as BODY_FLIP_PERM
from multiroi.rois import CROP_H, CROP_W, crop_matrices

MIRROR = np.diag([-1.0, 1.0, 1.0])
FLIP_PERM = np.array(BODY_FLIP_PERM, np.int64)  # SMPL joint j of the flipped body: FLIP_PERM[j]


@dataclass
class AugmentConfig:
    """Ranges of the augmentation (training only).

    flip_prob: horizontal flip; rot_prob / rot_deg: rotation by N(0, rot_deg/2) clipped to
    +-rot_deg; scale: box size factor in [1 - scale, 1 + scale]; shift: box centre shift up to
    shift * b; colour: per-channel gain in [1 - colour, 1 + colour]; occlusion_prob: paste one
    synthetic occluder.
    """

    enabled: bool = True
    flip_prob: float = 0.5
    rot_prob: float = 0.4
    rot_deg: float = 30.0
    scale: float = 0.2
    shift: float = 0.08
    colour: float = 0.3
    occlusion_prob: float = 0.3


@dataclass
class AugmentDraw:
    """One draw: flip, rotation (radians), box scale, box shift (units of b), colour gains f32[3],
    occluder (centre offset [2] and size [2] in units of b, colour f32[3], ellipse) or None."""

    flip: bool = False
    rot_rad: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)
    occluder: tuple | None = None


def sample_draw(rng: np.random.Generator, cfg: AugmentConfig) -> AugmentDraw:
    """Draw one augmentation (the identity when ``cfg.enabled`` is False)."""
    if not cfg.enabled:
        return AugmentDraw()
    rot = 0.0
    if rng.random() < cfg.rot_prob:
        rot = float(np.clip(rng.normal(0, cfg.rot_deg / 2), -cfg.rot_deg, cfg.rot_deg))
    occ = None
    if rng.random() < cfg.occlusion_prob:
        occ = (rng.uniform(-0.35, 0.35, 2), rng.uniform(0.1, 0.45, 2),
               rng.uniform(0, 255, 3), bool(rng.random() < 0.5))  # fmt: skip
    return AugmentDraw(
        flip=bool(rng.random() < cfg.flip_prob),
        rot_rad=float(np.radians(rot)),
        scale=float(rng.uniform(1 - cfg.scale, 1 + cfg.scale)),
        shift=tuple(rng.uniform(-cfg.shift, cfg.shift, 2).tolist()),
        gains=tuple(rng.uniform(1 - cfg.colour, 1 + cfg.colour, 3).tolist()),
        occluder=occ,
    )


def image_transform(draw: AugmentDraw, width: int, principal: np.ndarray) -> np.ndarray:
    """3x3 map f64 of continuous pixel coordinates, original -> augmented image.

    Flip: x -> W - x (the principal point moves to W - px); then rotation by ``rot_rad`` about the
    (new) principal point, the image-plane effect of the camera rotation :func:`rotation_3d`.
    """
    A = np.eye(3)
    p = np.asarray(principal, np.float64).copy()
    if draw.flip:
        A = np.array([[-1.0, 0, width], [0, 1, 0], [0, 0, 1]]) @ A
        p[0] = width - p[0]
    c, s = np.cos(draw.rot_rad), np.sin(draw.rot_rad)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    to_p, from_p = np.eye(3), np.eye(3)
    to_p[:2, 2], from_p[:2, 2] = -p, p
    return from_p @ rot @ to_p @ A


def rotation_3d(draw: AugmentDraw) -> np.ndarray:
    """f64[3,3] applied to camera-frame points: Rz(rot) @ (MIRROR if flip)."""
    c, s = np.cos(draw.rot_rad), np.sin(draw.rot_rad)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return rz @ (MIRROR if draw.flip else np.eye(3))


def transform_points_2d(A: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply A f64[3,3] to points f[...,2] px."""
    p = np.asarray(points, np.float64)
    return p @ A[:2, :2].T + A[:2, 2]


def augment_smpl(
    draw: AugmentDraw, rotmat: np.ndarray, joints3d: np.ndarray, transl: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground truth under the draw: rotmat f32[24,3,3], joints3d f32[J,C>=3] (SMPL order, extra
    columns such as confidence kept), transl f32[3] (body origin; uses the rest pelvis
    J0 = joints3d[0] - transl, mirrored bodies assumed symmetric)."""
    c, s = np.cos(draw.rot_rad), np.sin(draw.rot_rad)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    rot = np.array(rotmat, np.float64, copy=True)
    j3d = np.array(joints3d, np.float64, copy=True)
    j0 = j3d[0, :3] - np.asarray(transl, np.float64)
    if draw.flip:  # mirrored body: swapped joints, every rotation conjugated by the mirror
        rot = MIRROR @ rot[FLIP_PERM] @ MIRROR
        j3d = j3d[FLIP_PERM]
        j3d[:, 0] *= -1
    rot[0] = rz @ rot[0]
    j3d[:, :3] = j3d[:, :3] @ rz.T
    new_transl = j3d[0, :3] - j0
    return rot.astype(np.float32), j3d.astype(np.float32), new_transl.astype(np.float32)


def flip_keypoints_2d(kp2d: np.ndarray, draw: AugmentDraw) -> np.ndarray:
    """Reorder keypoints f[J,C] (SMPL order) for a flip (the coordinates go through A)."""
    return np.asarray(kp2d)[FLIP_PERM] if draw.flip else np.asarray(kp2d)


def paste_occluder(
    image: np.ndarray, draw: AugmentDraw, center: np.ndarray, size: float, rng: np.random.Generator
) -> np.ndarray:
    """A copy of ``image`` uint8[H,W,3] with the draw's occluder near the base box (original
    coordinates, centre [2] px, height b px); the image itself when there is none."""
    if draw.occluder is None:
        return image
    off, wh, colour, ellipse = draw.occluder
    out = image.copy()
    c = (np.asarray(center) + np.asarray(off) * size).astype(int)
    half = np.maximum((np.asarray(wh) * size / 2).astype(int), 1)
    col = tuple(int(v) for v in colour)
    if ellipse:
        cv2.ellipse(out, tuple(int(v) for v in c), tuple(int(v) for v in half), 0, 0, 360, col, -1)
    else:
        cv2.rectangle(
            out, tuple(int(v) for v in c - half), tuple(int(v) for v in c + half), col, -1
        )
    return out


def warp_rois(
    image: np.ndarray, A: np.ndarray, centers: np.ndarray, sizes: np.ndarray
) -> np.ndarray:
    """uint8[R,256,192,3] crops of the *augmented* image's windows, warped from the original.

    centers f[R,2] px and sizes f[R] px are windows in augmented coordinates; A maps original to
    augmented continuous coordinates (pixel index = coordinate - 0.5 on both sides).
    """
    shift_in, shift_out = np.eye(3), np.eye(3)
    shift_in[:2, 2], shift_out[:2, 2] = 0.5, -0.5
    out = np.zeros((len(sizes), CROP_H, CROP_W, 3), np.uint8)
    mats = crop_matrices(centers, sizes)
    for k in range(len(sizes)):
        C = np.vstack([mats[k], [0, 0, 1.0]])
        M = C @ shift_out @ A @ shift_in
        cv2.warpAffine(image, M[:2], (CROP_W, CROP_H), dst=out[k], flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))  # fmt: skip
    return out


def apply_colour(crops_u8: np.ndarray, draw: AugmentDraw) -> np.ndarray:
    """Per-channel gains on uint8 crops [...,3] (RGB order)."""
    if draw.gains == (1.0, 1.0, 1.0):
        return crops_u8
    g = np.asarray(draw.gains, np.float32)
    return np.clip(crops_u8.astype(np.float32) * g, 0, 255).astype(np.uint8)
