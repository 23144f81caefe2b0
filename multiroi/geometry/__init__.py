"""Geometry: rotations (6D), the camera value object, CLIFF camera conversion, Procrustes.

Names are imported lazily, so ``multiroi.geometry.camera`` and the calibration-file reader load
without torch (the calibration tool stays light).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Camera": "camera",
    "full_to_local": "cliff",
    "local_to_full": "cliff",
    "project_points": "cliff",
    "weak_perspective_to_image": "cliff",
    "similarity_procrustes": "procrustes",
    "similarity_transform": "procrustes",
    "axis_angle_to_rotmat": "rotations",
    "rot6d_to_rotmat": "rotations",
    "rotmat_to_axis_angle": "rotations",
    "rotmat_to_quaternion": "rotations",
    "rotmat_to_rot6d": "rotations",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'multiroi.geometry' has no attribute {name!r}")
    module = importlib.import_module(f"multiroi.geometry.{_EXPORTS[name]}")
    return getattr(module, name)
