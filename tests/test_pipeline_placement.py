"""Where the inference stage puts each person: in front of the camera under its box, persons
with a diverged or collapsed camera skipped, the recorded camera the one that placed them,
a given focal following the frame size."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_fakes import WH, FakeBackend, person_boxes, write_video

from multiroi.types import Frame, Tracks
from realtime.detect import GivenBoxesDetector
from realtime.infer import InferenceStage
from realtime.pipeline import Pipeline
from realtime.recording import Recorder
from realtime.sources import VideoFileSource
from realtime.track import PersonTracker


def test_inference_stage_output_placement(toy_body_model):
    """The mesh lands in front of the camera, roughly under its box."""
    stage = InferenceStage(FakeBackend(), toy_body_model)
    img = np.zeros((WH[1], WH[0], 3), np.uint8)
    tracks = Tracks(np.array([5]), person_boxes(0)[:1], np.ones(1, np.float32))
    (p,) = stage(Frame(0, 0.0, img), tracks)
    assert p.track_id == 5 and p.vertices_m.shape == (toy_body_model.num_vertices, 3)
    cam = stage.cameras(WH)
    uv = p.vertices_m[:, :2] / p.vertices_m[:, 2:] * cam.focal + np.array(cam.principal)
    box = person_boxes(0)[0]
    assert box[0] - 10 < uv[:, 0].mean() < box[2] + 10 and box[1] < uv[:, 1].mean() < box[3]
    assert stage(Frame(1, 0.1, img), Tracks.empty()) == []
    assert len(stage(Frame(2, 0.2, img), Tracks(np.array([1]), np.full((1, 4), np.nan),
                                                  np.ones(1)))) == 0  # fmt: skip


class ScaleBackend(FakeBackend):
    """RoI scale s for persons whose RoI-0 centre is left of 100 px: -0.9 (a diverged network)
    or 0.0025 (a collapsed scale, seen in trained networks on small boxes: kilometres away)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def __call__(self, batch):
        out = super().__call__(batch)
        out.cam_local[batch.centers[:, 0, 0] < 100, :, 0] = self.scale
        return out


def _two_people(stage):
    img = np.zeros((WH[1], WH[0], 3), np.uint8)
    tracks = Tracks(np.array([1, 2]), person_boxes(0), np.ones(2, np.float32))
    return stage(Frame(0, 0.0, img), tracks)


def test_negative_scale_person_is_skipped_not_placed_far_away(toy_body_model):
    stage = InferenceStage(ScaleBackend(-0.9), toy_body_model)
    people = _two_people(stage)
    assert [p.track_id for p in people] == [2]  # person 1 (centre x 40 px) had s < 0
    assert 0 < people[0].transl_m[2] < 100 and stage.skipped_nan == 1


def test_person_placed_kilometres_away_is_skipped(toy_body_model):
    stage = InferenceStage(ScaleBackend(0.0025), toy_body_model)
    people = _two_people(stage)
    assert [p.track_id for p in people] == [2] and stage.skipped_nan == 1
    far = InferenceStage(ScaleBackend(0.0025), toy_body_model, max_depth_m=1e6)
    people = _two_people(far)  # the bound is what skipped person 1
    assert [p.track_id for p in people] == [1, 2] and people[0].transl_m[2] > 100


def test_recording_stores_the_camera_that_placed_the_meshes(tmp_path, toy_body_model):
    """The recorder was built with a guessed size (a camera's asked-for 640x480); the stored K
    is the inference camera of the frames' real size."""
    from multiroi.geometry.camera import Camera
    from realtime.cameras import CameraProvider
    from realtime.config import CameraConfig

    cameras = CameraProvider(CameraConfig(fov_deg=90.0))
    rec = Recorder(tmp_path / "rec.npz", cameras=cameras)
    rec.set_camera(Camera.from_fov(90.0, (640, 480)).K, (640, 480))  # the guess
    det = GivenBoxesDetector(np.stack([person_boxes(t) for t in range(5)]))
    infer = InferenceStage(FakeBackend(), toy_body_model, cameras, min_box_px=8)
    src = VideoFileSource(write_video(tmp_path / "v.avi", 5))
    Pipeline(src, det, PersonTracker(max_persons=4), infer, recorder=rec).run()
    rec.close()
    with np.load(tmp_path / "rec.npz", allow_pickle=False) as data:
        assert data["image_wh"].tolist() == list(WH)
        np.testing.assert_array_equal(data["K"], cameras(WH).K)
        assert abs(data["K"][0, 0] - WH[0] / 2) < 1e-9  # 90 deg across 160 px: f = 80 px


def test_a_given_focal_follows_a_change_of_frame_size():
    """--focal is in pixels of the frames first delivered; the same lens at twice the width
    has twice the focal in pixels."""
    from realtime.cameras import CameraProvider
    from realtime.config import CameraConfig

    cameras = CameraProvider(CameraConfig(focal_px=500.0))
    assert cameras((640, 480)).focal == pytest.approx(500.0)
    assert cameras((1280, 960)).focal == pytest.approx(1000.0)
    assert cameras((320, 240)).focal == pytest.approx(250.0)
    assert cameras((640, 480)).focal == pytest.approx(500.0)  # cached, unchanged
