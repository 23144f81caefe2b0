"""The offline detectors' benchmark (realtime.bench_detect) on a tiny generated data set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from multiroi.types import Detections
from realtime import bench_detect


@pytest.fixture(scope="module")
def synth_dir(make_synth):
    return make_synth(3, seed=5, shard_size=3)


def _true_boxes(root, key: str = "box_xyxy"):
    """{image name: true boxes}, and the number of persons with 6 or more joints in view."""
    boxes, scored = {}, 0
    for lab_path in sorted(root.glob("shard_*/labels.npz")):
        with np.load(lab_path) as z:
            for k, name in enumerate(z["image_name"]):
                sel = z["person_image"] == k
                boxes[str(name)] = z[key][sel]
                scored += int((z["joints2d"][sel, :, 2].sum(1) >= 6).sum())
    return boxes, scored


def test_scores_an_oracle_a_blind_and_a_shifted_detector(synth_dir, monkeypatch):
    truth, n_persons = _true_boxes(synth_dir)
    assert n_persons >= 2

    class Oracle:  # knows the image by the order of the calls: the images in shard order
        def __init__(self, shift=0.0):
            self.shift, self.calls = shift, 0

        def __call__(self, image, frame_index=None):
            name = sorted(truth)[self.calls % len(truth)]
            self.calls += 1
            b = truth[name] + np.array([self.shift, 0, self.shift, 0], np.float32)
            return Detections(b, np.ones(len(b), np.float32))

    class Blind:
        def __call__(self, image, frame_index=None):
            return Detections.empty()

    dets = {"oracle": Oracle(), "blind": Blind(), "shifted": Oracle(shift=1e6)}
    monkeypatch.setattr(
        bench_detect, "offline_detectors", lambda passes, runtime, box_extent="visible": dets
    )
    rows = {r["detector"]: r for r in bench_detect.run([str(synth_dir)], "none", None,
                                                      min_box_px=0)}  # fmt: skip
    assert rows["oracle"]["persons"] == n_persons
    assert rows["oracle"]["found_pct"] == 100 and rows["oracle"]["iou_median"] == 1.0
    assert rows["blind"]["found_pct"] == 0 and rows["shifted"]["found_pct"] == 0
    assert "pa_mpjpe_det" not in rows["oracle"]  # no checkpoint, no mesh cost
    md = bench_detect.to_markdown(list(rows.values()))
    assert f"| oracle | {n_persons} | 100% | 1.00 |" in md


def test_a_whole_body_model_is_scored_from_whole_body_boxes(synth_dir, monkeypatch, tmp_path):
    """A model trained on whole-body boxes: the detector's (here the true ones) are matched by
    their part in the image and fed whole; the true box it is compared with is whole too."""
    from multiroi.checkpoint import save_checkpoint
    from multiroi.model import ModelConfig, MultiRoINet

    whole, _ = _true_boxes(synth_dir, "box_amodal")
    asked = []

    class Oracle:
        calls = 0

        def __call__(self, image, frame_index=None):
            b = whole[sorted(whole)[self.calls % len(whole)]]
            self.calls += 1
            return Detections(b, np.ones(len(b), np.float32))

    def detectors(passes, runtime, box_extent="visible"):
        asked.append(box_extent)
        return {"oracle": Oracle()}

    monkeypatch.setattr(bench_detect, "offline_detectors", detectors)
    cfg = ModelConfig(backbone="mobilenetv3_small_050", num_rois=1, hidden=16, pe_levels=1,
                      contrastive=False, box_extent="amodal")  # fmt: skip
    from multiroi.body import load_body_model

    ckpt = save_checkpoint(tmp_path / "m.pt", MultiRoINet(cfg).eval(), cfg,
                           body_model_id=load_body_model(None).model_id)  # fmt: skip
    row = bench_detect.run([str(synth_dir)], str(ckpt), None, min_box_px=0)[0]
    assert asked == ["amodal"] and row["found_pct"] == 100
    assert row["iou_whole_median"] == 1.0 and 0.5 < row["iou_median"] < 1.0  # pixels, vertices
    assert row["pa_mpjpe_det"] == row["pa_mpjpe_gt"]  # the same boxes: the same meshes
    assert "whole-body IoU" in bench_detect.to_markdown([row])


def test_one_detection_finds_one_person_at_most():
    iou = np.array([[0.9, 0.2], [0.8, 0.1], [0.5, 0.6], [0.1, 0.2]])
    assert bench_detect.match_one_to_one(iou).tolist() == [0, -1, 1, -1]
    assert bench_detect.match_one_to_one(np.zeros((2, 0))).tolist() == [-1, -1]


def test_cli_writes_the_table_and_refuses_a_folder_without_data(synth_dir, tmp_path, capsys):
    out = tmp_path / "b"
    assert bench_detect.main(["--data", str(synth_dir), "--checkpoint", "none", "--out",
                              str(out), "--max-images", "2"]) == 0  # fmt: skip
    rows = json.loads((out / "bench_detect.json").read_text())["rows"]
    assert rows and rows[0]["detector"] == "hog" and "cpu" in capsys.readouterr().out
    assert (out / "bench_detect.md").read_text().startswith("| data | detector |")
    assert bench_detect.main(["--data", str(tmp_path / "empty"), "--checkpoint", "none",
                              "--out", str(out)]) == 2  # fmt: skip
