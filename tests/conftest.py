"""Shared fixtures: everything the tests need is generated here (no downloads, no licences)."""

from __future__ import annotations

import os

# One intra-op thread per test process: tiny tensors gain nothing from more, and on a busy 2-core
# machine OpenMP threads oversubscribe (a first forward pass went from 0.01 s to 2.8 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
