"""RoI-aware feature fusion (method.md section 2.2), batched over persons, ONNX-exportable.

Notation: P persons, R RoIs, D feature width, E = 3 (1 + 2L) positional-encoding width.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn


class FusionResult(NamedTuple):
    """roi_features g_i f32[P,R,D]; shared g f32[P,D]; weights alpha_ij f32[P,R,R]
    (row i sums to 1 over j)."""

    roi_features: torch.Tensor
    shared: torch.Tensor
    weights: torch.Tensor


class PositionalEncoding(nn.Module):
    """NeRF encoding of each number: x f32[...,K] -> f32[...,K (1 + 2L)].

    Layout: [x (K), sin(2^l pi x) for l=0..L-1 (K*L, grouped per number), cos(...) (K*L)].
    L = 0 returns x unchanged.
    """

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = int(levels)
        freqs = (2.0 ** torch.arange(self.levels, dtype=torch.float64)) * math.pi
        self.register_buffer("freqs", freqs.to(torch.float32), persistent=False)

    def out_dim(self, in_dim: int) -> int:
        return in_dim * (1 + 2 * self.levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.levels == 0:
            return x
        xf = x.unsqueeze(-1) * self.freqs  # [...,K,L]
        xf = xf.reshape(*x.shape[:-1], x.shape[-1] * self.levels)  # [...,K*L]
        return torch.cat([x, torch.sin(xf), torch.cos(xf)], dim=-1)


class NoFusion(nn.Module):
    """fusion="none": g_i = f_i, g = mean_i f_i, weights = identity."""

    def forward(self, features: torch.Tensor, box_info: torch.Tensor) -> FusionResult:
        r = features.shape[1]
        eye = torch.eye(r, dtype=features.dtype, device=features.device)
        weights = eye.unsqueeze(0).expand(features.shape[0], -1, -1)
        return FusionResult(features, features.mean(dim=1), weights)


class RoIAwareFusion(nn.Module):
    """RAF: a_ij = Linear([f_j ; rel_ij]) -> scalar, alpha_ij = softmax_j a_ij,
    g_i = sum_j alpha_ij f_j, g = mean_i g_i.

    pos_enc: "relative" rel_ij = PE(c_i) - PE(c_j) (relative_mode="pe_diff", the paper) or
      PE(c_i - c_j) ("diff_pe", the authors' code); "absolute" rel_ij = PE(c_j);
      "none" nothing (a_ij = Linear(f_j)). With "absolute"/"none" every row i has the same
      weights, as in the paper's ablation. Note: with "pe_diff" the term w.PE(c_i) is the same
      for every j and cancels in the softmax over j, so the rows are equal too (the weights
      reduce to the "absolute" form with negated PE weights); only "diff_pe" (or the
      "raf_mlp" fusion) gives RoI-specific weights alpha_ij that depend on i.
    The Linear is applied to the two parts separately (weights split at D), which equals the
    Linear of the concatenation without materialising [P,R,R,D+E].
    """

    def __init__(
        self,
        feat_dim: int,
        pos_enc: str = "relative",
        pe_levels: int = 32,
        relative_mode: str = "pe_diff",
    ) -> None:
        super().__init__()
        self.feat_dim = int(feat_dim)
        self.pos_enc = pos_enc
        self.relative_mode = relative_mode
        self.pe = PositionalEncoding(pe_levels)
        rel_dim = 0 if pos_enc == "none" else self.pe.out_dim(3)
        self.score = nn.Linear(self.feat_dim + rel_dim, 1)

    def relation(self, box_info: torch.Tensor) -> torch.Tensor | None:
        """box_info f32[P,R,3] -> relation f32[P,R,R,E] ("relative"), f32[P,1,R,E]
        ("absolute") or None ("none")."""
        if self.pos_enc == "none":
            return None
        if self.pos_enc == "absolute":
            return self.pe(box_info).unsqueeze(1)
        if self.relative_mode == "pe_diff":
            pe = self.pe(box_info)
            return pe.unsqueeze(2) - pe.unsqueeze(1)
        return self.pe(box_info.unsqueeze(2) - box_info.unsqueeze(1))

    def logits(self, features: torch.Tensor, box_info: torch.Tensor) -> torch.Tensor:
        """a_ij f32[P,R,R] (row i = the RoI being fused, column j = the RoI contributing)."""
        w = self.score.weight[0]  # [D+E]
        a = (features @ w[: self.feat_dim]).unsqueeze(1)  # [P,1,R] depends on j only
        rel = self.relation(box_info)
        if rel is not None:
            a = a + rel @ w[self.feat_dim :]  # [P,R,R] or [P,1,R]
        a = a + self.score.bias[0]
        return a.expand(-1, features.shape[1], -1)

    def forward(self, features: torch.Tensor, box_info: torch.Tensor) -> FusionResult:
        weights = torch.softmax(self.logits(features, box_info), dim=-1)
        roi_features = weights @ features  # [P,R,D]
        return FusionResult(roi_features, roi_features.mean(dim=1), weights)


class RoIAwareFusionMLP(RoIAwareFusion):
    """fusion="raf_mlp", the authors' variant: e_ij = Linear([f_j ; rel_ij]) -> 256, then for
    row i the R embeddings are concatenated and a tanh MLP (256, 256, R, tanh) gives R logits.
    Needs a fixed R (num_rois)."""

    def __init__(
        self,
        feat_dim: int,
        num_rois: int,
        pos_enc: str = "relative",
        pe_levels: int = 32,
        relative_mode: str = "pe_diff",
        embed_dim: int = 256,
    ) -> None:
        super().__init__(feat_dim, pos_enc, pe_levels, relative_mode)
        rel_dim = self.score.in_features - self.feat_dim
        del self.score
        self.num_rois = int(num_rois)
        self.embed = nn.Linear(self.feat_dim + rel_dim, embed_dim)
        self.attention = nn.Sequential(
            nn.Linear(embed_dim * self.num_rois, embed_dim),
            nn.Tanh(),
            nn.Linear(embed_dim, embed_dim),
            nn.Tanh(),
            nn.Linear(embed_dim, self.num_rois),
            nn.Tanh(),
        )

    def logits(self, features: torch.Tensor, box_info: torch.Tensor) -> torch.Tensor:
        w = self.embed.weight  # [256, D+E]
        e = (features @ w[:, : self.feat_dim].t()).unsqueeze(1)  # [P,1,R,256]
        rel = self.relation(box_info)
        if rel is not None:
            e = e + rel @ w[:, self.feat_dim :].t()
        e = (e + self.embed.bias).expand(-1, features.shape[1], -1, -1)  # [P,R,R,256]
        p, r = features.shape[0], features.shape[1]
        return self.attention(e.reshape(p, r, r * e.shape[-1]))  # [P,R,R]


def build_fusion(
    kind: str, feat_dim: int, num_rois: int, pos_enc: str, pe_levels: int, relative_mode: str
) -> nn.Module:
    """Fusion module for ModelConfig.fusion ("raf", "none", "raf_mlp")."""
    if kind == "none":
        return NoFusion()
    if kind == "raf":
        return RoIAwareFusion(feat_dim, pos_enc, pe_levels, relative_mode)
    if kind == "raf_mlp":
        return RoIAwareFusionMLP(feat_dim, num_rois, pos_enc, pe_levels, relative_mode)
    raise ValueError(f"unknown fusion {kind!r}; expected 'raf', 'none' or 'raf_mlp'")
