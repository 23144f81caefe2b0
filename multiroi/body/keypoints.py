"""COCO-17 and OpenPose-25 keypoints from SMPL joints plus the extra vertex keypoints.

The source array is ``[..., 24 + 21, 3]``: SMPL's 24 joints followed by smplx's 21 extra
vertex keypoints (``files.EXTRA_NAMES`` order).
"""

from __future__ import annotations

from multiroi.body.files import EXTRA_NAMES, SMPL_JOINT_NAMES

_ALL = {name: i for i, name in enumerate(SMPL_JOINT_NAMES)}
_ALL.update({name: 24 + i for i, name in enumerate(EXTRA_NAMES)})

COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO17_SOURCE = (
    "nose", "leye", "reye", "lear", "rear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
    "left_ankle", "right_ankle",
)  # fmt: skip
# OpenPose BODY_25; "mid_hip" is the pelvis joint.
OPENPOSE25_NAMES = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
    "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe",
    "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)  # fmt: skip
OPENPOSE25_SOURCE = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
    "left_ankle", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe",
    "RSmallToe", "RHeel",
)  # fmt: skip

KEYPOINT_SETS = {
    "coco17": tuple(_ALL[n] for n in COCO17_SOURCE),
    "openpose25": tuple(_ALL[n] for n in OPENPOSE25_SOURCE),
}


def keypoint_indices(name: str) -> tuple[int, ...]:
    """Indices into ``[24 joints + 21 extra]`` for the set ``coco17`` or ``openpose25``."""
    if name not in KEYPOINT_SETS:
        raise ValueError(f"unknown keypoint set {name!r}; expected one of {sorted(KEYPOINT_SETS)}")
    return KEYPOINT_SETS[name]
