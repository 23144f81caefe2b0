"""Clothing, skin and background appearance for the synthetic renderer.

Clothing: every vertex of the body model gets a body-part group from its skinning weights (head,
hands, upper arm, thigh ...); an outfit maps groups to regions (skin, hair, shirt, trousers,
shoes) with sleeve and leg lengths drawn per person; every region gets a colour and a procedural
pattern (solid, stripes, checks, blotches) evaluated per pixel on rest-pose coordinates, so the
pattern moves with the body.
Backgrounds: a ground plane seen by the actual camera (tiles, checks or noise, fading with
distance) under a sky or in front of a wall, or a random crop of a user photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SKIN, HAIR, SHIRT, TROUSERS, SHOES = range(5)
REGION_NAMES = ("skin", "hair", "shirt", "trousers", "shoes")
# body-part groups from the owning SMPL joint
G_HEAD, G_NECK, G_HAND, G_UPPERARM, G_FOREARM, G_TORSO, G_HIPS, G_THIGH, G_SHIN, G_FOOT = range(10)
_JOINT_GROUP = {
    0: G_HIPS, 1: G_THIGH, 2: G_THIGH, 3: G_TORSO, 4: G_SHIN, 5: G_SHIN, 6: G_TORSO, 7: G_FOOT,
    8: G_FOOT, 9: G_TORSO, 10: G_FOOT, 11: G_FOOT, 12: G_NECK, 13: G_TORSO, 14: G_TORSO,
    15: G_HEAD, 16: G_UPPERARM, 17: G_UPPERARM, 18: G_FOREARM, 19: G_FOREARM, 20: G_HAND,
    21: G_HAND, 22: G_HAND, 23: G_HAND,
}  # fmt: skip
SKIN_TONES = np.array([
    [255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96], [161, 102, 68],
    [120, 74, 48], [88, 54, 36], [232, 190, 172],
], np.float32) / 255.0  # fmt: skip
PATTERNS = ("solid", "stripes_h", "stripes_v", "checks", "blotches")


def vertex_groups(weights: np.ndarray, v_template: np.ndarray, joints_rest: np.ndarray):
    """Body-part group i64[V] per vertex, and a hair mask bool[V] (top and back of the head)."""
    owner = np.asarray(weights).argmax(axis=1)
    groups = np.vectorize(_JOINT_GROUP.get)(owner).astype(np.int64)
    head = joints_rest[15]
    v = np.asarray(v_template)
    hair = (owner == 15) & (
        (v[:, 1] > head[1] + 0.06) | ((v[:, 2] < head[2] - 0.03) & (v[:, 1] > head[1] - 0.02))
    )
    return groups, hair


@dataclass
class Outfit:
    """Appearance of one person: region i64[G] per body group; per region colours f32[5,2,3]
    (two colours in [0,1]), pattern index i64[5], frequency f32[5] (1/m), phase f32[5,3]."""

    group_region: np.ndarray
    colours: np.ndarray
    pattern: np.ndarray
    freq: np.ndarray
    phase: np.ndarray


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(30, 255)]]])
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255


def sample_outfit(rng: np.random.Generator) -> Outfit:
    """Draw sleeve/leg lengths, colours and patterns for one person."""
    region = np.array([HAIR, SKIN, SKIN, SHIRT, SHIRT, SHIRT, TROUSERS, TROUSERS, TROUSERS, SHOES])
    region[G_HEAD] = SKIN  # hair is added per vertex from the hair mask
    sleeves = rng.integers(3)  # 0 none, 1 short, 2 long
    region[G_UPPERARM] = SHIRT if sleeves >= 1 else SKIN
    region[G_FOREARM] = SHIRT if sleeves == 2 else SKIN
    region[G_SHIN] = TROUSERS if rng.random() < 0.7 else SKIN
    colours = np.stack([[_random_colour(rng), _random_colour(rng)] for _ in range(5)])
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.85, 1.1)
    colours[SKIN] = [skin, skin * 0.92]
    hair = np.array([[0.1, 0.07, 0.05], [0.45, 0.3, 0.15], [0.8, 0.7, 0.45]])[rng.integers(3)]
    colours[HAIR] = [hair, hair * 0.8]
    pattern = rng.integers(len(PATTERNS), size=5)
    pattern[[SKIN, HAIR]] = 0
    pattern[SHOES] = 0
    return Outfit(region, np.clip(colours, 0, 1).astype(np.float32), pattern,
                  rng.uniform(4, 25, size=5).astype(np.float32),
                  rng.uniform(0, 2 * np.pi, size=(5, 3)).astype(np.float32))  # fmt: skip


def region_of_vertices(outfit: Outfit, groups: np.ndarray, hair: np.ndarray) -> np.ndarray:
    """Region id i64[V] per vertex of one person."""
    region = outfit.group_region[groups]
    region[hair] = HAIR
    return region


def albedo(outfit: Outfit, region: np.ndarray, rest_xyz: np.ndarray) -> np.ndarray:
    """Colour f32[K,3] in [0,1] of K points: region i64[K], rest-pose coordinates f32[K,3]."""
    out = np.empty((len(region), 3), np.float32)
    for r in np.unique(region):
        sel = region == r
        p = rest_xyz[sel]
        f, ph = outfit.freq[r], outfit.phase[r]
        kind = PATTERNS[outfit.pattern[r]]
        if kind == "solid":
            t = np.zeros(len(p), np.float32)
        elif kind == "stripes_h":
            t = (np.sin(2 * np.pi * f * p[:, 1] + ph[0]) > 0).astype(np.float32)
        elif kind == "stripes_v":
            t = (np.sin(2 * np.pi * f * (p[:, 0] + 0.7 * p[:, 2]) + ph[0]) > 0).astype(np.float32)
        elif kind == "checks":
            t = (np.floor(f * p + ph / np.pi).sum(axis=1) % 2).astype(np.float32)
        else:
            t = 0.5 + 0.5 * np.sin(f * p[:, 0] + ph[0]) * np.sin(f * p[:, 1] + ph[1]) * np.cos(
                f * p[:, 2] + ph[2]
            )
        c = outfit.colours[r]
        out[sel] = c[0] * (1 - t[:, None]) + c[1] * t[:, None]
    return out


def value_noise(rng: np.random.Generator, width: int, height: int, octaves: int = 4) -> np.ndarray:
    """Smooth noise f32[H,W] in about [0,1]: random grids of growing resolution, upsampled."""
    out = np.zeros((height, width), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        n = 2 + 3 * 2**o
        grid = rng.random((n, n), dtype=np.float32)
        out += amp * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
    return out / total


def list_photos(folder: str | Path | None) -> list[Path]:
    """Image files (jpg, jpeg, png, bmp) in ``folder``, sorted; [] for None."""
    if folder is None:
        return []
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(
            f"background photo folder {folder} does not exist; pass a folder of images"
        )
    exts = {".jpg", ".jpeg", ".png", ".bmp"}
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts)


def photo_background(rng: np.random.Generator, path: Path, width: int, height: int) -> np.ndarray:
    """A random crop of a photo, resized to f32[H,W,3] RGB in [0,1]."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read background photo {path}")
    h, w = img.shape[:2]
    scale = rng.uniform(0.5, 1.0)
    ch, cw = max(8, int(h * scale)), max(8, int(w * scale))
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = cv2.resize(img[y0 : y0 + ch, x0 : x0 + cw], (width, height))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def procedural_background(
    rng: np.random.Generator, K: np.ndarray, R_cam_level: np.ndarray, cam_height_m: float,
    width: int, height: int,
) -> np.ndarray:  # fmt: skip
    """Ground plane under sky or in front of a wall, seen by the camera: f32[H,W,3] in [0,1].

    R_cam_level: rotation level frame (y down, ground at y = cam_height_m) -> camera frame.
    The geometry is traced at 1/4 resolution and upsampled (a slightly soft background).
    """
    full_wh = (width, height)
    width, height = max(8, width // 4), max(8, height // 4)
    K = np.diag([width / full_wh[0], height / full_wh[1], 1.0]) @ K
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3) @ np.linalg.inv(K).T
    d = rays @ R_cam_level  # level-frame directions (R^T applied to row vectors)
    out = np.empty((len(d), 3), np.float32)
    ground = d[:, 1] > 1e-4
    t = cam_height_m / np.where(ground, d[:, 1], 1.0)
    gx, gz = d[:, 0] * t, d[:, 2] * t
    c0, c1 = _random_colour(rng), _random_colour(rng)
    tile = rng.uniform(0.3, 2.0)
    kind = rng.integers(3)
    if kind == 0:
        pat = (np.floor(gx / tile) + np.floor(gz / tile)) % 2
    elif kind == 1:
        pat = (np.abs((gx / tile) % 1 - 0.5) < 0.45) & (np.abs((gz / tile) % 1 - 0.5) < 0.45)
    else:
        pat = 0.5 + 0.5 * np.sin(gx * 3.1 / tile + 1.7 * np.sin(gz * 1.3 / tile))
    pat = pat.astype(np.float32)
    fade = np.clip(t / 40.0, 0, 1)[:, None].astype(np.float32)
    gcol = (c0 * (1 - pat[:, None]) + c1 * pat[:, None]) * (1 - fade) + (c0 + c1) / 2 * fade
    out[ground] = gcol[ground]
    sky = ~ground
    if rng.random() < 0.5:  # sky: gradient with elevation
        elev = np.clip(-d[sky, 1] / np.linalg.norm(d[sky], axis=1), 0, 1)[:, None]
        top, horizon = np.array([0.25, 0.45, 0.85]), np.array([0.8, 0.85, 0.95])
        out[sky] = horizon * (1 - elev) + top * elev
    else:  # wall with horizontal bands
        w = _random_colour(rng) * 0.5 + 0.4
        band = 0.85 + 0.15 * (np.sin(v.reshape(-1)[sky] * rng.uniform(0.08, 0.8)) > 0)
        out[sky] = w[None] * band[:, None]
    img = cv2.resize(out.reshape(height, width, 3), full_wh, interpolation=cv2.INTER_LINEAR)
    img *= (0.75 + 0.5 * value_noise(rng, *full_wh))[..., None]
    return np.clip(img, 0, 1)
