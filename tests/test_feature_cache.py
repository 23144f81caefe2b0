"""train.feature_cache: features of a frozen backbone computed once, then trained on."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tests.test_trainer import tiny_config
from train import augment as aug
from train.datasets import open_dataset
from train.feature_cache import FeatureDataset, is_feature_cache, write_cache
from train.trainer import Trainer, train


@pytest.fixture(scope="module")
def synth_dir(make_synth):
    return make_synth(4, seed=8, shard_size=2)


@pytest.fixture(scope="module")
def source(synth_dir, toy_body_model_path, tmp_path_factory):
    """A 2-step run whose checkpoint provides the backbone, and its cache (2 draws)."""
    out = tmp_path_factory.mktemp("fc")
    result = train(tiny_config(synth_dir, toy_body_model_path, out / "src", steps=2))
    ckpt = str(result.checkpoint)
    cache = write_cache(str(synth_dir), out / "cache", backbone="mobilenetv3_small_050",
                        num_rois=2, draws=2, init=ckpt, num_workers=0)  # fmt: skip
    return ckpt, cache


def test_cached_features_are_the_backbone_on_the_trainers_draw(synth_dir, source):
    from multiroi.checkpoint import load_checkpoint

    ckpt, cache = source
    assert is_feature_cache(cache) and not is_feature_cache(synth_dir)
    fd = FeatureDataset(cache)
    images = open_dataset(str(synth_dir), 2, aug.AugmentConfig(), 0)
    net, _ = load_checkpoint(ckpt)
    net.eval()
    assert len(fd) == len(images)
    for key in (1, len(fd) + 1):  # the same person in epochs 0 and 1: two draws
        cached, item = fd[key], images[key]
        for name in ("box_info", "kp2d", "rotmat", "transl", "K"):
            assert np.array_equal(cached[name], item[name]), name
        with torch.no_grad():
            ref = net.backbone(torch.from_numpy(item["crops"])).numpy()
        scale = np.abs(ref).max()
        assert np.abs(cached["crops"] - ref).max() < 0.03 * scale  # bf16 / f16 rounding
    assert not np.allclose(fd[1]["crops"], fd[len(fd) + 1]["crops"])  # draws differ


def test_training_from_the_cache_runs_and_matches_the_image_path(
    synth_dir, toy_body_model_path, source, tmp_path
):
    ckpt, cache = source
    cfg = tiny_config(synth_dir, toy_body_model_path, tmp_path / "fromcache", steps=2)
    cfg.data.train, cfg.run.init, cfg.optim.freeze = str(cache), ckpt, "backbone"
    tr = Trainer(cfg)
    batch = next(iter(tr.loader()))
    assert batch.crops.shape[1:] == (2, tr.model.feature_dim)
    images = open_dataset(str(synth_dir), 2, aug.AugmentConfig(), cfg.run.seed)
    crops = torch.from_numpy(np.stack([images[int(k)]["crops"] for k in batch.key]))
    tr.model.eval()
    with torch.no_grad():
        via_features = tr.model(batch.crops, batch.box_info).rotmat
        via_images = tr.model(crops, batch.box_info).rotmat
    assert (via_features - via_images).abs().max() < 0.05  # f16 storage of bf16 features
    tr.run()
    assert (tmp_path / "fromcache" / "last.pt").is_file()


def test_a_cache_of_other_weights_or_without_a_frozen_backbone_is_refused(
    synth_dir, toy_body_model_path, source, tmp_path
):
    ckpt, cache = source
    cfg = tiny_config(synth_dir, toy_body_model_path, tmp_path / "x", steps=1)
    cfg.data.train, cfg.run.init = str(cache), ckpt
    with pytest.raises(ValueError, match="--optim.freeze backbone"):
        Trainer(cfg)
    other = dataclasses.replace(cfg.run, init="scratch")
    cfg2 = dataclasses.replace(cfg, run=other)
    cfg2.optim.freeze = "backbone"
    with pytest.raises(ValueError, match="other backbone weights"):
        Trainer(cfg2)
    cfg3 = tiny_config(synth_dir, toy_body_model_path, tmp_path / "y", steps=1)
    cfg3.data.train, cfg3.run.init, cfg3.optim.freeze = str(cache), ckpt, "backbone"
    cfg3.model.num_rois = 1
    with pytest.raises(ValueError, match="2 RoIs"):
        Trainer(cfg3)
    cfg4 = tiny_config(synth_dir, toy_body_model_path, tmp_path / "z", steps=1)
    cfg4.data.train, cfg4.run.init, cfg4.optim.freeze = str(cache), ckpt, "backbone"
    cfg4.model.box_extent = "amodal"  # the cache was made around the visible parts
    with pytest.raises(ValueError, match="--box-extent amodal"):
        Trainer(cfg4)


def test_an_existing_output_is_not_overwritten(synth_dir, source):
    _, cache = source
    with pytest.raises(FileExistsError):
        write_cache(str(synth_dir), cache, backbone="mobilenetv3_small_050", num_rois=2,
                    draws=1, init="scratch")  # fmt: skip


def test_two_sources_are_joined_each_with_its_own_draws(synth_dir, toy_body_model_path, source,
                                                        tmp_path):  # fmt: skip
    from train.datasets import KeyedConcat

    ckpt, cache = source
    a, b = FeatureDataset(cache), FeatureDataset(cache)
    joined = KeyedConcat([a, b])
    n = a.n
    assert len(joined) == 2 * n
    for epoch in range(3):  # global key epoch * 2n + i: source a/b at its own epoch * n + i
        for i in range(2 * n):
            item = joined[epoch * 2 * n + i]
            want = (a if i < n else b)[epoch * n + i % n]
            assert np.array_equal(item["crops"], want["crops"])
            assert item["key"] == epoch * 2 * n + i
    assert not np.array_equal(joined[0]["crops"], joined[2 * n]["crops"])  # next epoch: draw 1
    cfg = tiny_config(synth_dir, toy_body_model_path, tmp_path / "two", steps=2)
    cfg.data.train, cfg.run.init, cfg.optim.freeze = f"{cache},{cache}", ckpt, "backbone"
    tr = Trainer(cfg)
    assert len(tr.data) == 2 * n
    tr.run()
    mixed = tiny_config(synth_dir, toy_body_model_path, tmp_path / "mixed", steps=1)
    mixed.data.train, mixed.run.init = f"{cache},{synth_dir}", ckpt
    mixed.optim.freeze = "backbone"
    with pytest.raises(ValueError, match="cannot be mixed"):
        Trainer(mixed)
