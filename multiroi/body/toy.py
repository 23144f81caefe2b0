"""A tiny generated body model in SMPL's layout, for tests and examples (a few hundred vertices).

Boxes along the bones of SMPL's 24-joint skeleton in a T-pose (metres, y up, facing +z), rigidly
skinned (each box follows the joint at the start of its bone), an octahedron around every joint so
the joint regressor is exact, and two shape components (height, girth) plus eight small ones.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from multiroi.body.files import EXTRA_NAMES, SMPL_JOINT_NAMES, SMPL_PARENTS, write_body_model

TOY_JOINTS = np.array([
    [0, 0, 0], [.06, -.09, 0], [-.06, -.09, 0], [0, .11, 0], [.10, -.47, 0], [-.10, -.47, 0],
    [0, .24, 0], [.09, -.87, -.04], [-.09, -.87, -.04], [0, .29, 0], [.11, -.93, .08],
    [-.11, -.93, .08], [0, .50, -.02], [.08, .41, -.01], [-.08, .41, -.01], [0, .58, .03],
    [.19, .44, -.02], [-.19, .44, -.02], [.45, .43, -.03], [-.45, .43, -.03], [.70, .44, -.03],
    [-.70, .44, -.03], [.78, .44, -.04], [-.78, .44, -.04],
], np.float32)  # fmt: skip
_BOX_FACES = np.array([
    [0, 1, 2], [0, 2, 3], [4, 6, 5], [4, 7, 6], [0, 4, 5], [0, 5, 1],
    [1, 5, 6], [1, 6, 2], [2, 6, 7], [2, 7, 3], [3, 7, 4], [3, 4, 0],
])  # fmt: skip
_OCTA = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
_OCTA_FACES = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4],
                        [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])  # fmt: skip


def _box(a: np.ndarray, b: np.ndarray, half_width: float) -> np.ndarray:
    """8 vertices of a square prism from a to b: 4 around a, then 4 around b."""
    axis = (b - a) / max(np.linalg.norm(b - a), 1e-6)
    helper = np.array([0, 0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0, 0])
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    ring = np.stack([u + v, u - v, -u - v, -u + v]) * half_width
    return np.concatenate([a + ring, b + ring]).astype(np.float32)


def _bones() -> list[tuple[int, np.ndarray, np.ndarray, float]]:
    """(skinning joint, start, end, half width) for every bone, plus the head."""
    bones = []
    for child, parent in enumerate(SMPL_PARENTS):
        if parent >= 0:
            torso = parent in (0, 3, 6, 9) and child in (3, 6, 9, 12)
            bones.append((parent, TOY_JOINTS[parent], TOY_JOINTS[child], 0.10 if torso else 0.04))
    head = TOY_JOINTS[15]
    bones.append((15, head, head + np.array([0, 0.2, 0], np.float32), 0.08))
    return bones


def _mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    verts, faces, owner = [], [], []
    for j, joint in enumerate(TOY_JOINTS):  # joint octahedra first: vertex 6j..6j+5
        faces.append(_OCTA_FACES + 6 * j)
        verts.append(joint + 0.02 * _OCTA)
        owner += [j] * 6
    base = 6 * len(TOY_JOINTS)
    for joint, a, b, hw in _bones():
        faces.append(_BOX_FACES + base)
        verts.append(_box(a, b, hw))
        owner += [joint] * 8
        base += 8
    v = np.concatenate(verts).astype(np.float32)
    f = np.concatenate(faces).astype(np.int64)
    weights = np.zeros((len(v), 24), np.float32)
    weights[np.arange(len(v)), owner] = 1.0
    jreg = np.zeros((24, len(v)), np.float32)
    for j in range(24):
        jreg[j, 6 * j : 6 * j + 6] = 1.0 / 6.0
    return v, f, weights, jreg


def _extra_ids(v: np.ndarray) -> np.ndarray:
    """Vertex ids for smplx's extra keypoints: the nearest vertex to a plausible spot."""
    j = TOY_JOINTS
    spots = {
        "nose": j[15] + [0, .08, .1], "reye": j[15] + [-.03, .12, .08],
        "leye": j[15] + [.03, .12, .08], "rear": j[15] + [-.08, .1, 0],
        "lear": j[15] + [.08, .1, 0],
        "LBigToe": j[10] + [0, 0, .05], "LSmallToe": j[10] + [.03, 0, .04], "LHeel": j[7],
        "RBigToe": j[11] + [0, 0, .05], "RSmallToe": j[11] + [-.03, 0, .04], "RHeel": j[8],
    }  # fmt: skip
    for side, hand in (("l", j[22]), ("r", j[23])):
        for tip in ("thumb", "index", "middle", "ring", "pinky"):
            spots[side + tip] = hand
    return np.array([np.argmin(np.linalg.norm(v - spots[n], axis=1)) for n in EXTRA_NAMES])


def toy_body_model_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays of the toy model (SMPL layout; see docs/design.md)."""
    v, f, weights, jreg = _mesh()
    rng = np.random.default_rng(seed)
    shapedirs = np.zeros((len(v), 3, 10), np.float32)
    shapedirs[:, 1, 0] = 0.05 * v[:, 1]  # beta 0: height (+5% per unit)
    centre = jreg @ v  # each vertex's girth direction: away from its owner joint's axis
    owner_centre = centre[weights.argmax(1)]
    shapedirs[:, 0, 1] = 0.1 * (v[:, 0] - owner_centre[:, 0])  # beta 1: girth
    shapedirs[:, 2, 1] = 0.1 * (v[:, 2] - owner_centre[:, 2])
    shapedirs[:, :, 2:] = 0.002 * rng.standard_normal((len(v), 3, 8)).astype(np.float32)
    kintree = np.stack([np.array(SMPL_PARENTS), np.arange(24)]).astype(np.int64)
    return {
        "v_template": v, "faces": f, "shapedirs": shapedirs,
        "posedirs": np.zeros((len(v), 3, 207), np.float32), "J_regressor": jreg,
        "weights": weights, "kintree_table": kintree, "joint_names": np.array(SMPL_JOINT_NAMES),
        "extra_names": np.array(EXTRA_NAMES), "extra_vertex_ids": _extra_ids(v),
        "model_id": np.array("toy-v1"), "license": np.array("CC0-1.0 (generated)"),
    }  # fmt: skip


def make_toy_body_model(path: str | os.PathLike) -> Path:
    """Write the toy model to ``path`` (an ``.npz``) and return the path."""
    return write_body_model(path, toy_body_model_arrays())
