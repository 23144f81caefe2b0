"""The fit of each body's global orientation and translation to its 2D joints
(multiroi.geometry.fit2d), the 2D joints the network and its exports give for it, and its place
in the live pipeline and the evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from multiroi.geometry.fit2d import Fit2DConfig, crop_weights, fit_people, fit_to_2d

F, PP = 800.0, np.array([320.0, 240.0])


def _skeleton(n: int, seed: int = 0) -> np.ndarray:
    """n bodies' joints f64[n,24,3] m (no translation): a spread-out 3D point set per body."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(24, 3)) * np.array([0.25, 0.5, 0.15])
    base[0] = [0.0, 0.0, 0.0]
    return np.stack([base + rng.normal(size=(24, 3)) * 0.02 for _ in range(n)])


def _project(pts: np.ndarray) -> np.ndarray:
    return pts[..., :2] / pts[..., 2:] * F + PP


def _scene(n: int = 6, turn_deg: float = 12.0, seed: int = 1):
    """True bodies and the network's guess of them: turned by up to ``turn_deg`` and placed
    up to 25% too near or far."""
    rng = np.random.default_rng(seed)
    joints = _skeleton(n, seed)
    true_t = np.stack([rng.uniform(-1, 1, n), rng.uniform(-0.5, 0.5, n), rng.uniform(3, 6, n)], 1)
    uv = _project(joints + true_t[:, None])
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    wrong = Rotation.from_rotvec(axes * np.radians(turn_deg)).as_matrix()
    guess = np.einsum("pij,pkj->pki", wrong, joints - joints[:, :1]) + joints[:, :1]
    guess_t = true_t * np.array([1.0, 1.0, 1.0])[None] * rng.uniform(0.75, 1.25, (n, 1))
    return joints, true_t, uv, guess, guess_t


def test_the_fit_recovers_the_turn_and_the_distance_from_clean_2d():
    joints, true_t, uv, guess, guess_t = _scene()
    cfg = Fit2DConfig(rot_prior=0.0, iters=15)
    res = fit_to_2d(guess, guess_t, uv, np.ones((6, 24)), np.full(6, 200.0), F, PP, cfg)
    assert res.fitted.all()
    turned = np.einsum("pij,pkj->pki", res.turn, guess - guess[:, :1]) + guess[:, :1]
    assert np.abs(turned - joints).max() < 1e-4
    assert np.abs(res.transl - true_t).max() < 1e-4
    assert np.abs(guess_t - true_t).max() > 0.3  # there was something to correct


def test_the_prior_keeps_the_networks_turn_where_the_2d_cannot_tell():
    joints, true_t, uv, guess, guess_t = _scene()
    free = fit_to_2d(guess, guess_t, uv, np.ones((6, 24)), np.full(6, 200.0), F, PP,
                     Fit2DConfig(rot_prior=0.0))  # fmt: skip
    held = fit_to_2d(guess, guess_t, uv, np.ones((6, 24)), np.full(6, 200.0), F, PP,
                     Fit2DConfig(rot_prior=50.0))  # fmt: skip

    def angle(r: np.ndarray) -> np.ndarray:
        return np.linalg.norm(Rotation.from_matrix(r).as_rotvec(), axis=1)

    assert (angle(held.turn) < 0.2 * angle(free.turn)).all()


def test_too_few_joints_collapsed_2d_or_bad_input_keep_the_networks_values():
    joints, true_t, uv, guess, guess_t = _scene(4)
    w = np.ones((4, 24))
    w[0, 5:] = 0.0  # 5 joints: too few
    uv = uv.copy()
    uv[1] = uv[1].mean(0) + np.random.default_rng(0).normal(size=(24, 2)) * 0.5  # collapsed
    uv[2, 3] = np.nan  # one unknown joint is only left out
    guess_t = guess_t.copy()
    guess_t[3] = np.nan
    res = fit_to_2d(guess, guess_t, uv, w, np.full(4, 200.0), F, PP)
    assert res.fitted.tolist() == [False, False, True, False]
    for p in (0, 1):
        assert np.allclose(res.turn[p], np.eye(3)) and np.allclose(res.transl[p], guess_t[p])
    assert np.isfinite(res.transl[2]).all()


def test_no_persons():
    out = fit_people(np.zeros((0, 24, 3, 3)), np.zeros((0, 24, 3)), np.zeros((0, 3)),
                     np.zeros((0, 24, 2)), np.zeros((0, 2)), np.zeros(0), 500.0, (320.0, 240.0))
    assert [a.shape for a in out] == [(0, 24, 3, 3), (0, 3), (0,)]


def test_config_is_checked():
    for bad in ({"rot_prior": -1.0}, {"f_scale": 0.0}, {"iters": 0}, {"max_depth_ratio": 1.0}):
        with pytest.raises(ValueError):
            Fit2DConfig(**bad)


def test_fit_people_turns_the_root_and_reads_crop_coordinates():
    joints, true_t, uv, guess, guess_t = _scene(3)
    centers = uv.mean(1) + 5.0
    sizes = 3.0 * np.abs(uv - centers[:, None]).max((1, 2))
    joints_2d = (uv - centers[:, None]) / sizes[:, None, None]  # box heights from the centre
    assert crop_weights(joints_2d).all()
    root = Rotation.random(3, random_state=0).as_matrix()
    rotmat = np.tile(np.eye(3), (3, 24, 1, 1))
    rotmat[:, 0] = root
    out, transl, fitted = fit_people(rotmat, guess, guess_t, joints_2d, centers, sizes, F, PP,
                                     Fit2DConfig(rot_prior=0.0, iters=15))  # fmt: skip
    assert fitted.all() and np.abs(transl - true_t).max() < 1e-3
    assert np.allclose(out[:, 1:], rotmat[:, 1:])
    turn = out[:, 0] @ np.transpose(root, (0, 2, 1))  # what the fit applied
    turned = np.einsum("pij,pkj->pki", turn, guess - guess[:, :1]) + guess[:, :1]
    assert np.abs(turned - joints).max() < 1e-3
    # joints beyond the crop window are left out
    far = joints_2d.copy()
    far[0, :3] = [0.9, 0.0]
    assert crop_weights(far)[0, :3].sum() == 0 and crop_weights(far)[0, 3:].all()


def _lifter_net():
    from multiroi.model.config import ModelConfig
    from multiroi.model.network import MultiRoINet

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, lifter=True, dropout=0.0,
                      contrastive=False)  # fmt: skip
    net = MultiRoINet(cfg, allow_random_init=True).eval()
    with torch.no_grad():
        net.lifter.landmark_map.normal_(std=0.1)
    return net


def test_the_network_and_its_onnx_export_give_the_lifters_2d_joints(tmp_path):
    pytest.importorskip("onnxruntime")
    from multiroi.backends.onnxruntime_backend import OnnxRuntimeBackend, export_onnx_simple
    from multiroi.model.network import ExportWrapper
    from multiroi.types import RoiBatch

    net = _lifter_net()
    feats, info = torch.randn(3, 2, 1464), torch.randn(3, 2, 3) * 0.3
    with torch.no_grad():
        out = net(feats, info)
        want = net.lifter.joints_2d(feats[:, 0])
    assert out.joints_2d.shape == (3, 24, 2) and torch.allclose(out.joints_2d, want)
    assert ExportWrapper(net).output_names[-1] == "joints_2d"
    crops = torch.rand(2, 2, 3, 256, 192)
    with torch.no_grad():
        ref = net(crops, info[:2]).joints_2d.numpy()
    path = export_onnx_simple(net, tmp_path / "m.onnx")
    backend = OnnxRuntimeBackend(path)
    got = backend(RoiBatch(crops=crops.numpy(), box_info=info[:2].numpy(),
                           centers=np.zeros((2, 2, 2), np.float32),
                           sizes=np.ones((2, 2), np.float32), focal_px=500.0,
                           image_wh=(640, 480)))  # fmt: skip
    assert got.joints_2d is not None and np.allclose(got.joints_2d, ref, atol=1e-4)


def test_a_network_without_a_lifter_gives_no_2d_joints():
    from multiroi.model.config import ModelConfig
    from multiroi.model.network import ExportWrapper, MultiRoINet

    net = MultiRoINet(ModelConfig(backbone="test_resnet", num_rois=2, hidden=32, pe_levels=4))
    out = net.eval()(torch.randn(1, 2, 3, 256, 192), torch.zeros(1, 2, 3))
    assert out.joints_2d is None
    assert ExportWrapper(net).output_names == ("rotmat", "betas", "cam_local")


def test_the_live_loop_fits_by_default_and_can_be_told_not_to(tmp_path, toy_body_model_path):
    from multiroi.checkpoint import save_checkpoint
    from realtime.config import build_arg_parser, config_from_args
    from realtime.infer import DEFAULT_FIT, build_inference_stage

    net = _lifter_net()
    ckpt = save_checkpoint(tmp_path / "m.pt", net, net.cfg, body_model_id="toy")
    common = ["--checkpoint", str(ckpt), "--backend", "torch", "--body-model",
              str(toy_body_model_path)]  # fmt: skip
    on = config_from_args(build_arg_parser().parse_args(common))
    off = config_from_args(build_arg_parser().parse_args(common + ["--fit-2d", "off"]))
    assert on.inference.fit_2d is True and off.inference.fit_2d is False
    assert build_inference_stage(on).fit_2d == DEFAULT_FIT
    assert build_inference_stage(off).fit_2d is None
