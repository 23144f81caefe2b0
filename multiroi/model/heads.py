"""Contrastive projection head (method.md section 4, training only; dropped for export)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """Linear D->D, BatchNorm1d, ReLU, Linear D->d, then L2 normalisation.

    forward(features f32[N,D]) -> unit vectors f32[N,d]. BatchNorm needs N >= 2 in training.
    """

    def __init__(self, feat_dim: int, proj_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feat_dim, feat_dim),
            nn.BatchNorm1d(feat_dim),
            nn.ReLU(inplace=True),
            nn.Linear(feat_dim, proj_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(features), dim=-1)
