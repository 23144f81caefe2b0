"""The body-model interface: loading, validation, forward, keypoints, SMPL conversion."""

from __future__ import annotations

import io
import math
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from multiroi.body import BodyModelError, MeanParams, load_body_model, load_mean_params
from multiroi.body.convert_smpl import RestrictedUnpickler, convert
from multiroi.body.files import DEFAULT_MODEL, ENV_VAR, resolve_body_model_path
from multiroi.body.toy import TOY_JOINTS, toy_body_model_arrays


def _rot_z(deg: float) -> torch.Tensor:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def test_zero_pose_joints_and_translation(toy_body_model):
    rot = torch.eye(3).expand(2, 24, 3, 3).clone()
    transl = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 5.0]])
    out = toy_body_model(rot, torch.zeros(2, 10), transl)
    assert out.vertices.shape == (2, toy_body_model.num_vertices, 3)
    assert torch.allclose(out.joints[0], torch.from_numpy(TOY_JOINTS), atol=1e-5)
    assert torch.allclose(out.joints[1] - out.joints[0], transl[1].expand(24, 3), atol=1e-5)
    assert torch.isfinite(out.vertices).all()


def test_elbow_bend_moves_only_forearm_and_hand(toy_body_model):
    rot = torch.eye(3).expand(1, 24, 3, 3).clone()
    bent = rot.clone()
    bent[0, 18] = _rot_z(90)  # left elbow
    a = toy_body_model(rot).vertices[0]
    b = toy_body_model(bent).vertices[0]
    moved = (a - b).norm(dim=1) > 1e-4
    weights = toy_body_model.layer.lbs_weights
    forearm_hand = weights[:, [18, 20, 22]].sum(1) > 0.5
    assert moved.any()
    assert not (moved & ~forearm_hand).any(), "vertices outside the forearm/hand moved"
    wrist = toy_body_model(bent).joints[0, 20]
    elbow = toy_body_model(bent).joints[0, 18]
    assert wrist[1] - elbow[1] > 0.2  # the forearm now points up (+y)


def test_shape_changes_height(toy_body_model):
    rot = torch.eye(3).expand(3, 24, 3, 3).clone()
    betas = torch.zeros(3, 10)
    betas[1, 0], betas[2, 0] = -2.0, 2.0
    v = toy_body_model(rot, betas).vertices
    h = v[..., 1].amax(1) - v[..., 1].amin(1)
    assert h[0] < h[2] and h[1] < h[0]
    assert float(h[2] / h[0]) == pytest.approx(1.10, abs=0.01)


def test_keypoint_sets(toy_body_model):
    out = toy_body_model(torch.eye(3).expand(1, 24, 3, 3).clone())
    coco = toy_body_model.keypoints(out, "coco17")
    op = toy_body_model.keypoints(out, "openpose25")
    assert coco.shape == (1, 17, 3) and op.shape == (1, 25, 3)
    assert torch.allclose(coco[0, 5], out.joints[0, 16])  # left shoulder
    assert torch.allclose(op[0, 8], out.joints[0, 0])  # mid hip = pelvis
    with pytest.raises(ValueError, match="unknown keypoint set"):
        toy_body_model.keypoints(out, "h36m")


def test_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_body_model_path() == DEFAULT_MODEL
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env.npz"))
    assert resolve_body_model_path() == tmp_path / "env.npz"
    assert resolve_body_model_path(tmp_path / "x.npz") == tmp_path / "x.npz"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("weights"), "missing keys"),
        (lambda d: d.update(J_regressor=d["J_regressor"][:, :-1]), "J_regressor has shape"),
        (lambda d: d.update(shapedirs=d["shapedirs"][:, :, :5]), "5 components"),
        (lambda d: d.update(faces=d["faces"] + 10_000), "faces index"),
        (lambda d: d["v_template"].__setitem__((0, 0), np.nan), "NaN"),
    ],
)
def test_malformed_files_give_one_clear_line(tmp_path, mutate, message):
    d = toy_body_model_arrays()
    mutate(d)
    path = tmp_path / "bad.npz"
    np.savez(path, **d)
    with pytest.raises(BodyModelError, match=message) as err:
        load_body_model(path)
    text = str(err.value)
    assert str(path) in text and "\n" not in text


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(BodyModelError, match="file not found"):
        load_body_model(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(BodyModelError, match="not a readable .npz"):
        load_body_model(junk)
    pkl = tmp_path / "SMPL_NEUTRAL.pkl"
    pkl.write_bytes(b"whatever")
    with pytest.raises(BodyModelError, match="convert_smpl"):
        load_body_model(pkl)


def test_mean_params_default_and_file(tmp_path):
    mp = MeanParams.default()
    first, second = mp.pose6d[0, 0::2], mp.pose6d[0, 1::2]  # columns of the root rotation
    assert np.allclose(first, [1, 0, 0]) and np.allclose(second, [0, -1, 0])
    path = tmp_path / "mean.npz"
    np.savez(path, pose=np.arange(144, dtype=np.float32), shape=np.ones(10), cam=[1, 2, 3])
    loaded = load_mean_params(path)
    assert loaded.pose6d.shape == (24, 6) and loaded.pose6d[1, 0] == 6
    np.savez(path, pose=np.zeros(100), shape=np.ones(10), cam=[1, 2, 3])
    with pytest.raises(BodyModelError, match="expected 144"):
        load_mean_params(path)


def _fake_smpl_pickle(protocol: int) -> bytes:
    """An SMPL-like pickle with chumpy-class objects, built with a fake ``chumpy`` module."""
    mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

        def __getstate__(self):
            return {"x": self.x}

    Ch.__module__ = "chumpy.ch"
    Ch.__qualname__ = "Ch"
    mod.Ch = Ch
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = mod
    try:
        d = toy_body_model_arrays()
        raw = {
            "v_template": Ch(d["v_template"].astype(np.float64)),
            "f": d["faces"].astype(np.uint32),
            "shapedirs": Ch(d["shapedirs"]), "posedirs": d["posedirs"],
            "J_regressor": d["J_regressor"], "weights": Ch(d["weights"]),
            "kintree_table": d["kintree_table"].astype(np.int64), "bs_style": "lbs",
        }  # fmt: skip
        return pickle.dumps(raw, protocol=protocol)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


@pytest.mark.parametrize("protocol", [0, 2])
def test_convert_smpl_without_chumpy(tmp_path, protocol):
    pkl = tmp_path / "SMPL_FAKE.pkl"
    pkl.write_bytes(_fake_smpl_pickle(protocol))
    out = convert(pkl, tmp_path / "smpl.npz")
    model = load_body_model(out)
    joints = model(torch.eye(3).expand(1, 24, 3, 3).clone()).joints[0]
    assert torch.allclose(joints, torch.from_numpy(TOY_JOINTS), atol=1e-5)
    assert model.model_id == "smpl-smpl_fake"


def test_convert_densifies_scipy_sparse_regressor(tmp_path):
    sparse = pytest.importorskip("scipy.sparse")
    d = toy_body_model_arrays()
    raw = {k: d[k] for k in ("v_template", "shapedirs", "posedirs", "weights", "kintree_table")}
    raw["f"] = d["faces"]
    raw["J_regressor"] = sparse.csc_matrix(d["J_regressor"].astype(np.float64))
    pkl = tmp_path / "sparse.pkl"
    pkl.write_bytes(pickle.dumps(raw, protocol=2))
    data = np.load(convert(pkl, tmp_path / "out.npz"))
    assert np.allclose(data["J_regressor"], d["J_regressor"])


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    payload = pickle.dumps({"v_template": Evil()})
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        RestrictedUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()


def test_joints_alone_match_the_full_forward(toy_body_model):
    from multiroi.geometry.rotations import axis_angle_to_rotmat

    g = torch.Generator().manual_seed(0)
    rot = axis_angle_to_rotmat(0.6 * torch.randn(5, 24, 3, generator=g)).requires_grad_(True)
    betas = torch.randn(5, 10, generator=g).requires_grad_(True)
    transl = torch.randn(5, 3, generator=g)
    full = toy_body_model(rot, betas, transl).joints
    alone = toy_body_model.joints(rot, betas, transl)
    assert alone.shape == (5, 24, 3)
    assert torch.allclose(alone, full, atol=1e-5)
    # the same gradients reach the network through either path
    g_full = torch.autograd.grad(full.square().sum(), [rot, betas])
    g_alone = torch.autograd.grad(alone.square().sum(), [rot, betas])
    for a, b in zip(g_alone, g_full, strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    # fewer betas are padded, none means the mean shape; a bad rotmat is refused
    assert torch.allclose(toy_body_model.joints(rot, betas[:, :3]),
                          toy_body_model(rot, betas[:, :3]).joints, atol=1e-5)  # fmt: skip
    assert torch.allclose(toy_body_model.joints(rot), toy_body_model(rot).joints, atol=1e-5)
    with pytest.raises(ValueError, match="rotmat must be"):
        toy_body_model.joints(rot[:, :23])
