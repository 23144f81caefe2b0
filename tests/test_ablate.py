"""Ablation runner: each row changes one switch, the full row runs once per seed, finished rows are
kept, and a base config without the full model's parts is refused."""

from __future__ import annotations

import json
import shutil

import pytest

import train.trainer
from train.ablate import ROWS, ablate, check_base, format_markdown, main
from train.config import TrainConfig


@pytest.fixture(scope="module")
def synth_dir(make_synth):
    return make_synth(2, seed=21, shard_size=2)


def _base(synth_dir, body_path) -> TrainConfig:
    cfg = TrainConfig()
    cfg.data.train = cfg.data.val = str(synth_dir)
    cfg.data.body_model = str(body_path)
    cfg.data.batch_size, cfg.data.num_workers = 2, 0
    cfg.model.backbone, cfg.model.hidden = "mobilenetv3_small_050", 32
    cfg.model.pe_levels, cfg.model.proj_dim = 2, 16
    cfg.run.steps, cfg.run.init, cfg.run.progress = 2, "scratch", False
    cfg.run.ckpt_every, cfg.run.image_every, cfg.run.eval_every = 2, 0, 0
    return cfg


def test_rows_change_one_switch_each_and_finished_rows_are_kept(
    synth_dir, toy_body_model_path, tmp_path, monkeypatch
):
    rows = [r for r in ROWS if r.slug in ("r2", "full", "no_raf", "no_con")]
    out = tmp_path / "abl"
    results = ablate(_base(synth_dir, toy_body_model_path), out, rows, seeds=[0, 3])
    assert [r["slug"] for r in results] == ["r2", "full", "full_seed3", "no_raf", "no_con"]
    configs = {r["slug"]: json.loads((out / r["slug"] / "config.json").read_text())
               for r in results}  # fmt: skip
    assert [configs[s]["model"]["num_rois"] for s in configs] == [2, 5, 5, 5, 5]
    assert configs["no_raf"]["model"]["fusion"] == "none" and configs["no_raf"]["loss"]["cc"] > 0
    assert configs["no_con"]["loss"]["con"] == 0 and configs["no_con"]["model"]["fusion"] == "raf"
    assert configs["full_seed3"]["run"]["seed"] == 3 and configs["full"]["run"]["seed"] == 0
    for r in results:  # trained to the budget and evaluated on every held-out person
        assert r["step"] == 2 and r["persons"] > 0
        assert all(v == v for k, v in r["metrics"].items() if k != "pve")  # no NaN
    saved = json.loads((out / "ablation.json").read_text())
    assert [r["slug"] for r in saved["rows"]] == [r["slug"] for r in results]
    table = (out / "ablation.md").read_text().splitlines()
    assert len(table) == 2 + len(results)
    assert "| without RAF | 5 | no | yes | yes | 0 |" in table[5]

    def no_training(*a, **k):
        raise AssertionError("a finished row was trained again")

    monkeypatch.setattr(train.trainer, "train", no_training)
    again = ablate(_base(synth_dir, toy_body_model_path), out, rows, seeds=[0, 3])
    assert [r["metrics"] for r in again] == [r["metrics"] for r in results]


def test_base_without_the_full_models_parts_is_refused(synth_dir, toy_body_model_path):
    cfg = _base(synth_dir, toy_body_model_path)
    check_base(cfg)
    cfg.loss.cc = 0.0
    with pytest.raises(SystemExit, match="--loss.cc > 0"):
        check_base(cfg)
    cfg.loss.cc, cfg.data.val = 1.0, None
    with pytest.raises(SystemExit, match="--data.val"):
        check_base(cfg)


def test_unknown_row_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit):
        main(["--out", "x", "--rows", "full,r9"])
    assert "unknown rows ['r9']" in capsys.readouterr().err


def test_table_has_a_cell_per_column():
    row = {"name": "full (R = 5)", "num_rois": 5, "raf": True, "cc": True, "con": False,
           "seed": 1, "metrics": dict.fromkeys(
               ("mpjpe", "pa_mpjpe", "pve", "depth_err", "transl_err", "roi_disagreement"),
               12.345)}  # fmt: skip
    head, sep, line = format_markdown([row]).splitlines()
    assert head.count("|") == sep.count("|") == line.count("|") == 13
    assert line.startswith("| full (R = 5) | 5 | yes | yes | no | 1 | 12.3 |")


def test_a_row_folder_of_another_recipe_is_refused(synth_dir, toy_body_model_path, tmp_path):
    rows = [r for r in ROWS if r.slug == "r1"]
    base = _base(synth_dir, toy_body_model_path)
    ablate(base, tmp_path, rows, seeds=[0])
    base.optim.lr *= 2
    with pytest.raises(SystemExit, match="holds a run of another recipe"):
        ablate(base, tmp_path, rows, seeds=[0])
    base.optim.lr /= 2
    base.run.steps = 3  # a longer budget continues the same recipe, in a copied folder too
    shutil.copytree(tmp_path / "r1", tmp_path / "copy" / "r1")
    assert ablate(base, tmp_path / "copy", rows, seeds=[0])[0]["step"] == 3
    assert json.loads((tmp_path / "r1" / "eval.json").read_text())["step"] == 2
