"""One training step's forward pass: network -> body model -> the paper's loss terms."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from multiroi import losses as L
from multiroi.geometry.cliff import local_to_full, project_points
from train.datasets import Batch

CC_MIN_SCALE = 0.1  # floor on the weak-perspective scale s inside the consistency term
SCALE_FLOOR = 0.2  # s below this (a person more than ~10x farther than its box says) is penalised


@dataclass
class StepOutput:
    """total: the scalar to backpropagate; logs: unweighted terms and total (floats);
    transl_roi: f32[P,R,3] full translations of every RoI (m); pred_rotmat f32[P,24,3,3] and
    pred_betas f32[P,S] (detached; the mesh is built only where it is drawn)."""

    total: torch.Tensor
    logs: dict[str, float]
    transl_roi: torch.Tensor
    pred_rotmat: torch.Tensor
    pred_betas: torch.Tensor


def focal_principal(K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean focal f32[P] px and principal point f32[P,2] px of intrinsics K f32[P,3,3]."""
    return 0.5 * (K[:, 0, 0] + K[:, 1, 1]), K[:, :2, 2]


def full_translations(cam_local: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Full-image translation f32[P,R,3] m of every RoI's local camera (method.md 3)."""
    f, p = focal_principal(batch.K)
    return local_to_full(cam_local, batch.centers, batch.sizes, f[:, None], p[:, None, :])


def compute_losses(net_out, batch: Batch, body, weights: L.LossWeights) -> StepOutput:
    """All loss terms with a non-zero weight (method.md 4), combined with ``weights``."""
    rotmat, betas = net_out.rotmat.float(), net_out.betas.float()
    cam = net_out.cam_local.float()
    # the mesh only for the vertex term; every other term needs the joints alone (much cheaper)
    pred = body(rotmat, betas) if weights.verts else None
    pred_joints = pred.joints if pred is not None else body.joints(rotmat, betas)
    transl = full_translations(cam, batch)
    terms: dict[str, torch.Tensor] = {}
    if weights.kp2d:
        pts = pred_joints[:, None] + transl[:, :, None]  # [P,R,24,3]
        kp = project_points(pts, batch.K[:, None])
        terms["kp2d"] = L.keypoint2d_loss(kp, batch.kp2d, batch.sizes)
    if weights.kp3d:
        terms["kp3d"] = L.joints3d_loss(pred_joints, batch.kp3d)
    if weights.kp3d_body:
        terms["kp3d_body"] = L.body_frame_joints_loss(pred_joints, rotmat[:, 0], batch.kp3d,
                                                      batch.rotmat[:, 0])  # fmt: skip
    if weights.verts:
        with torch.no_grad():
            gt = body(batch.rotmat, batch.betas)
        terms["verts"] = L.vertices_loss(pred.vertices, gt.vertices, batch.has_smpl,
                                         pred.joints[:, 0], gt.joints[:, 0])  # fmt: skip
    if weights.pose:
        terms["pose"] = L.pose_loss(rotmat, batch.rotmat, batch.has_smpl)
    if weights.betas:
        terms["betas"] = L.betas_loss(betas, batch.betas, batch.has_smpl)
    if weights.cc and cam.shape[1] > 1:
        f, p = focal_principal(batch.K)
        # T_xy grows as 1/s: a collapsing scale (an unlucky early step) would blow the term up
        # to 1e11, so the scale is floored here; the 2D term still pulls s back up.
        cam_cc = torch.cat([cam[..., :1].clamp(min=CC_MIN_SCALE), cam[..., 1:]], dim=-1)
        terms["cc"] = L.camera_consistency_loss(cam_cc, batch.centers, batch.sizes, f, p)
    if weights.con and net_out.proj is not None and len(batch) > 1:
        r = net_out.proj.shape[1]
        labels = torch.arange(len(batch), device=cam.device).repeat_interleave(r)
        terms["con"] = L.supcon_loss(net_out.proj.float().flatten(0, 1), labels)
    total, logs = L.combine(terms, weights)
    # local_to_full clamps s > 0, which leaves no gradient for a negative s: a hinge pulls it back
    floor = torch.relu(SCALE_FLOOR - cam[..., 0]).pow(2).mean()
    logs["s_floor"] = float(floor.detach())
    total = total + weights.scale * floor
    return StepOutput(total, logs, transl.detach(), rotmat.detach(), betas.detach())
