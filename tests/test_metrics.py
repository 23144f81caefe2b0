"""Metrics: known errors in, known millimetres out."""

from __future__ import annotations

import numpy as np
import torch

from multiroi import metrics as M


def _skeleton(rng, n=3, j=24):
    return rng.normal(0, 0.3, (n, j, 3))


def test_mpjpe_is_translation_invariant_and_in_mm():
    rng = np.random.default_rng(0)
    gt = _skeleton(rng)
    pred = gt + [1.0, 2.0, 3.0]  # pure shift: zero after pelvis alignment
    assert np.allclose(M.mpjpe(pred, gt), 0, atol=1e-9)
    pred2 = gt.copy()
    pred2[:, 1:] += [0.01, 0, 0]  # every non-pelvis joint 10 mm off
    assert np.allclose(M.mpjpe(pred2, gt), 10.0 * 23 / 24)


def test_pa_mpjpe_removes_similarity_but_not_shape():
    rng = np.random.default_rng(1)
    gt = _skeleton(rng)
    a = 0.7
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    pred = 1.3 * gt @ R.T + [0.5, 0, 2]
    assert np.allclose(M.pa_mpjpe(pred, gt), 0, atol=1e-6)
    assert M.mpjpe(pred, gt).min() > 50
    noisy = gt + rng.normal(0, 0.02, gt.shape)
    assert 5 < M.pa_mpjpe(noisy, gt).mean() < M.mpjpe(noisy, gt).mean() + 1e-9


def test_pve_translation_depth_disagreement():
    v = torch.zeros(2, 10, 3)
    pel = torch.zeros(2, 3)
    assert np.allclose(M.pve(v + torch.tensor([0.002, 0, 0]), v, pel, pel), 2.0)
    t_gt = np.array([[0, 0, 5.0], [1, 0, 3.0]])
    t_pred = t_gt + [[0.03, 0.04, 0], [0, 0, -0.1]]
    assert np.allclose(M.translation_error(t_pred, t_gt), [50, 100])
    assert np.allclose(M.depth_error(t_pred, t_gt), [0, 100])
    rois = np.array([[[0, 0, 5.0], [0, 0, 5.2]]])
    assert np.allclose(M.roi_disagreement(rois), 100.0)


def test_metrics_reject_bad_shapes():
    import pytest

    with pytest.raises(ValueError, match=r"\[P,N,3\]"):
        M.mpjpe(np.zeros((2, 24, 3)), np.zeros((2, 23, 3)))
