"""Rotations, the Camera value object, CLIFF camera conversion and Procrustes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from multiroi.geometry import (
    Camera,
    axis_angle_to_rotmat,
    full_to_local,
    local_to_full,
    project_points,
    rot6d_to_rotmat,
    rotmat_to_axis_angle,
    rotmat_to_rot6d,
    similarity_procrustes,
    similarity_transform,
    weak_perspective_to_image,
)


def _random_rotmats(n: int, seed: int = 0) -> torch.Tensor:
    """Uniform random rotations [n,3,3] (f64) via QR with the sign fixed."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    det = torch.linalg.det(q)
    q[:, :, 2] *= det[:, None]
    return q


# ----- rotations -----


def test_rot6d_convention_is_first_two_columns():
    x = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64)  # cols (1,0,0),(0,0,1)
    rot = rot6d_to_rotmat(x)
    np.testing.assert_allclose(rot[:, 0].numpy(), [1, 0, 0])
    np.testing.assert_allclose(rot[:, 1].numpy(), [0, 0, 1])
    np.testing.assert_allclose(rot[:, 2].numpy(), [0, -1, 0])  # e1 x e3
    # Gram-Schmidt: second column is made orthogonal to the first, first is only normalised
    y = torch.tensor([[2.0, 1.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64).reshape(6)
    rot = rot6d_to_rotmat(y)
    np.testing.assert_allclose(rot[:, 0].numpy(), [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(rot[:, 1].numpy(), [0, 1, 0], atol=1e-12)


def test_rot6d_round_trip_and_orthonormal():
    rot = _random_rotmats(64)
    np.testing.assert_allclose(rot6d_to_rotmat(rotmat_to_rot6d(rot)).numpy(), rot.numpy(),
                               atol=1e-12)  # fmt: skip
    x = torch.randn(4, 5, 6, dtype=torch.float64)
    out = rot6d_to_rotmat(x)
    assert out.shape == (4, 5, 3, 3)
    eye = torch.eye(3, dtype=torch.float64).expand(4, 5, 3, 3)
    np.testing.assert_allclose((out.transpose(-1, -2) @ out).numpy(), eye.numpy(), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(out).numpy(), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match=r"\[...,6\]"):
        rot6d_to_rotmat(torch.zeros(3, 5))


def test_axis_angle_matches_opencv_rodrigues():
    g = torch.Generator().manual_seed(1)
    aa = torch.randn(32, 3, generator=g, dtype=torch.float64) * 1.5
    rot = axis_angle_to_rotmat(aa)
    for k in range(32):
        ref, _ = cv2.Rodrigues(aa[k].numpy())
        np.testing.assert_allclose(rot[k].numpy(), ref, atol=1e-12)


def test_axis_angle_stable_at_zero():
    aa = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    rot = axis_angle_to_rotmat(aa)
    np.testing.assert_allclose(rot.detach().numpy(), np.broadcast_to(np.eye(3), (2, 3, 3)))
    rot[:, 2, 1].sum().backward()  # dR/dv at 0 is skew(): d R[2,1] / d v_x = 1
    np.testing.assert_allclose(aa.grad.numpy(), [[1, 0, 0], [1, 0, 0]], atol=1e-12)
    tiny = torch.tensor([[1e-7, -2e-7, 3e-7]], dtype=torch.float64)
    ref, _ = cv2.Rodrigues(tiny[0].numpy())
    np.testing.assert_allclose(axis_angle_to_rotmat(tiny)[0].numpy(), ref, atol=1e-15)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-5, 0.3, 2.0, math.pi - 1e-3, math.pi - 1e-7])
def test_rotmat_to_axis_angle_round_trip(angle):
    g = torch.Generator().manual_seed(2)
    axes = torch.nn.functional.normalize(
        torch.randn(16, 3, generator=g, dtype=torch.float64), dim=1
    )
    aa = axes * angle
    back = rotmat_to_axis_angle(axis_angle_to_rotmat(aa))
    assert torch.isfinite(back).all()
    if angle < math.pi - 1e-2:
        np.testing.assert_allclose(back.numpy(), aa.numpy(), atol=1e-9)
    else:  # near pi, axis and -axis are (almost) the same rotation: compare matrices
        np.testing.assert_allclose(back.norm(dim=1).numpy(), angle, atol=1e-9)
        np.testing.assert_allclose(axis_angle_to_rotmat(back).numpy(),
                                   axis_angle_to_rotmat(aa).numpy(), atol=1e-9)  # fmt: skip


def test_rotmat_to_axis_angle_exact_pi_and_random():
    rot_pi = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))  # pi about x
    aa = rotmat_to_axis_angle(rot_pi)
    np.testing.assert_allclose(aa.abs().numpy(), [math.pi, 0, 0], atol=1e-12)
    rot = _random_rotmats(200, seed=3)
    back = axis_angle_to_rotmat(rotmat_to_axis_angle(rot))
    np.testing.assert_allclose(back.numpy(), rot.numpy(), atol=1e-10)
    ref = np.stack([cv2.Rodrigues(r)[0][:, 0] for r in rot[:20].numpy()])
    np.testing.assert_allclose(rotmat_to_axis_angle(rot[:20]).numpy(), ref, atol=1e-8)


def test_rot6d_to_rotmat_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")

    class M(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return rot6d_to_rotmat(x)

    x = torch.randn(2, 24, 6)
    path = tmp_path / "rot6d.onnx"
    torch.onnx.export(M(), (x,), str(path), input_names=["x"], output_names=["rot"],
                      dynamo=False, opset_version=17)  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(out, rot6d_to_rotmat(x).numpy(), atol=1e-5)
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"SVD", "Einsum"}, ops


# ----- camera -----


def test_camera_constructors():
    cam = Camera.default((640, 480))
    assert cam.focal == pytest.approx(800.0) and cam.principal == (320.0, 240.0)
    assert cam.fov_deg("diag") == pytest.approx(2 * math.degrees(math.atan(0.5)))
    h = Camera.from_fov(90.0, (640, 480))  # horizontal by default
    assert h.focal == pytest.approx(320.0) and h.fov_deg("horizontal") == pytest.approx(90.0)
    v = Camera.from_fov(90.0, (640, 480), axis="vertical")
    assert v.focal == pytest.approx(240.0)
    d = Camera.from_fov(60.0, (640, 480), axis="diag")
    assert d.focal == pytest.approx(400.0 / math.tan(math.radians(30)))
    assert d.fov_deg("diag") == pytest.approx(60.0)
    f = Camera.from_focal(1000.0, (1920, 1080))
    np.testing.assert_allclose(f.K, [[1000, 0, 960], [0, 1000, 540], [0, 0, 1]])
    assert "1920x1080" in f.describe() and "f=1000.0px" in f.describe()
    with pytest.raises(ValueError, match="axis"):
        Camera.from_fov(60, (640, 480), axis="diagonal")


def test_camera_validation_and_immutability():
    with pytest.raises(ValueError, match="3x3"):
        Camera(np.eye(2), (640, 480))
    with pytest.raises(ValueError, match="positive"):
        Camera(np.diag([-1.0, 1.0, 1.0]), (640, 480))
    with pytest.raises(ValueError, match="finite"):
        Camera(np.array([[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]]), (640, 480))
    with pytest.raises(ValueError, match="image_wh"):
        Camera.from_focal(500, (0, 480))
    with pytest.raises(ValueError, match="fov"):
        Camera.from_fov(180, (640, 480))
    cam = Camera.default((640, 480))
    with pytest.raises(ValueError):
        cam.K[0, 0] = 1.0  # read-only
    assert cam == Camera.default((640, 480)) and cam != Camera.default((640, 481))


def test_camera_scaled_to():
    K = np.array([[800.0, 0, 330.0], [0, 790.0, 250.0], [0, 0, 1]])
    cam = Camera(K, (640, 480), np.array([0.1, -0.05, 0, 0, 0]))
    half = cam.scaled_to((320, 240))
    np.testing.assert_allclose(half.K, [[400, 0, 165], [0, 395, 125], [0, 0, 1]])
    np.testing.assert_array_equal(half.dist, cam.dist)
    assert half.fov_deg("horizontal") == pytest.approx(cam.fov_deg("horizontal"))
    assert cam.scaled_to((640, 480)) is cam
    with pytest.raises(ValueError, match="aspect ratio"):
        cam.scaled_to((640, 360))


def test_camera_from_file(tmp_path):
    calib = pytest.importorskip("multiroi.geometry.calibration_file")
    K = np.array([[900.0, 0, 640.0], [0, 905.0, 360.0], [0, 0, 1]])
    dist = np.array([0.1, -0.2, 0.001, 0.002, 0.05])
    path = calib.write_calibration(
        tmp_path / "cam.yaml", calib.CalibrationData(K, dist, (1280, 720), rms_px=0.3)
    )
    cam = Camera.from_file(path)
    np.testing.assert_allclose(cam.K, K)
    np.testing.assert_allclose(cam.dist, dist)
    assert cam.image_wh == (1280, 720)
    small = Camera.from_file(path, image_wh=(640, 360))
    assert small.focal == pytest.approx(451.25)
    with pytest.raises(ValueError, match="aspect ratio"):
        Camera.from_file(path, image_wh=(640, 480))


# ----- CLIFF local <-> full camera -----


def test_local_to_full_by_hand():
    # b s = 100 px, f = 500 -> T_z = 10 m; centre 100 px right of the principal point -> +2 m
    t = local_to_full(np.array([0.5, 0.1, -0.2]), np.array([420.0, 240.0]), 200.0, 500.0,
                      (320.0, 240.0))  # fmt: skip
    np.testing.assert_allclose(t, [0.1 + 2.0, -0.2, 10.0])
    assert isinstance(t, np.ndarray)


def test_local_full_round_trip_torch_and_numpy():
    g = torch.Generator().manual_seed(4)
    cam = torch.stack(
        (
            torch.rand(3, 5, generator=g, dtype=torch.float64) + 0.3,
            torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.2,
            torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.2,
        ),
        dim=-1,
    )
    centers = torch.rand(3, 5, 2, generator=g, dtype=torch.float64) * 600
    sizes = torch.rand(3, 5, generator=g, dtype=torch.float64) * 300 + 50
    focal, principal = 750.0, torch.tensor([320.0, 240.0], dtype=torch.float64)
    transl = local_to_full(cam, centers, sizes, focal, principal)
    assert transl.shape == (3, 5, 3)
    back = full_to_local(transl, centers, sizes, focal, principal)
    np.testing.assert_allclose(back.numpy(), cam.numpy(), rtol=1e-9, atol=1e-12)
    back_np = full_to_local(transl.numpy(), centers.numpy(), sizes.numpy(), focal,
                            principal.numpy())  # fmt: skip
    np.testing.assert_allclose(back_np, cam.numpy(), rtol=1e-9, atol=1e-12)


def test_local_to_full_keeps_scale_positive():
    cam = torch.tensor([[-0.5, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    t = local_to_full(cam, torch.zeros(2, 2), torch.ones(2) * 100, 500.0, (0.0, 0.0))
    assert torch.isfinite(t).all() and (t[:, 2] > 0).all()


def test_far_person_perspective_matches_weak_perspective():
    """A body placed with T projects (perspective) where the crop model of each RoI puts it."""
    cam = Camera.default((640, 480))
    g = torch.Generator().manual_seed(5)
    body = (torch.rand(200, 3, generator=g, dtype=torch.float64) - 0.5) * torch.tensor(
        [0.5, 1.7, 0.3], dtype=torch.float64
    )
    transl = torch.tensor([1.5, 0.3, 25.0], dtype=torch.float64)  # far: 25 m
    pix = project_points(body, cam.K, transl)
    # RoI windows around the person: its projected height is ~1.7 * 800 / 25 = 54 px
    centers = torch.tensor([[368.0, 250.0], [372.0, 249.0], [365.0, 252.0]], dtype=torch.float64)
    sizes = torch.tensor([70.0, 105.0, 56.0], dtype=torch.float64)
    cam_local = full_to_local(transl, centers, sizes, cam.focal, cam.principal)
    weak = weak_perspective_to_image(body, cam_local, centers, sizes)  # [3,200,2]
    err = (weak - pix[None]).norm(dim=-1).max()
    assert err < 0.5, err  # px; the depth spread of the body (0.3 m) over 25 m
    # and a near person breaks the weak-perspective model noticeably
    near = torch.tensor([0.5, 0.1, 2.0], dtype=torch.float64)
    cam_near = full_to_local(near, centers, sizes, cam.focal, cam.principal)
    err_near = (
        (
            weak_perspective_to_image(body, cam_near, centers, sizes)
            - project_points(body, cam.K, near)[None]
        )
        .norm(dim=-1)
        .max()
    )
    assert err_near > 10 * err


def test_project_points_matches_opencv():
    cam = Camera(np.array([[700.0, 0, 300.0], [0, 720.0, 260.0], [0, 0, 1]]), (640, 480))
    rng = np.random.default_rng(6)
    pts = rng.uniform(-1, 1, (50, 3)) + [0, 0, 5]
    ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), cam.K, None)
    np.testing.assert_allclose(project_points(pts, cam.K), ref[:, 0], atol=1e-9)
    t = np.array([0.2, -0.1, 1.0])
    np.testing.assert_allclose(project_points(pts - t, cam.K, t), ref[:, 0], atol=1e-9)


# ----- Procrustes -----


def _random_similarity(b: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    rot = _random_rotmats(b, seed)
    scale = torch.rand(b, generator=g, dtype=torch.float64) * 2 + 0.2
    t = torch.randn(b, 3, generator=g, dtype=torch.float64)
    return scale, rot, t


def test_procrustes_recovers_similarity():
    g = torch.Generator().manual_seed(7)
    src = torch.randn(6, 40, 3, generator=g, dtype=torch.float64)
    scale, rot, t = _random_similarity(6, 8)
    dst = scale[:, None, None] * src @ rot.transpose(1, 2) + t[:, None]
    aligned = similarity_procrustes(src, dst)
    assert (aligned - dst).abs().max() < 1e-5
    s_hat, r_hat, t_hat = similarity_transform(src, dst)
    np.testing.assert_allclose(s_hat.numpy(), scale.numpy(), atol=1e-9)
    np.testing.assert_allclose(r_hat.numpy(), rot.numpy(), atol=1e-9)
    np.testing.assert_allclose(t_hat.numpy(), t.numpy(), atol=1e-9)
    aligned_np = similarity_procrustes(src.numpy(), dst.numpy())
    assert isinstance(aligned_np, np.ndarray)
    assert np.abs(aligned_np - dst.numpy()).max() < 1e-5
    # float32 torch stays float32 and still recovers to 1e-5 relative
    a32 = similarity_procrustes(src.float(), dst.float())
    assert a32.dtype == torch.float32 and (a32.double() - dst).abs().max() < 1e-4


def test_procrustes_never_reflects():
    g = torch.Generator().manual_seed(9)
    src = torch.randn(4, 30, 3, generator=g, dtype=torch.float64)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    dst = src @ mirror  # a reflection: no rotation can match it
    s_hat, r_hat, _ = similarity_transform(src, dst)
    np.testing.assert_allclose(torch.linalg.det(r_hat).numpy(), 1.0, atol=1e-12)
    aligned = similarity_procrustes(src, dst)
    residual = ((aligned - dst) ** 2).sum(dim=(1, 2))
    assert (residual > 1e-2).all()
    # it is the best proper similarity: small rotations of the answer do worse
    for k in range(5):
        d = axis_angle_to_rotmat(torch.randn(3, generator=g, dtype=torch.float64) * 0.05)
        centroid = aligned.mean(1, keepdim=True)
        worse = (aligned - centroid) @ d.T + centroid
        assert (((worse - dst) ** 2).sum(dim=(1, 2)) >= residual - 1e-9).all(), k
