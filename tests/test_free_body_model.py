"""The shipped free body model (Anny in SMPL's layout): file, conventions, skinning, joints,
keypoints, shape space and mean parameters. Fast tests read the committed .npz; the slow ones
need Anny (the ``body`` extra)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from multiroi.body import load_body_model, load_mean_params
from multiroi.body.files import DEFAULT_MODEL, EXTRA_NAMES, SMPL_JOINT_NAMES, SMPL_PARENTS
from multiroi.geometry.rotations import axis_angle_to_rotmat, rot6d_to_rotmat

J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}


@pytest.fixture(scope="module")
def npz() -> dict[str, np.ndarray]:
    with np.load(DEFAULT_MODEL, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def body():
    return load_body_model()  # no path, no env var: the shipped free model


def _pose(body, rotmat: np.ndarray | None = None, betas: np.ndarray | None = None):
    rot = torch.eye(3).expand(1, 24, 3, 3).clone() if rotmat is None else torch.as_tensor(rotmat)
    b = torch.zeros(rot.shape[0], 10) if betas is None else torch.as_tensor(betas)
    with torch.no_grad():
        out = body(rot.float(), b.float())
    return out.vertices.numpy(), out.joints.numpy(), out.extra.numpy()


def test_loads_through_body_interface(body, npz):
    assert body.model_id.startswith("anny-smpl")
    assert "Apache" in body.license and "CC0" in body.license
    v = npz["v_template"]
    assert v.dtype == np.float32 and 6000 < v.shape[0] < 15000
    assert npz["kintree_table"][0].tolist() == list(SMPL_PARENTS)
    assert [str(n) for n in npz["joint_names"]] == list(SMPL_JOINT_NAMES)
    assert tuple(body.extra_names) == EXTRA_NAMES
    assert not np.any(npz["posedirs"])  # documented: no pose correctives
    assert DEFAULT_MODEL.stat().st_size < 8 * 2**20


def test_arrays_finite_and_faces_cover_every_vertex(npz):
    for key in ("v_template", "shapedirs", "J_regressor", "weights"):
        assert np.isfinite(npz[key]).all(), key
    faces, n = npz["faces"], npz["v_template"].shape[0]
    assert faces.min() == 0 and faces.max() == n - 1
    assert np.array_equal(np.unique(faces), np.arange(n))
    w = npz["weights"]
    assert w.min() >= 0.0 and np.allclose(w.sum(1), 1.0, atol=1e-5)
    assert np.allclose(npz["J_regressor"].sum(1), 1.0, atol=1e-4)


def test_zero_pose_is_a_t_pose_in_smpl_axes(body):
    v, j, e = (x[0] for x in _pose(body))
    assert np.linalg.norm(j[J["pelvis"]]) < 0.01  # root at the origin
    height = v[:, 1].max() - v[:, 1].min()
    span = v[:, 0].max() - v[:, 0].min()
    assert 1.5 < height < 1.9
    assert abs(span - height) < 0.1 * height
    for side in ("left", "right"):
        assert abs(j[J[f"{side}_wrist"], 1] - j[J[f"{side}_shoulder"], 1]) < 0.05
        assert abs(j[J[f"{side}_ankle"], 0] - j[J[f"{side}_hip"], 0]) < 0.08  # legs straight
    assert j[J["left_shoulder"], 0] > 0.1 and j[J["right_shoulder"], 0] < -0.1  # left is +x
    assert j[J["head"], 1] > j[J["neck"], 1] > j[J["pelvis"], 1] > j[J["left_knee"], 1]  # y up
    nose = e[EXTRA_NAMES.index("nose")]
    assert nose[2] > j[J["head"], 2] + 0.05  # facing +z
    assert abs(v[:, 0].max() + v[:, 0].min()) < 0.01  # left-right symmetric


def test_elbow_bend_moves_only_forearm_and_hand(body, npz):
    rot = torch.eye(3).expand(1, 24, 3, 3).clone()
    rot[0, J["left_elbow"]] = axis_angle_to_rotmat(torch.tensor([0.0, -math.pi / 2, 0.0]))
    v0, j0, _ = (x[0] for x in _pose(body))
    v1, j1, _ = (x[0] for x in _pose(body, rot.numpy()))
    moved = np.linalg.norm(v1 - v0, axis=1) > 1e-3
    arm = npz["weights"][:, [J["left_elbow"], J["left_wrist"], J["left_hand"]]].sum(1)
    assert moved.sum() > 300
    assert np.all(arm[moved] > 0)  # every moved vertex is skinned to the forearm chain
    shift = np.linalg.norm(v1 - v0, axis=1)
    elbow_x = j0[J["left_elbow"], 0]
    assert v0[moved, 0].min() > elbow_x - 0.15  # torso, other arm, upper arm: still
    assert shift[v0[:, 0] < elbow_x - 0.08].max() < 0.015  # only a skinning blend above the elbow
    hand = npz["weights"][:, J["left_hand"]] > 0.5
    assert np.linalg.norm(v1[hand] - v0[hand], axis=1).min() > 0.2  # the hand swings forward
    assert (v1[hand, 2] - v0[hand, 2]).mean() > 0.2
    assert np.allclose(j1[: J["left_wrist"]], j0[: J["left_wrist"]], atol=1e-5)


def test_extra_keypoints_lie_on_the_surface_where_expected(body, npz):
    v, j, e = (x[0] for x in _pose(body))
    ids = npz["extra_vertex_ids"]
    assert set(ids.tolist()) <= set(np.unique(npz["faces"]).tolist())
    assert np.allclose(e, v[ids])
    kp = dict(zip(EXTRA_NAMES, e, strict=True))
    for name in ("nose", "leye", "reye", "lear", "rear"):
        assert np.linalg.norm(kp[name] - j[J["head"]]) < 0.16, name
        assert kp[name][1] > j[J["neck"], 1], name
    assert kp["leye"][0] > 0.01 and kp["reye"][0] < -0.01 and abs(kp["nose"][0]) < 0.01
    assert kp["lear"][0] > kp["leye"][0] + 0.03 and kp["lear"][2] < kp["leye"][2]
    for s, side in (("L", "left"), ("R", "right")):
        ankle = j[J[f"{side}_ankle"]]
        for part in ("BigToe", "SmallToe", "Heel"):
            p = kp[f"{s}{part}"]
            assert np.linalg.norm(p - ankle) < 0.25 and p[1] < ankle[1], (s, part)
        assert kp[f"{s}BigToe"][2] > ankle[2] + 0.1 > kp[f"{s}Heel"][2] + 0.1
    for finger in ("thumb", "index", "middle", "ring", "pinky"):
        for s, sign in (("l", 1.0), ("r", -1.0)):
            tip = kp[f"{s}{finger}"]
            wrist = j[J[("left" if s == "l" else "right") + "_wrist"]]
            assert sign * (tip[0] - wrist[0]) > 0.05 and np.linalg.norm(tip - wrist) < 0.25


def test_pose_layer_reproduces_stored_validation_joints(body, npz):
    """Validation set: 100 held-out Anny adults (T-posed) projected on the 10 components; their
    true Anny joints must be regressed within 1 cm through the whole smplx path."""
    betas, truth = npz["validation_betas"], npz["validation_joints"]
    assert betas.shape == (100, 10) and truth.shape == (100, 24, 3)
    rot = np.tile(np.eye(3, dtype=np.float32), (100, 24, 1, 1))
    _, joints, _ = _pose(body, rot, betas)
    err = np.linalg.norm(joints - truth, axis=-1)
    assert err.max() < 0.01, f"max {err.max() * 1000:.1f} mm"
    assert err.mean() < 0.003
    assert np.abs(betas).max() > 1.0  # the set spans the population, not only the mean


def test_shape_space_height_and_girth(body, npz):
    def measure(betas: np.ndarray) -> tuple[float, float]:
        v = _pose(body, None, betas[None])[0][0]
        band = np.abs(v[:, 1] - 0.1) < 0.03  # a slice of the belly
        girth = v[band, 0].max() - v[band, 0].min()
        return float(v[:, 1].max() - v[:, 1].min()), float(girth)

    zero = np.zeros(10, np.float32)
    h_lo, _ = measure(zero - 2 * np.eye(10, dtype=np.float32)[0])
    h_hi, _ = measure(zero + 2 * np.eye(10, dtype=np.float32)[0])
    assert 1.40 < h_lo < 1.60 and 1.80 < h_hi < 2.00 and h_hi - h_lo > 0.25
    girths = [measure(zero + b * np.eye(10, dtype=np.float32)[1])[1] for b in (-2.0, 2.0)]
    assert abs(girths[1] - girths[0]) > 0.03  # the second component changes the girth
    sd = npz["shapedirs"]
    norms = np.linalg.norm(sd.reshape(-1, 10), axis=0)
    assert np.all(np.diff(norms) < 0)  # components ordered by the variance they explain


def test_mean_params_fit_this_model(body):
    mean = load_mean_params()
    assert mean.source.endswith("anny_smpl_mean_params.npz")
    rot = rot6d_to_rotmat(torch.as_tensor(mean.pose6d)).numpy()
    assert np.allclose(rot[0], np.diag([1.0, -1.0, -1.0]), atol=1e-6)  # pi about x
    assert np.allclose(mean.betas, 0) and np.allclose(mean.cam, [0.9, 0.0, 0.0])
    upright = rot.copy()
    upright[0] = np.eye(3)
    _, j, _ = (x[0] for x in _pose(body, upright[None]))
    for side in ("left", "right"):
        drop = j[J[f"{side}_shoulder"], 1] - j[J[f"{side}_wrist"], 1]
        assert 0.3 < drop < 0.55  # arms down, an A-pose, not a T-pose
        assert j[J[f"{side}_wrist"], 1] > j[J[f"{side}_hip"], 1]
    _, jc, _ = (x[0] for x in _pose(body, rot[None]))
    assert jc[J["head"], 1] < jc[J["pelvis"], 1] - 0.4  # upright in OpenCV axes (y down)


@pytest.mark.slow
def test_regressor_on_fresh_anny_shapes():
    """100 fresh Anny adults (a seed the build never used): regressed joints within 1 cm."""
    pytest.importorskip("anny")
    from multiroi.body import anny_source

    with np.load(DEFAULT_MODEL) as z:
        reg = z["J_regressor"]
    model = anny_source.load_anny()
    samples = anny_source.tpose_samples(
        model, anny_source.sample_adult_phenotypes(model, 100, seed=12345)
    )
    pred = np.einsum("jv,svc->sjc", reg, samples.vertices_m)
    err = np.linalg.norm(pred - samples.joints_m, axis=-1)
    assert err.max() < 0.01, f"max {err.max() * 1000:.1f} mm"


@pytest.mark.slow
def test_build_is_deterministic(tmp_path):
    pytest.importorskip("anny")
    from multiroi.body.build_free_model import BuildConfig, build_free_model

    arrays = []
    for name in ("a.npz", "b.npz"):
        build_free_model(BuildConfig(out=tmp_path / name, num_train=200, num_val=10))
        with np.load(tmp_path / name) as z:
            arrays.append({k: z[k] for k in z.files})
    for key, value in arrays[0].items():
        assert np.array_equal(value, arrays[1][key]), key
