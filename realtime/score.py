"""Score a live-loop recording against the demo clip's ground truth: pose, placement, tracking.

``python -m realtime.score out/demo.npz`` (the ground truth is found through the recording's
meta; ``--gt demo_gt.npz`` names it) prints one table and writes ``out/demo_score.json``. The
live loop scores itself the same way at the end of every ``--source demo`` run that records.

It scores the whole loop, detection, tracking and smoothing included, not the network alone:
each frame's recorded persons are matched to the true ones by box IoU (the true box of the
visible part or of the whole body, whichever fits better; as in CLEAR MOT, a track keeps its
person while their boxes overlap by IoU >= ``KEEP_IOU``, the rest are paired by the Hungarian
method, IoU >= ``min_iou``), and
the matched rows are scored with the metrics of ``multiroi.metrics`` (mm): PA-MPJPE and MPJPE
of the 24 joints, and, for reference, PA-MPJPE of the body model's mean pose on the same
persons; the placement by the full-image camera as the pelvis's position and depth error (m);
the tracking as recall (true persons in view that got a row), false rows, and identity
switches (times a true person's track id changes from one matched frame to the next).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realtime.recording import body_model_path, load_npz, recording_meta

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipScore:
    """A recording's score (see module doc). *_mm: mean over matched rows; *_m: median."""

    frames: int
    true_persons: int  # (frame, person) pairs with the person in view, over the recorded frames
    matched: int
    recall: float  # matched / true_persons
    false_rows: int  # recorded persons matched to nobody
    id_switches: int
    pa_mpjpe_mm: float
    mpjpe_mm: float
    mean_pose_pa_mpjpe_mm: float
    pose_ratio: float  # pa_mpjpe_mm / mean_pose_pa_mpjpe_mm: below 1 beats the mean pose
    position_err_m: float  # pelvis, camera frame
    depth_err_m: float  # pelvis depth
    depth_err_mean_m: float  # the same, mean: it shows the outliers the median hides
    accel_err_mm: float  # jitter: acceleration error of the pelvis-aligned joints, mm/frame^2
    held_matched: int = 0  # matched rows whose pose was held (covered or hidden persons)
    pa_mpjpe_not_held_mm: float = float("nan")  # the network's own poses: the other rows
    idf1: float = float("nan")  # identity F1: rows under the one track id each person keeps

    def describe(self) -> str:
        own = (f", {self.pa_mpjpe_not_held_mm:.1f} on the rows not held" if self.held_matched
               and np.isfinite(self.pa_mpjpe_not_held_mm) else "")  # fmt: skip
        return (f"demo score over {self.frames} frames: PA-MPJPE {self.pa_mpjpe_mm:.1f} mm "
                f"({self.pose_ratio:.3f} of the mean pose's "
                f"{self.mean_pose_pa_mpjpe_mm:.1f}{own}), "
                f"MPJPE {self.mpjpe_mm:.1f} mm, pelvis position {self.position_err_m:.2f} m, "
                f"depth {self.depth_err_m:.2f} m (medians; mean {self.depth_err_mean_m:.2f}), "
                f"acceleration error {self.accel_err_mm:.1f} mm/frame^2; "
                f"recall {self.recall:.1%} of "
                f"{self.true_persons} ({self.held_matched} held), {self.false_rows} false "
                f"rows, {self.id_switches} id switches, IDF1 {self.idf1:.3f}")  # fmt: skip


KEEP_IOU = 0.5  # CLEAR MOT's: a track stays matched to its person while IoU >= this


def match_rows(rec: dict[str, np.ndarray], gt: dict[str, np.ndarray],
               min_iou: float = 0.3) -> np.ndarray:  # fmt: skip
    """The true person i64[N] of each recorded row (-1: none), matched frame by frame as in
    CLEAR MOT: a track matched to a person in its last matched frame stays matched while their
    boxes overlap (IoU >= ``KEEP_IOU``); the other rows and persons are paired by the Hungarian
    method on IoU. (Without the first step, two persons one behind the other, whose boxes
    overlap either track's, count as id switches whenever the IoUs tip.)"""
    from scipy.optimize import linear_sum_assignment

    from realtime.boxes import box_iou

    frame_of = np.asarray(rec["frame_index"], np.int64)
    tracks = np.asarray(rec.get("track_id", np.arange(len(frame_of))), np.int64)
    out = np.full(len(frame_of), -1, np.int64)
    boxes = np.asarray(rec["box_xyxy"], np.float64)
    n_frames = len(gt["box_xyxy"])
    last: dict[int, int] = {}  # track id -> the person it was matched to last
    for k in np.unique(frame_of):
        if not 0 <= k < n_frames:
            continue
        rows = np.flatnonzero(frame_of == k)
        seen = np.flatnonzero(gt["visible"][k])
        if not len(seen):
            continue
        iou = np.maximum.reduce([box_iou(boxes[rows], gt[n][k, seen])
                                 for n in ("box_xyxy", "box_amodal") if n in gt])  # fmt: skip
        free_r, free_c = np.ones(len(rows), bool), np.ones(len(seen), bool)
        for i, t in enumerate(tracks[rows].tolist()):
            j = np.flatnonzero(seen == last.get(t, -1))
            if len(j) and free_c[j[0]] and iou[i, j[0]] >= KEEP_IOU:
                out[rows[i]], free_r[i], free_c[j[0]] = seen[j[0]], False, False
        ri, ci = np.flatnonzero(free_r), np.flatnonzero(free_c)
        if len(ri) and len(ci):
            r, c = linear_sum_assignment(-iou[np.ix_(ri, ci)])
            ok = iou[ri[r], ci[c]] >= min_iou
            out[rows[ri[r[ok]]]] = seen[ci[c[ok]]]
        for i in rows[out[rows] >= 0]:
            last[int(tracks[i])] = int(out[i])
    return out


def score_recording(rec: dict[str, np.ndarray], gt: dict[str, np.ndarray], body: Any = None,
                    min_iou: float = 0.3) -> ClipScore:  # fmt: skip
    """Score a recording (``realtime.recording`` layout) against demo ground truth (see
    ``realtime.demo.clip``); body: the body model the recording's pose drives (default: the
    free model)."""
    import torch

    from multiroi.body import load_body_model, load_mean_params
    from multiroi.geometry.rotations import rot6d_to_rotmat
    from multiroi.metrics import mpjpe, pa_mpjpe

    body = body if body is not None else load_body_model(None)
    who = match_rows(rec, gt, min_iou)
    frames = np.unique(np.asarray(rec["frames_index"] if "frames_index" in rec
                                  else rec["frame_index"], np.int64))  # fmt: skip
    frames = frames[(frames >= 0) & (frames < len(gt["visible"]))]
    true_persons = int(gt["visible"][frames].sum())
    m = np.flatnonzero(who >= 0)
    k, p = np.asarray(rec["frame_index"])[m], who[m]
    nan = float("nan")
    if len(m):
        with torch.no_grad():
            f32 = lambda name: torch.as_tensor(rec[name][m], dtype=torch.float32)  # noqa: E731
            pred = body(f32("rotmat"), f32("betas"), f32("transl_m")).joints
            mean = load_mean_params()
            rot0 = rot6d_to_rotmat(torch.from_numpy(mean.pose6d).reshape(24, 6))
            base = body(rot0.expand(len(m), -1, -1, -1).contiguous(),
                        torch.from_numpy(mean.betas).expand(len(m), -1).contiguous()).joints
        pred, base = pred.numpy().astype(np.float64), base.numpy().astype(np.float64)
        truth = gt["joints"][k, p].astype(np.float64)
        pa_rows = pa_mpjpe(pred, truth)
        pa, mean_pa = float(np.mean(pa_rows)), float(np.mean(pa_mpjpe(base, truth)))
        held = np.asarray(rec["held"], bool)[m] if "held" in rec else np.zeros(len(m), bool)
        pelvis = np.linalg.norm(pred[:, 0] - truth[:, 0], axis=-1)
        depth = np.abs(pred[:, 0, 2] - truth[:, 0, 2])
        scores = dict(pa_mpjpe_mm=pa, mpjpe_mm=float(np.mean(mpjpe(pred, truth))),
                      mean_pose_pa_mpjpe_mm=mean_pa, pose_ratio=pa / max(mean_pa, 1e-9),
                      position_err_m=float(np.median(pelvis)),
                      depth_err_m=float(np.median(depth)), depth_err_mean_m=float(depth.mean()),
                      accel_err_mm=accel_error(k, p, pred, truth),
                      pa_mpjpe_not_held_mm=float(np.mean(pa_rows[~held])) if (~held).any()
                      else nan)  # fmt: skip
    else:
        scores = dict(pa_mpjpe_mm=nan, mpjpe_mm=nan, mean_pose_pa_mpjpe_mm=nan, pose_ratio=nan,
                      position_err_m=nan, depth_err_m=nan, depth_err_mean_m=nan,
                      accel_err_mm=nan)  # fmt: skip
    return ClipScore(frames=len(frames), true_persons=true_persons, matched=len(m),
                     recall=len(m) / max(true_persons, 1), false_rows=int((who < 0).sum()),
                     id_switches=id_switches(k, p, np.asarray(rec["track_id"])[m]),
                     idf1=idf1(p, np.asarray(rec["track_id"])[m], len(who), true_persons),
                     held_matched=int(np.asarray(rec["held"], bool)[m].sum()) if "held" in rec
                     else 0, **scores)  # fmt: skip


def accel_error(frames: np.ndarray, persons: np.ndarray, pred: np.ndarray,
                truth: np.ndarray) -> float:  # fmt: skip
    """Mean acceleration error (mm/frame^2) of the pelvis-aligned joints pred, truth
    f[M,J,3] m, over the runs of three consecutive frames in which a true person is matched
    (as in video mesh recovery papers: the second difference of the joints, predicted minus
    true); nan when there are none."""
    errs = []
    for person in np.unique(persons):
        sel = np.flatnonzero(persons == person)
        sel = sel[np.argsort(frames[sel], kind="stable")]
        f = frames[sel]
        ok = np.flatnonzero((f[2:] - f[1:-1] == 1) & (f[1:-1] - f[:-2] == 1))
        if not len(ok):
            continue
        d = pred[sel] - pred[sel][:, :1] - (truth[sel] - truth[sel][:, :1])  # pelvis-aligned
        errs.append(np.linalg.norm(d[ok + 2] - 2 * d[ok + 1] + d[ok], axis=-1).mean(-1))
    return 1000.0 * float(np.concatenate(errs).mean()) if errs else float("nan")


def id_switches(frames: np.ndarray, persons: np.ndarray, track_ids: np.ndarray) -> int:
    """How often a true person's track id changes between its matched frames, in frame order."""
    n = 0
    for person in np.unique(persons):
        sel = np.flatnonzero(persons == person)
        ids = np.asarray(track_ids)[sel[np.argsort(np.asarray(frames)[sel], kind="stable")]]
        n += int((ids[1:] != ids[:-1]).sum())
    return n


def idf1(persons: np.ndarray, track_ids: np.ndarray, rows: int, true_persons: int) -> float:
    """Identity F1 (Ristani et al. 2016) over the matched rows (true person i64[M], track id
    i64[M]): each person is paired with at most one track id and each id with at most one
    person, so as to cover the most rows; the rows under their person's id are the identity
    true positives, of all ``rows`` recorded and all ``true_persons`` in view."""
    from scipy.optimize import linear_sum_assignment

    if not rows or not true_persons:
        return float("nan")
    people, pi = np.unique(np.asarray(persons), return_inverse=True)
    tracks, ti = np.unique(np.asarray(track_ids), return_inverse=True)
    counts = np.zeros((len(people), len(tracks)))
    np.add.at(counts, (pi, ti), 1.0)
    r, c = linear_sum_assignment(-counts)
    tp = float(counts[r, c].sum())
    return 2.0 * tp / (rows + true_persons)


def ground_truth_of(rec: dict[str, np.ndarray]) -> Path | None:
    """The ground-truth file a recording names in its meta (recordings of ``--source demo``)."""
    gt = recording_meta(rec).get("ground_truth")
    return Path(gt) if gt else None


def score_files(recording: str | Path, gt_path: str | Path | None = None,
                out_json: str | Path | None = None, body: Any = None) -> ClipScore:  # fmt: skip
    """Score a recording file; writes ``out_json`` (atomically) when given. body: the body
    model the run drove (default: the one its config names, else the free model)."""
    rec = load_npz(recording, "recording")
    if body is None:
        from multiroi.body import load_body_model

        body = load_body_model(body_model_path(rec))
    gt_path = gt_path or ground_truth_of(rec)
    if gt_path is None:
        raise ValueError(f"{recording} names no ground truth (only recordings of --source demo "
                         f"do): give it with --gt demo_gt.npz")  # fmt: skip
    gt = load_npz(gt_path, "ground truth",
                  "give the demo clip's demo_gt.npz (next to its demo.mp4 in the cache)")
    missing = [k for k in ("box_xyxy", "visible", "joints") if k not in gt]
    if missing:
        raise ValueError(f"{gt_path} lacks {', '.join(missing)}: expected a demo clip's "
                         f"demo_gt.npz")  # fmt: skip
    if "image_wh" in rec and "image_wh" in gt and rec["image_wh"].any() \
            and tuple(rec["image_wh"].tolist()) != tuple(gt["image_wh"].tolist()):  # fmt: skip
        raise ValueError(f"{recording} is of {tuple(rec['image_wh'].tolist())} px frames, the "
                         f"ground truth of {tuple(gt['image_wh'].tolist())}: not a recording of "
                         f"this clip")  # fmt: skip
    score = score_recording(rec, gt, body)
    if out_json is not None:
        out = Path(out_json)
        if not out.parent.is_dir():
            raise ValueError(f"cannot write the score to {out}: the folder {out.parent} does "
                             f"not exist")  # fmt: skip
        tmp = out.with_name(out.name + ".partial")
        # strict JSON: a metric with nothing to average (e.g. jitter over < 3 frames) is null
        values = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                  for k, v in asdict(score).items()}  # fmt: skip
        tmp.write_text(json.dumps(values, indent=2, allow_nan=False))
        tmp.replace(out)
    return score


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m realtime.score",
                                 description=__doc__.split("\n")[0])  # fmt: skip
    ap.add_argument("recording", help="the .npz a run wrote (run_camera.py --out DIR)")
    ap.add_argument("--gt", default=None, help="the clip's demo_gt.npz (default: from the "
                    "recording's meta)")  # fmt: skip
    ap.add_argument("--json", default=None, help="write the score here (default: "
                    "RECORDING's folder, <name>_score.json)")  # fmt: skip
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    rec = Path(args.recording)
    out = args.json or rec.with_name(rec.stem + "_score.json")
    try:
        score = score_files(rec, args.gt, out)
    except (OSError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    print(score.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
