"""ModelConfig.downsample (the backbone sees average-pooled crops, the interface stays 256x192)
and ModelConfig.pool="spatial" (features that keep a 4x3 grid): shapes, checkpoints treat them
as architecture, and the ONNX graph matches PyTorch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from export.onnx_export import OnnxExportConfig, dummy_inputs, export_onnx
from multiroi.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from multiroi.model import ModelConfig, MultiRoINet

TINY = dict(backbone="mobilenetv3_small_050", num_rois=2, hidden=32, pe_levels=2, proj_dim=8)


def net(**kw) -> MultiRoINet:
    torch.manual_seed(0)
    return MultiRoINet(ModelConfig(**{**TINY, **kw})).eval()


def test_backbone_sees_pooled_crops_and_outputs_keep_their_shapes():
    a, b = net(downsample=1), net(downsample=2)
    seen: list[tuple[int, ...]] = []
    b.backbone.model.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    crops, info = torch.randn(3, 2, 3, 256, 192), torch.randn(3, 2, 3) * 0.3
    with torch.no_grad():
        out = b(crops, info)
        # same weights (same seed): the pooled network equals the plain one on pooled crops
        ref = a.backbone.model(F.avg_pool2d(crops.flatten(0, 1), 2))
    assert seen == [(6, 3, 128, 96)]
    assert out.rotmat.shape == (3, 24, 3, 3) and out.cam_local.shape == (3, 2, 3)
    assert torch.allclose(out.features.flatten(0, 1), ref, atol=1e-6)
    assert "1/2 resolution" in b.cfg.describe() and "resolution" not in a.cfg.describe()


@pytest.mark.parametrize("value", [0, 3, 2.0, True])
def test_bad_downsample_is_refused(value):
    with pytest.raises(ValueError, match="ModelConfig.downsample="):
        ModelConfig(downsample=value)


@pytest.mark.parametrize("downsample,hw", [(1, (256, 192)), (2, (256, 192)), (1, (100, 70))])
def test_spatial_pooling_keeps_a_4x3_grid(downsample, hw):
    model = net(pool="spatial", downsample=downsample)
    assert model.feature_dim == 64 * 12 and "spatial pooling" in model.cfg.describe()
    crops = torch.randn(1, 2, 3, *hw, generator=torch.Generator().manual_seed(1))
    bb = model.backbone
    with torch.no_grad():
        feats = model(crops, torch.zeros(1, 2, 3)).features.reshape(2, 64, 4, 3)
        x = F.avg_pool2d(crops[0], downsample) if downsample > 1 else crops[0]
        fmap = bb.reduce(bb.model.forward_features(x))  # [2,64,h,w]
    h, w = fmap.shape[-2:]
    for row, col in [(0, 0), (3, 2), (1, 2)]:  # each cell is the mean of its own block
        r0, r1 = row * h // 4, (row + 1) * h // 4
        c0, c1 = col * w // 3, (col + 1) * w // 3
        block = fmap[:, :, r0:r1, c0:c1].mean(dim=(-2, -1))
        assert torch.allclose(feats[:, :, row, col], block, atol=1e-5)
    assert not torch.allclose(feats[:, :, 0], feats[:, :, 3])  # rows differ: no global pooling
    with pytest.raises(ValueError, match="ModelConfig.pool="):
        ModelConfig(pool="max")


def test_checkpoint_keeps_downsample_and_treats_it_as_architecture(tmp_path: Path):
    cfg = ModelConfig(**TINY, downsample=2)
    path = save_checkpoint(tmp_path / "d2.pt", net(downsample=2), cfg, body_model_id="toy")
    model, meta = load_checkpoint(path)
    assert model.cfg.downsample == 2 and model.backbone.downsample == 2
    with pytest.raises(CheckpointError, match="expected downsample=1 but it has downsample=2"):
        load_checkpoint(path, expected_config=ModelConfig(**TINY))


@pytest.mark.parametrize("pool", ["avg", "spatial"])
def test_onnx_graph_of_a_downsampling_network_matches_torch(tmp_path: Path, pool: str):
    import onnxruntime as ort

    model = net(downsample=2, pool=pool)
    result = export_onnx(
        model, tmp_path / "d2.onnx", OnnxExportConfig(num_rois=2), body_model_id="toy"
    )  # fmt: skip (verifies itself against torch too)
    crops, info = dummy_inputs(2, 3, seed=3)
    sess = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    rotmat, betas, cam = sess.run(None, {"crops": crops.numpy(), "box_info": info.numpy()})
    with torch.no_grad():
        ref = model(crops, info)
    assert abs(rotmat - ref.rotmat.numpy()).max() < 1e-4
    assert abs(cam - ref.cam_local.numpy()).max() < 1e-4
