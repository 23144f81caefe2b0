"""python -m train.bench_step: every part of the step is timed and the table is printed."""

from __future__ import annotations

import pytest

from train.bench_step import main


def test_bench_step_prints_every_part(toy_body_model_path, capsys):
    argv = ["--repeats", "1", "--data.body_model", str(toy_body_model_path),
            "--data.batch_size", "2", "--model.backbone", "mobilenetv3_small_050",
            "--model.num_rois", "2", "--model.hidden", "32", "--model.pe_levels", "2",
            "--model.proj_dim", "16", "--run.device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for part in ("training step", "forward + losses + backward", "body joints alone",
                 "body joints via the mesh", "Adam, fused", "Adam, per-tensor loop"):  # fmt: skip
        assert f"| {part}" in out, part
    assert "joints via the mesh / joints alone:" in out and "batch 2 x 2 RoIs" in out


def test_bench_step_refuses_zero_repeats(capsys):
    with pytest.raises(SystemExit):
        main(["--repeats", "0"])
    assert "--repeats must be at least 1" in capsys.readouterr().err
