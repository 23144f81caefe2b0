"""The body model behind one interface: rotation matrices and betas in, vertices and joints out.

smplx's SMPL layer does the work, fed from a validated ``.npz`` (never a pickle), so the free
default model and a converted official SMPL file run through the same code.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from multiroi.body.files import EXTRA_NAMES, SMPL_JOINT_NAMES, BodyModelData, read_body_model
from multiroi.body.keypoints import keypoint_indices


@dataclass
class BodyOutput:
    """vertices f32[B,V,3] m, joints f32[B,24,3] m (SMPL order), extra f32[B,K,3] m (vertex
    keypoints in ``BodyModel.extra_names`` order); all in the frame of the input rotations, plus
    ``transl``."""

    vertices: torch.Tensor
    joints: torch.Tensor
    extra: torch.Tensor


class BodyModel(nn.Module):
    """SMPL-layout body model. ``forward(rotmat[B,24,3,3], betas[B,<=S], transl[B,3]|None)``."""

    def __init__(self, data: BodyModelData) -> None:
        super().__init__()
        import smplx  # imported here: only the body model needs it

        dummy_ids = {name: 0 for name in EXTRA_NAMES}
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning for 10 betas
            self.layer = smplx.SMPLLayer(
                model_path=str(data.path), data_struct=data, num_betas=10, vertex_ids=dummy_ids
            )
        self.model_id = data.model_id
        self.license = data.license
        self.num_betas = int(self.layer.num_betas)
        self.faces = data.faces.astype(np.int64)
        self.joint_names = SMPL_JOINT_NAMES
        self.extra_names = tuple(n for n in EXTRA_NAMES if n in data.extra_vertex_ids)
        ids = [data.extra_vertex_ids[n] for n in self.extra_names]
        self.register_buffer("extra_ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        # joints are linear in betas before posing: J = J_template + J_dirs . betas, so the
        # joints alone need neither the vertices nor the pose blend shapes (``joints()``)
        reg = self.layer.J_regressor
        self.register_buffer("joint_template", reg @ self.layer.v_template, persistent=False)
        j_dirs = torch.einsum("jv,vkl->jkl", reg, self.layer.shapedirs)
        self.register_buffer("joint_dirs", j_dirs, persistent=False)

    @property
    def num_vertices(self) -> int:
        return int(self.layer.v_template.shape[0])

    def _betas(self, betas: torch.Tensor | None, b: int, like: torch.Tensor) -> torch.Tensor:
        if betas is None:
            betas = like.new_zeros((b, self.num_betas))
        if betas.shape[-1] < self.num_betas:
            betas = torch.nn.functional.pad(betas, (0, self.num_betas - betas.shape[-1]))
        return betas[:, : self.num_betas].to(self.layer.shapedirs.dtype)

    @staticmethod
    def _check_rotmat(rotmat: torch.Tensor) -> None:
        if rotmat.ndim != 4 or rotmat.shape[1:] != (24, 3, 3):
            raise ValueError(f"rotmat must be [B,24,3,3], got {list(rotmat.shape)}")

    def joints(
        self,
        rotmat: torch.Tensor,
        betas: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The 24 posed joints f32[B,24,3] m of ``forward`` without the mesh: forward kinematics
        of the shaped rest joints only (training losses on joints need nothing else; 13x
        cheaper than ``forward`` with its backward pass for 32 bodies of the free model)."""
        from smplx.lbs import batch_rigid_transform

        self._check_rotmat(rotmat)
        dtype = self.layer.shapedirs.dtype
        betas = self._betas(betas, rotmat.shape[0], rotmat)
        rest = self.joint_template + torch.einsum("bl,jkl->bjk", betas, self.joint_dirs)
        posed, _ = batch_rigid_transform(rotmat.to(dtype), rest, self.layer.parents, dtype=dtype)
        return posed if transl is None else posed + transl.to(dtype)[:, None]

    def forward(
        self,
        rotmat: torch.Tensor,
        betas: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
    ) -> BodyOutput:
        """rotmat [B,24,3,3] (joint 0 = global orientation), betas [B,<=10], transl [B,3] m."""
        self._check_rotmat(rotmat)
        dtype = self.layer.shapedirs.dtype
        out = self.layer(
            betas=self._betas(betas, rotmat.shape[0], rotmat),
            global_orient=rotmat[:, :1].to(dtype),
            body_pose=rotmat[:, 1:].to(dtype),
            transl=None if transl is None else transl.to(dtype),
        )
        verts = out.vertices
        extra = verts.index_select(1, self.extra_ids)
        return BodyOutput(vertices=verts, joints=out.joints[:, :24], extra=extra)

    def keypoints(self, out: BodyOutput, name: str = "coco17") -> torch.Tensor:
        """``[B,17|25,3]`` keypoints of the set ``coco17`` or ``openpose25``."""
        if len(self.extra_names) != len(EXTRA_NAMES):
            raise ValueError(
                f"body model {self.model_id} has no vertex ids for {name} keypoints; "
                "rebuild or reconvert it with extra_vertex_ids"
            )
        allpts = torch.cat([out.joints, out.extra], dim=1)
        return allpts[:, list(keypoint_indices(name))]


def load_body_model(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> BodyModel:
    """Load a body model: explicit path > ``$MULTIROI_BODY_MODEL`` > the free default model."""
    return BodyModel(read_body_model(path)).to(device).eval()
