"""The rendered persons the keypoint lifter learns from (train.lifter): their base RoI's
BlazePose features and labels read from feature caches, and the landmark map fitted on them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from multiroi.model.lifter import in_crop, landmark_inputs

RIDGE = 1e-2
MIN_WHOLE = 200  # rendered persons wholly in their crops the landmark map needs


@dataclasses.dataclass
class Rendered:
    """Rendered persons with labelled joints. inputs f32[N,100] (landmark_inputs); joints_2d
    f32[N,24,2] box heights from the crop centre; joints_3d f32[N,24,3] m, root-relative,
    camera axes; whole bool[N]: all 24 joints inside the crop window; features f16[N,1464]:
    the base RoI's whole feature (for the refiner; None: not read); box_info f32[N,3]: the base
    RoI's CLIFF box information (for the turn lifter)."""

    inputs: np.ndarray
    joints_2d: np.ndarray
    joints_3d: np.ndarray
    whole: np.ndarray
    features: np.ndarray | None = None
    box_info: np.ndarray | None = None


def base_roi_joints(labels: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """A cache draw's labels -> (the 24 joints f32[N,24,2] in box heights from the base crop's
    centre, bool[N]: persons with every 2D joint and SMPL labelled)."""
    c, s = labels["centers"][:, 0], labels["sizes"][:, 0]
    uv = ((labels["kp2d"][:, :, :2] - c[:, None]) / s[:, None, None]).astype(np.float32)
    seen = (labels["kp2d"][:, :, 2] > 0).all(1)  # real data: joints without labels
    return uv, seen & (labels["has_smpl"] > 0)


def read_rendered(cache_dirs: list[str]) -> tuple[Rendered, list[dict]]:
    """The rendered persons of feature caches (base RoI, every draw) and the caches' metas."""
    from train.feature_cache import FeatureDataset

    ins, j2, j3, whole, feats, infos, metas = [], [], [], [], [], [], []
    for root in cache_dirs:
        cache = FeatureDataset(root)
        if cache.meta.get("backbone") != "blazepose_full":
            raise ValueError(f"{root}: the lifter needs a blazepose_full feature cache, this one "
                             f"holds {cache.meta.get('backbone')!r} features")  # fmt: skip
        metas.append(cache.meta)
        for d in range(cache.draws):
            lab = cache.labels[d]
            # the lifter tail's features when the cache has them (slot R), else RoI 0's
            slot = cache.num_rois if cache.meta.get("lifter_slot") else 0
            f0 = torch.as_tensor(np.asarray(cache.draw_features(d)[:, slot], np.float32))
            uv, keep = base_roi_joints(lab)
            kp3d = lab["kp3d"][:, :, :3]
            ins.append(landmark_inputs(f0).numpy()[keep])
            feats.append(f0.numpy()[keep].astype(np.float16))
            j2.append(uv[keep].astype(np.float32))
            j3.append((kp3d - kp3d[:, :1])[keep].astype(np.float32))
            whole.append(in_crop(torch.as_tensor(uv[keep])).all(1).numpy())
            if "box_info" in lab:  # caches made before it was kept have none
                infos.append(np.asarray(lab["box_info"][:, 0], np.float32)[keep])
    extents = {m.get("box_extent", "visible") for m in metas}
    if len(extents) != 1:
        raise ValueError(f"the caches have different person boxes {sorted(extents)}; make "
                         "them all with the same --box-extent")  # fmt: skip
    out = Rendered(np.concatenate(ins), np.concatenate(j2), np.concatenate(j3),
                   np.concatenate(whole), np.concatenate(feats),
                   np.concatenate(infos) if len(infos) == len(ins) else None)  # fmt: skip
    if out.whole.sum() < MIN_WHOLE:
        raise ValueError(f"only {out.whole.sum()} rendered persons lie wholly inside their crop; "
                         f"the lifter needs at least {MIN_WHOLE}: cache more data")  # fmt: skip
    return out, metas


def fit_landmark_map(inputs: np.ndarray, joints_2d: np.ndarray) -> np.ndarray:
    """Ridge regression f32[100,48]: landmark inputs -> 24 joints in 2D."""
    a = inputs.astype(np.float64)
    g = a.T @ a + RIDGE * np.eye(a.shape[1])
    return np.linalg.solve(g, a.T @ joints_2d.reshape(len(a), -1)).astype(np.float32)
