"""The shipped default model (skipped when the file is absent) on a generated demo clip with known
people: stable track ids, each mesh projected onto its person, and poses better than the mean pose.

"Onto its person": the projected vertex centroid of the predicted mesh against that of the true
mesh. (A mesh's vertex centroid is not its box centre: the true meshes' lie 12-16% of the box
height above it, as head and hands carry many vertices.)
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch

from multiroi.checkpoint import DEFAULT_CHECKPOINT

pytestmark = pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="no default model")

FRAMES = 16


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run the CLI on a 16-frame 320x240 demo clip with the default model; (gt, recording)."""
    import realtime.sources as sources
    import run_camera
    from realtime.demo import ensure_demo_clip

    tmp = tmp_path_factory.mktemp("default_model")
    kw = dict(cache_dir=tmp / "cache", num_frames=FRAMES, size_wh=(320, 240))
    clip = ensure_demo_clip(**kw)
    mp = pytest.MonkeyPatch()
    mp.setattr(sources, "open_demo_source", functools.partial(sources.open_demo_source, **kw))
    mp.delenv("MULTIROI_CHECKPOINT", raising=False)  # conftest turns the default off
    try:
        argv = ["--source", "demo", "--render", "none", "--out", str(tmp / "out"), "--no-smooth"]
        assert run_camera.main(argv) == 0
    finally:
        mp.undo()
    with np.load(clip.gt_path, allow_pickle=False) as g, np.load(tmp / "out" / "demo.npz") as r:
        gt, rec = dict(g), dict(r)
    rec["score"] = json.loads((tmp / "out" / "demo_score.json").read_text())  # realtime.score
    return gt, rec


def _match(gt: dict, frame: int, box: np.ndarray) -> int:
    """The true person of a recorded box: the visible part's box or, for a model trained on
    whole-body boxes, the whole body's."""
    d = [np.abs(gt[k][frame] - box).sum(1) for k in ("box_xyxy", "box_amodal") if k in gt]
    return int(np.argmin(np.minimum.reduce(d)))


def test_ids_stay_stable_and_meshes_land_on_their_persons(run):
    from multiroi.body import load_body_model

    gt, rec = run
    body = load_body_model(None)
    assert len(rec["track_id"]) >= FRAMES  # at least one person per frame
    ids_of: dict[int, set[int]] = {}
    errors = []
    K = gt["K"]

    def centroid(rotmat, betas, transl) -> np.ndarray:
        """Projected vertex centroids f32[N,2] px of meshes."""
        t = [torch.as_tensor(np.asarray(x, np.float32)) for x in (rotmat, betas, transl)]
        with torch.no_grad():
            v = body(*t).vertices.numpy()
        return (v[..., :2] / v[..., 2:] * K[[0, 1], [0, 1]] + K[:2, 2]).mean(1)

    pred = centroid(rec["rotmat"], rec["betas"], rec["transl_m"])
    idx = [(int(k), _match(gt, int(k), b)) for k, b in zip(rec["frame_index"], rec["box_xyxy"],
                                                            strict=True)]  # fmt: skip
    true = centroid(*(np.stack([gt[n][k, p] for k, p in idx])
                      for n in ("rotmat", "betas", "transl")))  # fmt: skip
    for i, (k, p) in enumerate(idx):
        ids_of.setdefault(p, set()).add(int(rec["track_id"][i]))
        gbox = gt["box_xyxy"][k, p]
        if gbox[0] > 1 and gbox[2] < 319 and gbox[1] > 1 and gbox[3] < 239:  # not truncated
            errors.append(np.linalg.norm(pred[i] - true[i]) / (gbox[3] - gbox[1]))
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of
    assert errors and float(np.median(errors)) < 0.10, f"centroid off by {np.median(errors):.1%}"


def test_poses_beat_the_mean_pose(run):
    from multiroi.body import load_body_model, load_mean_params
    from multiroi.geometry.rotations import rot6d_to_rotmat
    from multiroi.metrics import pa_mpjpe

    gt, rec = run
    body = load_body_model(None)
    idx = [(int(k), _match(gt, int(k), b)) for k, b in zip(rec["frame_index"], rec["box_xyxy"],
                                                            strict=True)]  # fmt: skip
    with torch.no_grad():
        pred = body(torch.from_numpy(rec["rotmat"]), torch.from_numpy(rec["betas"])).joints
        mean = load_mean_params()
        rot0 = rot6d_to_rotmat(torch.from_numpy(mean.pose6d).reshape(24, 6))
        n = len(idx)
        betas0 = torch.from_numpy(mean.betas).expand(n, -1).contiguous()
        base = body(rot0.expand(n, -1, -1, -1).contiguous(), betas0).joints
    truth = np.stack([gt["joints"][k, p] for k, p in idx])
    model_err = float(np.mean(pa_mpjpe(pred.numpy(), truth)))
    mean_err = float(np.mean(pa_mpjpe(base.numpy(), truth)))
    assert model_err < 0.8 * mean_err, (model_err, mean_err)
    # the loop's own score of the run (realtime.score, matched by box IoU) says the same
    score = rec["score"]
    assert score["matched"] == n and score["id_switches"] == 0 and score["false_rows"] == 0
    assert score["pa_mpjpe_mm"] == pytest.approx(model_err, rel=1e-3)
    assert score["mean_pose_pa_mpjpe_mm"] == pytest.approx(mean_err, rel=1e-3)
