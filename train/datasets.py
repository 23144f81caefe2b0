"""Training data: one item = one person with its R RoIs, ground truth in the full camera.

Sources: the synthetic shards of ``train.synth`` and the SPIN/CLIFF ``.npz`` layout (Human3.6M,
3DPW, MPI-INF-3DHP, COCO, MPII) with an image root. Keypoints are SMPL's 24 joints everywhere;
SPIN's 24 "part"/"S" keypoints are mapped onto the SMPL joints they correspond to (LSP/H36M hips,
knees, ankles, shoulders, elbows, wrists, neck, pelvis, head) and the others get confidence 0.
Items are keyed ``epoch * N + index`` so the augmentation draw depends only on (seed, key):
training resumes exactly and gives the same data with any number of loader workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch

from multiroi.rois import base_boxes, box_info_from_focal, normalize_crops, roi_windows
from train import augment as aug

logger = logging.getLogger(__name__)

# SPIN J24 index -> SMPL joint index (or -1: no SMPL joint at that place).
SPIN24_TO_SMPL = np.array([8, 5, 2, 1, 4, 7, 21, 19, 17, 16, 18, 20, 12, -1, 0, -1, -1, -1, 15,
                           -1, -1, -1, -1, -1])  # fmt: skip


@dataclass
class PersonRecord:
    """Ground truth of one person before augmentation (numpy, camera frame, px, metres).

    image_path; K f32[3,3] (None: f = sqrt(W^2 + H^2), principal at the centre); box_center f32[2]
    and box_size (base-box height b) px; kp2d f32[24,3] (x, y, conf);
    kp3d f32[24,4] (x, y, z, conf); pose_aa f32[72]; betas f32[10]; transl f32[3];
    has_smpl / has_transl flags; visible f32[24]: 1 where the joint is in the image and not
    hidden by another object (synthetic data; None where unknown, as in .npz files).
    """

    image_path: Path
    K: np.ndarray | None
    box_center: np.ndarray
    box_size: float
    kp2d: np.ndarray
    kp3d: np.ndarray
    pose_aa: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    has_smpl: bool
    has_transl: bool
    visible: np.ndarray | None = None

    @property
    def full_view(self) -> bool:
        """Every joint is seen: none outside the image or behind another object."""
        return self.visible is not None and bool(np.all(self.visible > 0))


@dataclass
class Batch:
    """A batch of P persons (torch). crops f32[P,R,3,256,192]; box_info f32[P,R,3]; centers
    f32[P,R,2] px; sizes f32[P,R] px; K f32[P,3,3]; kp2d f32[P,24,3]; kp3d f32[P,24,4];
    rotmat f32[P,24,3,3]; betas f32[P,10]; transl f32[P,3]; has_smpl f32[P]; has_transl f32[P];
    key i64[P] (epoch * N + index)."""

    crops: torch.Tensor
    box_info: torch.Tensor
    centers: torch.Tensor
    sizes: torch.Tensor
    K: torch.Tensor
    kp2d: torch.Tensor
    kp3d: torch.Tensor
    rotmat: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor
    has_smpl: torch.Tensor
    has_transl: torch.Tensor
    key: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.crops.shape[0])


def collate(items: list[dict[str, np.ndarray]]) -> Batch:
    """Stack per-person dicts (from :meth:`PersonDataset.__getitem__`) into a Batch."""
    return Batch(**{f.name: torch.as_tensor(np.stack([it[f.name] for it in items]))
                    for f in fields(Batch)})  # fmt: skip


def _rotmats(pose_aa: np.ndarray) -> np.ndarray:
    return np.stack([cv2.Rodrigues(v.astype(np.float64))[0] for v in pose_aa.reshape(24, 3)])


class PersonDataset(torch.utils.data.Dataset):
    """Records -> augmented items with R RoIs. ``dataset[key]``, key = epoch * len + index."""

    def __init__(
        self, records: list[PersonRecord], num_rois: int, augment: aug.AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:  # fmt: skip
        if not records:
            raise ValueError("dataset has no usable persons; check the data folder and filters")
        self.records = records
        self.num_rois = num_rois
        self.augment = augment or aug.AugmentConfig(enabled=False)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int) -> dict[str, np.ndarray]:
        rec = self.records[int(key) % len(self.records)]
        rng = np.random.default_rng([self.seed, int(key)])
        image = cv2.imread(str(rec.image_path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read image {rec.image_path}")
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return self.make_item(rec, image, aug.sample_draw(rng, self.augment), rng, int(key))

    def make_item(self, rec: PersonRecord, image: np.ndarray, draw: aug.AugmentDraw,
                  rng: np.random.Generator, key: int = 0) -> dict[str, np.ndarray]:  # fmt: skip
        """One person under one augmentation draw (see :class:`Batch` for the fields)."""
        h, w = image.shape[:2]
        K = rec.K if rec.K is not None else _default_K(w, h)
        principal = K[:2, 2].astype(np.float64)
        A = aug.image_transform(draw, w, principal)
        image = aug.paste_occluder(image, draw, rec.box_center, rec.box_size, rng)
        K_aug = K.astype(np.float64).copy()
        K_aug[:2, 2] = aug.transform_points_2d(A, principal)
        center = aug.transform_points_2d(A, rec.box_center) + np.asarray(draw.shift) * rec.box_size
        size = rec.box_size * draw.scale
        centers, sizes = roi_windows(center[None].astype(np.float32),
                                     np.array([size], np.float32), self.num_rois)  # fmt: skip
        crops_u8 = aug.apply_colour(aug.warp_rois(image, A, centers[0], sizes[0]), draw)
        kp2d = aug.flip_keypoints_2d(rec.kp2d, draw).copy()
        kp2d[:, :2] = aug.transform_points_2d(A, kp2d[:, :2])
        rotmat, kp3d, transl = aug.augment_smpl(draw, _rotmats(rec.pose_aa), rec.kp3d, rec.transl)
        f = float(0.5 * (K[0, 0] + K[1, 1]))
        return {
            "crops": normalize_crops(crops_u8), "centers": centers[0], "sizes": sizes[0],
            "box_info": box_info_from_focal(centers[0], sizes[0], f, K_aug[:2, 2]),
            "K": K_aug.astype(np.float32), "kp2d": kp2d.astype(np.float32), "kp3d": kp3d,
            "rotmat": rotmat, "betas": rec.betas.astype(np.float32), "transl": transl,
            "has_smpl": np.float32(rec.has_smpl), "has_transl": np.float32(rec.has_transl),
            "key": np.int64(key),
        }  # fmt: skip


def _default_K(w: int, h: int) -> np.ndarray:
    f = float(np.hypot(w, h))
    return np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], np.float32)


BOX_EXTENTS = ("visible", "amodal")


def synth_records(
    root: str | Path, min_visible_joints: int = 6, min_box_px: float = 16.0,
    box_extent: str = "visible",
) -> list[PersonRecord]:  # fmt: skip
    """Persons of all shards under ``root`` (a ``train.synth`` output folder), filtered: at least
    ``min_visible_joints`` visible joints and a visible box at least ``min_box_px`` tall.
    box_extent: the base box around the person's visible pixels ("visible", method.md 1.1) or
    around the whole body, parts outside the image or hidden included ("amodal")."""
    if box_extent not in BOX_EXTENTS:
        raise ValueError(f"box_extent must be one of {BOX_EXTENTS}, got {box_extent!r}")
    root = Path(root)
    shards = sorted(root.glob("shard_*/labels.npz"))
    if not shards:
        raise ValueError(f"no shards (shard_*/labels.npz) under {root}; run python -m train.synth")
    out: list[PersonRecord] = []
    for lab_path in shards:
        with np.load(lab_path, allow_pickle=False) as z:
            lab = {k: z[k] for k in z.files}
        for p, k in enumerate(lab["person_image"]):
            box = lab["box_xyxy"][p]
            vis = lab["joints2d"][p, :, 2]
            if vis.sum() < min_visible_joints or box[3] - box[1] < min_box_px:
                continue
            c, b = base_boxes((box if box_extent == "visible" else lab["box_amodal"][p])[None])
            kp2d = lab["joints2d"][p].copy()
            kp2d[:, 2] = 1.0  # synthetic 2D joints are exact even where occluded
            kp3d = np.concatenate([lab["joints3d"][p], np.ones((24, 1), np.float32)], 1)
            out.append(PersonRecord(
                lab_path.parent / str(lab["image_name"][k]), lab["K"][k], c[0], float(b[0]),
                kp2d, kp3d, lab["pose"][p], lab["betas"][p], lab["transl"][p], True, True,
                (vis > 0).astype(np.float32),
            ))  # fmt: skip
    logger.info("synthetic data %s: %d persons in %d shards", root, len(out), len(shards))
    return out


def npz_records(npz_path: str | Path, image_root: str | Path) -> list[PersonRecord]:
    """Persons of a SPIN/CLIFF ``.npz`` (keys imgname, center, scale, part, pose, shape, S,
    has_smpl, gender; optional focal_length). The base box is ``scale * 200`` px tall."""
    npz_path, image_root = Path(npz_path), Path(image_root)
    with np.load(npz_path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    missing = [k for k in ("imgname", "center", "scale", "part") if k not in d]
    if missing:
        raise ValueError(f"{npz_path}: missing keys {missing}; expected the SPIN/CLIFF layout")
    n = len(d["imgname"])
    has_smpl = d.get("has_smpl", np.zeros(n)).astype(bool)
    pose = d.get("pose", np.zeros((n, 72), np.float32))
    shape = d.get("shape", np.zeros((n, 10), np.float32))
    S = d.get("S", np.zeros((n, 24, 4), np.float32))
    focal = d.get("focal_length")
    out = []
    for i in range(n):
        kp2d = np.zeros((24, 3), np.float32)
        kp3d = np.zeros((24, 4), np.float32)
        src = np.flatnonzero(SPIN24_TO_SMPL >= 0)
        kp2d[SPIN24_TO_SMPL[src]] = d["part"][i][src]
        kp3d[SPIN24_TO_SMPL[src]] = S[i][src]
        K = None
        if focal is not None:
            f = float(np.asarray(focal).reshape(-1)[i if np.size(focal) > 1 else 0])
            img = cv2.imread(str(image_root / str(d["imgname"][i])), cv2.IMREAD_UNCHANGED)
            hh, ww = img.shape[:2] if img is not None else (0, 0)
            K = np.array([[f, 0, ww / 2], [0, f, hh / 2], [0, 0, 1]], np.float32)
        out.append(PersonRecord(
            image_root / str(d["imgname"][i]), K, d["center"][i].astype(np.float32),
            float(np.asarray(d["scale"][i]).reshape(-1)[0] * 200.0), kp2d, kp3d,
            pose[i].astype(np.float32), shape[i, :10].astype(np.float32),
            np.zeros(3, np.float32), bool(has_smpl[i]), False,
        ))  # fmt: skip
    logger.info("npz data %s: %d persons", npz_path, n)
    return out


def open_dataset(
    spec: str, num_rois: int, augment: aug.AugmentConfig | None = None, seed: int = 0,
    image_root: str | None = None, min_box_px: float = 16.0, box_extent: str = "visible",
) -> PersonDataset:  # fmt: skip
    """A synthetic folder, or an ``.npz`` file (with ``image_root``, default: its folder).
    min_box_px: synthetic persons whose visible box is shorter are left out. box_extent: see
    :func:`synth_records` (an ``.npz`` brings its own boxes)."""
    p = Path(spec)
    if p.suffix == ".npz":
        records = npz_records(p, image_root or p.parent)
    elif p.is_dir():
        records = synth_records(p, min_box_px=min_box_px, box_extent=box_extent)
    else:
        raise ValueError(f"data {spec!r} is neither a synthetic folder nor a SPIN/CLIFF .npz file")
    return PersonDataset(records, num_rois, augment, seed)


class KeyedConcat(torch.utils.data.Dataset):
    """Several data sets as one (``--data.train A,B``): len = N, the sum of their lengths; item
    ``key = epoch * N + i`` is source j's item ``epoch * n_j + (i - offset_j)`` for the source j
    that holds index i, so each source keeps its own per-epoch draws (augmentation, cache
    draw). The item's "key" is the global key."""

    def __init__(self, parts: list[torch.utils.data.Dataset]) -> None:
        if not parts:
            raise ValueError("no data sets to join")
        self.parts = parts
        self.sizes = [len(p) for p in parts]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.n = int(self.offsets[-1])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int) -> dict[str, np.ndarray]:
        epoch, i = divmod(int(key), self.n)
        j = int(np.searchsorted(self.offsets, i, side="right") - 1)
        item = self.parts[j][epoch * self.sizes[j] + i - int(self.offsets[j])]
        item["key"] = np.int64(key)
        return item


class ResumableSampler(torch.utils.data.Sampler):
    """Endless keys for one rank, from ``start_step``: step s, rank r, slot j reads global
    position g = (s * world + r) * batch + j of the epoch-wise permutations;
    key = epoch * N + i."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, start_step: int = 0,
                 rank: int = 0, world: int = 1) -> None:  # fmt: skip
        self.n, self.batch, self.seed = n, batch_size, seed
        self.start_step, self.rank, self.world = start_step, rank, world
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, 7, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def __iter__(self):
        step = self.start_step
        while True:
            for j in range(self.batch):
                g = (step * self.world + self.rank) * self.batch + j
                epoch, pos = divmod(g, self.n)
                yield int(epoch * self.n + self._perm(epoch)[pos])
            step += 1
