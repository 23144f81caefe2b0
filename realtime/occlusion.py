"""Hold a person's last reliable pose while a nearer person covers most of their box.

When one person walks behind another, the rear person's crops are filled by the front person:
the network then gives the rear track the front person's pose and depth. On the demo clip the
rows whose box is more than half covered by a nearer person score PA-MPJPE 141 mm (the mean
pose: 125) and a median depth error of 1.25 m, against 89 mm and 0.20 m for the others
(docs/benchmarks.md, "Occlusion hold").

:class:`OcclusionGuard` keeps each track's last reliable state. A track is covered when the
share of its box inside the box of a nearer track (by the depths of the last reliable states)
reaches ``threshold``; then, for at most ``max_hold_s``, it gets its held pose, shape and
depth, placed where its box is now (the image position of its origin keeps its offset from
the box centre, at the held depth). It runs before the smoothing, on the full-camera
translation, so the smoothing sees a steady track.

A person fully behind a nearer one is not detected at all, and their track is lost: the
tracker keeps looking for it for a second (ByteTrack's buffer), predicting its box from its
motion. :meth:`OcclusionGuard.coast` shows such a lost person, with their held pose, shape
and depth, in the box of the size they had when last seen reliably, around the centre the
tracker predicts (the predicted box itself grows into the front person's while the two
overlap), while that box is covered by the box of a person nearer by at least
``COAST_MARGIN_M`` (so a duplicate detection of the front person that drops out is not
kept), within the same ``max_hold_s`` of the last reliable state: people do not vanish while
they pass behind someone, and the track keeps its smoothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from realtime.boxes import box_area, box_intersection

COAST_MARGIN_M = 0.3  # a lost person is shown behind a person at least this much nearer


@dataclass
class _Held:
    """A track's last reliable state: rotmat f32[24,3,3], betas f32[10], transl f32[3] m, the
    image position of its origin minus its box centre f64[2] px, when (s), and its box's size
    (w, h) f64[2] px."""

    rotmat: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    offset_px: np.ndarray
    t_s: float
    size_px: np.ndarray

    def transl_at(self, centre_px: np.ndarray, f: np.ndarray, c: np.ndarray) -> np.ndarray:
        """f32[3] m: the held depth, the origin where it was relative to a box centred here."""
        z = float(self.transl[2])
        uv = np.asarray(centre_px, np.float64) + self.offset_px
        return np.array([*((uv - c) * z / f), z], np.float32)


class OcclusionGuard:
    """``guard(t_s, ids, boxes, rotmat, betas, transl, focal, principal)`` -> the same three
    arrays with covered tracks held, and bool[M] of the held ones (see module doc).

    threshold: share of the box covered by a nearer person's box (0-1] from which the track
    is held; max_hold_s: the longest hold, after which the network's output is taken again;
    coast: :meth:`coast` shows lost tracks (False: it shows none).
    """

    def __init__(
        self, threshold: float = 0.5, max_hold_s: float = 2.0, coast: bool = True
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"occlusion threshold must be in (0, 1], got {threshold}")
        self.threshold = float(threshold)
        self.max_hold_s = float(max_hold_s)
        self.coast_lost = bool(coast)
        self._held: dict[int, _Held] = {}
        self.held_rows = 0
        self.coasted_rows = 0  # lost persons shown behind a nearer one

    def reset(self) -> None:
        self._held.clear()

    def prune(self, alive: list[int]) -> None:
        """Forget the tracks not in ``alive``."""
        for tid in set(self._held) - set(alive):
            del self._held[tid]

    def covered(self, ids: np.ndarray, boxes: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """f64[M]: the largest share of each box inside the box of a person nearer by depth."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        inter = box_intersection(boxes, boxes) / np.maximum(box_area(boxes), 1e-9)[:, None]
        nearer = depth[None, :] < depth[:, None]  # [i, j]: j is nearer than i
        np.fill_diagonal(nearer, False)
        return np.where(nearer, inter, 0.0).max(1, initial=0.0)

    def __call__(
        self,
        t_s: float,
        ids: np.ndarray,
        boxes: np.ndarray,
        rotmat: np.ndarray,
        betas: np.ndarray,
        transl: np.ndarray,
        focal: tuple[float, float],
        principal: tuple[float, float],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        ids = np.asarray(ids).reshape(-1)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        rotmat, betas, transl = rotmat.copy(), betas.copy(), transl.copy()
        f, c = np.asarray(focal, np.float64), np.asarray(principal, np.float64)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        held_state = [self._held.get(int(t)) for t in ids.tolist()]
        depth = np.array([h.transl[2] if h is not None else transl[i, 2]
                          for i, h in enumerate(held_state)], np.float64)  # fmt: skip
        cover = self.covered(ids, boxes, depth)
        held = np.zeros(len(ids), bool)
        for i, (tid, h) in enumerate(zip(ids.tolist(), held_state, strict=True)):
            if h is not None and cover[i] >= self.threshold and t_s - h.t_s <= self.max_hold_s:
                rotmat[i], betas[i], transl[i] = h.rotmat, h.betas, h.transl_at(centre[i], f, c)
                held[i] = True
                continue
            t = transl[i].astype(np.float64)
            uv = f * t[:2] / max(t[2], 1e-6) + c
            self._held[int(tid)] = _Held(rotmat[i].copy(), betas[i].copy(), transl[i].copy(),
                                         uv - centre[i], t_s,
                                         boxes[i, 2:] - boxes[i, :2])  # fmt: skip
        self.held_rows += int(held.sum())
        return rotmat, betas, transl, held

    def coast(
        self,
        t_s: float,
        boxes: np.ndarray,
        depth: np.ndarray,
        lost_ids: np.ndarray,
        lost_boxes: np.ndarray,
        focal: tuple[float, float],
        principal: tuple[float, float],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The lost tracks to show this frame (see module doc): (ids i64[C], boxes f32[C,4]
        px, rotmat f32[C,24,3,3], betas f32[C,B], transl f32[C,3] m) or None, from the shown
        persons' boxes f32[M,4] px and depths f64[M] m, and the tracker's lost tracks
        (ids i64[L], predicted boxes f32[L,4] px)."""
        if not self.coast_lost:
            return None
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        depth = np.asarray(depth, np.float64).reshape(-1)
        f, c = np.asarray(focal, np.float64), np.asarray(principal, np.float64)
        out: list[tuple[int, np.ndarray, _Held]] = []
        lost_boxes = np.asarray(lost_boxes, np.float64).reshape(-1, 4)
        for tid, box in zip(np.asarray(lost_ids).reshape(-1).tolist(), lost_boxes, strict=True):
            h = self._held.get(int(tid))
            if h is None or t_s - h.t_s > self.max_hold_s or not np.isfinite(box).all() \
                    or (box[2:] - box[:2] <= 0).any():  # fmt: skip
                continue
            mid = (box[:2] + box[2:]) / 2  # the predicted centre, the size last seen reliably
            box = np.concatenate([mid - h.size_px / 2, mid + h.size_px / 2])
            nearer = depth <= float(h.transl[2]) - COAST_MARGIN_M
            if not nearer.any():
                continue
            inside = box_intersection(box[None], boxes[nearer])[0]
            if inside.max() / max(float(box_area(box[None])[0]), 1e-9) >= self.threshold:
                out.append((int(tid), box, h))
        if not out:
            return None
        transl = [h.transl_at((box[:2] + box[2:]) / 2, f, c) for _, box, h in out]
        self.coasted_rows += len(out)
        return (np.array([o[0] for o in out], np.int64),
                np.stack([o[1] for o in out]).astype(np.float32),
                np.stack([o[2].rotmat for o in out]).astype(np.float32),
                np.stack([o[2].betas for o in out]).astype(np.float32),
                np.array(transl, np.float32))  # fmt: skip
