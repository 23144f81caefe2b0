"""Training losses (method.md section 4): camera consistency, SupCon, supervised SPIN/CLIFF terms.

All functions take torch tensors and return a scalar tensor. Shapes: P persons, R RoIs,
J joints, V vertices. Masked terms over an empty selection return an exact 0 that still belongs
to the autograd graph (so ``total.backward()`` always works).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from multiroi.geometry.cliff import local_to_full

logger = logging.getLogger(__name__)

CC_WEIGHT_XY = 0.1
CC_WEIGHT_DEPTH = 0.0001


def _zero(like: torch.Tensor) -> torch.Tensor:
    """A 0 scalar connected to ``like``'s graph."""
    return like.sum() * 0.0


def _per_person(
    x: torch.Tensor | float | tuple, like: torch.Tensor, item_ndim: int
) -> torch.Tensor:
    """A shared value (item_ndim dims) as is, or a per-person one [P,...] as [P,1,...]."""
    t = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if t.ndim == item_ndim:
        return t
    if t.ndim != item_ndim + 1 or t.shape[0] != like.shape[0]:
        raise ValueError(
            f"expected a shared value with {item_ndim} dims or one per person [P={like.shape[0]}"
            f",...], got shape {tuple(t.shape)}"
        )
    return t[:, None]


def camera_consistency_loss(
    cam_local: torch.Tensor,
    centers: torch.Tensor,
    sizes: torch.Tensor,
    focal: torch.Tensor | float,
    principal: torch.Tensor | tuple[float, float],
) -> torch.Tensor:
    """Paper 3.2: local cameras of one person must agree on the full-image camera.

    cam_local [P,R,3] (s, tx, ty); centers [P,R,2] px; sizes [P,R] px; focal: number or [P] px;
    principal: (px, py) or [P,2] px. For every pair i < j of RoIs of a person:
    0.1 dx^2 + 0.1 dy^2 + 1e-4 ds^2 with dx, dy the difference of full T_x, T_y and
    ds = b_i s_i - b_j s_j; mean over pairs and persons; 0 when R = 1.
    """
    if cam_local.ndim != 3 or cam_local.shape[-1] != 3:
        raise ValueError(f"cam_local must be [P,R,3], got {tuple(cam_local.shape)}")
    num_rois = cam_local.shape[1]
    if num_rois < 2 or cam_local.shape[0] == 0:
        return _zero(cam_local)
    centers = torch.as_tensor(centers, dtype=cam_local.dtype, device=cam_local.device)
    sizes = torch.as_tensor(sizes, dtype=cam_local.dtype, device=cam_local.device)
    f = _per_person(focal, cam_local, item_ndim=0)
    p = _per_person(principal, cam_local, item_ndim=1)
    transl = local_to_full(cam_local, centers, sizes, f, p)  # [P,R,3]
    i, j = torch.triu_indices(num_rois, num_rois, offset=1, device=cam_local.device)
    d_xy = transl[:, i, :2] - transl[:, j, :2]  # [P,pairs,2]
    bs = sizes * cam_local[..., 0]
    d_s = bs[:, i] - bs[:, j]
    per_pair = CC_WEIGHT_XY * (d_xy * d_xy).sum(dim=-1) + CC_WEIGHT_DEPTH * d_s * d_s
    return per_pair.mean()


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, "L_out"), paper 3.3.

    z [N,d] embeddings (L2-normalised here); labels [N] int (person id of each RoI). For anchor
    i the positives are the other samples with its label, the denominator runs over all samples
    but i. Anchors without positives are left out; 0 when no anchor has one. No
    temperature/base_temperature factor.
    """
    if z.ndim != 2 or labels.shape != z.shape[:1]:
        raise ValueError(
            f"expected z [N,d] and labels [N], got {tuple(z.shape)} and {tuple(labels.shape)}"
        )
    n = z.shape[0]
    z = F.normalize(z, dim=-1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    num_pos = positives.sum(dim=1)
    has_pos = num_pos > 0
    if not bool(has_pos.any()):
        return _zero(z)
    pos_log_prob = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    mean_pos = pos_log_prob[has_pos] / num_pos[has_pos].to(z.dtype)
    return -mean_pos.mean()


def keypoint2d_loss(
    pred_kp2d: torch.Tensor, gt_kp2d: torch.Tensor, crop_sizes: torch.Tensor
) -> torch.Tensor:
    """Confidence-weighted MSE of 2D keypoints, normalised by the RoI size.

    pred_kp2d [P,R,J,2]: keypoints projected with each RoI's full camera, full-image px.
    gt_kp2d [P,J,3]: (x, y, conf) px. crop_sizes [P,R] px (window heights b_k). The error is
    2 (pred - gt) / b_k (a crop's height spans 2, as in SPIN's [-1, 1] crop coordinates);
    mean over P, R, J and x/y of conf * err^2.
    """
    if pred_kp2d.ndim != 4 or gt_kp2d.ndim != 3 or gt_kp2d.shape[-1] != 3:
        raise ValueError(
            f"expected pred [P,R,J,2] and gt [P,J,3], got {tuple(pred_kp2d.shape)} and "
            f"{tuple(gt_kp2d.shape)}"
        )
    err = 2.0 * (pred_kp2d - gt_kp2d[:, None, :, :2]) / crop_sizes[..., None, None]
    conf = gt_kp2d[:, None, :, 2:]
    return (conf * err * err).mean()


def _centre(points: torch.Tensor, pelvis: torch.Tensor) -> torch.Tensor:
    return points - pelvis[:, None, :]


def joints3d_loss(
    pred_joints: torch.Tensor, gt_joints: torch.Tensor, pelvis_index: int = 0
) -> torch.Tensor:
    """Confidence-weighted MSE of pelvis-centred 3D joints (metres).

    pred_joints [P,J,3]; gt_joints [P,J,4] (x, y, z, conf). Both are centred on joint
    ``pelvis_index``. Persons whose pelvis has conf 0 contribute nothing.
    """
    if gt_joints.shape[:-1] != pred_joints.shape[:-1] or gt_joints.shape[-1] != 4:
        raise ValueError(
            f"expected pred [P,J,3] and gt [P,J,4], got {tuple(pred_joints.shape)} and "
            f"{tuple(gt_joints.shape)}"
        )
    conf = gt_joints[..., 3:] * (gt_joints[:, pelvis_index, 3] > 0)[:, None, None]
    pred_c = _centre(pred_joints, pred_joints[:, pelvis_index])
    gt_c = _centre(gt_joints[..., :3], gt_joints[:, pelvis_index, :3])
    return (conf * (pred_c - gt_c) ** 2).mean()


def body_frame_joints_loss(
    pred_joints: torch.Tensor,
    pred_root: torch.Tensor,
    gt_joints: torch.Tensor,
    gt_root: torch.Tensor,
    pelvis_index: int = 0,
) -> torch.Tensor:
    """Confidence-weighted MSE of 3D joints in each body's own frame (metres): pelvis-centred
    and turned back by that body's global orientation, so the term sees the articulation only.

    pred_joints [P,J,3], pred_root [P,3,3] (predicted global orientation); gt_joints [P,J,4]
    (x, y, z, conf), gt_root [P,3,3]. Not one of the paper's terms (weight 0 by default): a
    network that cannot tell yet which way a person faces is otherwise pushed by the
    camera-frame joint terms towards a folded compromise pose.
    """
    conf = gt_joints[..., 3:] * (gt_joints[:, pelvis_index, 3] > 0)[:, None, None]
    pred_c = _centre(pred_joints, pred_joints[:, pelvis_index]) @ pred_root  # R^T p, row form
    gt_c = _centre(gt_joints[..., :3], gt_joints[:, pelvis_index, :3]) @ gt_root
    return (conf * (pred_c - gt_c) ** 2).mean()


def _masked_mean(per_person: torch.Tensor, has_smpl: torch.Tensor) -> torch.Tensor:
    mask = has_smpl.to(torch.bool)
    if not bool(mask.any()):
        return _zero(per_person)
    return per_person[mask].mean()


def vertices_loss(
    pred_vertices: torch.Tensor,
    gt_vertices: torch.Tensor,
    has_smpl: torch.Tensor,
    pred_pelvis: torch.Tensor | None = None,
    gt_pelvis: torch.Tensor | None = None,
) -> torch.Tensor:
    """L1 of pelvis-centred vertices [P,V,3] (metres) over persons with has_smpl [P].

    pred_pelvis, gt_pelvis [P,3]: the pelvis joints to centre on (None: used as given, e.g. both
    already root-relative).
    """
    if pred_vertices.shape != gt_vertices.shape:
        raise ValueError(
            f"pred and gt vertices differ: {tuple(pred_vertices.shape)} vs "
            f"{tuple(gt_vertices.shape)}"
        )
    if pred_pelvis is not None:
        pred_vertices = _centre(pred_vertices, pred_pelvis)
    if gt_pelvis is not None:
        gt_vertices = _centre(gt_vertices, gt_pelvis)
    per_person = (pred_vertices - gt_vertices).abs().mean(dim=(1, 2))
    return _masked_mean(per_person, has_smpl)


def pose_loss(
    rotmat: torch.Tensor, gt_rotmat: torch.Tensor, has_smpl: torch.Tensor
) -> torch.Tensor:
    """MSE of joint rotation matrices [P,24,3,3] over persons with has_smpl [P]."""
    if rotmat.shape != gt_rotmat.shape:
        raise ValueError(
            f"rotmat shapes differ: {tuple(rotmat.shape)} vs {tuple(gt_rotmat.shape)}"
        )
    per_person = ((rotmat - gt_rotmat) ** 2).flatten(1).mean(dim=1)
    return _masked_mean(per_person, has_smpl)


def betas_loss(
    betas: torch.Tensor, gt_betas: torch.Tensor, has_smpl: torch.Tensor
) -> torch.Tensor:
    """MSE of shape coefficients [P,10] over persons with has_smpl [P]."""
    if betas.shape != gt_betas.shape:
        raise ValueError(f"betas shapes differ: {tuple(betas.shape)} vs {tuple(gt_betas.shape)}")
    per_person = ((betas - gt_betas) ** 2).mean(dim=1)
    return _masked_mean(per_person, has_smpl)


@dataclass
class LossWeights:
    """Weights of the loss terms (method.md section 4); ``scale`` multiplies the weighted sum.
    kp3d_body (body-frame joints, :func:`body_frame_joints_loss`) is ours, off by default."""

    kp2d: float = 5.0
    kp3d: float = 5.0
    verts: float = 1.0
    pose: float = 1.0
    betas: float = 0.001
    cc: float = 1.0
    con: float = 0.1
    kp3d_body: float = 0.0
    scale: float = 60.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


TERM_NAMES = tuple(f.name for f in fields(LossWeights) if f.name != "scale")


def combine(
    terms: dict[str, torch.Tensor], weights: LossWeights | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss = scale * sum_k weight_k * term_k, plus floats for logging.

    terms: name -> scalar tensor, names from TERM_NAMES (any subset; a term with weight 0 is
    skipped). Returns (total, {name: unweighted value, ..., "total": value}).
    """
    weights = weights or LossWeights()
    unknown = set(terms) - set(TERM_NAMES)
    if unknown:
        raise ValueError(f"unknown loss terms {sorted(unknown)}; expected names in {TERM_NAMES}")
    if not terms:
        raise ValueError("combine() needs at least one loss term")
    total = None
    log: dict[str, float] = {}
    for name, value in terms.items():
        log[name] = float(value.detach())
        w = getattr(weights, name)
        if w == 0:
            continue
        total = w * value if total is None else total + w * value
    if total is None:
        total = _zero(next(iter(terms.values())))
    total = weights.scale * total
    log["total"] = float(total.detach())
    return total, log
