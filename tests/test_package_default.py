"""Packaging a training checkpoint: inference weights kept, contrastive head dropped, int8 storage
a fraction of the size, and a model card written from what the checkpoint records."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from multiroi.checkpoint import load_checkpoint, save_checkpoint
from multiroi.model import ModelConfig, MultiRoINet
from train.config import TrainConfig
from train.package_default import main


@pytest.fixture(scope="module")
def synth_dir(make_synth):
    return make_synth(3, seed=12, shard_size=3)


def _training_checkpoint(path, data_dir, **loss):
    cfg = ModelConfig(backbone="resnet18", num_rois=2, hidden=32, pe_levels=2, contrastive=True)
    torch.manual_seed(0)
    net = MultiRoINet(cfg)
    tcfg = TrainConfig()
    tcfg.data = dataclasses.replace(tcfg.data, train=str(data_dir), batch_size=8)
    tcfg.loss = dataclasses.replace(tcfg.loss, **loss)
    extra = {"train_config": tcfg.to_dict(), "rng": [], "scaler": {}}
    return net, save_checkpoint(path, net, cfg, body_model_id="toy-v1", step=1234, extra=extra)


def test_int8_package_keeps_the_network_and_writes_a_card(synth_dir, toy_body_model_path,
                                                         tmp_path, monkeypatch):  # fmt: skip
    monkeypatch.setenv("MULTIROI_BODY_MODEL", str(toy_body_model_path))
    net, src = _training_checkpoint(tmp_path / "last.pt", synth_dir, kp2d=0.0, kp3d=0.0)
    out = tmp_path / "model" / "default.pt"
    assert main(["--checkpoint", str(src), "--out", str(out), "--storage", "int8",
                 "--check", str(synth_dir)]) == 0  # fmt: skip
    slim, meta = load_checkpoint(out)
    assert not slim.cfg.contrastive and meta.step == 1234
    assert not any("contrast" in k or "proj" in k for k in slim.state_dict())
    assert out.stat().st_size < 0.35 * src.stat().st_size  # int8: about a quarter
    x = torch.randn(1, 2, 3, 64, 48)
    box = torch.tensor([[[0.1, -0.2, 0.5], [0.0, 0.1, 0.7]]])
    with torch.no_grad():
        a, b = net.eval()(x, box), slim.eval()(x, box)
    assert (a.rotmat - b.rotmat).abs().max() < 0.05  # same network up to int8 rounding
    card = out.with_suffix(".md").read_text()
    assert "# Model card: default.pt" in card
    assert "weights stored as int8 (weight matrices and conv kernels, one scale" in card
    assert "1,234 steps of 8 persons" in card and "9,872 persons seen" in card
    assert "camera was not trained" in card  # no 2D or camera-frame 3D term in the recipe
    assert (
        "3 images, seed 12" in card
        and "1 to 4 people" in card
        and "| pa_mpjpe |" in card
        and "mirror_closer" in card
    )
    assert "toy-v1" in card and "its own licence applies" in card
    assert "facing the camera within" not in card  # the default data covers all directions


def test_card_states_a_narrow_facing_range_and_a_trained_camera(synth_dir, tmp_path):
    data = tmp_path / "front"
    data.mkdir()
    meta = json.loads((synth_dir / "meta.json").read_text())
    meta["scene"]["yaw_deg"] = [-60.0, 60.0]
    (data / "meta.json").write_text(json.dumps(meta))
    _, src = _training_checkpoint(tmp_path / "last.pt", data)  # the paper's terms: kp2d on
    out = tmp_path / "m.pt"
    assert main(["--checkpoint", str(src), "--out", str(out)]) == 0
    card = out.with_suffix(".md").read_text()
    assert "within -60 to 60 degrees" in card
    assert "camera was not trained" not in card
    assert "Not evaluated" in card and "fp16" in card


def test_card_lists_the_stages_behind_a_warm_start(synth_dir, toy_body_model_path, tmp_path):
    """Stage 1 without a camera term, stage 2 (warm start, backbone frozen) trains the camera:
    the card lists both recipes and no longer says the camera is untrained."""
    from tests.test_trainer import tiny_config
    from train.trainer import train

    cfg1 = tiny_config(synth_dir, toy_body_model_path, tmp_path / "s1", steps=2)
    cfg1.loss.kp2d = cfg1.loss.kp3d = 0.0
    train(cfg1)
    cfg2 = tiny_config(synth_dir, toy_body_model_path, tmp_path / "s2", steps=2)
    cfg2.run.init, cfg2.optim.freeze = str(tmp_path / "s1" / "last.pt"), "backbone"
    train(cfg2)
    out = tmp_path / "m.pt"
    assert main(["--checkpoint", str(tmp_path / "s2" / "last.pt"), "--out", str(out)]) == 0
    card = out.with_suffix(".md").read_text()
    assert "Stage 1, `s1/last.pt`:" in card and "Stage 2, this model, started from stage 1" in card
    assert card.count("2 steps of 2 persons") == 2 and "frozen: backbone" in card
    assert "initialised from scratch" in card and "initialised from `s1/last.pt`" in card
    assert "camera was not trained" not in card


def test_card_data_recorded_at_training_time(synth_dir, toy_body_model_path, tmp_path,
                                             monkeypatch):  # fmt: skip
    """Trained with a relative --data.train, packaged from another directory: the card still
    describes the data, which the trainer recorded in the checkpoint."""
    from tests.test_trainer import tiny_config
    from train.trainer import train

    monkeypatch.chdir(synth_dir.parent)
    cfg = tiny_config(synth_dir.name, toy_body_model_path, tmp_path / "rel", steps=1)
    train(cfg)
    monkeypatch.chdir(tmp_path)
    assert main(["--checkpoint", "rel/last.pt", "--out", "m.pt"]) == 0
    assert "3 images, seed 12" in (tmp_path / "m.md").read_text()


def test_card_data_of_several_sources_and_of_a_feature_cache(tmp_path):
    from train.model_card import _scene_union, data_metas, limitations

    front, cache = tmp_path / "front", tmp_path / "cache"
    front.mkdir()
    cache.mkdir()
    scene = {"width": 512, "height": 512, "yaw_deg": [-60, 60]}
    (front / "meta.json").write_text(json.dumps({"num_images": 7, "seed": 1, "scene": scene}))
    wide = {"num_images": 9, "seed": 2, "scene": {**scene, "yaw_deg": [-180, 180]}}
    (cache / "meta.json").write_text(json.dumps({"kind": "multiroi-feature-cache",
                                                 "source_meta": wide}))  # fmt: skip
    metas = data_metas(f"{front},{cache},{tmp_path / 'none'}")
    assert [m["seed"] for m in metas] == [1, 2]  # the cache names its source folder's data
    assert _scene_union(metas)["yaw_deg"] == [-180, 180]
    assert not any("facing" in x for x in limitations([{}], _scene_union(metas), 5))
    assert any("facing the camera within -60" in x for x in limitations([{}], scene, 5))
    no_cc = limitations([{"loss": {"cc": 0, "kp2d": 1}}], scene, 5)
    assert any("camera-consistency" in x for x in no_cc)
    # the person boxes the model wants: a squeezed body from visible ones, or a detector
    assert any("squeezed" in x for x in limitations([{}], scene, 5, "visible"))
    assert any("MediaPipe's pose detector" in x for x in limitations([{}], scene, 5, "amodal"))


def test_card_options_name_the_flip_only_for_a_lifter():
    """The card tells a user of a lifter network how to switch the test-time flip and the
    lifted joints in the pose, and whether this model has them on; a network without the
    lifter has no such option."""
    from multiroi.model import ModelConfig
    from train.model_card import options

    assert options(ModelConfig(backbone="resnet18")) == []
    off = options(ModelConfig(backbone="blazepose_full", lifter=True))
    on = options(ModelConfig(backbone="blazepose_full", lifter=True, flip_test=True))
    assert len(off) == 3 and "off in this model" in off[0] and "--flip-test on" in off[0]
    assert "on in this model" in on[0]
    # and the lifted joints in the pose, with this model's weight
    assert "Lifted joints into the pose (off in this model)" in off[1]
    ik = options(ModelConfig(backbone="blazepose_full", lifter=True, lifter_ik=0.7))
    assert "(weight 0.7 in this model)" in ik[1] and "--lifter-ik W" in ik[1]
    assert "--fit-2d off" in off[2]  # the fit to the lifter's 2D joints


def test_package_puts_the_lifted_joints_into_the_pose(toy_body_model, toy_body_model_path,
                                                      tmp_path, caplog):  # fmt: skip
    """--lifter-ik W packages a lifter network with that weight and its body model's rest
    joints; a body model other than the network's is refused in one line."""
    cfg = ModelConfig(backbone="blazepose_full", num_rois=1, contrastive=False, lifter=True)
    src = save_checkpoint(tmp_path / "lifter.pt", MultiRoINet(cfg), cfg,
                          body_model_id=toy_body_model.model_id)  # fmt: skip
    out = tmp_path / "ik.pt"
    assert main(["--checkpoint", str(src), "--out", str(out), "--lifter-ik", "0.7",
                 "--body-model", str(toy_body_model_path)]) == 0  # fmt: skip
    net, meta = load_checkpoint(out)
    assert meta.model_config.lifter_ik == 0.7
    assert torch.allclose(net.ik_joint_template, toy_body_model.joint_template)
    assert "(weight 0.7 in this model)" in out.with_suffix(".md").read_text()
    # packaged again (the weight off): the card still names the training checkpoint
    assert main(["--checkpoint", str(out), "--out", str(tmp_path / "off.pt"), "--lifter-ik",
                 "0"]) == 0  # fmt: skip
    off, meta = load_checkpoint(tmp_path / "off.pt")
    assert off.cfg.lifter_ik == 0 and meta.extra["source_checkpoint"] == "lifter.pt"
    other = save_checkpoint(tmp_path / "other.pt", MultiRoINet(cfg), cfg, body_model_id="smpl")
    assert main(["--checkpoint", str(other), "--out", str(tmp_path / "x.pt"), "--lifter-ik",
                 "0.7", "--body-model", str(toy_body_model_path)]) == 2  # fmt: skip
    assert "trained for body model smpl" in caplog.text
    assert not (tmp_path / "x.pt").exists()


def test_package_keeps_the_turn_lifter_and_its_card_says_how_it_was_trained(
    toy_body_model, toy_body_model_path, tmp_path
):
    """A network from train.turn_lifter packaged: the turn lifter's weights (int8 like the
    other heads), its weight b, and the stage in the card; with --lifter-ik 0 it is off too."""
    from multiroi.model.network import set_lifter_ik

    cfg = ModelConfig(backbone="blazepose_full", num_rois=1, contrastive=False, lifter=True,
                      lifter_ik=0.7, lifter_turn=0.75)  # fmt: skip
    net = MultiRoINet(cfg)
    set_lifter_ik(net, 0.7, toy_body_model, replace_rest=True)
    info = {"recipe": {"weight": 0.75, "samples": 1000, "rendered_share": 0.5, "steps": 10},
            "scores": {"held_out_persons": 100, "turn_error_deg": 18.9,
                       "lifter_turn_error_deg": 24.1}}  # fmt: skip
    src = save_checkpoint(tmp_path / "turn.pt", net, cfg, body_model_id=toy_body_model.model_id,
                          extra={"stages": [], "turn_lifter": info})  # fmt: skip
    out = tmp_path / "packed.pt"
    assert main(["--checkpoint", str(src), "--out", str(out), "--storage", "int8-heads",
                 "--body-model", str(toy_body_model_path)]) == 0  # fmt: skip
    packed, meta = load_checkpoint(out)
    assert meta.model_config.lifter_turn == 0.75 and packed.lifter.turn is not None
    w, w0 = packed.lifter.turn.inp.weight, net.lifter.turn.inp.weight
    assert (w - w0).abs().max() <= w0.abs().max() / 100  # int8: within a step of 1/127
    card = out.with_suffix(".md").read_text()
    assert "turn lifter (b 0.75)" in card and "torso turn error 18.9 degrees" in card
    assert main(["--checkpoint", str(out), "--out", str(tmp_path / "off.pt"), "--lifter-ik",
                 "0"]) == 0  # fmt: skip
    assert load_checkpoint(tmp_path / "off.pt")[0].cfg.lifter_turn == 0


def test_a_network_straight_from_tune2d_keeps_its_stages_in_the_card(toy_body_model, tmp_path):
    """train.tune2d's output packaged as it is (no lifter retrained after it): every earlier
    stage and the tail's own recipe and 2D scores reach the card."""
    cfg = ModelConfig(backbone="blazepose_full", num_rois=1, contrastive=False, lifter=True,
                      lifter_tail=True, lifter_tap="t226")  # fmt: skip
    stages = [{"checkpoint": "bp5w/last.pt", "step": 12000,
               "train_config": {"run": {"steps": 12000}}}]  # fmt: skip
    info = {"recipe": {"init": "runs/s/default.pt", "steps": 3000, "batch": 64, "lr": 1e-4},
            "scores": {"val_before": {"persons": 1218, "error_2d_all_box": 0.0196},
                       "val_after": {"persons": 1218, "error_2d_all_box": 0.0184}},
            "data": [{"cache": "runs/u/t226_front7", "persons": 10018}]}  # fmt: skip
    src = save_checkpoint(tmp_path / "tail.pt", MultiRoINet(cfg), cfg,
                          body_model_id=toy_body_model.model_id,
                          extra={"stages": stages, "tune2d": info})  # fmt: skip
    out = tmp_path / "packed.pt"
    assert main(["--checkpoint", str(src), "--out", str(out), "--storage", "int8-heads"]) == 0
    meta = load_checkpoint(out)[1]
    assert meta.extra["stages"] == stages and meta.extra["tune2d"] == info
    card = out.with_suffix(".md").read_text()
    assert "Stage 1, `bp5w/last.pt`" in card and "Stage 2, this model" in card
    assert "3,000 steps of 64" in card and "0.0196 -> 0.0184 box heights" in card
    assert "from the 32x32 map" in card and "Not recorded in the checkpoint" not in card
