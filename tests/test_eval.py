"""Evaluation: perfect predictions give zero errors; the CLI prints a table and writes JSON."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from multiroi.geometry.cliff import full_to_local
from train.datasets import collate, open_dataset
from train.eval import METRIC_NAMES, UNITS, _joint_metrics, evaluate, main, mirror_joints


@pytest.fixture(scope="module")
def synth_dir(make_synth):
    return make_synth(3, seed=11, shard_size=3)


class Oracle(torch.nn.Module):
    """Returns the ground truth of a known batch (plus an optional depth offset, metres)."""

    def __init__(self, batch, depth_offset: float = 0.0):
        super().__init__()
        self.b, self.dz = batch, depth_offset

    def forward(self, crops, box_info):
        b = self.b
        t = b.transl.clone()
        t[:, 2] += self.dz
        f = 0.5 * (b.K[:, 0, 0] + b.K[:, 1, 1])
        cam = full_to_local(t[:, None].expand(-1, b.sizes.shape[1], -1), b.centers, b.sizes,
                            f[:, None], b.K[:, None, :2, 2])  # fmt: skip
        return SimpleNamespace(rotmat=b.rotmat, betas=b.betas, cam_local=cam)


def test_oracle_scores_zero_and_depth_offset_is_measured(synth_dir, toy_body_model):
    ds = open_dataset(str(synth_dir), 3)
    batch = collate([ds[i] for i in range(len(ds))])
    m = evaluate(Oracle(batch), toy_body_model, ds, batch_size=len(ds))
    assert set(m) == set(METRIC_NAMES)
    for k in METRIC_NAMES:
        if k not in UNITS and not (k.endswith("_full_view") and m["full_view"] == 0):
            assert m[k] < 1.0, (k, m[k])  # mm
    m2 = evaluate(Oracle(batch, depth_offset=0.25), toy_body_model, ds, batch_size=len(ds))
    assert abs(m2["depth_err"] - 250.0) < 1.0 and abs(m2["transl_err"] - 250.0) < 1.0
    assert m2["pa_mpjpe"] < 1.0


class Oracle2D(Oracle):
    """The oracle placed ``depth_offset`` too far, with the true joints' 2D positions in the
    base crop (a lifter's output)."""

    def __init__(self, batch, body, depth_offset: float):
        super().__init__(batch, depth_offset)
        b = batch
        joints = body.joints(b.rotmat, b.betas) + b.transl[:, None]
        uv = joints[..., :2] / joints[..., 2:] * b.K[:, None, [0, 1], [0, 1]] + b.K[:, None, :2, 2]
        self.j2d = (uv - b.centers[:, :1]) / b.sizes[:, :1, None]

    def forward(self, crops, box_info):
        out = super().forward(crops, box_info)
        out.joints_2d = self.j2d
        return out


def test_the_fit_to_the_2d_joints_corrects_the_depth(synth_dir, toy_body_model):
    from multiroi.geometry.fit2d import Fit2DConfig

    ds = open_dataset(str(synth_dir), 3)
    batch = collate([ds[i] for i in range(len(ds))])
    oracle = Oracle2D(batch, toy_body_model, depth_offset=0.4)
    off = evaluate(oracle, toy_body_model, ds, batch_size=len(ds))
    on = evaluate(oracle, toy_body_model, ds, batch_size=len(ds), fit_2d=Fit2DConfig())
    assert abs(off["depth_err"] - 400.0) < 1.0
    assert on["depth_err"] < 20.0 and on["mpjpe"] < 5.0, on


def test_full_view_metrics_count_only_fully_seen_persons(synth_dir, toy_body_model):
    ds = open_dataset(str(synth_dir), 1)
    assert all(r.visible is not None and r.visible.shape == (24,) for r in ds.records)
    n = 5  # copies of the first person: even ones fully seen, odd ones with a hidden wrist
    ds.records = [dataclasses.replace(ds.records[0], visible=np.ones(24, np.float32))
                  for _ in range(n)]  # fmt: skip
    for rec in ds.records[1::2]:
        rec.visible[20] = 0.0
    batch = collate([ds[i] for i in range(n)])
    odd = torch.arange(n) % 2 == 1
    batch.rotmat[odd, 1:] = torch.eye(3)  # wrong poses for the persons not fully seen
    m = evaluate(Oracle(batch), toy_body_model, ds, batch_size=n)
    assert m["full_view"] == pytest.approx(100.0 * ((n + 1) // 2) / n)
    assert m["pa_mpjpe_full_view"] < 1.0 and m["mpjpe_full_view"] < 1.0
    assert m["pa_mpjpe"] > 5.0 and m["mpjpe"] > 5.0


def test_cli_writes_table_and_json(synth_dir, toy_body_model_path, tmp_path, capsys,
                                   monkeypatch):  # fmt: skip
    from multiroi.checkpoint import save_checkpoint
    from multiroi.model import ModelConfig, MultiRoINet

    monkeypatch.setenv("MULTIROI_BODY_MODEL", str(toy_body_model_path))
    cfg = ModelConfig(backbone="mobilenetv3_small_050", num_rois=2, hidden=32, pe_levels=2)
    ckpt = save_checkpoint(tmp_path / "m.pt", MultiRoINet(cfg), cfg, body_model_id="toy-v1")
    out = tmp_path / "res.json"
    assert main(["--checkpoint", str(ckpt), "--data", str(synth_dir), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pa_mpjpe" in text and "mm" in text
    res = json.loads(out.read_text())
    assert res["persons"] >= 1
    assert all(math.isfinite(res["metrics_mm"][k]) for k in METRIC_NAMES
               if k not in UNITS and not k.endswith("_full_view"))  # fmt: skip
    assert 0.0 <= res["mirror_closer_pct"] <= 100.0 and "%" in text
    assert 0.0 <= res["full_view_pct"] <= 100.0
    assert res["fit_2d"] is True  # as the live pipeline does, unless --fit-2d off
    assert res["metrics_mm"]["pa_mpjpe"] > 5  # an untrained network is far from the truth
    assert np.isfinite(res["metrics_mm"]["mpjpe"])


def test_plot_curve_writes_a_png_and_refuses_an_empty_log(tmp_path):
    import json

    from train.plot_curve import plot_curve

    log = tmp_path / "eval.jsonl"
    rows = [{"step": s, "pa_mpjpe": 120 - s / 10, "mpjpe": 300 - s / 5, "pve": 350.0}
            for s in (0, 100, 200)]  # fmt: skip
    log.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    png = plot_curve(log, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no evaluations"):
        plot_curve(tmp_path / "empty.jsonl", tmp_path / "d.png")


def test_plot_curve_puts_stages_end_to_end_and_names_their_held_out_sets(tmp_path):
    import json

    from train.plot_curve import main, plot_stages, read_stages

    logs = []
    for name, val, steps in (
        ("a", "runs/wide/val", (0, 1000, 2000)),
        ("b", "runs/front/val", (0, 500, 1500)),
    ):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"data": {"val": val}}))
        rows = [{"step": s, "pa_mpjpe": 120 - s / 100, "mpjpe": 300 - s / 50} for s in steps]
        (run / "eval.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        logs.append(run / "eval.jsonl")
    a, b = read_stages(logs)
    assert (a.name, a.val, a.x) == ("a", "wide/val", [0, 1000, 2000])
    assert (b.name, b.val, b.start, b.x) == ("b", "front/val", 2000, [2000, 2500, 3500])
    png = plot_stages(logs, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert main([str(logs[0]), str(logs[1]), str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").is_file()
    assert main([str(logs[0]), str(tmp_path / "missing.jsonl"), str(tmp_path / "n.png")]) == 2
    assert not (tmp_path / "n.png").exists()


def test_mirror_closer_tells_the_truth_from_its_mirror_image():
    rng = np.random.default_rng(0)
    gt = np.concatenate([rng.normal(0, 0.3, (6, 24, 3)), np.ones((6, 24, 1))], -1)
    assert np.allclose(mirror_joints(mirror_joints(gt)), gt)
    _, pa, mirror = _joint_metrics(gt[..., :3], gt)
    assert max(pa) < 1e-6 and mirror == [0.0] * 6
    _, pa, mirror = _joint_metrics(mirror_joints(gt)[..., :3], gt)
    assert min(pa) > 10 and mirror == [100.0] * 6  # a mirror image is not a rotation
    gt[:, 5:, 3] = 0  # joints without a mirror partner with confidence are left out
    _, _, mirror = _joint_metrics(mirror_joints(gt)[..., :3], gt)
    assert mirror == [100.0] * 6


def test_cli_refuses_an_unusable_checkpoint_in_one_line(synth_dir, tmp_path, caplog):
    bad = tmp_path / "bad.pt"
    torch.save({"model_config": {"backbone": "resnet18", "no_such_key": 1}}, bad)
    assert main(["--checkpoint", str(bad), "--data", str(synth_dir)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(bad) in errors[0]


def test_cli_flip_test_reaches_the_network_and_needs_the_lifter(
    synth_dir, toy_body_model_path, tmp_path, monkeypatch, caplog
):
    from multiroi.checkpoint import save_checkpoint
    from multiroi.model import ModelConfig, MultiRoINet

    monkeypatch.setenv("MULTIROI_BODY_MODEL", str(toy_body_model_path))
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="blazepose_full", num_rois=2, hidden=32, pe_levels=2,
                      lifter=True, contrastive=False)  # fmt: skip
    net = MultiRoINet(cfg, allow_random_init=True)
    with torch.no_grad():
        net.lifter.landmark_map.normal_(std=0.3)  # lifted joints that depend on the crop
    ckpt = save_checkpoint(tmp_path / "m.pt", net, cfg, body_model_id="toy-v1")
    res = {}
    for flip in ("off", "on"):
        out = tmp_path / f"{flip}.json"
        args = ["--checkpoint", str(ckpt), "--data", str(synth_dir), "--max-persons", "3",
                "--flip-test", flip, "--json", str(out)]  # fmt: skip
        assert main(args) == 0
        res[flip] = json.loads(out.read_text())["metrics_mm"]
    assert res["on"]["mpjpe"] != res["off"]["mpjpe"]
    assert res["on"]["depth_err"] == pytest.approx(res["off"]["depth_err"])  # camera: no lifter
    plain = ModelConfig(backbone="mobilenetv3_small_050", num_rois=2, hidden=32, pe_levels=2)
    ckpt2 = save_checkpoint(tmp_path / "p.pt", MultiRoINet(plain), plain, body_model_id="toy")
    caplog.clear()
    assert main(["--checkpoint", str(ckpt2), "--data", str(synth_dir), "--flip-test", "on"]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "keypoint lifter" in errors[0]


def test_mean_pose_scores_the_untrained_output_whatever_the_weights(
    synth_dir, toy_body_model, toy_body_model_path, tmp_path, capsys, monkeypatch
):
    from multiroi.checkpoint import save_checkpoint
    from multiroi.geometry.rotations import rot6d_to_rotmat
    from multiroi.model import ModelConfig, MultiRoINet
    from train.eval import MeanPose

    cfg = ModelConfig(backbone="mobilenetv3_small_050", num_rois=2, hidden=32, pe_levels=2)
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = MultiRoINet(cfg).eval()
        for p in net.mesh_decoder.parameters():  # far from the mean pose, differently per seed
            torch.nn.init.normal_(p, std=0.3)
        nets.append(net)
    ds = open_dataset(str(synth_dir), 2)
    own = [evaluate(n, toy_body_model, ds) for n in nets]
    mean = [evaluate(MeanPose(n), toy_body_model, ds) for n in nets]
    assert mean[0]["pa_mpjpe"] == pytest.approx(mean[1]["pa_mpjpe"], abs=1e-3)
    assert abs(own[0]["pa_mpjpe"] - mean[0]["pa_mpjpe"]) > 1.0  # the weights no longer matter
    # the score of the mean pose itself, every person given it
    batch = collate([ds[i] for i in range(len(ds))])
    rot = rot6d_to_rotmat(nets[0].init_pose6d.reshape(-1, 6))
    pred = toy_body_model(rot.expand(len(ds), -1, -1, -1), torch.zeros(len(ds), 10)).joints
    _, pa, _ = _joint_metrics(pred.numpy(), batch.kp3d.numpy(), [])
    assert mean[0]["pa_mpjpe"] == pytest.approx(float(np.mean(pa)), abs=1e-3)

    monkeypatch.setenv("MULTIROI_BODY_MODEL", str(toy_body_model_path))
    ckpt = save_checkpoint(tmp_path / "m.pt", nets[0], cfg, body_model_id="toy-v1")
    assert main(["--checkpoint", str(ckpt), "--data", str(synth_dir), "--mean-pose"]) == 0
    assert "m.pt's mean pose" in capsys.readouterr().out
    res = json.loads((tmp_path / "m.mean_pose.eval.json").read_text())
    assert res["mean_pose"] and res["metrics_mm"]["pa_mpjpe"] == pytest.approx(
        mean[0]["pa_mpjpe"], abs=1e-3)
