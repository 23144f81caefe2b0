"""The scripted scene of the demo clip: three people, their motions, clothing and the room.

Frames: "L" is the level camera frame (x right, y down, z forward, floor at y = CAMERA_HEIGHT_M);
the real camera is tilted down by CAMERA_PITCH_DEG: p_cam = R_tilt @ p_L. The body model's own
frame is y up, facing +z. Everything here is deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from realtime.smoothing import so3_exp

CAMERA_HEIGHT_M = 1.3
CAMERA_PITCH_DEG = 6.0
WALL_Z_M = 10.0

# SMPL joint indices
L_HIP, R_HIP, L_KNEE, R_KNEE, SPINE = 1, 2, 4, 5, 3
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, NECK = 16, 17, 18, 19, 12
LOWER_BODY = (0, 1, 2, 4, 5)
FEET = (7, 8, 10, 11)
SKIN = (12, 15, 20, 21, 22, 23)


def rot_x(a: float) -> np.ndarray:
    return so3_exp(np.array([a, 0.0, 0.0]))


def rot_y(a: float) -> np.ndarray:
    return so3_exp(np.array([0.0, a, 0.0]))


def rot_z(a: float) -> np.ndarray:
    return so3_exp(np.array([0.0, 0.0, a]))


R_TILT = rot_x(np.deg2rad(CAMERA_PITCH_DEG))  # level frame L -> camera
BODY_TO_L = rot_x(np.pi)  # body (y up, facing +z) -> L upright, facing the camera


@dataclass(frozen=True)
class PersonScript:
    """One person's motion: position in L (x, z) over time, facing yaw, a motion style."""

    person_id: int
    betas: np.ndarray  # f32[10]
    style: str  # "walk" | "wave" | "turn"
    start_xz: tuple[float, float]
    velocity_xz: tuple[float, float]  # m/s in L
    shirt_rgb: tuple[float, float, float]
    trousers_rgb: tuple[float, float, float]
    phase: float = 0.0
    turn_at_s: float | None = None  # a walker turns round here and walks back the way they came


def default_scripts(seed: int = 0) -> list[PersonScript]:
    """Three people of different shapes at 2.5-8 m; the walker leaves the frame on the right."""
    rng = np.random.default_rng(seed)

    def betas(b0: float, b1: float) -> np.ndarray:
        b = 0.3 * rng.standard_normal(10).astype(np.float32)
        b[:2] = (b0, b1)
        return b

    return [
        PersonScript(
            1,
            betas(1.2, -0.5),
            "walk",
            (-1.7, 4.5),
            (0.75, 0.0),
            (0.80, 0.20, 0.15),
            (0.15, 0.18, 0.35),
            phase=0.3,
        ),  # fmt: skip
        PersonScript(
            2,
            betas(-0.6, 1.5),
            "wave",
            (-0.45, 3.2),
            (0.0, -0.1),
            (0.20, 0.55, 0.85),
            (0.35, 0.30, 0.25),
        ),  # fmt: skip
        PersonScript(
            3,
            betas(-1.5, 0.3),
            "turn",
            (1.6, 8.0),
            (-0.2, -0.45),
            (0.95, 0.80, 0.20),
            (0.10, 0.10, 0.12),
            phase=1.1,
        ),  # fmt: skip
    ]


SCENARIOS = {
    "default": "three people; the walker leaves the picture on the right (180 frames)",
    "return": "the same three; the walker turns round 1 s after leaving the picture and comes "
    "back 2.2 s after he left it, under his old id if re-identified (300 frames)",
    "cross": "two walkers at 4.5 and 4.9 m cross in the middle of the picture, the nearer one "
    "hiding the other, behind a person waving (180 frames)",
}
SCENARIO_FRAMES = {"default": 180, "return": 300, "cross": 180}


def scene_scripts(scenario: str = "default", seed: int = 0) -> list[PersonScript]:
    """The scripts of a scenario of the demo clip (``SCENARIOS``)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"demo scenario must be one of {sorted(SCENARIOS)}, got {scenario!r}")
    scripts = default_scripts(seed)
    from dataclasses import replace

    if scenario == "return":
        scripts[0] = replace(scripts[0], turn_at_s=6.2)
    elif scenario == "cross":
        scripts[2] = replace(scripts[2], style="walk", start_xz=(1.9, 4.9),
                             velocity_xz=(-0.75, 0.0))  # fmt: skip
    return scripts


def _walk_pose(rot: np.ndarray, t: float, speed: float) -> None:
    """Leg and arm swing of a walking cycle (~1 Hz steps) into rot [24,3,3] (body frame)."""
    w = 2 * np.pi * (0.9 + 0.5 * speed) * t
    swing = 0.45 * np.sin(w)
    rot[L_HIP], rot[R_HIP] = rot_x(-swing), rot_x(swing)
    rot[L_KNEE] = rot_x(0.6 * max(0.0, np.sin(w + 1.2)) + 0.05)
    rot[R_KNEE] = rot_x(0.6 * max(0.0, np.sin(w + 1.2 + np.pi)) + 0.05)
    rot[L_SHOULDER] = rot_x(0.5 * swing) @ rot_z(-1.25)
    rot[R_SHOULDER] = rot_x(-0.5 * swing) @ rot_z(1.25)
    rot[L_ELBOW] = rot_y(0.3)
    rot[R_ELBOW] = rot_y(-0.3)


def _wave_pose(rot: np.ndarray, t: float) -> None:
    """Right arm raised, forearm waving; left arm relaxed; a slight sway."""
    rot[R_SHOULDER] = rot_z(-0.35) @ rot_x(-0.2)
    rot[R_ELBOW] = rot_z(-1.1 + 0.45 * np.sin(2 * np.pi * 1.5 * t))
    rot[L_SHOULDER] = rot_z(-1.2)
    rot[L_ELBOW] = rot_y(0.4)
    rot[SPINE] = rot_z(0.06 * np.sin(2 * np.pi * 0.4 * t))
    rot[L_HIP], rot[R_HIP] = rot_z(0.05), rot_z(-0.05)


def _turn_pose(rot: np.ndarray, t: float) -> None:
    """Arms half raised to the sides, walking slowly while turning around."""
    _walk_pose(rot, t, 0.4)
    rot[L_SHOULDER] = rot_z(-0.6 + 0.2 * np.sin(2 * np.pi * 0.5 * t))
    rot[R_SHOULDER] = rot_z(0.6 - 0.2 * np.sin(2 * np.pi * 0.5 * t))
    rot[NECK] = rot_y(0.3 * np.sin(2 * np.pi * 0.3 * t))


def pose_at(script: PersonScript, t: float) -> tuple[np.ndarray, np.ndarray]:
    """-> (rotmat f64[24,3,3] with joint 0 = global orientation in the camera frame,
    pelvis position in L f64[3] (y ignored: set by floor contact))."""
    rot = np.tile(np.eye(3), (24, 1, 1))
    tt = t + script.phase
    vx, vz = script.velocity_xz
    speed = float(np.hypot(vx, vz))
    ahead = t  # time spent walking forward; after a turn, the walk runs back
    if script.turn_at_s is not None and t > script.turn_at_s:
        ahead = 2 * script.turn_at_s - t
        vx, vz = -vx, -vz
    if script.style == "walk":
        _walk_pose(rot, tt, speed)
        yaw = -np.arctan2(vx, -vz) if speed > 0 else 0.0
    elif script.style == "wave":
        _wave_pose(rot, tt)
        yaw = 0.25 * np.sin(2 * np.pi * 0.15 * tt)
    else:
        _turn_pose(rot, tt)
        yaw = 2 * np.pi * 0.2 * t  # a full turn in 5 s
    rot[0] = R_TILT @ rot_y(yaw) @ BODY_TO_L
    x = script.start_xz[0] + script.velocity_xz[0] * ahead
    z = script.start_xz[1] + script.velocity_xz[1] * ahead
    return rot, np.array([x, 0.0, z])


def clothing_colors(weights: np.ndarray, script: PersonScript) -> np.ndarray:
    """Per-vertex rgb f32[V,3] from skinning weights f32[V,24]: shirt, trousers, shoes, skin."""
    owner = np.argmax(weights, axis=1)
    rgb = np.tile(np.asarray(script.shirt_rgb, np.float32), (len(owner), 1))
    rgb[np.isin(owner, LOWER_BODY)] = script.trousers_rgb
    rgb[np.isin(owner, FEET)] = (0.12, 0.10, 0.10)
    rgb[np.isin(owner, SKIN)] = (0.85, 0.66, 0.52)
    return rgb
