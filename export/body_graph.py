"""The body model as an export-friendly graph (``--with-body-model``).

smplx's layer bakes the batch size into traced constants and indexes its kinematic chain with a
tensor, which the exporters cannot keep dynamic. :class:`LbsGraph` is the same linear blend
skinning (SMPL: shape blend, pose blend, rigid chain, skinning) written with plain matmuls and
a Python-unrolled chain, copied from a loaded :class:`multiroi.body.BodyModel`'s buffers. It
exports with standard ONNX ops (MatMul, Add, Concat, Slice, Reshape) and a dynamic batch.
"""

from __future__ import annotations

import torch
from torch import nn


class LbsGraph(nn.Module):
    """``forward(rotmat f32[B,24,3,3], betas f32[B,10]) -> (vertices f32[B,V,3] m,
    joints f32[B,24,3] m)`` in the body frame (no translation), equal to ``BodyModel``."""

    def __init__(self, body_model: nn.Module) -> None:
        super().__init__()
        layer = body_model.layer
        v_template = layer.v_template.detach().float()
        num_v = v_template.shape[0]
        num_betas = int(body_model.num_betas)
        shapedirs = layer.shapedirs.detach().float()[:, :, :num_betas]
        self.parents = [int(p) for p in layer.parents.tolist()]
        self.num_betas = num_betas
        self.register_buffer("v_template", v_template)  # [V,3]
        self.register_buffer("shapedirs_t", shapedirs.reshape(num_v * 3, num_betas).T.clone())
        self.register_buffer("posedirs", layer.posedirs.detach().float().clone())  # [207,V*3]
        self.register_buffer("j_regressor", layer.J_regressor.detach().float().clone())
        self.register_buffer("weights", layer.lbs_weights.detach().float().clone())  # [V,24]
        self.model_id = str(getattr(body_model, "model_id", "unknown"))

    def forward(
        self, rotmat: torch.Tensor, betas: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, num_v = rotmat.shape[0], self.v_template.shape[0]
        betas = betas[:, : self.num_betas]
        v_shaped = self.v_template + (betas @ self.shapedirs_t).reshape(b, num_v, 3)
        joints = torch.matmul(self.j_regressor, v_shaped)  # [B,24,3]
        eye = torch.eye(3, dtype=rotmat.dtype, device=rotmat.device)
        pose_feature = (rotmat[:, 1:] - eye).reshape(b, 207)
        v_posed = v_shaped + (pose_feature @ self.posedirs).reshape(b, num_v, 3)
        world_rot, world_t = self._chain(rotmat, joints)
        # Skinning transforms relative to the rest pose: x -> R x + (t - R j_rest).
        rel_t = world_t - torch.matmul(world_rot, joints.unsqueeze(-1)).squeeze(-1)
        rot_flat = torch.cat([world_rot.reshape(b, 24, 9), rel_t], dim=2)  # [B,24,12]
        per_vertex = torch.matmul(self.weights, rot_flat)  # [B,V,12]
        rot_v = per_vertex[..., :9].reshape(b, num_v, 3, 3)
        verts = torch.matmul(rot_v, v_posed.unsqueeze(-1)).squeeze(-1) + per_vertex[..., 9:]
        return verts, world_t

    def _chain(
        self, rotmat: torch.Tensor, joints: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """World rotations [B,24,3,3] and posed joint positions [B,24,3] (Python-unrolled)."""
        rots: list[torch.Tensor] = []
        trans: list[torch.Tensor] = []
        for j, parent in enumerate(self.parents):
            if parent < 0:
                rots.append(rotmat[:, j])
                trans.append(joints[:, j])
                continue
            offset = (joints[:, j] - joints[:, parent]).unsqueeze(-1)
            rots.append(torch.matmul(rots[parent], rotmat[:, j]))
            trans.append(torch.matmul(rots[parent], offset).squeeze(-1) + trans[parent])
        return torch.stack(rots, dim=1), torch.stack(trans, dim=1)
