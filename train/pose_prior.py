"""A pose prior for synthetic people: activities with parameters, noise, and joint limits.

Poses are SMPL body poses (joints 1..23, axis-angle in each joint's parent-aligned rest frame:
x to the body's left, y up, z forward, as in SMPL's T-pose). Each sample starts from one
activity (standing, walking, running, reaching, sitting, crouching, lying) whose shape is drawn
from a few meaningful parameters (gait phase, stride, lean, arm raise ...), then gets Gaussian
noise and is clamped to per-joint limits, so joints stay within what a human can do; no joint
angle is ever drawn uniformly at random.

Sign reminders (right-hand rule): hip flexion (thigh forward) is -x, knee flexion +x; the left
arm lies along +x in the T-pose and is lowered by -z, the right arm by +z; elbow flexion is -y
(left) / +y (right); bending the spine forward is +x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTIVITIES = ("standing", "walking", "running", "reaching", "sitting", "crouching", "lying")
DEFAULT_ACTIVITY_PROBS = (0.2, 0.2, 0.15, 0.15, 0.12, 0.1, 0.08)

_D = np.pi / 180.0
# Per-joint limits (radians) on the axis-angle components x, y, z, joints 0..23 (0 unused).
_LIMITS_DEG = {
    1: ((-130, 35), (-40, 40), (-20, 60)), 2: ((-130, 35), (-40, 40), (-60, 20)),
    3: ((-25, 60), (-35, 35), (-30, 30)), 4: ((0, 150), (-10, 10), (-10, 10)),
    5: ((0, 150), (-10, 10), (-10, 10)), 6: ((-15, 35), (-25, 25), (-20, 20)),
    7: ((-40, 40), (-20, 20), (-25, 25)), 8: ((-40, 40), (-20, 20), (-25, 25)),
    9: ((-15, 30), (-25, 25), (-20, 20)), 10: ((-20, 20), (-5, 5), (-5, 5)),
    11: ((-20, 20), (-5, 5), (-5, 5)), 12: ((-35, 45), (-40, 40), (-30, 30)),
    13: ((-15, 15), (-15, 25), (-20, 20)), 14: ((-15, 15), (-25, 15), (-20, 20)),
    15: ((-35, 45), (-50, 50), (-35, 35)), 16: ((-90, 90), (-100, 40), (-90, 90)),
    17: ((-90, 90), (-40, 100), (-90, 90)), 18: ((-10, 10), (-145, 0), (-15, 15)),
    19: ((-10, 10), (0, 145), (-15, 15)), 20: ((-60, 60), (-20, 20), (-60, 60)),
    21: ((-60, 60), (-20, 20), (-60, 60)), 22: ((-10, 10), (-10, 10), (-10, 10)),
    23: ((-10, 10), (-10, 10), (-10, 10)),
}  # fmt: skip
JOINT_LIMITS = np.zeros((24, 3, 2), np.float64)
for _j, _lim in _LIMITS_DEG.items():
    JOINT_LIMITS[_j] = np.asarray(_lim, np.float64) * _D
# Standard deviation of the noise added to every activity (radians), per joint.
_NOISE_DEG = np.array([0, 6, 6, 4, 5, 5, 3, 5, 5, 3, 3, 3, 6, 3, 3, 8, 10, 10, 8, 8, 12, 12, 3, 3])


@dataclass
class PoseSample:
    """One drawn pose.

    body_pose: f64[24,3] axis-angle per joint (row 0 is zero: the root is separate).
    root_posture: f64[3] axis-angle of the body relative to upright (lying: about +-90 deg).
    activity: name of the activity it came from.
    """

    body_pose: np.ndarray
    root_posture: np.ndarray
    activity: str


def _lr(pose: np.ndarray, left: int, right: int, axis: int, value_left: float, mirror: float):
    """Set a left/right pair: the right joint gets ``mirror * value`` (-1 for y/z axes)."""
    pose[left, axis] = value_left
    pose[right, axis] = mirror * value_left


def _arms_down(pose: np.ndarray, rng: np.random.Generator, raise_deg: float = 0.0) -> None:
    lower = (75 - raise_deg + rng.normal(0, 6)) * _D
    pose[16, 2], pose[17, 2] = -lower, lower
    bend = rng.uniform(5, 25) * _D
    pose[18, 1], pose[19, 1] = -bend, bend


def _standing(rng: np.random.Generator) -> np.ndarray:
    pose = np.zeros((24, 3))
    _arms_down(pose, rng)
    pose[3, 1] = rng.normal(0, 8) * _D  # torso twist
    pose[1, 2], pose[2, 2] = rng.uniform(0, 8) * _D, -rng.uniform(0, 8) * _D  # stance width
    pose[15, 0] = rng.normal(0, 10) * _D
    return pose


def _gait(rng: np.random.Generator, stride: float, knee: float, lean: float, elbow: float):
    pose = np.zeros((24, 3))
    phase = rng.uniform(0, 2 * np.pi)
    swing = np.sin(phase)
    pose[1, 0], pose[2, 0] = -stride * swing, stride * swing
    pose[4, 0] = knee * max(0.0, np.sin(phase + 0.8)) + 0.1
    pose[5, 0] = knee * max(0.0, np.sin(phase + 0.8 + np.pi)) + 0.1
    _arms_down(pose, rng, raise_deg=10)
    pose[16, 0], pose[17, 0] = 0.6 * stride * swing, -0.6 * stride * swing
    pose[18, 1], pose[19, 1] = -elbow, elbow
    pose[3, 0] = lean
    pose[3, 1] = 0.2 * stride * swing
    return pose


def _walking(rng: np.random.Generator) -> np.ndarray:
    return _gait(rng, rng.uniform(15, 35) * _D, rng.uniform(20, 60) * _D, 0.05, 0.3)


def _running(rng: np.random.Generator) -> np.ndarray:
    return _gait(rng, rng.uniform(35, 60) * _D, rng.uniform(60, 120) * _D,
                 rng.uniform(8, 20) * _D, rng.uniform(70, 100) * _D)  # fmt: skip


def _reaching(rng: np.random.Generator) -> np.ndarray:
    pose = _standing(rng)
    for shoulder, elbow, sign in ((16, 18, 1.0), (17, 19, -1.0)):
        if rng.random() < 0.7:
            pose[shoulder, 2] = sign * rng.uniform(-70, 60) * _D  # from down to overhead
            pose[shoulder, 1] = -sign * rng.uniform(0, 80) * _D  # forward
            pose[elbow, 1] = -sign * rng.uniform(0, 60) * _D
    pose[3, 0] = rng.uniform(-10, 30) * _D
    pose[6, 1] = rng.normal(0, 15) * _D
    return pose


def _sitting(rng: np.random.Generator) -> np.ndarray:
    pose = np.zeros((24, 3))
    hip = rng.uniform(75, 100) * _D
    pose[1, 0], pose[2, 0] = -hip, -hip + rng.normal(0, 8) * _D
    knee = rng.uniform(70, 110) * _D
    pose[4, 0], pose[5, 0] = knee, knee + rng.normal(0, 10) * _D
    pose[1, 2], pose[2, 2] = rng.uniform(0, 15) * _D, -rng.uniform(0, 15) * _D
    _arms_down(pose, rng, raise_deg=5)
    pose[16, 1], pose[17, 1] = -rng.uniform(10, 50) * _D, rng.uniform(10, 50) * _D
    pose[18, 1], pose[19, 1] = -rng.uniform(30, 80) * _D, rng.uniform(30, 80) * _D
    pose[3, 0] = rng.uniform(-5, 20) * _D
    return pose


def _crouching(rng: np.random.Generator) -> np.ndarray:
    pose = np.zeros((24, 3))
    hip = rng.uniform(100, 125) * _D
    pose[1, 0], pose[2, 0] = -hip, -hip
    knee = rng.uniform(110, 145) * _D
    pose[4, 0], pose[5, 0] = knee, knee
    pose[7, 0], pose[8, 0] = -rng.uniform(10, 35) * _D, -rng.uniform(10, 35) * _D
    pose[1, 2], pose[2, 2] = rng.uniform(5, 25) * _D, -rng.uniform(5, 25) * _D
    pose[3, 0], pose[6, 0] = rng.uniform(15, 45) * _D, rng.uniform(0, 20) * _D
    _arms_down(pose, rng, raise_deg=20)
    pose[16, 1], pose[17, 1] = -rng.uniform(20, 70) * _D, rng.uniform(20, 70) * _D
    pose[18, 1], pose[19, 1] = -rng.uniform(20, 90) * _D, rng.uniform(20, 90) * _D
    return pose


def _lying(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    pose = _standing(rng) if rng.random() < 0.6 else _sitting(rng) * 0.4
    if rng.random() < 0.5:
        _arms_down(pose, rng, raise_deg=rng.uniform(0, 150))
    side = rng.integers(3)  # on the back, on the front, on a side
    angle = (rng.uniform(80, 100) * _D) * (1 if side != 1 else -1)
    root = np.array([-angle, 0.0, 0.0]) if side < 2 else np.array([0.0, 0.0, np.pi / 2])
    if side == 2:
        root = _compose_aa(root, np.array([-np.pi / 2, 0.0, 0.0]))
    return pose, root


def _compose_aa(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Axis-angle of R(a) @ R(b)."""
    import cv2

    rot = cv2.Rodrigues(a)[0] @ cv2.Rodrigues(b)[0]
    return cv2.Rodrigues(rot)[0].reshape(3)


_MAKERS = {
    "standing": _standing, "walking": _walking, "running": _running, "reaching": _reaching,
    "sitting": _sitting, "crouching": _crouching,
}  # fmt: skip


def clamp_to_limits(body_pose: np.ndarray) -> np.ndarray:
    """Clip axis-angle components f64[24,3] to JOINT_LIMITS (joint 0 is left alone)."""
    out = np.array(body_pose, np.float64, copy=True)
    out[1:] = np.clip(out[1:], JOINT_LIMITS[1:, :, 0], JOINT_LIMITS[1:, :, 1])
    return out


def within_limits(body_pose: np.ndarray, tol: float = 1e-9) -> bool:
    """True when every joint 1..23 is inside JOINT_LIMITS."""
    p = np.asarray(body_pose)[1:]
    return bool(
        np.all(p >= JOINT_LIMITS[1:, :, 0] - tol) and np.all(p <= JOINT_LIMITS[1:, :, 1] + tol)
    )


def sample_pose(
    rng: np.random.Generator,
    activity: str | None = None,
    probs: tuple[float, ...] = DEFAULT_ACTIVITY_PROBS,
    noise_scale: float = 1.0,
) -> PoseSample:
    """Draw one pose: an activity (given, or drawn with ``probs``), noise, joint limits."""
    if activity is None:
        activity = str(rng.choice(ACTIVITIES, p=np.asarray(probs) / np.sum(probs)))
    if activity not in ACTIVITIES:
        raise ValueError(f"unknown activity {activity!r}; expected one of {ACTIVITIES}")
    root = np.zeros(3)
    if activity == "lying":
        pose, root = _lying(rng)
    else:
        pose = _MAKERS[activity](rng)
    pose = pose + rng.normal(0.0, 1.0, (24, 3)) * (_NOISE_DEG[:, None] * _D * noise_scale)
    pose[0] = 0.0
    return PoseSample(clamp_to_limits(pose), root, activity)
