"""Training the lifter's own copy of BlazePose's last layers: the tap caches
(train.feature_cache --tap), train.tune2d, and what reads the tuned tail's caches (train.lifter,
the trainer), on the CPU and on a GPU. The subgraph itself: test_lifter_tail.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multiroi.model.blazepose import LIFTER_TAP
from multiroi.model.config import ModelConfig
from multiroi.model.network import MultiRoINet


@pytest.fixture(scope="module")
def lifter_ckpt(tmp_path_factory, toy_body_model):
    """A 1-RoI blazepose network with a lifter whose landmark map reads landmark k as joint k."""
    from multiroi.checkpoint import save_checkpoint
    from multiroi.model.lifter import BODY_LANDMARKS, LANDMARK_INPUTS

    torch.manual_seed(2)
    cfg = ModelConfig(backbone="blazepose_full", num_rois=1, contrastive=False, lifter=True,
                      box_extent="amodal")  # fmt: skip
    net = MultiRoINet(cfg)
    lmap = torch.zeros(LANDMARK_INPUTS, 48)
    for k in range(24):
        lmap[2 * k, 2 * k] = lmap[2 * k + 1, 2 * k + 1] = 1.0
    assert BODY_LANDMARKS >= 24
    net.lifter.landmark_map.copy_(lmap)
    path = tmp_path_factory.mktemp("tail") / "lifter.pt"
    save_checkpoint(path, net, cfg, body_model_id=toy_body_model.model_id)
    return path


@pytest.fixture(scope="module")
def tap_cache(make_synth, lifter_ckpt, tmp_path_factory):
    from train.feature_cache import write_cache

    data = make_synth(6, seed=21, shard_size=3)
    out = tmp_path_factory.mktemp("tapc") / "cache"
    return write_cache(str(data), out, backbone="blazepose_full", num_rois=1, draws=2,
                       init=str(lifter_ckpt), num_workers=0, tap=LIFTER_TAP,
                       box_extent="amodal", min_box_px=8)  # fmt: skip


def test_a_tap_cache_holds_the_base_roi_maps(tap_cache, lifter_ckpt):
    from multiroi.checkpoint import load_checkpoint
    from train.feature_cache import FeatureDataset

    fd = FeatureDataset(tap_cache)
    assert fd.meta["tap"] and not fd.meta["lifter_slot"]
    taps = np.load(tap_cache / "draw_0" / "tap.npy")
    assert taps.shape == (len(fd), 144, 8, 8) and taps.dtype == np.float16
    net, _ = load_checkpoint(lifter_ckpt)
    bb = net.backbone.eval()
    bb.add_lifter_tail()
    with torch.no_grad():
        again = bb.lifter_features(torch.from_numpy(taps[:2].astype(np.float32)))
    cached = torch.from_numpy(np.asarray(fd.draw_features(0)[:2, 0], np.float32))
    assert (again - cached).abs().max() < 0.05 * cached.abs().max()  # bf16 / f16 rounding


def _tune(tap_cache, lifter_ckpt, tmp_path):
    """train.tune2d on the tap cache -> (checkpoint, a 1-RoI cache made with it), checked."""
    from multiroi.checkpoint import load_checkpoint
    from train import tune2d
    from train.feature_cache import FeatureDataset, write_cache

    out = tmp_path / "tail.pt"
    argv = ["--cache", str(tap_cache), "--val", str(tap_cache), "--init", str(lifter_ckpt),
            "--out", str(out), "--steps", "60", "--batch", "16", "--lr", "1e-3",
            "--no-progress"]  # fmt: skip
    assert tune2d.main(argv) == 0
    net, _ = load_checkpoint(out)
    assert net.cfg.lifter_tail
    scores = torch.load(out, weights_only=True)["extra"]["tune2d"]["scores"]
    before, after = scores["val_before"], scores["val_after"]
    assert after["error_2d_all_box"] < 0.8 * before["error_2d_all_box"], scores
    # a cache made with the tuned network carries the tail's features as slot R
    cache = write_cache(str(FeatureDataset(tap_cache).meta["source"]), tmp_path / "slot",
                        backbone="blazepose_full", num_rois=1, draws=1, init=str(out),
                        num_workers=0, box_extent="amodal", min_box_px=8)  # fmt: skip
    fd = FeatureDataset(cache)
    assert fd.meta["lifter_slot"] and fd.draw_features(0).shape[1:] == (2, 1464)
    return out, cache


def test_tune2d_lowers_the_2d_error_and_its_network_caches_the_slot(
    tap_cache, lifter_ckpt, tmp_path
):
    _tune(tap_cache, lifter_ckpt, tmp_path)


@pytest.fixture()
def tuned(tap_cache, lifter_ckpt, tmp_path):
    return _tune(tap_cache, lifter_ckpt, tmp_path)


def test_train_lifter_reads_the_slot_and_refuses_other_caches(
    tuned, tap_cache, lifter_ckpt, tmp_path, monkeypatch, caplog
):
    from train import lifter as tl
    from train import lifter_rendered
    from train.feature_cache import FeatureDataset

    monkeypatch.setattr(lifter_rendered, "MIN_WHOLE", 1)
    ckpt, cache = tuned
    rendered, _ = tl.read_rendered([str(cache)])
    slot = np.asarray(FeatureDataset(cache).draw_features(0)[:, 1], np.float32)
    base = np.asarray(FeatureDataset(cache).draw_features(0)[:, 0], np.float32)
    assert len(rendered.features) == len(slot)
    assert np.allclose(rendered.features.astype(np.float32), slot)
    assert not np.allclose(slot, base, atol=1e-2)  # the tuned tail's features, not RoI 0's
    out = tmp_path / "l.pt"
    # a tail network with a cache of the untuned backbone (no slot), and a network without
    # the tail with the slot cache: both refused, nothing written
    for init, c in ((ckpt, tap_cache), (lifter_ckpt, cache)):
        argv = ["--cache", str(c), "--init", str(init), "--out", str(out), "--no-progress"]
        assert tl.main(argv) == 2
        assert not out.exists()
    assert "tuned 2D tail" in caplog.text
    # the matching pair trains; packaged, the model card tells both stages
    from train.package_default import package

    argv = ["--cache", str(cache), "--init", str(ckpt), "--out", str(out), "--no-progress",
            "--no-refine", "--samples", "2000", "--steps", "60", "--batch", "64"]  # fmt: skip
    assert tl.main(argv) == 0
    net = torch.load(out, weights_only=True)
    assert torch.equal(net["state_dict"]["lifter.landmark_map"],
                       torch.load(ckpt, weights_only=True)["state_dict"]["lifter.landmark_map"])
    from multiroi.checkpoint import load_checkpoint
    from train.model_card import model_card

    pkg = package(out, tmp_path / "pkg.pt")
    card = model_card(pkg, load_checkpoint(pkg)[1])
    assert "`python -m train.tune2d`): 60 steps of 16" in card
    assert ("Keypoint lifter (`python -m train.lifter`): an MLP 512 wide with 2 residual blocks; "
            "2,000 pose-prior pairs") in card
    assert "Rendered persons from 1 feature cache(s)" in card


def test_tune2d_refuses_a_folder_that_is_no_cache(
    tap_cache, lifter_ckpt, tmp_path, caplog
):
    from train import tune2d

    nocache = tmp_path / "x"
    nocache.mkdir()
    assert tune2d.main(["--cache", str(nocache), "--init", str(lifter_ckpt),
                        "--out", str(tmp_path / "o.pt")]) == 2  # fmt: skip
    assert "not a feature cache" in caplog.text
    assert not (tmp_path / "o.pt").exists()


def test_the_trainer_reads_a_slot_cache_like_the_images(tuned, lifter_ckpt, toy_body_model_path,
                                                        tmp_path):  # fmt: skip
    """Decoder stages of a network with a tuned tail train from its caches (slot R)."""
    from tests.test_trainer import tiny_config
    from train.feature_cache import FeatureDataset
    from train.trainer import Trainer

    ckpt, cache = tuned
    source = FeatureDataset(cache).meta["source"]
    cfg = tiny_config(source, toy_body_model_path, tmp_path / "dec", steps=2)
    cfg.data.train, cfg.run.init, cfg.optim.freeze = str(cache), str(ckpt), "backbone,lifter"
    cfg.model.backbone, cfg.model.num_rois, cfg.model.contrastive = "blazepose_full", 1, False
    cfg.model.lifter, cfg.model.lifter_tail, cfg.model.box_extent = True, True, "amodal"
    cfg.data.min_box_px = 8
    tr = Trainer(cfg)
    batch = next(iter(tr.loader()))
    assert batch.crops.shape[1:] == (2, 1464)  # 1 RoI + the tail's slot
    tr.run()
    assert (tmp_path / "dec" / "last.pt").is_file()
    cfg.model.lifter_tail = False  # a network without the tail refuses the slot cache
    cfg.run.init, cfg.run.out_dir = str(lifter_ckpt), str(tmp_path / "dec2")
    with pytest.raises(ValueError, match="lifter tail"):
        Trainer(cfg)


def test_tune2d_moves_a_tuned_tail_to_the_16x16_map(tuned, tap_cache, tmp_path):
    """The t269 tail's network caches t251 maps (and its own slot); tune2d on them gives a
    network whose tail starts at t251, as its caches and its model card say."""
    from multiroi.checkpoint import load_checkpoint
    from train import tune2d
    from train.feature_cache import FeatureDataset, write_cache

    ckpt, _ = tuned
    source = str(FeatureDataset(tap_cache).meta["source"])
    c251 = write_cache(source, tmp_path / "c251", backbone="blazepose_full", num_rois=1,
                       draws=2, init=str(ckpt), num_workers=0, tap="t251",
                       box_extent="amodal", min_box_px=8)  # fmt: skip
    fd = FeatureDataset(c251)
    assert fd.meta["tap"] == "t251" and fd.meta["lifter_slot"]
    maps = np.load(c251 / "draw_0" / "tap.npy")
    assert maps.shape == (len(fd), 88, 16, 16)
    # caches of different layers do not mix
    out = tmp_path / "t251.pt"
    argv = ["--cache", f"{c251},{tap_cache}", "--init", str(ckpt), "--out", str(out),
            "--steps", "20", "--batch", "8", "--no-progress"]  # fmt: skip
    assert tune2d.main(argv) == 2 and not out.exists()
    argv = ["--cache", str(c251), "--val", str(c251), "--init", str(ckpt), "--out", str(out),
            "--steps", "20", "--batch", "8", "--lr", "1e-4", "--no-progress"]  # fmt: skip
    assert tune2d.main(argv) == 0
    net, _ = load_checkpoint(out)
    assert net.cfg.lifter_tap == "t251" and "16x16" in net.cfg.describe()
    scores = torch.load(out, weights_only=True)["extra"]["tune2d"]["scores"]
    # the same persons (same seed and draws) score alike before any step; that the new layers
    # are the trunk's is checked exactly by test_a_tail_moved_to_the_16x16_map_... (here the
    # backbone is random, so layers left unfilled would score alike too)
    before = tune2d.score(load_checkpoint(ckpt)[0], tune2d.read_taps([str(tap_cache)]))
    assert scores["val_before"]["persons"] == before["persons"]
    assert scores["val_before"]["error_2d_all_box"] == pytest.approx(
        before["error_2d_all_box"], rel=0.01)


def test_the_score_of_a_limited_set_reads_evenly_spaced_persons(tuned, tap_cache):
    from multiroi.checkpoint import load_checkpoint
    from train import tune2d

    net = load_checkpoint(tuned[0])[0]
    data = tune2d.read_taps([str(tap_cache)])
    n = len(data.taps)
    assert n >= 4
    full = tune2d.score(net, data, chunk=3)
    assert full["persons"] == n
    assert tune2d.score(net, data, limit=n + 5) == pytest.approx(full, nan_ok=True)  # all
    part = tune2d.score(net, data, limit=2)
    assert part["persons"] == 2
    pick = [0, n - 1]  # the first and the last person
    sub = tune2d.TapSet(data.taps[pick], data.joints_2d[pick], data.whole[pick])
    assert tune2d.score(net, sub) == pytest.approx(part, nan_ok=True)


def test_read_taps_fills_one_array_chunk_by_chunk_in_cache_order(tap_cache):
    import numpy as np

    from train import tune2d
    from train.feature_cache import FeatureDataset
    from train.lifter_rendered import base_roi_joints

    whole = tune2d.read_taps([str(tap_cache)] * 2)  # one chunk per cache
    small = tune2d.read_taps([str(tap_cache)] * 2, chunk=3)  # several chunks per cache
    assert torch.equal(whole.taps, small.taps) and torch.equal(whole.joints_2d, small.joints_2d)
    cache = FeatureDataset(str(tap_cache))
    raw = np.concatenate([  # each draw's kept rows, in order
        np.load(cache.root / f"draw_{d}" / "tap.npy")[base_roi_joints(cache.labels[d])[1]]
        for d in range(cache.draws)])  # fmt: skip
    n = len(raw)
    assert n > 0
    assert len(whole.taps) == 2 * n
    assert np.array_equal(whole.taps[:n].numpy(), raw)
    assert np.array_equal(whole.taps[n:].numpy(), raw)  # then the second cache's


def test_mapped_maps_read_the_same_persons_as_the_maps_in_memory(tap_cache):
    import numpy as np

    from train import tune2d

    mem = tune2d.read_taps([str(tap_cache)] * 2, maps="memory")
    mapped = tune2d.read_taps([str(tap_cache)] * 2, maps="mmap")
    assert isinstance(mapped.taps, tune2d.MappedTaps) and isinstance(mem.taps, torch.Tensor)
    n = len(mem.taps)
    assert len(mapped.taps) == n and mapped.taps.shape == tuple(mem.taps.shape)
    assert torch.equal(mapped.joints_2d, mem.joints_2d) and torch.equal(mapped.whole, mem.whole)
    rng = np.random.default_rng(0)
    for index in (rng.integers(0, n, 17), torch.tensor([n - 1, 0, n // 2, 0, -1]),
                  np.arange(n)[::-1], np.array([], dtype=np.int64)):  # fmt: skip
        assert torch.equal(mapped.taps[index], mem.taps[torch.as_tensor(np.array(index)).long()])
    with pytest.raises(IndexError):
        mapped.taps[[n]]
    for bad in (np.ones(n, bool), np.array([0.5]), 0):
        with pytest.raises(TypeError, match="1-D integer array"):
            mapped.taps[bad]
    with pytest.raises(ValueError, match="auto, memory or mmap"):
        tune2d.read_taps([str(tap_cache)], maps="disk")


def test_mapped_maps_read_only_the_kept_rows_of_uneven_parts():
    import numpy as np

    from train import tune2d

    a = np.arange(5 * 2 * 2 * 2, dtype=np.float16).reshape(5, 2, 2, 2)
    b = -np.arange(6 * 2 * 2 * 2, dtype=np.float16).reshape(6, 2, 2, 2)
    rows_a, rows_b = np.array([1, 3]), np.array([0, 2, 4, 5])
    mapped = tune2d.MappedTaps([(a, rows_a), (b, rows_b)])
    truth = np.concatenate([a[rows_a], b[rows_b]])
    assert mapped.shape == truth.shape and mapped.dtype == truth.dtype
    index = np.array([5, 0, 2, 1, 3, 4, 0, 5])
    assert np.array_equal(mapped[index].numpy(), truth[index])


def test_tune2d_trains_alike_from_mapped_maps(tap_cache, lifter_ckpt, tmp_path):
    from train import tune2d

    outs = {}
    for maps in ("memory", "mmap"):
        outs[maps] = tmp_path / f"{maps}.pt"
        argv = ["--cache", str(tap_cache), "--val", str(tap_cache), "--init", str(lifter_ckpt),
                "--out", str(outs[maps]), "--steps", "3", "--batch", "4", "--maps", maps,
                "--no-progress"]  # fmt: skip
        assert tune2d.main(argv) == 0
    a, b = (torch.load(outs[m], weights_only=True) for m in ("memory", "mmap"))
    assert a["extra"]["tune2d"]["scores"] == b["extra"]["tune2d"]["scores"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k


def test_tune2d_and_the_caches_refuse_a_gpu_this_torch_cannot_see(tap_cache, lifter_ckpt,
                                                                   tmp_path, caplog):  # fmt: skip
    from train import tune2d
    from train.feature_cache import FeatureDataset, write_cache
    from train.runtime import pick_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert pick_device("auto").type == "cpu"
    out = tmp_path / "tail.pt"
    argv = ["--cache", str(tap_cache), "--init", str(lifter_ckpt), "--out", str(out),
            "--steps", "2", "--device", "cuda", "--no-progress"]  # fmt: skip
    assert tune2d.main(argv) == 2 and not out.exists()
    assert "sees no CUDA GPU" in caplog.text and "'cpu' or 'auto'" in caplog.text
    with pytest.raises(ValueError, match="no CUDA GPU"):
        write_cache(str(FeatureDataset(tap_cache).meta["source"]), tmp_path / "c",
                    backbone="blazepose_full", num_rois=1, draws=1, init=str(lifter_ckpt),
                    num_workers=0, device="cuda")  # fmt: skip
    assert not (tmp_path / "c").exists() and not (tmp_path / "c.part").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tap_caches_and_the_2d_tail_on_a_gpu_match_the_cpu(tap_cache, lifter_ckpt, tmp_path):
    """feature_cache and tune2d with --device cuda: the same maps (fp16 there, bf16 or fp32
    here) and a tail that learns as it does on the CPU, written as a CPU checkpoint."""
    from multiroi.checkpoint import load_checkpoint
    from train import tune2d
    from train.feature_cache import FeatureDataset, write_cache

    source = str(FeatureDataset(tap_cache).meta["source"])
    gpu = write_cache(source, tmp_path / "gpu", backbone="blazepose_full", num_rois=1, draws=2,
                      init=str(lifter_ckpt), num_workers=0, tap=LIFTER_TAP,
                      box_extent="amodal", min_box_px=8, device="cuda")  # fmt: skip
    a = np.load(tap_cache / "draw_0" / "tap.npy").astype(np.float32)
    b = np.load(gpu / "draw_0" / "tap.npy").astype(np.float32)
    assert a.shape == b.shape and np.abs(a - b).max() < 0.05 * np.abs(a).max()
    out = tmp_path / "tail.pt"
    argv = ["--cache", str(gpu), "--val", str(tap_cache), "--init", str(lifter_ckpt),
            "--out", str(out), "--steps", "60", "--batch", "16", "--lr", "1e-3",
            "--device", "cuda", "--no-progress"]  # fmt: skip
    assert tune2d.main(argv) == 0
    net, _ = load_checkpoint(out)
    assert next(net.parameters()).device.type == "cpu" and net.cfg.lifter_tail
    scores = torch.load(out, weights_only=True)["extra"]["tune2d"]["scores"]
    assert scores["val_after"]["error_2d_all_box"] < 0.8 * scores["val_before"]["error_2d_all_box"]
