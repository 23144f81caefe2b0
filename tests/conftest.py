"""Shared fixtures: everything the tests need is generated here (no downloads, no licences)."""

from __future__ import annotations

import os

# One intra-op thread per test process: tiny tensors gain nothing from more, and on a busy 2-core
# machine OpenMP threads oversubscribe (a first forward pass went from 0.01 s to 2.8 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# tests build their own small networks; the shipped default model is tested on its own
os.environ["MULTIROI_CHECKPOINT"] = "none"

import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def toy_body_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny body model in SMPL's layout (see multiroi.body.toy)."""
    from multiroi.body.toy import make_toy_body_model

    return make_toy_body_model(tmp_path_factory.mktemp("body") / "toy.npz")


@pytest.fixture(scope="session")
def toy_body_model(toy_body_model_path: Path):
    from multiroi.body import load_body_model

    return load_body_model(toy_body_model_path)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.fixture(scope="session")
def make_synth(tmp_path_factory: pytest.TempPathFactory, toy_body_model_path: Path):
    """``make_synth(num, seed, shard_size) -> Path``: a tiny synthetic data set (128x128 images of
    the toy body model at 2-4 m), generated with the real ``train.synth`` generator."""

    def make(num: int, seed: int, shard_size: int) -> Path:
        from train.scene import SceneConfig
        from train.synth import generate

        out = tmp_path_factory.mktemp("synth")
        cfg = SceneConfig(width=128, height=128, distance_m=(2.0, 4.0))
        generate(out, num, seed=seed, cfg=cfg, body_model_path=str(toy_body_model_path),
                 workers=1, shard_size=shard_size, progress=False)  # fmt: skip
        return out

    return make
