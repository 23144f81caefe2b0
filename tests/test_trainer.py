"""Trainer: a tiny run learns, resumes exactly, and runs under torchrun with 2 gloo processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from train.config import TrainConfig
from train.trainer import train

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def synth_dir(make_synth):
    return make_synth(4, seed=8, shard_size=2)


def tiny_config(synth_dir, body_path, out_dir, steps=4) -> TrainConfig:
    cfg = TrainConfig()
    cfg.data.train, cfg.data.body_model = str(synth_dir), str(body_path)
    cfg.data.batch_size, cfg.data.num_workers = 2, 0
    cfg.model.backbone, cfg.model.num_rois = "mobilenetv3_small_050", 2
    cfg.model.hidden, cfg.model.pe_levels, cfg.model.proj_dim = 32, 2, 16
    cfg.run.out_dir, cfg.run.steps, cfg.run.init = str(out_dir), steps, "scratch"
    cfg.run.ckpt_every, cfg.run.image_every, cfg.run.eval_every = 2, 2, 0
    cfg.run.log_every, cfg.run.progress = 1, False
    cfg.optim.lr = 1e-3
    return cfg


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_killed_and_resumed_run_ends_with_the_same_weights(synth_dir, toy_body_model_path,
                                                           tmp_path):  # fmt: skip
    full = train(tiny_config(synth_dir, toy_body_model_path, tmp_path / "full"))
    assert full.step == 4
    cfg = tiny_config(synth_dir, toy_body_model_path, tmp_path / "split")
    cfg.run.stop_after = 2  # as if killed right after the step-2 checkpoint
    assert train(cfg).step == 2
    cfg.run.stop_after = 0
    resumed = train(cfg, resume=True)
    assert resumed.step == 4
    a, b = _weights(tmp_path / "full" / "last.pt"), _weights(tmp_path / "split" / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    start = _weights(tmp_path / "split" / "ckpt_0000002.pt")
    assert any(not torch.equal(a[k], start[k]) for k in a)  # the last 2 steps changed weights
    payload = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert payload["step"] == 4 and "optimizer" in payload
    assert payload["extra"]["train_config"]["run"]["steps"] == 4
    assert (tmp_path / "full" / "config.json").is_file()
    assert list((tmp_path / "full" / "tb").glob("events.*"))


def test_loss_falls_when_overfitting_one_batch(synth_dir, toy_body_model_path, tmp_path):
    from train.trainer import Trainer

    cfg = tiny_config(synth_dir, toy_body_model_path, tmp_path / "fit", steps=30)
    cfg.augment.enabled = False
    cfg.model.dropout = 0.0
    tr = Trainer(cfg)
    batch = next(iter(tr.loader()))
    first = tr.train_step(batch)
    for _ in range(25):
        last = tr.train_step(batch)
    assert last["total"] < 0.5 * first["total"]
    assert set(first) >= {"kp2d", "kp3d", "verts", "pose", "betas", "cc", "con", "grad_norm"}


def test_ablation_switches_drop_terms(synth_dir, toy_body_model_path, tmp_path):
    from train.trainer import Trainer

    cfg = tiny_config(synth_dir, toy_body_model_path, tmp_path / "abl")
    cfg.loss.cc, cfg.loss.con, cfg.model.fusion = 0.0, 0.0, "none"
    tr = Trainer(cfg)
    logs = tr.train_step(next(iter(tr.loader())))
    assert "cc" not in logs and "con" not in logs and tr.model.proj_head is None


def test_cli_torchrun_two_gloo_processes(synth_dir, toy_body_model_path, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(29500 + os.getpid() % 1000), "-m", "train",
           "--data.train", str(synth_dir), "--data.body_model", str(toy_body_model_path),
           "--data.batch_size", "2", "--data.num_workers", "0",
           "--model.backbone", "mobilenetv3_small_050", "--model.num_rois", "2",
           "--model.hidden", "32", "--model.pe_levels", "2", "--run.out_dir", str(out),
           "--run.steps", "2", "--run.ckpt_every", "2", "--run.init", "scratch",
           "--run.image_every", "0", "--run.eval_every", "0", "--run.progress", "false",
           "--run.device", "cpu"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    payload = torch.load(out / "last.pt", weights_only=True)
    assert payload["step"] == 2 and len(payload["extra"]["rng"]) == 2  # both ranks' RNG saved


def test_learning_rate_schedules():
    from train.config import OptimConfig
    from train.trainer import lr_at

    const = OptimConfig(lr=1e-3)
    assert [lr_at(s, const, 100) for s in (0, 50, 99)] == [1e-3] * 3
    warm = OptimConfig(lr=1e-3, warmup_steps=10)
    assert lr_at(0, warm, 100) == pytest.approx(1e-4) and lr_at(9, warm, 100) == 1e-3
    cos = OptimConfig(lr=1e-3, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    lrs = [lr_at(s, cos, 110) for s in range(10, 111)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)
    assert lrs[50] == pytest.approx(0.55e-3) and all(np.diff(lrs) <= 0)
    with pytest.raises(ValueError, match="schedule"):  # refused when the config is built
        OptimConfig(schedule="step")


def test_mixed_precision_mode_per_device(monkeypatch):
    from train import runtime

    assert runtime.amp_mode(False, torch.device("cpu")) == (False, torch.float32)
    assert runtime.amp_mode(True, torch.device("cuda")) == (True, torch.float16)
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: True)
    assert runtime.amp_mode(True, torch.device("cpu")) == (True, torch.bfloat16)
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: False)
    assert runtime.amp_mode(True, torch.device("cpu")) == (False, torch.float32)


def test_the_shipped_resnet50_gpu_config_loads():
    from train.config import load_config

    cfg = load_config(REPO / "train" / "configs" / "resnet50_gpu.yaml")
    assert (cfg.model.backbone, cfg.model.num_rois, cfg.model.fusion) == ("resnet50", 5, "raf")
    assert cfg.optim.lr == 1e-4 and cfg.optim.schedule == "constant" and cfg.loss.con > 0
    cfg.model.validate()


def test_cli_flags_reach_the_config_including_the_word_none():
    """--model.fusion none is the no-RAF ablation: it must not be read as "flag not given"."""
    import argparse

    from train.config import add_config_args, config_from_args

    p = argparse.ArgumentParser()
    add_config_args(p)
    cfg = config_from_args(p.parse_args(["--model.fusion", "none", "--loss.cc", "0",
                                         "--data.val", "none", "--optim.lr", "2e-4"]))  # fmt: skip
    assert cfg.model.fusion == "none" and cfg.loss.cc == 0 and cfg.data.val is None
    assert cfg.optim.lr == 2e-4
    base = config_from_args(p.parse_args([]))
    assert base.model.fusion == "raf" and base.optim.lr == 1e-4  # not given: defaults kept


def test_warm_start_from_a_one_roi_run(synth_dir, toy_body_model_path, tmp_path, monkeypatch):
    from multiroi.checkpoint import CheckpointError
    from train.trainer import build_model

    cfg = tiny_config(synth_dir, toy_body_model_path, tmp_path / "r1", steps=2)
    cfg.model.num_rois, cfg.loss.con = 1, 0.0  # no contrastive head in the source
    source = train(cfg).checkpoint
    src = _weights(source)
    cfg5 = tiny_config(synth_dir, toy_body_model_path, tmp_path / "r5")
    cfg5.run.init = str(source)
    import multiroi.checkpoint as ck
    import train.trainer as trainer_mod

    reads = []
    real_read = ck.read_checkpoint_file
    monkeypatch.setattr(trainer_mod, "read_checkpoint_file",
                        lambda *a, **k: reads.append(a[0]) or real_read(*a, **k))  # fmt: skip
    monkeypatch.setattr(ck, "read_checkpoint_file",
                        lambda *a, **k: reads.append(a[0]) or real_read(*a, **k))  # fmt: skip
    model = build_model(cfg5)
    assert len(reads) == 1  # the file is read once to learn its kind and take its weights
    own = model.state_dict()
    assert model.cfg.num_rois == 2 and model.proj_head is not None
    shared = [k for k in src if k.startswith(("backbone.", "mesh_decoder.", "camera_decoder."))]
    assert shared and all(torch.equal(own[k], src[k]) for k in shared)
    fresh = tiny_config(synth_dir, toy_body_model_path, tmp_path / "x")
    assert not torch.equal(build_model(fresh).state_dict()[shared[0]], src[shared[0]])
    cfg5.model.backbone = "resnet18"
    with pytest.raises(CheckpointError, match="backbone 'mobilenetv3_small_050'"):
        build_model(cfg5)


def test_resume_of_a_warm_started_run_needs_no_init_file(synth_dir, toy_body_model_path,
                                                         tmp_path):  # fmt: skip
    from multiroi.checkpoint import load_checkpoint

    cfg = tiny_config(synth_dir, toy_body_model_path, tmp_path / "src", steps=2)
    source = train(cfg).checkpoint
    init = tmp_path / "init.pt"
    init.write_bytes(source.read_bytes())
    warm = tiny_config(synth_dir, toy_body_model_path, tmp_path / "warm", steps=4)
    warm.run.init, warm.run.stop_after = str(init), 2
    assert train(warm).step == 2
    init.unlink()  # the user cleaned up: resuming must not need it
    warm.run.stop_after = 0
    resumed = train(warm, resume=True)
    assert resumed.step == 4
    _, meta = load_checkpoint(resumed.checkpoint)
    stages = meta.extra["stages"]
    assert len(stages) == 1 and stages[0]["checkpoint"].endswith("init.pt")  # kept from last.pt


def test_frozen_backbone_keeps_weights_and_statistics_while_heads_learn(
    synth_dir, toy_body_model_path, tmp_path
):
    from train.trainer import Trainer

    cfg = tiny_config(synth_dir, toy_body_model_path, tmp_path / "frozen", steps=2)
    cfg.optim.freeze = "backbone"
    tr = Trainer(cfg)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    tr.run()
    after = tr.model.state_dict()
    bb = [k for k in before if k.startswith("backbone.")]
    assert any("running_mean" in k for k in bb)  # BatchNorm statistics are among them
    assert all(torch.equal(before[k], after[k]) for k in bb)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("mesh_"))
    tr.model.train()
    assert tr.model.training and not tr.model.backbone.training
    assert not any(m.training for m in tr.model.backbone.modules())
    n_opt = sum(p.numel() for g in tr.optim.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in tr.model.parameters() if p.requires_grad) > 0


def test_freeze_names_an_unknown_part_in_one_line():
    from train.config import OptimConfig

    with pytest.raises(ValueError, match="unknown part.*'head'.*backbone, fusion"):
        OptimConfig(freeze="backbone,head")
    assert OptimConfig(freeze=" backbone , fusion ").freeze


def test_a_run_with_lifted_joints_in_the_pose_holds_its_body_models_rest_joints(
    synth_dir, toy_body_model, toy_body_model_path, tmp_path
):
    """--model.lifter_ik W: the network gets the run's body model's rest joints (for its
    evaluation and its checkpoints), whatever a warm start brought."""
    from multiroi.checkpoint import load_checkpoint

    cfg = tiny_config(synth_dir, toy_body_model_path, tmp_path / "ik", steps=1)
    cfg.model.backbone, cfg.model.num_rois, cfg.model.lifter = "blazepose_full", 1, True
    cfg.model.lifter_ik, cfg.loss.con = 0.7, 0.0
    cfg.optim.freeze = "backbone"
    net, meta = load_checkpoint(train(cfg).checkpoint)
    assert meta.model_config.lifter_ik == 0.7
    assert torch.allclose(net.ik_joint_template, toy_body_model.joint_template)


def test_training_on_a_gpu_this_torch_cannot_see_is_one_line(tmp_path, caplog):
    import torch

    from train.__main__ import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    argv = ["--run.device", "cuda", "--run.out_dir", str(tmp_path / "run"),
            "--data.train", str(tmp_path / "none"), "--run.steps", "1"]  # fmt: skip
    assert main(argv) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "sees no CUDA GPU" in errors[0], errors
    assert not (tmp_path / "run" / "last.pt").exists()
