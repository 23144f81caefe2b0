"""HMR/SPIN-style iterative regressors (method.md section 2.3).

Each decoder: x = [feature ; box info ; current estimate] -> FC(hidden) -> dropout -> FC(hidden)
-> dropout -> residual heads (xavier gain 0.01) added to the estimate, ``n_iter`` times from the
mean parameters. As in SPIN/CLIFF there is no activation between the two FC layers.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_JOINTS = 24
POSE6D_DIM = NUM_JOINTS * 6
NUM_BETAS = 10
CAM_DIM = 3
BOX_INFO_DIM = 3
MAX_LOG_SCALE = 6.0  # s in [e^-6, e^6]: persons from ~1/400 to ~400 crop sizes


class _Trunk(nn.Module):
    """fc1 -> dropout -> fc2 -> dropout."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.fc1(x))))


def _residual_head(hidden: int, out_dim: int) -> nn.Linear:
    head = nn.Linear(hidden, out_dim)
    nn.init.xavier_uniform_(head.weight, gain=0.01)
    nn.init.zeros_(head.bias)
    return head


class CameraDecoder(nn.Module):
    """Per-RoI local camera, weights shared across RoIs (run on P*R rows at once).

    forward(roi_features g_i f32[N,D], box_info f32[N,3], init_cam f32[N,3]) -> cam f32[N,3]
    (weak-perspective s, tx, ty of each RoI crop).

    The residuals are added to (log s, tx, ty), so the scale stays positive (a negative s would
    put the person behind the camera, and the full-camera depth 2f/(b s) has no useful gradient
    there); with zero residuals the output is exactly ``init_cam``.
    """

    def __init__(
        self, feat_dim: int, hidden: int = 1024, dropout: float = 0.5, n_iter: int = 3
    ) -> None:
        super().__init__()
        self.n_iter = int(n_iter)
        self.trunk = _Trunk(feat_dim + BOX_INFO_DIM + CAM_DIM, hidden, dropout)
        self.dec_cam = _residual_head(hidden, CAM_DIM)

    @property
    def residual_heads(self) -> list[nn.Linear]:
        return [self.dec_cam]

    def forward(
        self, roi_features: torch.Tensor, box_info: torch.Tensor, init_cam: torch.Tensor
    ) -> torch.Tensor:
        cam = init_cam
        log_s = torch.log(init_cam[..., :1].clamp_min(1e-6))
        for _ in range(self.n_iter):
            x = self.trunk(torch.cat([roi_features, box_info, cam], dim=-1))
            delta = self.dec_cam(x)
            log_s = (log_s + delta[..., :1]).clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE)
            cam = torch.cat([torch.exp(log_s), cam[..., 1:] + delta[..., 1:]], dim=-1)
        return cam


class MeshDecoder(nn.Module):
    """Shared mesh: [g ; c_0_info ; pose6d ; betas (; extra)] -> pose6d f32[P,144],
    betas f32[P,10].

    forward(shared g f32[P,D], box_info_0 f32[P,3], init_pose6d f32[P,144], init_betas f32[P,10],
    extra f32[P,extra_dim] or None). ``extra`` (the keypoint lifter's joints) comes last, so a
    decoder trained without it is widened by zero columns without changing its output.
    """

    def __init__(
        self,
        feat_dim: int,
        hidden: int = 1024,
        dropout: float = 0.5,
        n_iter: int = 3,
        extra_dim: int = 0,
    ) -> None:
        super().__init__()
        self.n_iter = int(n_iter)
        self.extra_dim = int(extra_dim)
        in_dim = feat_dim + BOX_INFO_DIM + POSE6D_DIM + NUM_BETAS + self.extra_dim
        self.trunk = _Trunk(in_dim, hidden, dropout)
        self.dec_pose = _residual_head(hidden, POSE6D_DIM)
        self.dec_shape = _residual_head(hidden, NUM_BETAS)

    @property
    def residual_heads(self) -> list[nn.Linear]:
        return [self.dec_pose, self.dec_shape]

    def forward(
        self,
        shared: torch.Tensor,
        box_info_0: torch.Tensor,
        init_pose6d: torch.Tensor,
        init_betas: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pose6d, betas = init_pose6d, init_betas
        tail = [] if extra is None else [extra]
        if (extra is None) != (self.extra_dim == 0):
            raise ValueError(f"MeshDecoder built with extra_dim={self.extra_dim} expects "
                             f"{'an' if self.extra_dim else 'no'} extra input")  # fmt: skip
        for _ in range(self.n_iter):
            x = self.trunk(torch.cat([shared, box_info_0, pose6d, betas, *tail], dim=-1))
            pose6d = pose6d + self.dec_pose(x)
            betas = betas + self.dec_shape(x)
        return pose6d, betas
