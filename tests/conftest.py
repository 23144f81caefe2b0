"""Shared fixtures: everything the tests need is generated here (no downloads, no licences)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest


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
