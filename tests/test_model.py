"""Tests of multiroi.model: shapes, rotations, mean start, fusion maths, variants, backbones."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from multiroi.model import (
    Backbone,
    BackboneError,
    ExportWrapper,
    ModelConfig,
    MultiRoINet,
    PositionalEncoding,
    default_mean_params,
)
from multiroi.model.fusion import RoIAwareFusionMLP

CROP_HW = (64, 48)  # small crops keep the CPU tests fast; the network is size-agnostic


def make_inputs(p: int, r: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    crops = torch.randn(p, r, 3, *CROP_HW, generator=g)
    box_info = torch.randn(p, r, 3, generator=g) * 0.5
    return crops, box_info


def small_net(**kw) -> MultiRoINet:
    torch.manual_seed(kw.pop("seed", 0))
    cfg = ModelConfig(**{"hidden": 128, "pe_levels": 4, **kw})
    return MultiRoINet(cfg).eval()


@pytest.fixture(scope="module", params=[1, 2, 5])
def net_r(request):
    return small_net(num_rois=request.param)


@pytest.mark.parametrize("p", [1, 3])
def test_output_shapes(net_r, p):
    r = net_r.cfg.num_rois
    with torch.no_grad():
        out = net_r(*make_inputs(p, r))
    d = net_r.feature_dim
    assert d == 512
    assert out.rotmat.shape == (p, 24, 3, 3)
    assert out.betas.shape == (p, 10)
    assert out.cam_local.shape == (p, r, 3)
    assert out.pose6d.shape == (p, 144)
    assert out.features.shape == (p, r, d)
    assert out.fusion_weights.shape == (p, r, r)
    assert out.proj is None  # eval mode
    for t in (out.rotmat, out.betas, out.cam_local, out.features):
        assert torch.isfinite(t).all()


def test_rotmat_orthonormal_det_one():
    net = small_net(num_rois=2)
    with torch.no_grad():
        # large random residual heads so the rotations are far from the mean
        for head in net.residual_heads:
            torch.nn.init.normal_(head.weight, std=0.05)
        rotmat = net(*make_inputs(3, 2)).rotmat
    eye = torch.eye(3).expand_as(rotmat)
    assert (rotmat - eye).abs().max() > 0.1  # not trivially identity
    assert torch.allclose(rotmat @ rotmat.transpose(-1, -2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotmat), torch.ones(3, 24), atol=1e-5)


def _zero_heads(net: MultiRoINet) -> None:
    with torch.no_grad():
        for head in net.residual_heads:
            head.weight.zero_()
            head.bias.zero_()


def test_zero_residual_heads_give_default_mean():
    net = small_net(num_rois=5)
    _zero_heads(net)
    with torch.no_grad():
        out = net(*make_inputs(2, 5))
    expected = torch.eye(3).repeat(2, 24, 1, 1)
    expected[:, 0] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # pi about x
    assert torch.equal(out.rotmat, expected)
    assert torch.equal(out.betas, torch.zeros(2, 10))
    assert torch.equal(out.cam_local, torch.tensor([0.9, 0.0, 0.0]).expand(2, 5, 3))


def test_zero_residual_heads_give_custom_mean():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(24, 3, 3)))
    q = q * np.sign(np.linalg.det(q))[:, None, None]  # proper rotations
    mean = SimpleNamespace(
        pose6d=q[:, :, :2].reshape(24, 6).astype(np.float32),
        betas=rng.normal(size=10).astype(np.float32),
        cam=np.array([1.1, 0.05, -0.02], np.float32),
    )
    torch.manual_seed(0)
    net = MultiRoINet(ModelConfig(num_rois=2, hidden=64, pe_levels=2), mean).eval()
    _zero_heads(net)
    with torch.no_grad():
        out = net(*make_inputs(3, 2))
    np.testing.assert_allclose(out.rotmat.numpy(), np.broadcast_to(q, (3, 24, 3, 3)), atol=1e-5)
    np.testing.assert_array_equal(out.betas.numpy(), np.broadcast_to(mean.betas, (3, 10)))
    np.testing.assert_array_equal(out.cam_local.numpy(), np.broadcast_to(mean.cam, (3, 2, 3)))


def test_bad_mean_params_rejected():
    with pytest.raises(ValueError, match="expected 144"):
        MultiRoINet(
            ModelConfig(hidden=8),
            SimpleNamespace(pose6d=np.zeros(10), betas=np.zeros(10), cam=np.zeros(3)),
        )
    with pytest.raises(TypeError, match="pose6d"):
        MultiRoINet(ModelConfig(hidden=8), {"pose": 1})


def test_positional_encoding_values():
    pe = PositionalEncoding(2)
    x = torch.tensor([[0.25, -0.5, 1.0]])
    y = pe(x)
    assert y.shape == (1, 3 * (1 + 2 * 2))
    expected = [0.25, -0.5, 1.0]
    expected += [math.sin(f * math.pi * v) for v in (0.25, -0.5, 1.0) for f in (1, 2)]
    expected += [math.cos(f * math.pi * v) for v in (0.25, -0.5, 1.0) for f in (1, 2)]
    np.testing.assert_allclose(y[0].numpy(), expected, atol=1e-6)
    assert PositionalEncoding(32).out_dim(3) == 195
    assert torch.equal(PositionalEncoding(0)(x), x)


def test_fusion_none_vs_raf_changes_output():
    raf = small_net(num_rois=3, fusion="raf")
    with torch.no_grad():
        raf.fusion.score.weight.normal_(std=0.1)
    none = small_net(num_rois=3, fusion="none")
    missing, unexpected = none.load_state_dict(raf.state_dict(), strict=False)
    assert missing == [] and all(k.startswith("fusion.") for k in unexpected)
    x = make_inputs(2, 3)
    with torch.no_grad():
        a, b = raf(*x), none(*x)
    assert torch.equal(a.features, b.features)  # same backbone weights
    assert (a.cam_local - b.cam_local).abs().max() > 1e-6
    assert (a.pose6d - b.pose6d).abs().max() > 1e-6


@pytest.mark.parametrize(
    "kw",
    [
        dict(fusion="raf", pos_enc="relative", relative_mode="pe_diff"),
        dict(fusion="raf", pos_enc="relative", relative_mode="diff_pe"),
        dict(fusion="raf", pos_enc="absolute"),
        dict(fusion="raf", pos_enc="none"),
        dict(fusion="raf", pos_enc="relative", pe_levels=0),
        dict(fusion="raf_mlp", pos_enc="relative"),
        dict(fusion="raf_mlp", pos_enc="none"),
        dict(fusion="none"),
    ],
)
def test_fusion_variants_run(kw):
    net = small_net(num_rois=3, **kw)
    with torch.no_grad():
        out = net(*make_inputs(2, 3))
    assert out.cam_local.shape == (2, 3, 3) and torch.isfinite(out.cam_local).all()
    torch.testing.assert_close(out.fusion_weights.sum(-1), torch.ones(2, 3))
    if kw["fusion"] == "raf_mlp":
        assert isinstance(net.fusion, RoIAwareFusionMLP)


def test_default_pe_levels_width():
    net = MultiRoINet(ModelConfig(hidden=16))
    assert net.fusion.score.in_features == 512 + 195  # [f_j ; r_ij], L = 32


def _count_calls(module: torch.nn.Module) -> list[int]:
    seen: list[int] = []
    module.register_forward_hook(lambda m, inp, out: seen.append(int(inp[0].shape[0])))
    return seen


@pytest.mark.parametrize("p,r", [(1, 1), (3, 5), (4, 2)])
def test_backbone_called_once_per_forward(p, r):
    net = small_net(num_rois=r)
    seen = _count_calls(net.backbone)
    with torch.no_grad():
        net(*make_inputs(p, r))
    assert seen == [p * r]


def test_zero_persons_gives_empty_outputs():
    net = small_net(num_rois=5)
    seen = _count_calls(net.backbone)
    out = net(torch.zeros(0, 5, 3, *CROP_HW), torch.zeros(0, 5, 3))
    assert seen == []
    assert out.rotmat.shape == (0, 24, 3, 3) and out.cam_local.shape == (0, 5, 3)
    assert out.betas.shape == (0, 10) and out.features.shape == (0, 5, 512)


@pytest.mark.parametrize(
    "crops_shape,box_shape,match",
    [
        ((2, 3, 3, 64, 48), (2, 3, 3), r"crops must be \[P,5,3"),
        ((2, 5, 1, 64, 48), (2, 5, 3), r"crops must be"),
        ((2, 5, 3, 64, 48), (2, 4, 3), r"box_info must be \[P,5,3\]"),
        ((10, 3, 64, 48), (2, 5, 3), r"crops must be"),
    ],
)
def test_bad_inputs_raise(crops_shape, box_shape, match):
    net = small_net(num_rois=5)
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(crops_shape), torch.zeros(box_shape))


def test_projection_only_in_training():
    net = small_net(num_rois=2, proj_dim=16).train()
    out = net(*make_inputs(3, 2))
    assert out.proj.shape == (3, 2, 16)
    torch.testing.assert_close(out.proj.norm(dim=-1), torch.ones(3, 2))
    off = small_net(num_rois=2, contrastive=False).train()
    assert off.proj_head is None and off(*make_inputs(3, 2)).proj is None


def test_dropout_active_in_train_only():
    net = small_net(num_rois=2)
    x = make_inputs(2, 2)
    with torch.no_grad():
        e1, e2 = net(*x).cam_local, net(*x).cam_local
        net.train()
        t1 = net(*x).cam_local
    assert torch.equal(e1, e2)
    assert not torch.equal(e1, t1)


def test_export_wrapper_returns_three_tensors():
    net = small_net(num_rois=2)
    x = make_inputs(2, 2)
    with torch.no_grad():
        rotmat, betas, cam = ExportWrapper(net)(*x)
        ref = net(*x)
    assert torch.equal(rotmat, ref.rotmat) and torch.equal(cam, ref.cam_local)
    assert torch.equal(betas, ref.betas)


def test_config_round_trip_and_errors():
    cfg = ModelConfig(backbone="resnet50", num_rois=9, fusion="raf_mlp", pe_levels=8)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown model config keys \['bogus'\]"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


@pytest.mark.parametrize(
    "field,value",
    [
        ("num_rois", 6),
        ("num_rois", 0),
        ("fusion", "attention"),
        ("pos_enc", "rel"),
        ("relative_mode", "x"),
        ("pe_levels", -1),
        ("n_iter", 0),
        ("dropout", 1.0),
        ("backbone", ""),
        ("proj_dim", 0),
        ("contrastive", "yes"),
        ("box_extent", "whole"),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=f"ModelConfig.{field}="):
        ModelConfig(**{field: value})


BACKBONES = [
    ("resnet18", 512),
    ("resnet50", 2048),
    ("mobilenetv3_large_100", 1280),
    ("efficientnet_b0", 1280),
    pytest.param("hrnet_w48", 2048, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,dim", BACKBONES)
def test_backbones_build(name, dim):
    net = MultiRoINet(ModelConfig(backbone=name, num_rois=1, hidden=32, pe_levels=1)).eval()
    assert net.feature_dim == dim
    crops = torch.randn(2, 1, 3, 64, 64)  # HRNet needs sides divisible by 32 (256x192 is)
    with torch.no_grad():
        out = net(crops, torch.zeros(2, 1, 3))
    assert out.features.shape == (2, 1, dim) and torch.isfinite(out.cam_local).all()


def test_unknown_backbone_is_clear():
    with pytest.raises(BackboneError, match="unknown timm backbone 'resnet_999'"):
        Backbone("resnet_999")


def test_pretrained_download_failure(monkeypatch, caplog):
    import timm

    real = timm.create_model

    def fake(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("offline: cannot reach huggingface.co")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", fake)
    with pytest.raises(BackboneError, match="could not be loaded .*offline"):
        Backbone("resnet18", pretrained=True)
    with caplog.at_level("WARNING"):
        bb = Backbone("resnet18", pretrained=True, allow_random_init=True)
    assert bb.num_features == 512 and "random init" in caplog.text


def test_default_mean_is_one_definition_and_decodes_to_upright_root():
    """The network's built-in mean and MeanParams.default() are the same numbers, and the 6D
    convention of the mean file decodes (rot6d_to_rotmat) to the rotation it was made from."""
    from multiroi.body import MeanParams
    from multiroi.body.mean_params import ROT_X_PI
    from multiroi.geometry.rotations import rot6d_to_rotmat

    mean = MeanParams.default()
    for a, b in zip(default_mean_params(), (mean.pose6d, mean.betas, mean.cam), strict=True):
        np.testing.assert_array_equal(a, b)
    rot = rot6d_to_rotmat(torch.from_numpy(mean.pose6d)).numpy()
    np.testing.assert_array_equal(rot[0], ROT_X_PI)
    np.testing.assert_array_equal(rot[1:], np.broadcast_to(np.eye(3), (23, 3, 3)))


def test_camera_scale_stays_positive_under_large_residuals():
    from multiroi.model.decoders import CameraDecoder

    dec = CameraDecoder(feat_dim=8, hidden=16, dropout=0.0, n_iter=3)
    torch.nn.init.zeros_(dec.dec_cam.weight)
    torch.nn.init.constant_(dec.dec_cam.bias, -5.0)  # would drive s far below zero if additive
    init = torch.tensor([[0.9, 0.1, -0.2]]).expand(4, 3)
    cam = dec(torch.randn(4, 8), torch.randn(4, 3), init)
    assert (cam[:, 0] > 0).all()
    assert torch.allclose(cam[:, 1:], init[:, 1:] - 15.0, atol=1e-4)  # tx, ty stay additive
