"""Training pairs for the keypoint lifter without rendering: bodies of the pose prior seen by
the feature caches' cameras, projected into a box placed as around a rendered person
(train.lifter, step 2)."""

from __future__ import annotations

import numpy as np
import torch

from multiroi.rois import box_info_from_focal


def scene_ranges(metas: list[dict]) -> dict:
    """The sampling ranges of the caches' scenes (the widest of each) and in-plane rotation."""
    from train.scene import SceneConfig

    scenes = [(m.get("source_meta") or {}).get("scene") or {} for m in metas]
    base = SceneConfig()  # what train.synth draws when a meta does not say

    def widest(key: str) -> tuple[float, float]:
        vals = [tuple(sc[key]) for sc in scenes if key in sc] or [getattr(base, key)]
        return min(v[0] for v in vals), max(v[1] for v in vals)

    aug = [m.get("augment") or {} for m in metas]
    return {
        "yaw_deg": widest("yaw_deg"),
        "distance_m": widest("distance_m"),
        "fov_deg": widest("fov_deg"),
        "tilt_deg": widest("tilt_deg"),
        "roll_deg": widest("roll_deg"),
        "betas_std": max(sc.get("betas_std", base.betas_std) for sc in scenes),
        "rot_prob": max(float(a.get("rot_prob", 0.0)) for a in aug),
        "rot_deg": max(float(a.get("rot_deg", 0.0)) for a in aug),
    }


class PairSampler:
    """Pose-prior samples: (2D joints in the base box f32[N,24,2], 3D joints f32[N,24,3] m)."""

    def __init__(self, body, ranges: dict, box_offsets: np.ndarray, box_extents: np.ndarray):
        self.body, self.r = body, ranges
        self.offsets, self.extents = box_offsets, box_extents  # from rendered persons

    def posed(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n bodies of the prior seen by the scene's cameras: root-relative joints f32[N,24,3]
        m in camera axes, and the roots' rotations f32[N,3,3] (body -> camera)."""
        from multiroi.geometry.rotations import axis_angle_to_rotmat
        from train.pose_prior import sample_pose
        from train.scene import body_root, camera_rotation

        r = self.r
        poses = [sample_pose(rng) for _ in range(n)]
        rotmat = axis_angle_to_rotmat(
            torch.as_tensor(np.stack([p.body_pose for p in poses]), dtype=torch.float32)
        )
        roots = []
        for p in poses:
            cam = camera_rotation(np.radians(rng.uniform(*r["tilt_deg"])),
                                  np.radians(rng.uniform(*r["roll_deg"])))  # fmt: skip
            roots.append(body_root(cam, np.radians(rng.uniform(*r["yaw_deg"])), p.root_posture))
        rotmat[:, 0] = torch.as_tensor(np.stack(roots), dtype=torch.float32)
        betas = np.clip(rng.normal(0.0, r["betas_std"], (n, 10)), -2.5, 2.5)
        with torch.no_grad():
            joints = self.body.joints(rotmat, torch.as_tensor(betas, dtype=torch.float32))
        joints = joints.float().numpy()
        return joints - joints[:, :1], rotmat[:, 0].numpy()

    def mean_pose(self, rng: np.random.Generator, n: int = 5000) -> np.ndarray:
        """The prior's mean body f32[24,3] m (root-relative, body axes): the baseline a lifter
        must beat."""
        joints, roots = self.posed(rng, n)
        return np.einsum("nji,nkj->nki", roots, joints).mean(0).astype(np.float32)

    def __call__(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        uv, joints, _ = self.with_box_info(rng, n)
        return uv, joints

    def with_box_info(self, rng: np.random.Generator, n: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """As a call, and the base box's CLIFF box information f32[N,3] (multiroi.rois
        .box_info_from_focal: where the box lies in the image, in focal lengths)."""
        r = self.r
        joints, _ = self.posed(rng, n)
        # in-plane rotation, as the training augmentation turns crops
        turn = np.where(rng.random(n) < r["rot_prob"],
                        np.radians(rng.uniform(-r["rot_deg"], r["rot_deg"], n)), 0.0)  # fmt: skip
        cz, sz = np.cos(turn), np.sin(turn)
        rz = np.zeros((n, 3, 3))
        rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = cz, -sz, sz, cz, 1.0
        joints = np.einsum("nij,nkj->nki", rz, joints)
        depth = rng.uniform(*r["distance_m"], n)
        focal = 0.5 / np.tan(np.radians(rng.uniform(*r["fov_deg"], n)) / 2)  # image widths
        lateral = rng.uniform(-0.35, 0.35, (n, 2)) * depth[:, None] / focal[:, None]
        pts = joints + np.concatenate([lateral, depth[:, None]], 1)[:, None]
        uv = pts[..., :2] / pts[..., 2:] * focal[:, None, None]
        lo, hi = uv.min(1), uv.max(1)
        k = rng.integers(0, len(self.extents), n)  # a rendered person's box around its joints
        size = (hi - lo).max(1) / self.extents[k]
        centre = 0.5 * (lo + hi) - self.offsets[k] * size[:, None]
        uv = (uv - centre[:, None]) / size[:, None, None]
        info = box_info_from_focal(centre, size, focal, np.zeros(2))  # image widths, all
        return uv.astype(np.float32), joints.astype(np.float32), info.astype(np.float32)


def box_placement(joints_2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the base box lies around the 2D joints: offsets f32[N,2] of the joints' bbox centre
    from the box centre and the bbox's longer side f32[N], in box heights."""
    lo, hi = joints_2d.min(1), joints_2d.max(1)
    return 0.5 * (lo + hi), (hi - lo).max(1)
