"""A procedural room for the demo clip: a tiled floor and a brick wall, ray-cast per pixel (numpy),
plus soft blob shadows under the people."""

from __future__ import annotations

import numpy as np

from realtime.demo.scene import CAMERA_HEIGHT_M, R_TILT, WALL_Z_M


def pixel_rays_level(K: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Ray directions f64[H,W,3] in the level frame L through the pixel centres (x+0.5, y+0.5)."""
    w, h = size_wh
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], -1)
    d_cam = pix @ np.linalg.inv(K).T
    return d_cam @ R_TILT  # R_TILT^T applied to each row


def room_background(
    K: np.ndarray, size_wh: tuple[int, int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """-> (image_bgr uint8[H,W,3], floor_xz f32[H,W,2] metres in L, NaN where not floor)."""
    rng = np.random.default_rng(seed)
    d = pixel_rays_level(np.asarray(K, np.float64), size_wh)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[..., 1] > 1e-6, CAMERA_HEIGHT_M / d[..., 1], np.inf)
        t_wall = np.where(d[..., 2] > 1e-6, WALL_Z_M / d[..., 2], np.inf)
    on_floor = t_floor < t_wall
    t = np.minimum(t_floor, t_wall)
    p = d * t[..., None]
    img = np.where(on_floor[..., None], _floor_texture(p[..., 0], p[..., 2]), _wall_texture(p))
    dist = np.linalg.norm(p, axis=-1)
    img *= (1.0 - 0.35 * np.clip((dist - 3.0) / 12.0, 0, 1))[..., None]  # fall-off with distance
    img += rng.normal(0.0, 0.012, img.shape)  # sensor noise, fixed per clip
    floor_xz = np.where(on_floor[..., None], p[..., [0, 2]], np.nan).astype(np.float32)
    bgr = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1]
    return np.ascontiguousarray(bgr), floor_xz


def _floor_texture(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Checkered tiles of 0.6 m with grout lines; rgb f64[H,W,3]."""
    tile = 0.6
    ix, iz = np.floor(x / tile), np.floor(z / tile)
    checker = ((ix + iz) % 2 == 0)[..., None]
    a, b = np.array([0.62, 0.55, 0.46]), np.array([0.50, 0.44, 0.37])
    rgb = np.where(checker, a, b)
    fx, fz = x / tile - ix, z / tile - iz
    grout = (np.minimum(np.minimum(fx, 1 - fx), np.minimum(fz, 1 - fz)) < 0.025)[..., None]
    rgb = np.where(grout, np.array([0.30, 0.28, 0.26]), rgb)
    grain = 0.04 * np.sin(23.0 * x + 3.0 * np.sin(7.0 * z))[..., None]
    return rgb + grain


def _wall_texture(p: np.ndarray) -> np.ndarray:
    """Running-bond bricks (0.25 x 0.08 m) over a baseboard; rgb f64[H,W,3]."""
    x, height = p[..., 0], CAMERA_HEIGHT_M - p[..., 1]
    row = np.floor(height / 0.08)
    shift = (row % 2) * 0.125
    col = np.floor((x + shift) / 0.25)
    fx = (x + shift) / 0.25 - col
    fy = height / 0.08 - row
    tone = 0.06 * np.sin(12.9898 * col + 78.233 * row) ** 2  # per-brick variation
    brick = np.stack([0.62 + tone, 0.36 + 0.5 * tone, 0.30 + 0.3 * tone], -1)
    mortar = ((np.minimum(fx, 1 - fx) < 0.04) | (np.minimum(fy, 1 - fy) < 0.1))[..., None]
    rgb = np.where(mortar, np.array([0.78, 0.76, 0.72]), brick)
    base = (height < 0.15)[..., None]
    return np.where(base, np.array([0.25, 0.25, 0.28]), rgb)


def add_blob_shadows(
    image_bgr: np.ndarray, floor_xz: np.ndarray, feet_xz: list[np.ndarray], radius_m: float = 0.4
) -> np.ndarray:
    """Darken the floor under each person (feet_xz: f[2] metres in L); returns a new image."""
    if not feet_xz:
        return image_bgr.copy()
    shade = np.ones(floor_xz.shape[:2], np.float32)
    fx, fz = floor_xz[..., 0], floor_xz[..., 1]
    valid = np.isfinite(fx)
    for c in feet_xz:
        r2 = ((fx - c[0]) ** 2 + (fz - c[1]) ** 2) / radius_m**2
        shade *= np.where(valid, 1.0 - 0.55 * np.exp(-r2), 1.0).astype(np.float32)
    return (image_bgr * shade[..., None]).astype(np.uint8)
