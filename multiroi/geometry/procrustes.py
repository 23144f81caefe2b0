"""Similarity Procrustes alignment (scale, rotation, translation), for metrics only.

Umeyama's closed form: SVD of the 3x3 cross-covariance with the sign of the last singular vector
fixed so the rotation is proper (det +1, never a reflection). Uses SVD, so it stays out of any
exported graph. Torch first; numpy arrays in give numpy arrays out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def similarity_transform(
    src: torch.Tensor, dst: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best similarity mapping src onto dst in least squares: (scale [B], rot [B,3,3], t [B,3]).

    src, dst: [B,N,3] corresponding points. dst ~= scale * src @ rot^T + t, with det(rot) = +1.
    """
    if src.shape != dst.shape or src.ndim != 3 or src.shape[-1] != 3:
        raise ValueError(
            f"src and dst must both have shape [B,N,3], got {tuple(src.shape)} and "
            f"{tuple(dst.shape)}"
        )
    mu_src = src.mean(dim=1, keepdim=True)
    mu_dst = dst.mean(dim=1, keepdim=True)
    x = src - mu_src
    y = dst - mu_dst
    var_src = (x * x).sum(dim=(1, 2))
    cov = y.transpose(1, 2) @ x  # [B,3,3] = sum_n y_n x_n^T
    u, sing, vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u @ vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    d = torch.ones_like(sing)
    d[:, 2] = sign
    rot = u @ torch.diag_embed(d) @ vh
    scale = (sing * d).sum(dim=1) / torch.clamp(var_src, min=torch.finfo(src.dtype).tiny)
    t = mu_dst[:, 0] - scale[:, None] * (mu_src @ rot.transpose(1, 2))[:, 0]
    return scale, rot, t


def _similarity_procrustes_torch(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    scale, rot, t = similarity_transform(src, dst)
    return scale[:, None, None] * (src @ rot.transpose(1, 2)) + t[:, None, :]


def similarity_procrustes(src: Any, dst: Any) -> Any:
    """src [B,N,3] aligned onto dst [B,N,3] by the best similarity transform (same type as src).

    Torch tensors stay torch (differentiable); numpy arrays are computed in float64.
    """
    if isinstance(src, torch.Tensor):
        return _similarity_procrustes_torch(src, torch.as_tensor(dst, dtype=src.dtype))
    src_t = torch.as_tensor(np.asarray(src, dtype=np.float64))
    dst_t = torch.as_tensor(np.asarray(dst, dtype=np.float64))
    return _similarity_procrustes_torch(src_t, dst_t).numpy()
