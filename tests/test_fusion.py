"""RoI-aware fusion (method.md 2.2) against a loop implementation of its formula."""

from __future__ import annotations

import pytest
import torch

from multiroi.model import RoIAwareFusion
from multiroi.model.fusion import NoFusion


def _reference_fusion(mod: RoIAwareFusion, f: torch.Tensor, c: torch.Tensor):
    """Loop implementation of method.md 2.2: a_ij = Linear([f_j ; rel_ij])."""
    p, r, _ = f.shape
    g_roi = torch.zeros_like(f)
    alpha = torch.zeros(p, r, r)
    for b in range(p):
        for i in range(r):
            logits = []
            for j in range(r):
                if mod.pos_enc == "none":
                    rel = torch.zeros(0)
                elif mod.pos_enc == "absolute":
                    rel = mod.pe(c[b, j])
                elif mod.relative_mode == "pe_diff":
                    rel = mod.pe(c[b, i]) - mod.pe(c[b, j])
                else:
                    rel = mod.pe(c[b, i] - c[b, j])
                logits.append(mod.score(torch.cat([f[b, j], rel]))[0])
            a = torch.softmax(torch.stack(logits), 0)
            alpha[b, i] = a
            g_roi[b, i] = (a[:, None] * f[b]).sum(0)
    return g_roi, g_roi.mean(1), alpha


@pytest.mark.parametrize(
    "pos_enc,mode",
    [("relative", "pe_diff"), ("relative", "diff_pe"), ("absolute", "pe_diff"), ("none", "")],
)
def test_fusion_matches_formula_and_weights_sum_to_one(pos_enc, mode):
    torch.manual_seed(3)
    mod = RoIAwareFusion(16, pos_enc, pe_levels=3, relative_mode=mode or "pe_diff")
    with torch.no_grad():
        mod.score.weight.normal_()  # make the weights far from uniform
    f = torch.randn(2, 5, 16)
    c = torch.randn(2, 5, 3) * 0.5
    with torch.no_grad():
        res = mod(f, c)
        ref_roi, ref_shared, ref_alpha = _reference_fusion(mod, f, c)
    assert torch.allclose(res.weights.sum(-1), torch.ones(2, 5), atol=1e-6)
    assert (res.weights >= 0).all()
    assert res.weights.max() > 0.5  # not uniform (1/5), so the check below is meaningful
    torch.testing.assert_close(res.weights, ref_alpha, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.roi_features, ref_roi, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(res.shared, ref_shared, atol=1e-5, rtol=1e-5)
    rows_equal = torch.allclose(res.weights[:, :1].expand_as(res.weights), res.weights)
    # Only PE(c_i - c_j) makes alpha_ij depend on i: with PE(c_i) - PE(c_j) the Linear's
    # w.PE(c_i) term is the same for every j and cancels in the softmax over j.
    assert rows_equal == (mode != "diff_pe")


def test_relative_fusion_weights_follow_box_info():
    torch.manual_seed(0)
    mod = RoIAwareFusion(8, "relative", pe_levels=2)
    f = torch.randn(1, 3, 8)
    c = torch.zeros(1, 3, 3)
    c2 = c.clone()
    c2[0, 2, 0] = 0.7
    with torch.no_grad():
        w1, w2 = mod(f, c).weights, mod(f, c2).weights
    assert (w1 - w2).abs().max() > 1e-4


def test_no_fusion_passes_features_through():
    f = torch.randn(2, 3, 4)
    res = NoFusion()(f, torch.zeros(2, 3, 3))
    assert torch.equal(res.roi_features, f)
    torch.testing.assert_close(res.shared, f.mean(1))
    assert torch.equal(res.weights, torch.eye(3).expand(2, 3, 3))
