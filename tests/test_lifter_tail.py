"""The lifter's own copy of BlazePose's last layers (ModelConfig.lifter_tail): the subgraph and
the network paths that read it. Its feature caches and its training: test_tune2d.py."""

from __future__ import annotations

import pytest
import torch

from multiroi.model.blazepose import LIFTER_TAP, LIFTER_TAPS, BlazePoseBackbone
from multiroi.model.config import ModelConfig
from multiroi.model.network import MultiRoINet
from multiroi.model.tflite_graph import TFLiteGraphError


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    bb = BlazePoseBackbone().eval()  # random weights: the graph is what is tested
    bb.add_lifter_tail()
    return bb


def test_the_tail_continues_the_graph_from_the_tap(backbone):
    x = torch.randn(3, 3, 256, 192)
    with torch.no_grad():
        plain = backbone(x)
        features, tap = backbone.forward_with_tap(x)
        again = backbone.lifter_features(tap)
    assert tap.shape == (3, 144, 8, 8)
    assert torch.equal(plain, features)
    assert torch.allclose(again, plain, atol=1e-5)  # a copy of the same weights
    assert sum(p.numel() for p in backbone.lifter_tail.parameters()) == 1_698_648


def test_the_tail_is_a_copy_that_trains_apart(backbone):
    bb = BlazePoseBackbone().eval()
    bb.add_lifter_tail()
    name = next(iter(bb.lifter_tail.convs))
    with torch.no_grad():
        bb.lifter_tail.convs[name].weight.add_(1.0)
    assert not torch.equal(bb.lifter_tail.convs[name].weight, bb.graph.convs[name].weight)
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        f, tap = bb.forward_with_tap(x)
        assert not torch.allclose(bb.lifter_features(tap), f, atol=1e-3)


def test_a_tail_from_the_16x16_map_continues_the_graph_too(backbone):
    bb = BlazePoseBackbone().eval()
    bb.add_lifter_tail("t251")
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        plain = bb(x)
        features, tap = bb.forward_with_tap(x)  # the map where this tail starts
        again = bb.lifter_features(tap)
        _, (m251, m269) = bb.forward_with_taps(x, ("t251", "t269"))
    assert tap.shape == (2, *LIFTER_TAPS["t251"]) and torch.equal(tap, m251)
    assert m269.shape == (2, *LIFTER_TAPS["t269"])
    assert torch.equal(plain, features)
    assert torch.allclose(again, plain, atol=1e-5)
    assert sum(p.numel() for p in bb.lifter_tail.parameters()) == 2_652_456
    bb.add_lifter_tail("t226")  # one stride-2 stage earlier still: the 32x32 map
    with torch.no_grad():
        _, m226 = bb.forward_with_tap(x)
        assert m226.shape == (2, *LIFTER_TAPS["t226"])
        assert torch.allclose(bb.lifter_features(m226), plain, atol=1e-5)
    with pytest.raises(ValueError, match="t269"):
        bb.add_lifter_tail("t300")


def test_the_configs_taps_are_the_backbones():
    from multiroi.model.config import LIFTER_TAP_NAMES

    assert set(LIFTER_TAP_NAMES) == set(LIFTER_TAPS) and LIFTER_TAP in LIFTER_TAPS
    cfg = dict(backbone="blazepose_full", lifter=True, lifter_tail=True)
    assert ModelConfig(**cfg).lifter_tap == LIFTER_TAP  # and so every older checkpoint's
    assert "from the 16x16 map" in ModelConfig(**cfg, lifter_tap="t251").describe()
    assert "from the 32x32 map" in ModelConfig(**cfg, lifter_tap="t226").describe()
    with pytest.raises(ValueError, match="lifter_tap"):
        ModelConfig(**cfg, lifter_tap="t300")


def test_a_tail_moved_to_the_16x16_map_starts_as_the_tuned_one(tmp_path):
    """train.tune2d from a network whose tail starts at t269, on t251 maps: the new tail keeps
    the tuned layers and takes the trunk's for the rest, so it starts where the old one was."""
    from multiroi.checkpoint import read_checkpoint_file, save_checkpoint
    from train.tune2d import fill_tail
    from train.warm_start import warm_start

    torch.manual_seed(3)
    base = dict(backbone="blazepose_full", num_rois=1, contrastive=False, lifter=True,
                lifter_tail=True)  # fmt: skip
    old = MultiRoINet(ModelConfig(**base)).eval()
    with torch.no_grad():  # "tuned": the old tail no longer equals the shared layers
        for conv in old.backbone.lifter_tail.convs.values():
            conv.weight.mul_(1.05)
    save_checkpoint(tmp_path / "old.pt", old, old.cfg, body_model_id="toy")
    payload = read_checkpoint_file(tmp_path / "old.pt")
    new = MultiRoINet(ModelConfig(**base, lifter_tap="t251")).eval()
    warm_start(payload, tmp_path / "old.pt", new)
    filled = fill_tail(new, payload["state_dict"])
    assert filled and all(name <= "t269" for name in filled)  # t252 ... t268: the trunk's
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        _, m269 = old.backbone.forward_with_tap(x)
        _, m251 = new.backbone.forward_with_tap(x)
        a, b = old.backbone.lifter_features(m269), new.backbone.lifter_features(m251)
    assert m251.shape[1:] == LIFTER_TAPS["t251"]
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, new.backbone(x), atol=1e-3)  # the tuned layers, not MediaPipe's


def test_a_subgraph_must_start_where_nothing_earlier_is_read(backbone):
    with pytest.raises(TFLiteGraphError, match="no op"):
        backbone.graph.subgraph("t9999")
    # t300 is read by a later max pool and t301's conv: starting at t301 misses t300
    with pytest.raises(TFLiteGraphError, match="also reads"):
        backbone.graph.subgraph("t301")
    with pytest.raises(TFLiteGraphError, match="writes"):
        backbone.graph(torch.randn(1, 3, 256, 256), taps=("t9999",))
    assert LIFTER_TAP in {op["output"] for op in backbone.graph.spec["ops"]}


def _nets(**kw):
    """A network with the lifter tail and one without, with the same weights."""
    torch.manual_seed(1)
    base = dict(backbone="blazepose_full", num_rois=2, contrastive=False, lifter=True, **kw)
    plain = MultiRoINet(ModelConfig(**base)).eval()
    plain.lifter.landmark_map.normal_()
    tailed = MultiRoINet(ModelConfig(**base, lifter_tail=True)).eval()
    missing, unexpected = tailed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("backbone.lifter_tail.") for k in missing)
    tailed.backbone.add_lifter_tail()
    return plain, tailed


@pytest.mark.parametrize("flip_test", [False, True])
def test_an_untrained_tail_gives_the_network_without_it(flip_test):
    plain, tailed = _nets(flip_test=flip_test)
    lifted = []
    tailed.lifter.register_forward_hook(lambda m, i, o: lifted.append(o))
    plain.lifter.register_forward_hook(lambda m, i, o: lifted.append(o))
    crops, info = torch.randn(2, 2, 3, 256, 192), torch.randn(2, 2, 3) * 0.3
    with torch.no_grad():
        a, b = plain(crops, info), tailed(crops, info)
        assert torch.allclose(a.rotmat, b.rotmat, atol=1e-4)
        assert torch.allclose(lifted[0], lifted[1], atol=1e-4)
        # a changed tail changes what the lifter reads, not the cameras
        tailed.backbone.lifter_tail.convs["t336"].bias.add_(10.0)  # landmarks 0.04 box heights off
        c = tailed(crops, info)
    assert not torch.allclose(lifted[0], lifted[2], atol=1e-3)
    assert torch.allclose(a.cam_local, c.cam_local, atol=1e-5)


def test_cached_features_carry_the_tails_slot():
    plain, tailed = _nets()
    crops, info = torch.randn(2, 2, 3, 256, 192), torch.randn(2, 2, 3) * 0.3
    with torch.no_grad():
        feats, taps = tailed.backbone.forward_with_tap(crops.flatten(0, 1))
        slot = tailed.backbone.lifter_features(taps.reshape(2, 2, 144, 8, 8)[:, 0])
        cached = torch.cat([feats.reshape(2, 2, -1), slot[:, None]], dim=1)
        assert torch.allclose(tailed(cached, info).rotmat, tailed(crops, info).rotmat, atol=1e-4)
    with pytest.raises(ValueError, match=r"features \[P,3,1464\]"):
        tailed(feats.reshape(2, 2, -1), info)  # without the slot


def test_the_tail_needs_the_lifter():
    with pytest.raises(ValueError, match="lifter_tail"):
        ModelConfig(backbone="blazepose_full", lifter_tail=True).validate()
    assert "tuned 2D tail" in ModelConfig(backbone="blazepose_full", lifter=True,
                                          lifter_tail=True).describe()  # fmt: skip


# ---- caches and training ---------------------------------------------------------------------
