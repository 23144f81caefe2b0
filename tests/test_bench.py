"""A tiny benchmark run writes a valid CSV, markdown table and PNG plot."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from realtime.bench import CSV_FIELDS, BenchRow, main, markdown_table, read_csv, time_side_by_side


def test_tiny_bench_run(tmp_path: Path, toy_body_model_path: Path, capsys):
    out = tmp_path / "bench"
    rc = main(["--rois", "1", "2", "--persons", "1", "2", "--backbone", "test_resnet",
               "--hidden", "16", "--warmup", "1", "--iters", "2", "--modes", "model", "e2e",
               "--clip-frames", "2", "--clip-size", "96", "72", "--cache-dir", str(tmp_path),
               "--body-model", str(toy_body_model_path), "--out", str(out)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "cpu" in printed and "torch" in printed and "onnxruntime" in printed
    with open(out / "bench.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == CSV_FIELDS
    rows = read_csv(out / "bench.csv")
    from multiroi.backends.cpu import cpu_has_fast_bf16

    # torch fp32 (+ bf16 on a CPU with AMX), onnxruntime x 2 RoI counts x 2 persons x 2 modes
    assert len(rows) == (24 if cpu_has_fast_bf16() else 16)
    expect = {("torch", "fp32"), ("onnxruntime", "fp32")} | (
        {("torch", "bf16")} if cpu_has_fast_bf16() else set()
    )
    assert {(r.backend, r.precision) for r in rows} == expect
    assert {(r.rois, r.persons, r.mode) for r in rows} == {
        (r, p, m) for r in (1, 2) for p in (1, 2) for m in ("model", "e2e")
    }
    for r in rows:
        assert r.p50_ms > 0 and r.p95_ms >= r.p50_ms
        assert r.fps == pytest.approx(1000.0 / r.p50_ms, rel=1e-3)
    table = (out / "bench.md").read_text()
    assert table.count("\n| ") == 1 + len(rows)  # header + one line per row
    assert "| torch | fp32 | model | 2 | 2 |" in table and "1.00x" in table
    import matplotlib.image

    img = matplotlib.image.imread(out / "bench.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 200


def test_ratio_column_and_side_by_side_timing():
    rows = [BenchRow("torch", "fp32", 5, 1, "model", 10.0, 100.0, 120.0),
            BenchRow("onnxruntime", "fp32", 5, 1, "model", 25.0, 40.0, 50.0)]  # fmt: skip
    table = markdown_table(rows, {"cpu": "x", "cores": "2", "gpu": "none"}, "cmd")
    assert "| onnxruntime | fp32 | model | 5 | 1 | 25.00 | 40.0 | 50.0 | 2.50x |" in table
    import time

    timed = time_side_by_side([lambda: time.sleep(0.004), lambda: None], warmup=0, iters=5)
    assert timed[0][0] >= 3.5 and timed[1][0] < timed[0][0]
    assert all(p95 >= p50 for p50, p95 in timed) and np.isfinite(timed).all()


def test_bench_builds_the_asked_for_backbone_resolution_and_pooling():
    from realtime.bench import BenchConfig, _build_net, build_parser

    args = build_parser().parse_args(["--downsample", "2", "--pool", "spatial", "--out", "x"])
    assert (args.downsample, args.pool) == (2, "spatial")
    net = _build_net(BenchConfig(backbone="resnet18", hidden=16, downsample=2, pool="spatial"), 2)
    assert net.cfg.downsample == 2 and net.backbone.pool == "spatial" and net.feature_dim == 768


def test_bench_flip_times_the_default_model_with_the_flip_off_and_on(tmp_path):
    from multiroi.checkpoint import DEFAULT_CHECKPOINT
    from realtime import bench_flip

    assert bench_flip.main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--persons", "1",
                            "--runtimes", "torch", "--iters", "1", "--warmup", "0",
                            "--out", str(tmp_path)]) == 0  # fmt: skip
    table = (tmp_path / "bench_flip.md").read_text()
    row = [line for line in table.splitlines() if line.startswith("| torch | 1 |")]
    assert len(row) == 1 and float(row[0].split("|")[5]) > 0


def test_bench_flip_refuses_a_network_without_the_lifter(tmp_path, caplog):
    from multiroi.checkpoint import save_checkpoint
    from multiroi.model import ModelConfig, MultiRoINet
    from realtime import bench_flip

    net = MultiRoINet(ModelConfig(backbone="resnet18", num_rois=1, contrastive=False))
    ckpt = save_checkpoint(tmp_path / "m.pt", net, net.cfg, body_model_id="toy")
    args = ["--checkpoint", str(ckpt), "--runtimes", "torch", "--out", str(tmp_path / "b")]
    assert bench_flip.main(args) == 2
    assert "keypoint lifter" in caplog.text


def test_bench_flip_against_another_checkpoint_names_both(tmp_path):
    from multiroi.checkpoint import DEFAULT_CHECKPOINT, save_checkpoint
    from multiroi.model import ModelConfig, MultiRoINet
    from realtime import bench_flip

    net = MultiRoINet(ModelConfig(backbone="resnet18", num_rois=5, contrastive=False))
    other = save_checkpoint(tmp_path / "small.pt", net, net.cfg, body_model_id="toy")
    assert bench_flip.main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--against", str(other),
                            "--persons", "1", "--runtimes", "torch", "--iters", "1",
                            "--warmup", "0", "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    table = (tmp_path / "b" / "bench_flip.md").read_text()
    assert "| small.pt, p50 ms | multiroi_default.pt, p50 ms |" in table
    assert "flip" not in table.splitlines()[-1]
    one = MultiRoINet(ModelConfig(backbone="resnet18", num_rois=1, contrastive=False))
    bad = save_checkpoint(tmp_path / "one.pt", one, one.cfg, body_model_id="toy")
    assert bench_flip.main(["--checkpoint", str(DEFAULT_CHECKPOINT), "--against", str(bad),
                            "--runtimes", "torch", "--out", str(tmp_path / "c")]) == 2
