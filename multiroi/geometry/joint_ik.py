"""Analytic inverse kinematics: turn an SMPL pose so its bones point along target 3D joints.

Ours (docs/training.md, "Lifted joints into the pose"). The keypoint lifter's 3D joints are more
accurate than the joints of the mesh decoder's pose, but joints alone leave each bone's twist
open. ``swing_to_joints`` keeps the twist of an initial pose (the mesh decoder's) and swings
each bone, root to leaves, by the smallest rotation that points it at the target: HybrIK's
swing step (Li et al. 2021), without its learnt twist. A joint with several children (the
pelvis, the upper spine) is turned by the frame of two of its bones instead (no SVD). Only
slicing, products, sums, square roots and divisions: the step exports to ONNX and TensorRT.

Conventions: SMPL's 24 joints and parents; rotations f32[...,24,3,3] local (joint 0 = the
global orientation); joints in metres, any frame shared by the rotations and the targets.
"""

from __future__ import annotations

import torch

from multiroi.geometry.rotations import _cross, _normalize

PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
# the joints by depth in the tree: a level's joints are computed together (a small graph)
LEVELS = ((1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12, 13, 14), (15, 16, 17), (18, 19),
          (20, 21), (22, 23))  # fmt: skip
# joints with several children: turned by the frame of (child a - child b, child c - joint)
FRAMED = {0: (1, 2, 3), 9: (13, 14, 12)}  # pelvis: hips, spine1; spine3: collars, neck
# joints with one child whose bone is swung; leaves (feet, head, hands) keep their rotation
SWUNG = {1: 4, 2: 5, 3: 6, 4: 7, 5: 8, 6: 9, 7: 10, 8: 11, 12: 15,
         13: 16, 14: 17, 16: 18, 17: 19, 18: 20, 19: 21, 20: 22, 21: 23}  # fmt: skip
_EPS = 1e-6


def forward_kinematics(rotmat: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """rotmat f32[B,24,3,3] local, rest f32[B,24,3] m (the shaped rest joints) -> posed joints
    f32[B,24,3] m relative to the root joint (joint 0 at the origin)."""
    glob: dict[int, torch.Tensor] = {0: rotmat[:, 0]}
    pos: dict[int, torch.Tensor] = {0: torch.zeros_like(rest[:, 0])}
    for level in LEVELS:
        par = [PARENTS[j] for j in level]
        g_par = torch.stack([glob[p] for p in par], dim=1)  # [B,L,3,3]
        bone = rest[:, list(level)] - rest[:, par]
        at = torch.stack([pos[p] for p in par], dim=1) + (g_par @ bone[..., None])[..., 0]
        g = g_par @ rotmat[:, list(level)]
        for i, j in enumerate(level):
            glob[j], pos[j] = g[:, i], at[:, i]
    return torch.stack([pos[j] for j in range(len(PARENTS))], dim=1)


def _frame(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Orthonormal frame f32[...,3,3] (columns) of a (first axis) and b (in the first plane)."""
    e1 = _normalize(a)
    e2 = _normalize(b - (e1 * b).sum(-1, keepdim=True) * e1)
    return torch.stack((e1, e2, _cross(e1, e2)), dim=-1)


def _swing(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The smallest rotation f32[...,3,3] taking direction v f32[...,3] to direction t
    (Rodrigues, R = c I + [k]x + k k^T / (1 + c) with k = v x t, c = v . t). Opposite
    directions get a half turn about an axis square to v; a zero-length v or t the identity."""
    v_len = torch.sqrt((v * v).sum(-1, keepdim=True))
    t_len = torch.sqrt((t * t).sum(-1, keepdim=True))
    v, t = _normalize(v), _normalize(t)
    k = _cross(v, t)
    c = (v * t).sum(-1, keepdim=True)[..., None]  # [...,1,1]
    zero = torch.zeros_like(k[..., 0])
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    skew = torch.stack((torch.stack((zero, -kz, ky), -1), torch.stack((kz, zero, -kx), -1),
                        torch.stack((-ky, kx, zero), -1)), dim=-2)  # fmt: skip
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    outer = k[..., :, None] * k[..., None, :]
    turn = c * eye + skew + outer / torch.clamp(1.0 + c, min=_EPS)
    # opposite: half a turn about v x (the axis v is least along), 2 a a^T - I
    axis = torch.where(v[..., :1].abs() < 0.9, torch.zeros_like(v) + eye[0], eye[1])
    a = _normalize(_cross(v, axis))
    half = 2.0 * a[..., :, None] * a[..., None, :] - eye
    turn = torch.where(1.0 + c < 1e-4, half, turn)
    short = ((v_len < _EPS) | (t_len < _EPS))[..., None]  # [...,1,1]
    return torch.where(short, eye.expand_as(turn), turn)


def _cofactor(m: torch.Tensor) -> torch.Tensor:
    """The cofactor matrix f32[B,3,3] of m f32[B,3,3] (det(m) m^-T), from cross products."""
    c0, c1, c2 = m[..., 0], m[..., 1], m[..., 2]
    return torch.stack((_cross(c1, c2), _cross(c2, c0), _cross(c0, c1)), dim=-1)


def nearest_rotation(m: torch.Tensor, iters: int = 8) -> torch.Tensor:
    """The rotation f32[B,3,3] nearest to m f32[B,3,3] (the polar factor; Kabsch's answer for a
    cross-covariance m) by scaled Newton iterations X <- (g X + X^-T / g) / 2 with
    g = |det X|^(-1/3), no SVD. For det(m) < 0 it returns the nearest reflection."""
    x = m / torch.clamp(m.flatten(1).norm(dim=1), min=_EPS)[:, None, None]
    for _ in range(iters):
        cof = _cofactor(x)
        det = (x[..., 0] * cof[..., 0]).sum(-1)
        det = torch.where(det.abs() < _EPS, torch.full_like(det, _EPS), det)
        g = det.abs().pow(-1.0 / 3.0)[:, None, None]
        x = 0.5 * (g * x + cof / (det[:, None, None] * g))
    return x


def align_rotation(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The rotation f32[B,3,3] R that best maps points src f32[B,K,3] onto dst f32[B,K,3]
    (least squares after centring both: Kabsch without SVD). Where the best orthogonal map is
    a reflection (point sets of opposite handedness), that reflection is returned."""
    a = src - src.mean(1, keepdim=True)
    b = dst - dst.mean(1, keepdim=True)
    return nearest_rotation(b.transpose(1, 2) @ a)


def _framed(rest: torch.Tensor, target: torch.Tensor, j: int, fallback: torch.Tensor
            ) -> torch.Tensor:  # fmt: skip
    """The global rotation f32[B,3,3] of joint j in FRAMED that takes the frame of its children
    at rest (child a - child b, child c - joint) to the target's; ``fallback`` f32[B,3,3]
    where the target's children give no frame (coincident joints)."""
    a, b, c = FRAMED[j]
    rest_f = _frame(rest[:, a] - rest[:, b], rest[:, c] - rest[:, j])
    goal_f = _frame(target[:, a] - target[:, b], target[:, c] - target[:, j])
    ok = (goal_f[..., 0] * _cross(goal_f[..., 1], goal_f[..., 2])).sum(-1) > 0.5  # det 1, not 0
    return torch.where(ok[:, None, None], goal_f @ rest_f.transpose(-1, -2), fallback)


def swing_to_joints(rotmat: torch.Tensor, rest: torch.Tensor, target: torch.Tensor
                    ) -> torch.Tensor:  # fmt: skip
    """rotmat f32[B,24,3,3] local (the initial pose), rest f32[B,24,3] m (shaped rest joints),
    target f32[B,24,3] m (any translation: only differences are read) -> f32[B,24,3,3] local
    rotations whose bones point along the target's where the tree allows, each keeping the
    initial pose's twist about its bone. Computed level by level of the tree."""
    glob = {0: _framed(rest, target, 0, rotmat[:, 0])}
    local = {0: glob[0]}
    for level in LEVELS:
        par = [PARENTS[j] for j in level]
        g_par = torch.stack([glob[p] for p in par], dim=1)  # [B,L,3,3]
        pre = g_par @ rotmat[:, list(level)]
        swung = [i for i, j in enumerate(level) if j in SWUNG]
        if swung:
            joints = [level[i] for i in swung]
            kids = [SWUNG[j] for j in joints]
            bone = (pre[:, swung] @ (rest[:, kids] - rest[:, joints])[..., None])[..., 0]
            turned = _swing(bone, target[:, kids] - target[:, joints]) @ pre[:, swung]
        parts = []
        for i, j in enumerate(level):
            if j in FRAMED:
                parts.append(_framed(rest, target, j, pre[:, i]))
            elif j in SWUNG:
                parts.append(turned[:, swung.index(i)])
            else:  # a leaf
                parts.append(pre[:, i])
        g = torch.stack(parts, dim=1)
        loc = g_par.transpose(-1, -2) @ g
        for i, j in enumerate(level):
            glob[j], local[j] = g[:, i], loc[:, i]
    return torch.stack([local[j] for j in range(len(PARENTS))], dim=1)


TORSO = (0, 1, 2, 3, 6, 9, 12, 13, 14, 16, 17)  # pelvis, hips, spine, neck, collars, shoulders


def _torso_frame(joints: torch.Tensor) -> torch.Tensor:
    """f32[B,3,3]: the frame of the hips (left - right) and the spine (spine3 - pelvis)."""
    return _frame(joints[:, 1] - joints[:, 2], joints[:, 9] - joints[:, 0])


def torso_turn(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The rotation f32[B,3,3] that best maps the torso of joints src f32[B,24,3] onto that of
    dst f32[B,24,3] (after centring). Where the best orthogonal map is a reflection (torsos far
    apart or unlike), the rotation between the two torsos' hip-and-spine frames instead."""
    turn = align_rotation(src[:, list(TORSO)], dst[:, list(TORSO)])
    by_frame = _torso_frame(dst) @ _torso_frame(src).transpose(-1, -2)
    proper = (turn[..., 0] * _cofactor(turn)[..., 0]).sum(-1) > 0
    return torch.where(proper[:, None, None], turn, by_frame)


def blend_into_pose(rotmat: torch.Tensor, rest: torch.Tensor, joints: torch.Tensor,
                    weight: float) -> torch.Tensor:  # fmt: skip
    """The pose rotmat f32[B,24,3,3] (local) swung towards other estimates of its joints.

    rest f32[B,24,3] m: the shaped rest joints of the pose's body; joints f32[B,24,3] m: the
    other estimate (the keypoint lifter's; any translation). The estimate is first turned
    onto the pose's own torso (its global orientation is kept: the lifter's is the less
    accurate), then the targets are ``weight`` of it plus ``1 - weight`` of the pose's joints.
    Returns f32[B,24,3,3] local rotations (see :func:`swing_to_joints`)."""
    own = forward_kinematics(rotmat, rest)
    turn = torso_turn(joints, own)
    turned = (turn @ (joints - joints[:, :1]).transpose(1, 2)).transpose(1, 2)
    return swing_to_joints(rotmat, rest, weight * turned + (1.0 - weight) * own)


def turn_towards(rotmat: torch.Tensor, rest: torch.Tensor, joints: torch.Tensor,
                 weight: float) -> torch.Tensor:  # fmt: skip
    """The pose rotmat f32[B,24,3,3] (local) turned about its pelvis towards the torso of other
    joints f32[B,24,3] (any translation): its global orientation (joint 0) is multiplied by the
    rotation that best maps its own torso onto ``weight`` of theirs plus ``1 - weight`` of its
    own (both pelvis-centred; :func:`torso_turn`, so a body lying in one and standing in the
    other is turned by their hip-and-spine frames); the other joints' rotations are kept.
    rest f32[B,24,3] m: the shaped rest joints."""
    own = forward_kinematics(rotmat, rest)
    mine = own - own[:, :1]
    turn = torso_turn(mine, weight * (joints - joints[:, :1]) + (1.0 - weight) * mine)
    return torch.cat([(turn @ rotmat[:, 0])[:, None], rotmat[:, 1:]], dim=1)
