"""Tests of multiroi.checkpoint's storages: fp16, int8 and int8-heads (sizes, what each keeps
exact, what loading refuses)."""

from __future__ import annotations

import pytest
import torch

from multiroi.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from multiroi.model import ModelConfig, MultiRoINet


def test_half_storage_round_trip_and_default_path(tmp_path, monkeypatch):
    from multiroi.checkpoint import ENV_CHECKPOINT, default_checkpoint_path

    cfg = ModelConfig(backbone="resnet18", num_rois=2, pe_levels=2, hidden=32, contrastive=False)
    net = MultiRoINet(cfg).eval()
    full = save_checkpoint(tmp_path / "full.pt", net, cfg, body_model_id="toy-v1")
    half = save_checkpoint(tmp_path / "half.pt", net, cfg, body_model_id="toy-v1", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, _ = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.randn(1, 2, 3, 256, 192)
    box = torch.randn(1, 2, 3) * 0.1
    with torch.no_grad():
        a, b = net(x, box), loaded(x, box)
    assert torch.allclose(a.rotmat, b.rotmat, atol=2e-2)
    monkeypatch.setenv(ENV_CHECKPOINT, str(half))
    assert default_checkpoint_path() == half
    monkeypatch.setenv(ENV_CHECKPOINT, "none")
    assert default_checkpoint_path() is None


def test_int8_storage_is_a_quarter_and_close(tmp_path):
    cfg = ModelConfig(backbone="resnet18", num_rois=2, pe_levels=2, hidden=32, contrastive=False)
    torch.manual_seed(0)
    net = MultiRoINet(cfg).eval()
    full = save_checkpoint(tmp_path / "full.pt", net, cfg, body_model_id="toy-v1")
    q = save_checkpoint(tmp_path / "q.pt", net, cfg, body_model_id="toy-v1", storage="int8")
    assert q.stat().st_size < 0.3 * full.stat().st_size
    loaded, _ = load_checkpoint(q)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    w, wq = net.backbone.state_dict(), loaded.backbone.state_dict()
    k = next(k for k, v in w.items() if v.ndim == 4 and v.numel() > 10000)
    step = w[k].abs().reshape(len(w[k]), -1).amax(1) / 127  # one quantisation step per channel
    assert ((w[k] - wq[k]).abs().reshape(len(w[k]), -1).amax(1) <= 0.5 * step + 1e-7).all()
    x, box = torch.randn(2, 2, 3, 256, 192), torch.randn(2, 2, 3) * 0.1
    with torch.no_grad():
        a, b = net(x, box), loaded(x, box)
    assert torch.allclose(a.rotmat, b.rotmat, atol=5e-2)
    with pytest.raises(ValueError, match="storage"):
        save_checkpoint(tmp_path / "x.pt", net, cfg, body_model_id="toy-v1", storage="int4")


def test_int8_storage_keeps_the_lifters_landmark_map_exact(tmp_path):
    """The landmark map (a ridge regression: rows of very different scales and a constant row)
    is stored in float32 by every storage; the lifter's linear layers are quantised."""
    cfg = ModelConfig(backbone="blazepose_full", num_rois=1, lifter=True, contrastive=False)
    torch.manual_seed(0)
    net = MultiRoINet(cfg).eval()
    scales = torch.logspace(-4, 0, net.lifter.landmark_map.shape[0])[:, None]
    net.lifter.landmark_map.copy_(torch.randn_like(net.lifter.landmark_map) * scales)
    q = save_checkpoint(tmp_path / "q.pt", net, cfg, body_model_id="toy-v1", storage="int8")
    payload = torch.load(q, weights_only=True)
    assert payload["state_dict"]["lifter.landmark_map"].dtype == torch.float32
    assert payload["state_dict"]["lifter.inp.weight"].dtype == torch.int8
    loaded, _ = load_checkpoint(q)
    assert torch.equal(loaded.lifter.landmark_map, net.lifter.landmark_map)


def test_int8_heads_storage_quantises_only_the_linear_layers_outside_the_backbone(tmp_path):
    cfg = ModelConfig(backbone="blazepose_full", num_rois=1, lifter=True, contrastive=False)
    torch.manual_seed(0)
    net = MultiRoINet(cfg).eval()
    half = save_checkpoint(tmp_path / "h.pt", net, cfg, body_model_id="toy-v1", storage="fp16")
    q = save_checkpoint(tmp_path / "q.pt", net, cfg, body_model_id="toy-v1", storage="int8-heads")
    state = torch.load(q, weights_only=True)["state_dict"]
    int8 = {k for k, v in state.items() if v.dtype == torch.int8}
    assert {"lifter.inp.weight", "lifter.blocks.0.fc1.weight"} <= int8
    assert any(k.startswith("mesh_decoder.") for k in int8)
    assert not any(k.startswith("backbone.") for k in int8)  # the convolutions stay fp16
    assert state["lifter.landmark_map"].dtype == torch.float32
    assert q.stat().st_size < 0.9 * half.stat().st_size
    loaded, _ = load_checkpoint(q)
    w, wq = net.lifter.inp.weight, loaded.lifter.inp.weight
    step = w.abs().amax(1, keepdim=True) / 127
    assert ((w - wq).abs() <= 0.5 * step + 1e-7).all()


def test_int8_weights_without_matching_scales_are_refused(tmp_path):
    cfg = ModelConfig(backbone="resnet18", num_rois=2, pe_levels=2, hidden=32, contrastive=False)
    net = MultiRoINet(cfg).eval()
    q = save_checkpoint(tmp_path / "q.pt", net, cfg, body_model_id="toy-v1", storage="int8")
    payload = torch.load(q, weights_only=True)
    key = next(iter(payload["int8_scales"]))
    payload["int8_scales"][key] = torch.ones(3)
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="does not match its scales"):
        load_checkpoint(tmp_path / "bad.pt")
