"""Mean SMPL parameters: the starting point of the network's iterative decoders.

File layout (SPIN's keys): ``pose f32[144]`` (24 joints x 6D, the first two columns of each
rotation matrix interleaved row by row, i.e. ``rotmat[..., :2].reshape(6)``), ``shape f32[10]``,
``cam f32[3]`` (weak-perspective s, tx, ty).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multiroi.body.files import BodyModelError, resolve_body_model_path

ROT_X_PI = np.diag([1.0, -1.0, -1.0]).astype(
    np.float32
)  # upright SMPL body seen by an OpenCV camera


@dataclass(frozen=True)
class MeanParams:
    """pose6d f32[24,6], betas f32[10], cam f32[3]."""

    pose6d: np.ndarray
    betas: np.ndarray
    cam: np.ndarray
    source: str = "built-in"

    @staticmethod
    def default() -> MeanParams:
        """Global orientation = rotation of pi about x, other joints identity, betas 0."""
        rot = np.tile(np.eye(3, dtype=np.float32), (24, 1, 1))
        rot[0] = ROT_X_PI
        pose6d = rot[:, :, :2].reshape(24, 6)
        return MeanParams(pose6d, np.zeros(10, np.float32), np.array([0.9, 0.0, 0.0], np.float32))


def mean_params_path_for(body_model_path: Path) -> Path:
    """``X.npz`` -> ``X_mean_params.npz`` beside it."""
    return body_model_path.with_name(body_model_path.stem + "_mean_params.npz")


def load_mean_params(path: str | os.PathLike | None = None) -> MeanParams:
    """Explicit file > the file beside the resolved body model > built-in default."""
    if path is None:
        candidate = mean_params_path_for(resolve_body_model_path(None))
        if not candidate.is_file():
            return MeanParams.default()
        path = candidate
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            pose, shape, cam = z["pose"], z["shape"], z["cam"]
    except (OSError, KeyError, ValueError) as exc:
        raise BodyModelError(
            f"mean-parameter file {p}: {type(exc).__name__}: {exc}; expected an .npz with keys "
            "pose[144], shape[10], cam[3] (SPIN layout)"
        ) from None
    pose = np.asarray(pose, np.float32).reshape(-1)
    if pose.size != 144 or np.asarray(shape).size < 10 or np.asarray(cam).size != 3:
        raise BodyModelError(
            f"mean-parameter file {p}: got pose {pose.size}, shape {np.asarray(shape).size}, cam "
            f"{np.asarray(cam).size} numbers; expected 144, 10 and 3"
        )
    return MeanParams(
        pose.reshape(24, 6),
        np.asarray(shape, np.float32).reshape(-1)[:10],
        np.asarray(cam, np.float32).reshape(3),
        source=str(p),
    )
