"""Training the keypoint lifter (python -m train.lifter): pose-prior pairs, the landmark map,
the 2D refiner, the scores on held-out persons, and the command's checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_lifter import D, _features  # stand-in BlazePose features

from multiroi.model.lifter import (
    BODY_LANDMARKS,
    LANDMARK_INPUTS,
    LANDMARK_OFFSET,
    KeypointLifter,
    in_crop,
)


def _rendered_from_sampler(sampler, n: int, seed: int):
    """Stand-ins for rendered persons: BlazePose 'sees' the true 2D joints plus noise (the first
    48 landmark coordinates carry them), so a linear landmark map exists."""
    from train.lifter_rendered import Rendered

    uv, j3 = sampler(np.random.default_rng(seed), n)
    noisy = uv + np.random.default_rng(seed + 1).normal(0, 0.01, uv.shape).astype(np.float32)
    inputs = np.zeros((n, LANDMARK_INPUTS), np.float32)
    inputs[:, :48] = noisy.reshape(n, -1)
    inputs[:, 2 * BODY_LANDMARKS : 3 * BODY_LANDMARKS] = 1.0
    inputs[:, -1] = 1.0
    return Rendered(inputs, uv, j3, in_crop(torch.as_tensor(uv)).all(1).numpy())


RANGES = {"yaw_deg": (-60.0, 60.0), "distance_m": (2.0, 6.0), "fov_deg": (40.0, 70.0),
          "tilt_deg": (-10.0, 30.0), "roll_deg": (-5.0, 5.0), "betas_std": 1.0,
          "rot_prob": 0.3, "rot_deg": 30.0}  # fmt: skip


@pytest.fixture(scope="module")
def sampler(toy_body_model):
    from train.lifter_pairs import PairSampler

    return PairSampler(toy_body_model, RANGES, np.zeros((1, 2), np.float32),
                       np.full(1, 0.8, np.float32))  # fmt: skip


@pytest.fixture(scope="module")
def cut_sampler(toy_body_model):
    """Half the boxes hold only the upper body, as around a person cut by the image's bottom."""
    from train.lifter_pairs import PairSampler

    offsets = np.array([[0.0, 0.0], [0.0, 0.35]], np.float32)
    return PairSampler(toy_body_model, RANGES, offsets, np.array([0.8, 1.6], np.float32))


def test_sampled_pairs_lie_in_the_box_and_are_root_relative(sampler):
    uv, j3 = sampler(np.random.default_rng(0), 64)
    assert uv.shape == (64, 24, 2) and j3.shape == (64, 24, 3)
    extent = (uv.max(1) - uv.min(1)).max(1)
    assert np.allclose(extent, 0.8, atol=1e-4)  # the borrowed box placement
    assert np.allclose(j3[:, 0], 0.0)


def test_the_lifter_learns_to_lift(sampler):
    from train.lifter import train_lifter

    rendered = _rendered_from_sampler(sampler, 400, seed=5)
    torch.manual_seed(0)
    scores = train_lifter(KeypointLifter(width=128), rendered, sampler, samples=8000,
                          steps=300, batch=128, lr=2e-3, seed=0, progress=False)  # fmt: skip
    assert scores["map_2d_error_box"] < 0.03  # the landmark map found the joints
    assert scores["pa_mpjpe_mm"] < 0.8 * scores["pa_mpjpe_mean_pose_mm"], scores


def test_the_map_is_fit_on_whole_persons_and_cut_ones_are_scored(cut_sampler):
    """BlazePose's landmarks of persons cut by their box are poor (stand-in: the cut-off joints
    0.3 box heights off): the landmark map leaves them out, the scores count them apart."""
    from train.lifter import train_lifter

    rendered = _rendered_from_sampler(cut_sampler, 600, seed=5)
    assert 0.2 < rendered.whole.mean() < 0.8
    cut = ~in_crop(torch.as_tensor(rendered.joints_2d)).numpy()
    guess = rendered.joints_2d + np.random.default_rng(3).normal(0, 0.3, rendered.joints_2d.shape)
    seen = np.where(cut[..., None], guess, rendered.joints_2d)
    rendered.inputs[:, :48] = seen.reshape(len(seen), -1)
    torch.manual_seed(0)
    scores = train_lifter(KeypointLifter(width=128), rendered, cut_sampler, samples=8000,
                          steps=300, batch=128, lr=2e-3, seed=0, progress=False)  # fmt: skip
    assert scores["map_2d_error_box"] < 0.03  # the guesses did not bend the map
    assert scores["held_out_persons"] < scores["held_out_persons_all"] == 60
    assert scores["pa_mpjpe_mm"] < scores["pa_mpjpe_all_mm"]  # the cut persons are harder


def test_the_landmark_map_is_kept_when_asked(sampler):
    """A network with a tuned 2D tail was trained through its landmark map: fit_map=False
    keeps it (and its errors are what the scores report)."""
    from train.lifter import train_lifter

    rendered = _rendered_from_sampler(sampler, 400, seed=5)
    lifter = KeypointLifter(width=64)
    torch.manual_seed(0)
    lifter.landmark_map.normal_(0, 0.01)
    before = lifter.landmark_map.clone()
    scores = train_lifter(lifter, rendered, sampler, samples=2000, steps=60, batch=64,
                          lr=1e-3, seed=0, progress=False, fit_map=False)  # fmt: skip
    assert torch.equal(lifter.landmark_map, before)
    assert scores["map_2d_error_box"] > 0.1  # the kept (poor) map, not a fitted one


def test_rendered_pairs_teach_what_the_pose_prior_cannot(sampler):
    """--rendered-share: rendered persons whose 3D joints the prior would not give for their 2D
    (stand-in: depth mirrored) are learnt only from their own pairs; the held-out tenth, never
    trained on, shows it."""
    from train.lifter import train_lifter

    rendered = _rendered_from_sampler(sampler, 600, seed=5)
    rendered.joints_3d[..., 2] *= -1.0
    scores = {}
    for share in (0.0, 1.0):
        torch.manual_seed(0)
        scores[share] = train_lifter(KeypointLifter(width=128), rendered, sampler,
                                     samples=4000, steps=300, batch=128, lr=2e-3, seed=0,
                                     progress=False, rendered_share=share)  # fmt: skip
    assert scores[1.0]["pa_mpjpe_all_mm"] < 0.7 * scores[0.0]["pa_mpjpe_all_mm"], scores

    from train.lifter import main

    assert main(["--cache", "none", "--out", "none.pt", "--rendered-share", "1.5"]) == 2


def test_the_refiner_corrects_what_the_landmarks_miss(sampler):
    """Stand-in: for half the persons BlazePose's landmarks swap left and right, which only the
    rest of its feature shows (the feature map); the linear map cannot undo it, the refiner
    does, and the lifter then scores better than with the landmark map alone."""
    from train.lifter import train_lifter
    from train.lifter_rendered import Rendered

    n = 1500
    base = _rendered_from_sampler(sampler, n, seed=5)
    rng = np.random.default_rng(7)
    swapped = rng.random(n) < 0.5
    pairs = [(1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23)]
    order = np.arange(24)
    for a, b in pairs:
        order[a], order[b] = b, a
    seen = base.inputs[:, :48].reshape(n, 24, 2)
    seen = np.where(swapped[:, None, None], seen[:, order], seen)
    inputs = base.inputs.copy()
    inputs[:, :48] = seen.reshape(n, -1)
    feats = np.zeros((n, D), np.float32)
    feats[:, 0] = np.where(swapped, 1.0, -1.0)  # the feature map "sees" the swap
    feats[:, LANDMARK_OFFSET : LANDMARK_OFFSET + 48] = seen.reshape(n, -1)
    rendered = Rendered(inputs, base.joints_2d, base.joints_3d, base.whole,
                        feats.astype(np.float16))  # fmt: skip
    scores = {}
    for refine in (False, True):
        torch.manual_seed(0)
        lifter = KeypointLifter(width=128, refine=refine)
        scores[refine] = train_lifter(lifter, rendered, sampler, samples=8000, steps=300,
                                      batch=128, lr=2e-3, seed=0, progress=False,
                                      refine_steps=600)  # fmt: skip
    plain, refined = scores[False], scores[True]
    assert refined["refined_2d"] and not plain["refined_2d"]
    assert refined["ridge_2d_error_all_box"] == pytest.approx(plain["map_2d_error_all_box"])
    assert refined["map_2d_error_all_box"] < 0.7 * plain["map_2d_error_all_box"], scores
    assert refined["pa_mpjpe_all_mm"] < plain["pa_mpjpe_all_mm"], scores


def _fake_cache(root, sampler, n: int, backbone: str = "blazepose_full", **meta_extra):
    """A feature cache folder (train.feature_cache layout) of stand-in rendered persons."""
    r = _rendered_from_sampler(sampler, n, seed=9)
    centres = np.full((n, 2, 2), 64.0, np.float32)
    sizes = np.full((n, 2), 100.0, np.float32)
    kp2d = np.concatenate([r.joints_2d * 100.0 + 64.0, np.ones((n, 24, 1), np.float32)], -1)
    lm = np.zeros((n, 39, 5), np.float32)
    lm[:, :24, :2] = r.joints_2d + 0.5
    lm[:, :, 3] = 1.0
    feats = np.repeat(_features(lm).numpy()[:, None], 2, axis=1).astype(np.float16)
    (root / "draw_0").mkdir(parents=True)
    np.save(root / "draw_0" / "features.npy", feats)
    kp3d = np.concatenate([r.joints_3d + [0, 0, 4.0], np.ones((n, 24, 1))], -1)
    np.savez(root / "draw_0" / "labels.npz", centers=centres, sizes=sizes, kp2d=kp2d,
             kp3d=kp3d.astype(np.float32), has_smpl=np.ones(n, np.float32))  # fmt: skip
    meta = {"kind": "multiroi-feature-cache", "backbone": backbone, "num_rois": 2, "persons": n,
            "draws": 1, "feature_dim": D, "augment": {"rot_prob": 0.0, "rot_deg": 0.0},
            "source_meta": {"scene": {"yaw_deg": [-60, 60], "distance_m": [2, 6]},
                            "num_images": n // 2, "seed": 7},
            **meta_extra}  # fmt: skip
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_the_command_writes_a_network_with_a_trained_lifter(sampler, toy_body_model_path,
                                                            tmp_path):  # fmt: skip
    from multiroi.checkpoint import load_checkpoint, read_checkpoint_file
    from train.lifter import main

    cache = _fake_cache(tmp_path / "cache", sampler, 300, box_extent="amodal")
    out = tmp_path / "lifter.pt"
    argv = [
        "--cache",
        str(cache),
        "--out",
        str(out),
        "--samples",
        "6000",
        "--steps",
        "200",
        "--batch",
        "128",
        "--refine-steps",
        "200",
        "--body-model",
        str(toy_body_model_path),
        "--no-progress",
    ]
    assert main(argv) == 0
    model, meta = load_checkpoint(out)
    assert model.cfg.lifter and model.cfg.num_rois == 2
    assert model.cfg.box_extent == "amodal"  # the caches' boxes: the network's from now on
    assert model.cfg.lifter_refine and model.lifter.refiner is not None  # the default
    assert torch.count_nonzero(model.lifter.refiner.feat_std - 1.0) > 0  # standardisation set
    assert torch.count_nonzero(model.lifter.landmark_map) > 0
    scores = read_checkpoint_file(out)["extra"]["lifter"]["scores"]
    assert scores["pa_mpjpe_mm"] < scores["pa_mpjpe_mean_pose_mm"]
    # a run started from it keeps the lifter's recipe for its model card
    from train.model_card import _lifter_recipe
    from train.warm_start import earlier_stages

    stage = earlier_stages(read_checkpoint_file(out), out)[-1]
    text = "\n".join(_lifter_recipe(stage["lifter"]))
    assert (
        "6,000 pose-prior pairs, 200 steps" in text and f"{scores['pa_mpjpe_mm']:.1f} mm" in text
    )
    assert f"all {scores['held_out_persons_all']} held-out" in text
    assert "2D joints refined from BlazePose's whole feature (200 steps)" in text
    assert "rendered persons instead of pose-prior pairs" not in text  # --rendered-share 0
    shared = dict(stage["lifter"], recipe=dict(stage["lifter"]["recipe"], rendered_share=0.5))
    assert "- 50% of each batch rendered persons instead of pose-prior pairs" in "\n".join(
        _lifter_recipe(shared))

    # more rendered persons from a base-RoI-only cache: --init's network keeps its 2 RoIs
    one = _fake_cache(tmp_path / "one", sampler, 100, box_extent="amodal", num_rois=1)
    again = tmp_path / "again.pt"
    argv2 = [a if a != str(cache) else f"{cache},{one}" for a in argv]
    # a lifter of another size than --init's starts fresh; the rest of the network is --init's
    assert main([*argv2[:2], "--out", str(again), "--init", str(out), *argv2[4:],
                 "--width", "64", "--blocks", "1"]) == 0  # fmt: skip
    model2, _ = load_checkpoint(again)
    assert model2.cfg.num_rois == 2 and model2.cfg.lifter_refine
    assert (model2.cfg.lifter_width, model2.cfg.lifter_blocks) == (64, 1)
    assert model2.lifter.inp.out_features == 64 and len(model2.lifter.blocks) == 1
    assert torch.equal(model2.mesh_decoder.trunk.fc1.weight, model.mesh_decoder.trunk.fc1.weight)
    scores2 = read_checkpoint_file(again)["extra"]["lifter"]["scores"]
    assert scores2["held_out_persons_all"] == 40  # a tenth of the 400 persons of both caches
    # the card names each cache's persons and the images and seed they were cut from
    text2 = "\n".join(_lifter_recipe(read_checkpoint_file(again)["extra"]["lifter"]))
    assert "2 feature cache(s)" in text2 and "(300 persons, from 150 images, seed 7)" in text2
    assert "an MLP 64 wide with 1 residual blocks" in text2
    assert "an MLP 512 wide with 2 residual blocks" in text  # the default size
    assert "(100 persons, from 50 images, seed 7)" in text2


def test_a_cache_of_another_backbone_is_refused_in_one_line(sampler, tmp_path, caplog):
    from train.lifter import main

    a = _fake_cache(tmp_path / "a", sampler, 10, box_extent="amodal")
    b = _fake_cache(tmp_path / "b", sampler, 10)
    assert main(["--cache", f"{a},{b}", "--out", str(tmp_path / "x.pt")]) == 2
    assert "different person boxes ['amodal', 'visible']" in caplog.text

    cache = _fake_cache(tmp_path / "cache", sampler, 10, backbone="resnet18")
    assert main(["--cache", str(cache), "--out", str(tmp_path / "x.pt")]) == 2
    assert "needs a blazepose_full feature cache" in caplog.text

    # caches of other RoI counts mix only when --init's network sets the count
    two = _fake_cache(tmp_path / "two", sampler, 150)
    one = _fake_cache(tmp_path / "one", sampler, 150, num_rois=1)
    assert main(["--cache", f"{two},{one}", "--out", str(tmp_path / "x.pt")]) == 2
    assert "different RoI counts [1, 2]; give --init" in caplog.text
    assert not (tmp_path / "x.pt").exists()


def test_refiner_training_starts_from_fresh_weights():
    """Weights a warm start brought in (they may have seen the persons now held out) are
    replaced before training: one step at a negligible learning rate ends next to a fresh
    refiner, not next to the warm-started one."""
    from multiroi.model.lifter import Refiner2D
    from train.lifter import train_refiner

    refiner = Refiner2D(in_dim=16, width=8)
    with torch.no_grad():
        for p in refiner.mlp.parameters():
            p.fill_(0.5)  # "warm-started"
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(64, 16)).astype(np.float32)
    res = rng.normal(size=(64, 24, 2)).astype(np.float32)
    train_refiner(refiner, feats, res, steps=1, seed=0, batch=8, lr=1e-9, progress=False)
    last = refiner.mlp[-1]
    assert last.weight.abs().max() < 1e-6 and last.bias.abs().max() < 1e-6  # no correction yet
    first = refiner.mlp[1].weight
    assert (first - 0.5).abs().max() > 0.1 and first.std() > 0.01


def test_the_command_refuses_a_gpu_this_torch_cannot_see(sampler, tmp_path, caplog):
    from train.lifter import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    cache = _fake_cache(tmp_path / "cache", sampler, 10, box_extent="amodal")
    out = tmp_path / "x.pt"
    assert main(["--cache", str(cache), "--out", str(out), "--device", "cuda"]) == 2
    assert "sees no CUDA GPU" in caplog.text and not out.exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_lifter_learns_on_a_gpu_as_on_the_cpu(sampler):
    """train_lifter on CUDA: the same data drawn, a lifter that learns as well, ending on the
    CPU. The refiner's features are noise here: its path runs on the GPU, it is not judged."""
    from train.lifter import train_lifter

    rendered = _rendered_from_sampler(sampler, 400, seed=5)
    scores = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        lifter = KeypointLifter(width=128, refine=True)
        rendered.features = np.random.default_rng(1).normal(size=(400, D)).astype(np.float32)
        scores[device] = train_lifter(lifter, rendered, sampler, samples=8000, steps=300,
                                      batch=128, lr=2e-3, seed=0, progress=False,
                                      refine_steps=100, rendered_share=0.5,
                                      device=device)  # fmt: skip
        assert next(lifter.parameters()).device.type == "cpu"
    assert scores["cuda"]["pa_mpjpe_mm"] < 0.8 * scores["cuda"]["pa_mpjpe_mean_pose_mm"]
    gap = abs(scores["cuda"]["pa_mpjpe_mm"] - scores["cpu"]["pa_mpjpe_mm"])
    assert gap < 0.15 * scores["cpu"]["pa_mpjpe_mm"], scores
