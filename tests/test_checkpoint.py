"""Tests of multiroi.checkpoint: round trip, atomic write, clear errors, CLIFF encoder import."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import multiroi
from multiroi.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from multiroi.cliff_import import import_cliff_backbone
from multiroi.model import ModelConfig, MultiRoINet

TINY = dict(backbone="mobilenetv3_small_050", num_rois=2, hidden=32, pe_levels=2, proj_dim=8)


def tiny_net(seed: int = 0, **kw) -> MultiRoINet:
    torch.manual_seed(seed)
    return MultiRoINet(ModelConfig(**{**TINY, **kw}))


def inputs(p: int = 2, r: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(p, r, 3, 64, 48, generator=g), torch.randn(p, r, 3, generator=g)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A trained-for-one-step tiny model saved with an Adam state."""
    net = tiny_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    net.train()
    out = net(*inputs(3))
    (out.cam_local.sum() + out.pose6d.sum() + out.proj.sum()).backward()
    opt.step()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    extra = {"dataset": "synthetic", "losses": [0.5, 0.25], "mean": torch.ones(3)}
    save_checkpoint(
        path, net, net.cfg, body_model_id="anny-smpl-v1", step=42, optimizer=opt, extra=extra
    )
    return path, net.eval(), opt


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


def test_round_trip_weights_and_meta(saved):
    path, net, opt = saved
    model, meta = load_checkpoint(path)
    assert not model.training
    x = inputs()
    with torch.no_grad():
        a, b = net(*x), model(*x)
    assert torch.equal(a.rotmat, b.rotmat) and torch.equal(a.cam_local, b.cam_local)
    assert meta.model_config == net.cfg
    assert meta.body_model_id == "anny-smpl-v1" and meta.step == 42
    assert meta.project_version == multiroi.__version__
    assert meta.format_version == FORMAT_VERSION
    assert meta.extra["losses"] == [0.5, 0.25] and torch.equal(meta.extra["mean"], torch.ones(3))
    restored = torch.optim.Adam(model.parameters(), lr=1e-4)
    restored.load_state_dict(meta.optimizer_state)
    want = opt.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(restored.state_dict()["state"][0]["exp_avg"], want)
    assert want.abs().sum() > 0


def test_file_layout_is_weights_only_loadable(saved):
    payload = torch.load(saved[0], weights_only=True)
    assert payload["format"] == FORMAT
    assert payload["model_config"] == saved[1].cfg.to_dict()
    assert "init_pose6d" in payload["state_dict"]  # the mean parameters travel with the weights


def test_mean_params_restored_from_checkpoint(tmp_path):
    net = tiny_net()
    with torch.no_grad():
        net.init_betas.fill_(0.3)
    save_checkpoint(tmp_path / "m.pt", net, net.cfg, body_model_id="x")
    model, _ = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(model.init_betas, torch.full((10,), 0.3))


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    net = tiny_net()
    path = tmp_path / "m.pt"
    save_checkpoint(path, net, net.cfg, body_model_id="x", step=1)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, net, net.cfg, body_model_id="x", step=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pt"]  # no temporary file left behind


def test_save_rejects_bad_arguments(tmp_path):
    net = tiny_net()
    with pytest.raises(ValueError, match="differs from the model's own config"):
        save_checkpoint(tmp_path / "a.pt", net, ModelConfig(), body_model_id="x")
    with pytest.raises(ValueError, match="body_model_id"):
        save_checkpoint(tmp_path / "a.pt", net, net.cfg, body_model_id="")
    with pytest.raises(ValueError, match=r"extra\['f'\] holds a builtin_function"):
        save_checkpoint(tmp_path / "a.pt", net, net.cfg, body_model_id="x", extra={"f": print})
    assert not (tmp_path / "a.pt").exists()


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(tmp_path / "nope.pt")
    assert "nope.pt not found" in one_line(exc)


def test_truncated_file(saved, tmp_path):
    data = saved[0].read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    assert "not a readable torch file (truncated" in one_line(exc)


def test_non_torch_file(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    assert "notes.pt is not a torch file (neither a zip archive nor a pickle)" in one_line(exc)
    # random bytes (a YAML file, an image) used to read "contains Python objects": now the same
    rng = np.random.default_rng(0)
    for _ in range(8):
        data = bytes([0x41]) + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
        bad.write_bytes(data)
        with pytest.raises(CheckpointError, match="is not a torch file"):
            load_checkpoint(bad)
    truncated = tmp_path / "cut.pt"  # a real zip cut short: torch's own reading error
    torch.save({"a": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_checkpoint(truncated)


def test_unsafe_pickle_refused(tmp_path):
    bad = tmp_path / "obj.pt"
    torch.save({"format": FORMAT, "thing": logging.getLogger("x")}, bad)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    assert "weights_only" in one_line(exc)


def test_wrong_format(tmp_path):
    bad = tmp_path / "sd.pt"
    torch.save({"encoder.conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    msg = one_line(exc)
    assert "expected format='multiroi-checkpoint', found format=None" in msg
    assert "import_cliff_backbone" in msg
    torch.save([1, 2], bad)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(bad)


def _rewrite(src: Path, dst: Path, **changes) -> Path:
    payload = torch.load(src, weights_only=True)
    for key, value in changes.items():
        if key == "model_config":
            payload[key] = {**payload[key], **value}
        else:
            payload[key] = value
    torch.save(payload, dst)
    return dst


def test_other_architecture_weights(saved, tmp_path):
    bad = _rewrite(saved[0], tmp_path / "arch.pt", model_config={"backbone": "resnet18"})
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(bad)
    msg = one_line(exc)
    assert "was trained with backbone resnet18, 2 RoIs" in msg
    assert "its weights do not match" in msg


def test_expected_config_mismatch(saved):
    expected = ModelConfig(**{**TINY, "num_rois": 5})
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(saved[0], expected_config=expected)
    msg = one_line(exc)
    assert "expected num_rois=5 but it has num_rois=2" in msg
    model, _ = load_checkpoint(saved[0], expected_config=ModelConfig(**{**TINY, "dropout": 0.1}))
    assert model.cfg.num_rois == 2  # dropout is not an architecture field


def test_newer_format_version_and_bad_config(saved, tmp_path):
    bad = _rewrite(saved[0], tmp_path / "v.pt", format_version=FORMAT_VERSION + 1)
    with pytest.raises(CheckpointError, match="upgrade multiroi"):
        load_checkpoint(bad)
    bad = _rewrite(saved[0], tmp_path / "c.pt", model_config={"wings": 2})
    with pytest.raises(CheckpointError, match=r"unusable model_config: unknown .*\['wings'\]"):
        load_checkpoint(bad)


def test_pretrained_flag_does_not_download(saved, tmp_path, monkeypatch):
    import timm

    real = timm.create_model

    def no_download(name, pretrained=False, **kw):
        assert not pretrained, "load_checkpoint must not fetch pretrained weights"
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", no_download)
    src = _rewrite(saved[0], tmp_path / "p.pt", model_config={"pretrained": True})
    model, meta = load_checkpoint(src)
    assert meta.model_config.pretrained is True and model.cfg.pretrained is True


# --- CLIFF import -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet50_net():
    torch.manual_seed(1)
    return MultiRoINet(ModelConfig(backbone="resnet50", num_rois=1, hidden=16, pe_levels=1))


def fake_cliff_file(path: Path, wrapper: str = "model") -> dict[str, torch.Tensor]:
    """A CLIFF-like file: {wrapper: {"module.encoder.<resnet50 key>": ..., regressor keys}}."""
    import timm

    torch.manual_seed(123)
    encoder = timm.create_model("resnet50", pretrained=False).state_dict()
    sd = {f"module.encoder.{k}": v for k, v in encoder.items()}  # includes encoder.fc.*
    sd["module.fc1.weight"] = torch.zeros(1024, 2048 + 157)
    sd["module.decpose.weight"] = torch.zeros(144, 1024)
    torch.save({wrapper: sd, "epoch": 3}, path)
    return encoder


def test_import_cliff_backbone(resnet50_net, tmp_path, caplog):
    encoder = fake_cliff_file(tmp_path / "cliff.pt")
    before = resnet50_net.fusion.score.weight.clone()
    with caplog.at_level(logging.WARNING, logger="multiroi.checkpoint"):
        n = import_cliff_backbone(tmp_path / "cliff.pt", resnet50_net)
    target = resnet50_net.backbone.model.state_dict()
    assert n == len(target) == len(encoder) - 2  # all but encoder.fc.weight/bias
    for key in ("conv1.weight", "layer3.2.bn2.running_var", "layer4.2.conv3.weight"):
        assert torch.equal(target[key], encoder[key])
    assert torch.equal(resnet50_net.fusion.score.weight, before)  # only the backbone changes
    assert "2 encoder keys unused" in caplog.text and "fc.bias" in caplog.text


def test_import_cliff_state_dict_wrapper_without_module_prefix(resnet50_net, tmp_path):
    torch.manual_seed(5)
    sd = {
        f"encoder.{k}": torch.randn_like(v) if v.is_floating_point() else v
        for k, v in resnet50_net.backbone.model.state_dict().items()
    }
    torch.save({"state_dict": sd}, tmp_path / "c.pt")
    assert import_cliff_backbone(tmp_path / "c.pt", resnet50_net) == len(sd)
    got = resnet50_net.backbone.model.state_dict()["layer1.0.conv1.weight"]
    assert torch.equal(got, sd["encoder.layer1.0.conv1.weight"])


def test_import_cliff_errors(resnet50_net, tmp_path):
    with pytest.raises(CheckpointError, match="backbone 'mobilenetv3_small_050'"):
        import_cliff_backbone(tmp_path / "x.pt", tiny_net())
    torch.save({"model": {"fc1.weight": torch.zeros(2)}}, tmp_path / "noenc.pt")
    with pytest.raises(CheckpointError, match="no 'encoder.\\*' weights"):
        import_cliff_backbone(tmp_path / "noenc.pt", resnet50_net)
    torch.save({"encoder.conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="another shape .*conv1.weight"):
        import_cliff_backbone(tmp_path / "shape.pt", resnet50_net)
    with pytest.raises(CheckpointError, match="not found"):
        import_cliff_backbone(tmp_path / "missing.pt", resnet50_net)


def test_load_network_takes_the_checkpoints_roi_count_unless_one_is_asked(tmp_path):
    from multiroi.backends.torch_backend import load_network
    from multiroi.model import ModelConfig, MultiRoINet

    cfg = ModelConfig(backbone="mobilenetv3_small_050", num_rois=1, hidden=32, pe_levels=2,
                      contrastive=False)  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "one.pt", MultiRoINet(cfg), cfg, body_model_id="toy-v1")
    assert load_network(ckpt, None).cfg.num_rois == 1  # run_camera.py without --rois
    assert load_network(ckpt, 1).cfg.num_rois == 1
    with pytest.raises(
        ValueError, match="trained with 1 RoIs but 5 were asked for; pass --rois 1"
    ):
        load_network(ckpt, 5)
    assert load_network(None, None, backbone="mobilenetv3_small_050").cfg.num_rois == 5
    from multiroi.backends import create_backend

    for name in ("torch", "onnxruntime"):  # without num_rois a backend takes the model's
        assert create_backend(name, ckpt).num_rois == 1
        with pytest.raises(ValueError, match="pass --rois 1"):
            create_backend(name, ckpt, num_rois=5)
