"""One training step's losses: the joint terms go through the joints-only body path, the mesh is
built only for the vertex term, and both paths give the same joint terms."""

from __future__ import annotations

import numpy as np
import torch

from multiroi.geometry.rotations import axis_angle_to_rotmat
from multiroi.losses import LossWeights
from multiroi.model.network import NetOutput
from train.bench_step import synthetic_batch
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
    batch = synthetic_batch(body, p, r, seed=1)
    g = torch.Generator().manual_seed(2)
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
    assert (grid[256:] != grid[:256]).mean() > 0.05  # the meshes were drawn over the crops
