"""Body-model files: where they are, what they must hold, and how they are read (no pickle).

A body-model file is a plain ``.npz`` in SMPL's layout (see docs/design.md):
``v_template f32[V,3]``, ``faces i64[F,3]``, ``shapedirs f32[V,3,S]`` (S >= 10),
``posedirs f32[V,3,207]``,
``J_regressor f32[24,V]``, ``weights f32[V,24]``, ``kintree_table i64[2,24]`` plus ``joint_names``,
``extra_names``/``extra_vertex_ids``, ``model_id`` and ``license``.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "MULTIROI_BODY_MODEL"
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "body"
DEFAULT_MODEL = ASSET_DIR / "anny_smpl.npz"
NUM_JOINTS = 24

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)


def _flip_permutation() -> tuple[int, ...]:
    swap = {"left": "right", "right": "left"}
    out = []
    for n in SMPL_JOINT_NAMES:
        side = n.split("_")[0]
        mate = n.replace(side, swap[side], 1) if side in swap else n
        out.append(SMPL_JOINT_NAMES.index(mate))
    return tuple(out)


# joint j of the mirrored body is joint FLIP_PERM[j] of the body (left and right swapped)
FLIP_PERM = _flip_permutation()

# smplx's VertexJointSelector order for the extra keypoints taken from vertices.
EXTRA_NAMES = (
    "nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe",
    "RSmallToe", "RHeel", "lthumb", "lindex", "lmiddle", "lring", "lpinky", "rthumb", "rindex",
    "rmiddle", "rring", "rpinky",
)  # fmt: skip
REQUIRED_KEYS = (
    "v_template", "faces", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table",
)  # fmt: skip


class BodyModelError(ValueError):
    """A body-model file is missing or malformed; the message names the file and the fix."""


@dataclass(frozen=True)
class BodyModelData:
    """The arrays of one body model, validated. V vertices, F faces, S shape components."""

    v_template: np.ndarray  # f32[V,3] m
    faces: np.ndarray  # i64[F,3]
    shapedirs: np.ndarray  # f32[V,3,S]
    posedirs: np.ndarray  # f32[V,3,207]
    J_regressor: np.ndarray  # f32[24,V]
    weights: np.ndarray  # f32[V,24]
    kintree_table: np.ndarray  # i64[2,24]
    extra_vertex_ids: dict[str, int]
    model_id: str
    license: str
    path: Path

    @property
    def f(self) -> np.ndarray:  # smplx's data_struct name for the faces
        return self.faces

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])


def resolve_body_model_path(path: str | os.PathLike | None = None) -> Path:
    """Explicit path > ``$MULTIROI_BODY_MODEL`` > the shipped free model."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_MODEL


def _fail(path: Path, what: str) -> BodyModelError:
    return BodyModelError(
        f"body model {path}: {what}. Give a body-model .npz in SMPL layout (see docs/design.md); "
        "convert an official SMPL .pkl with `python -m multiroi.body.convert_smpl`, or unset "
        f"{ENV_VAR} to use the free default model."
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise _fail(path, "file not found")
    if path.suffix == ".pkl":
        raise _fail(path, "is a pickle, which is never loaded directly (it can run code)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise _fail(path, f"not a readable .npz ({type(exc).__name__}: {exc})") from None


def _check_shapes(path: Path, d: dict[str, np.ndarray]) -> None:
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise _fail(path, f"missing keys {missing}")
    v = d["v_template"]
    if v.ndim != 2 or v.shape[1] != 3:
        raise _fail(path, f"v_template has shape {v.shape}, expected [V,3]")
    n = v.shape[0]
    expect = {
        "faces": (None, 3), "shapedirs": (n, 3, None), "posedirs": (n, 3, 207),
        "J_regressor": (NUM_JOINTS, n), "weights": (n, NUM_JOINTS),
        "kintree_table": (2, NUM_JOINTS),
    }  # fmt: skip
    for key, shape in expect.items():
        got = d[key].shape
        if len(got) != len(shape) or any(
            s is not None and s != g for s, g in zip(shape, got, strict=True)
        ):
            want = "[" + ",".join("*" if s is None else str(s) for s in shape) + "]"
            raise _fail(path, f"{key} has shape {list(got)}, expected {want} (V={n})")
    if d["shapedirs"].shape[2] < 10:
        raise _fail(path, f"shapedirs has {d['shapedirs'].shape[2]} components, expected >= 10")
    faces = d["faces"]
    if faces.size and (faces.min() < 0 or faces.max() >= n):
        raise _fail(path, f"faces index vertices outside 0..{n - 1}")
    for key in ("v_template", "shapedirs", "J_regressor", "weights"):
        if not np.isfinite(d[key]).all():
            raise _fail(path, f"{key} holds NaN or inf")


def _model_id(path: Path, d: dict[str, np.ndarray]) -> str:
    if "model_id" in d:
        return str(d["model_id"])
    digest = hashlib.sha1(np.ascontiguousarray(d["v_template"], np.float32).tobytes()).hexdigest()
    return f"{path.stem}-{digest[:8]}"


def _extra_ids(path: Path, d: dict[str, np.ndarray]) -> dict[str, int]:
    if "extra_vertex_ids" not in d:
        return {}
    names = [str(s) for s in d.get("extra_names", EXTRA_NAMES)]
    ids = d["extra_vertex_ids"].astype(np.int64)
    if len(names) != len(ids):
        raise _fail(path, f"{len(names)} extra_names but {len(ids)} extra_vertex_ids")
    if ids.size and (ids.min() < 0 or ids.max() >= d["v_template"].shape[0]):
        raise _fail(path, "extra_vertex_ids index vertices outside the mesh")
    return dict(zip(names, ids.tolist(), strict=True))


def read_body_model(path: str | os.PathLike | None = None) -> BodyModelData:
    """Read and validate a body-model ``.npz``; one clear ``BodyModelError`` when it is wrong."""
    p = resolve_body_model_path(path)
    if p == DEFAULT_MODEL and not p.is_file():
        raise BodyModelError(
            f"the free default body model {p} is missing from this install; rebuild it with "
            "`python -m multiroi.body.build_free_model` or set "
            f"{ENV_VAR} to a body-model .npz"
        )
    d = _read_npz(p)
    _check_shapes(p, d)
    return BodyModelData(
        v_template=d["v_template"].astype(np.float32),
        faces=d["faces"].astype(np.int64),
        shapedirs=d["shapedirs"].astype(np.float32),
        posedirs=d["posedirs"].astype(np.float32),
        J_regressor=d["J_regressor"].astype(np.float32),
        weights=d["weights"].astype(np.float32),
        kintree_table=d["kintree_table"].astype(np.int64),
        extra_vertex_ids=_extra_ids(p, d),
        model_id=_model_id(p, d),
        license=str(d["license"]) if "license" in d else "unknown",
        path=p,
    )


def write_body_model(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write a body-model ``.npz`` atomically (temporary file, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, p)
    return p
