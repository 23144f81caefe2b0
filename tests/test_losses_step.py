"""One training step's losses: the joint terms go through the joints-only body path, the mesh is
built only for the vertex term, and both paths give the same joint terms."""

from __future__ import annotations

import numpy as np
import torch

from multiroi.geometry.rotations import axis_angle_to_rotmat
from multiroi.losses import LossWeights
from multiroi.model.network import NetOutput
from train.datasets import Batch
from train.losses_step import compute_losses
from train.visualize import mesh_grid


class CountingBody(torch.nn.Module):
    """Wraps a body model and counts full (mesh) and joints-only evaluations."""

    def __init__(self, body) -> None:
        super().__init__()
        self.body, self.faces = body, body.faces
        self.full = self.alone = 0

    def forward(self, *args, **kwargs):
        self.full += 1
        return self.body(*args, **kwargs)

    def joints(self, *args, **kwargs):
        self.alone += 1
        return self.body.joints(*args, **kwargs)


def _batch_and_output(body, p: int = 3, r: int = 2) -> tuple[Batch, NetOutput]:
    g = torch.Generator().manual_seed(1)
    rot = axis_angle_to_rotmat(0.4 * torch.randn(p, 24, 3, generator=g))
    betas = torch.randn(p, 10, generator=g)
    transl = torch.tensor([[0.1, 0.2, 4.0]]).repeat(p, 1)
    joints = body(rot, betas, transl).joints
    K = torch.tensor([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]).repeat(p, 1, 1)
    kp = joints @ K[0].T
    kp2d = torch.cat([kp[..., :2] / kp[..., 2:], torch.ones(p, 24, 1)], -1)
    batch = Batch(
        crops=torch.zeros(p, r, 3, 256, 192), box_info=torch.zeros(p, r, 3),
        centers=torch.tensor([320.0, 240.0]).repeat(p, r, 1), sizes=torch.full((p, r), 200.0),
        K=K, kp2d=kp2d, kp3d=torch.cat([joints - transl[:, None], torch.ones(p, 24, 1)], -1),
        rotmat=rot, betas=betas, transl=transl, has_smpl=torch.ones(p),
        has_transl=torch.ones(p), key=torch.arange(p),
    )  # fmt: skip
    pred_rot = axis_angle_to_rotmat(0.4 * torch.randn(p, 24, 3, generator=g)).requires_grad_(True)
    cam = torch.tensor([0.9, 0.0, 0.1]).repeat(p, r, 1).requires_grad_(True)
    out = NetOutput(rotmat=pred_rot, betas=torch.zeros(p, 10), cam_local=cam,
                    pose6d=torch.zeros(p, 144), features=torch.zeros(p, r, 8), proj=None,
                    fusion_weights=torch.full((p, r, r), 1.0 / r))  # fmt: skip
    return batch, out


def test_mesh_only_for_the_vertex_term_and_same_joint_terms(toy_body_model):
    body = CountingBody(toy_body_model)
    batch, out = _batch_and_output(toy_body_model)
    joint_terms = LossWeights(verts=0.0, con=0.0, kp3d_body=1.0)
    cheap = compute_losses(out, batch, body, joint_terms)
    assert (body.full, body.alone) == (0, 1)
    assert cheap.logs["kp3d"] > 0 and cheap.logs["kp2d"] > 0 and cheap.logs["kp3d_body"] > 0
    cheap.total.backward()
    assert out.rotmat.grad is not None and out.rotmat.grad.abs().sum() > 0

    with_mesh = compute_losses(out, batch, body, LossWeights(verts=1.0, con=0.0, kp3d_body=1.0))
    assert (body.full, body.alone) == (2, 1)  # predicted and ground-truth meshes
    assert with_mesh.logs["verts"] > 0
    for k in ("kp2d", "kp3d", "kp3d_body", "pose", "cc"):
        assert np.isclose(cheap.logs[k], with_mesh.logs[k], rtol=1e-4, atol=1e-7), k


def test_mesh_grid_builds_the_mesh_it_draws(toy_body_model):
    batch, out = _batch_and_output(toy_body_model, p=2, r=1)
    step = compute_losses(out, batch, toy_body_model, LossWeights(verts=0.0, con=0.0))
    grid = mesh_grid(batch, step, toy_body_model)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 256, 2 * 192, 3)
    assert grid[256:].std() > 0  # the meshes were drawn over the (blank) crops
