"""End to end on a generated clip with known people: capture -> given boxes -> ByteTrack ->
RoIs -> (oracle) backend -> CLIFF placement -> smoothing -> body model -> projection.

The oracle backend returns the ground-truth rotmat/betas and, for every RoI window it is given,
the local camera that ``full_to_local`` gives for the ground-truth translation; so the test
checks everything the pipeline does with geometry (boxes, RoI windows, camera per frame size,
local -> full camera, body model, smoothing, ids) without depending on learned weights.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from multiroi.geometry.camera import Camera
from multiroi.geometry.cliff import full_to_local
from multiroi.geometry.fit2d import Fit2DConfig
from multiroi.rois import base_boxes
from multiroi.types import HmrOutput
from realtime.cameras import CameraProvider
from realtime.detect import GivenBoxesDetector
from realtime.infer import DEFAULT_FIT, InferenceStage
from realtime.pipeline import Pipeline
from realtime.smoothing import TrackSmoothers
from realtime.sources import VideoFileSource
from realtime.track import PersonTracker

WH = (320, 240)
N_FRAMES = 24


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], np.float32)


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)


def ground_truth(body_model) -> dict[str, np.ndarray]:
    """Two persons walking across (one partly leaving the image), [T,P,...]."""
    t = np.arange(N_FRAMES, dtype=np.float32)[:, None]
    transl = np.zeros((N_FRAMES, 2, 3), np.float32)
    transl[..., 0] = np.array([-0.9, 0.5]) + np.array([0.03, 0.04]) * t
    transl[..., 1] = 0.1
    transl[..., 2] = np.array([5.0, 6.5]) - 0.02 * t
    rotmat = np.tile(np.eye(3, dtype=np.float32), (N_FRAMES, 2, 24, 1, 1))
    for k in range(N_FRAMES):
        for p in range(2):
            rotmat[k, p, 0] = rot_y(0.4 * p + 0.02 * k) @ rot_x(np.pi)  # upright, turning
            rotmat[k, p, 16] = rot_x(0.5 * np.sin(0.3 * k + p))  # an arm swinging
    betas = np.zeros((N_FRAMES, 2, 10), np.float32)
    betas[:, 1, 0] = 1.0
    with torch.no_grad():
        out = body_model(torch.from_numpy(rotmat.reshape(-1, 24, 3, 3)),
                         torch.from_numpy(betas.reshape(-1, 10)),
                         torch.from_numpy(transl.reshape(-1, 3)))  # fmt: skip
    verts = out.vertices.numpy().reshape(N_FRAMES, 2, -1, 3)
    uv = project(verts, Camera.default(WH))
    boxes = np.concatenate([uv.min(2), uv.max(2)], -1)
    boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, WH[0])
    boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, WH[1])
    return {"rotmat": rotmat, "betas": betas, "transl": transl, "boxes": boxes.astype(np.float32),
            "centroid_uv": uv.mean(2)}  # fmt: skip


def project(verts: np.ndarray, cam: Camera) -> np.ndarray:
    z = verts[..., 2:3]
    return verts[..., :2] / z * cam.focal + np.asarray(cam.principal)


def write_clip(path: Path, boxes: np.ndarray) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, WH)
    for k in range(N_FRAMES):
        img = np.full((WH[1], WH[0], 3), 50, np.uint8)
        for p, b in enumerate(boxes[k].astype(int)):
            cv2.rectangle(img, tuple(b[:2]), tuple(b[2:]), (90 + 100 * p, 160, 200), -1)
        w.write(img)
    w.release()
    return path


class OracleBackend:
    """Ground truth for whichever person's RoI-0 window the batch holds (matched by the base
    RoI, which is a pure function of the ground-truth box)."""

    name, device, num_rois = "oracle", "cpu", 5

    def __init__(self, gt: dict[str, np.ndarray], camera: Camera) -> None:
        self.gt, self.camera = gt, camera
        c, b = base_boxes(gt["boxes"].reshape(-1, 4))
        self.keys = np.concatenate([c, b[:, None]], 1)

    def __call__(self, batch) -> HmrOutput:
        key = np.concatenate([batch.centers[:, 0], batch.sizes[:, :1]], 1)
        idx = np.argmin(np.abs(key[:, None] - self.keys[None]).sum(-1), axis=1)
        transl = self.gt["transl"].reshape(-1, 3)[idx]
        cam = full_to_local(
            np.repeat(transl[:, None], batch.centers.shape[1], 1), batch.centers, batch.sizes,
            self.camera.focal, self.camera.principal,
        )  # fmt: skip
        rotmat = self.gt["rotmat"].reshape(-1, 24, 3, 3)[idx]
        return HmrOutput(rotmat, self.gt["betas"].reshape(-1, 10)[idx], cam.astype(np.float32))

    def close(self) -> None:
        pass


class Collect:
    def __init__(self) -> None:
        self.frames: list[tuple[int, list]] = []

    def update(self, frame, people) -> bool:
        self.frames.append((frame.index, people))
        return True

    def close(self) -> None:
        pass


def test_tracks_stable_and_meshes_land_on_their_persons(tmp_path, toy_body_model):
    gt = ground_truth(toy_body_model)
    cam = Camera.default(WH)
    source = VideoFileSource(write_clip(tmp_path / "clip.avi", gt["boxes"]))
    infer = InferenceStage(OracleBackend(gt, cam), toy_body_model, CameraProvider(),
                           TrackSmoothers(strength=1.0), media_fps=25.0)  # fmt: skip
    out = Collect()
    summary = Pipeline(source, GivenBoxesDetector(gt["boxes"]), PersonTracker(), infer, out).run()
    assert summary.frames == N_FRAMES
    ids_of: dict[int, set[int]] = {0: set(), 1: set()}
    worst = 0.0
    for k, people in out.frames:
        assert len(people) == 2
        for person in people:
            # which person is it? the ground-truth box equal to the tracked box
            p = int(np.argmin(np.abs(gt["boxes"][k] - person.box_xyxy).sum(1)))
            ids_of[p].add(person.track_id)
            box = gt["boxes"][k, p]
            height = box[3] - box[1]
            centroid = project(person.vertices_m, cam).mean(0)
            err = np.linalg.norm(centroid - gt["centroid_uv"][k, p]) / height
            worst = max(worst, err)
            assert err < 0.10, f"frame {k} person {p}: centroid off by {err:.1%} of box height"
            if box[0] > 0 and box[2] < WH[0]:  # not cut by the border: the silhouette's box
                uv = project(person.vertices_m, cam)  # centre lands on the person's box centre
                mesh_centre = (uv.min(0) + uv.max(0)) / 2
                assert np.linalg.norm(mesh_centre - (box[:2] + box[2:]) / 2) / height < 0.10
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of
    assert ids_of[0] != ids_of[1]
    assert worst < 0.05  # smoothing lags a little; without it the error is ~0
    assert not any(t.name.startswith("multiroi-") for t in threading.enumerate())


def test_without_smoothing_placement_is_exact(tmp_path, toy_body_model):
    gt = ground_truth(toy_body_model)
    cam = Camera.default(WH)
    stage = InferenceStage(OracleBackend(gt, cam), toy_body_model)
    from multiroi.types import Frame, Tracks

    k = 5
    img = np.zeros((WH[1], WH[0], 3), np.uint8)
    people = stage(Frame(k, 0.0, img), Tracks(np.array([1, 2]), gt["boxes"][k]))
    for p, person in enumerate(people):
        np.testing.assert_allclose(person.transl_m, gt["transl"][k, p], rtol=1e-4, atol=1e-4)
        uv = project(person.vertices_m, cam).mean(0)
        np.testing.assert_allclose(uv, gt["centroid_uv"][k, p], atol=0.05)


def test_cli_on_a_small_demo_clip(tmp_path, toy_body_model_path, monkeypatch):
    """run_camera.main: demo source -> given boxes -> random light net -> recording."""
    import functools

    import realtime.sources as sources
    import run_camera
    from realtime.demo import ensure_demo_clip

    kw = dict(cache_dir=tmp_path / "cache", num_frames=6, size_wh=(160, 120),
              body_model_path=toy_body_model_path)  # fmt: skip
    ensure_demo_clip(**kw)
    monkeypatch.setattr(sources, "open_demo_source",
                        functools.partial(sources.open_demo_source, **kw))  # fmt: skip
    monkeypatch.setenv("MULTIROI_BODY_MODEL", str(toy_body_model_path))
    out = tmp_path / "out"
    import json
    import socket

    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # what --stream sends
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(5)
    argv = ["--source", "demo", "--render", "none", "--out", str(out), "--rois", "2",
            "--backbone", "mobilenetv2_050", "--max-frames", "4",
            "--stream", f"udp://127.0.0.1:{listener.getsockname()[1]}",
            "--export", "glb", "bvh"]  # fmt: skip
    assert run_camera.main(argv) == 0
    sent = [json.loads(listener.recvfrom(65536)[0]) for _ in range(4)]
    listener.close()
    gt = np.load(kw["cache_dir"].glob("*/*.npz").__next__(), allow_pickle=False)
    with np.load(out / "demo.npz", allow_pickle=False) as rec:
        assert rec["frames_index"].tolist() == [0, 1, 2, 3]
        assert json.loads(str(rec["meta_json"]))["fps"] == pytest.approx(float(gt["fps"]))
        assert rec["held"].shape == rec["track_id"].shape and rec["held"].dtype == bool
        assert [m["frame"] for m in sent] == [0, 1, 2, 3]  # one datagram a frame, in order
        for m in sent:  # the same persons as recorded
            rows = np.flatnonzero(rec["frame_index"] == m["frame"])
            assert [p["id"] for p in m["persons"]] == rec["track_id"][rows].tolist()
            for p, r in zip(m["persons"], rows, strict=True):
                np.testing.assert_allclose(p["transl_m"], rec["transl_m"][r], atol=1e-4)
                np.testing.assert_allclose(p["pose_axis_angle"],
                                           rec["pose_axis_angle"][r].reshape(-1), atol=1e-4)
                assert len(p["joints_m"]) == 72 and len(p["betas"]) == 10
            np.testing.assert_allclose(m["K"], rec["K"], atol=1e-3)
        n_visible = int(gt["visible"][:4].sum())
        # tiny boxes are skipped and ByteTrack confirms a late-starting track one frame later
        assert n_visible - 2 <= len(rec["track_id"]) <= n_visible
        for k, box in zip(
            rec["frame_index"], rec["box_xyxy"], strict=True
        ):  # every box is a GT box
            assert np.abs(gt["box_xyxy"][k] - box).sum(1).min() < 1e-3
        np.testing.assert_allclose(rec["K"], gt["K"])  # the clip's own intrinsics were used
        tracks = sorted(set(rec["track_id"].tolist()))
    assert (out / "demo.glb").read_bytes()[:4] == b"glTF"  # --export: the take ...
    assert sorted(p.name for p in out.glob("*.bvh")) == [f"demo_track{t}.bvh" for t in tracks]
    assert run_camera.main(["--source", str(tmp_path / "missing.mp4"), "--render", "none"]) == 2


def test_cli_says_what_is_wrong_in_one_line(tmp_path, monkeypatch, capsys):
    """Bad input to run_camera.py: exit code 2 and one ERROR line, no traceback, before any
    window opens or any model loads where the check allows."""
    import logging

    import cv2

    import run_camera

    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for _ in range(2):
        writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    bad = tmp_path / "model.onnx"
    bad.write_text("not an onnx file")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    cases = {
        "is not a readable ONNX model": ["--checkpoint", str(bad)],
        "unknown backend 'bogus'": ["--backend", "bogus"],
        "there is no display": ["--render", "open3d"],
    }
    for expected, extra in cases.items():
        logging.getLogger().handlers.clear()  # run_camera configures logging afresh
        argv = ["--source", str(clip), "--max-frames", "1", "--out", str(tmp_path / "o"), *extra]
        if "--render" not in extra:
            argv += ["--render", "none"]
        assert run_camera.main(argv) == 2, expected
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if " E run_camera: " in ln]
        assert len(lines) == 1 and expected in lines[0], err[-2000:]
        assert "Traceback" not in err
    # bad option values: one line too, with no usage block
    bad_values = {"--max-frames must be at least 1": ["--max-frames", "0"],
                  "--stream wants udp://HOST:PORT": ["--stream", "nowhere"],
                  "--hold-occluded must be": ["--hold-occluded", "3"]}  # fmt: skip
    for expected, extra in bad_values.items():
        assert run_camera.main(["--source", str(clip), "--render", "none", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0] and ": error: " in err[0], err
    # a bad option value: one line in argparse's form, no usage block
    argv = ["--source", str(clip), "--render", "none", "--export", "glb"]  # without --out
    assert run_camera.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--export needs --out DIR" in err[0]


class TurnedOracle(OracleBackend):
    """The oracle's persons turned 15 degrees about the vertical and placed 20% too far, with
    the true joints' 2D positions in the base crop (what a network's lifter gives)."""

    def __init__(self, gt, camera, body_model) -> None:
        super().__init__(gt, camera)
        self.body = body_model

    def __call__(self, batch) -> HmrOutput:
        key = np.concatenate([batch.centers[:, 0], batch.sizes[:, :1]], 1)
        idx = np.argmin(np.abs(key[:, None] - self.keys[None]).sum(-1), axis=1)
        rotmat = self.gt["rotmat"].reshape(-1, 24, 3, 3)[idx].copy()
        betas = self.gt["betas"].reshape(-1, 10)[idx]
        transl = self.gt["transl"].reshape(-1, 3)[idx]
        with torch.no_grad():
            joints = self.body(torch.from_numpy(rotmat), torch.from_numpy(betas),
                               torch.from_numpy(transl)).joints.numpy()  # fmt: skip
        uv = project(joints, self.camera)
        joints_2d = (uv - batch.centers[:, :1]) / batch.sizes[:, :1, None]
        rotmat[:, 0] = rot_y(np.radians(15.0)) @ rotmat[:, 0]
        cam = full_to_local(
            np.repeat(1.2 * transl[:, None], batch.centers.shape[1], 1), batch.centers,
            batch.sizes, self.camera.focal, self.camera.principal,
        )  # fmt: skip
        return HmrOutput(rotmat, betas, cam.astype(np.float32), joints_2d.astype(np.float32))


def test_the_fit_to_the_2d_joints_turns_and_places_the_bodies(toy_body_model):
    from multiroi.types import Frame, Tracks

    gt = ground_truth(toy_body_model)
    cam = Camera.default(WH)
    k = 5
    img = np.zeros((WH[1], WH[0], 3), np.uint8)
    tracks = Tracks(np.array([1, 2]), gt["boxes"][k])
    with torch.no_grad():
        true = toy_body_model(torch.from_numpy(gt["rotmat"][k]), torch.from_numpy(gt["betas"][k]),
                              torch.from_numpy(gt["transl"][k])).joints.numpy()  # fmt: skip
    errors = {}
    fits = {"off": None, "default": DEFAULT_FIT, "free": Fit2DConfig(rot_prior=0.0, iters=20)}
    for name, fit in fits.items():
        stage = InferenceStage(TurnedOracle(gt, cam, toy_body_model), toy_body_model, fit_2d=fit)
        people = stage(Frame(k, 0.0, img), tracks)
        errors[name] = max(np.abs(p.joints_m - true[i]).max() for i, p in enumerate(people))
    assert errors["off"] > 1.0, errors  # 20% too far at 5-6.5 m
    # the default keeps some of the network's turn (its pull towards it), the free fit none
    assert errors["default"] < 0.3 * errors["off"] and errors["free"] < 0.01, errors
