"""The offline person detectors side by side, on held-out renders with known people.

    python -m realtime.bench_detect --data runs/close/val runs/front/val --out out/bench_detect

For every detector (OpenCV's HOG; MediaPipe's pose detector with one pass and with the live
loop's passes, its offline default; both merged) and every data folder (a
``python -m train.synth`` output): the share of persons found (a detection overlapping the
person's visible box by IoU >= 0.3, each detection matched to one person at most; persons at
least 48 px tall, as in training), the median IoU of those found, and the median milliseconds
per image, all measured in this run on the same images (HOG on OpenCV's threads, the pose
detector in onnxruntime with one thread, as in the live loop). With a checkpoint (default:
the shipped default model), also what the boxes cost the mesh: PA-MPJPE and the median depth
error of the persons found, cut from the detector's box and from the true box. Writes
``OUT/bench_detect.md`` and ``.json``; prints the table.

A checkpoint trained on whole-body boxes (``ModelConfig.box_extent`` "amodal") gets the pose
detector's whole-body boxes and the true whole-body box; persons are still matched by the
detection clipped to the image against the visible box, and the table adds the median IoU of
the whole-body boxes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MATCH_IOU = 0.3
MIN_BOX_PX = 48.0


def match_one_to_one(iou: np.ndarray, min_iou: float = MATCH_IOU) -> np.ndarray:
    """For each true person (rows of ``iou``) the detection (column) it is matched to, or -1:
    greedy by IoU, each detection matched at most once, pairs below ``min_iou`` never."""
    match = np.full(iou.shape[0], -1, np.int64)
    taken: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        p, j = np.unravel_index(flat, iou.shape)
        if iou[p, j] < min_iou:
            break
        if match[p] < 0 and int(j) not in taken:
            match[p] = j
            taken.add(int(j))
    return match


def offline_detectors(
    max_passes: int = 3, runtime: str = "auto", box_extent: str = "visible"
) -> dict[str, Any]:
    """The detectors to compare (MediaPipe's ones only where its file is here)."""
    from multiroi.model.blazepose import BlazePoseWeightsError
    from realtime.detect import HogDetector, MergedDetector
    from realtime.pose_detector import MAX_PASSES, BlazePoseDetector

    dets: dict[str, Any] = {"hog": HogDetector()}
    try:
        kw = dict(download=False, runtime=runtime, box_extent=box_extent)
        one = BlazePoseDetector(max_passes=1, **kw)
        live = BlazePoseDetector(max_passes=max_passes, **kw)
    except BlazePoseWeightsError as exc:
        logger.warning("MediaPipe's pose detector left out: %s", exc)
        return dets
    dets["blazepose, 1 pass"] = one
    live_loop = " (the live loop's)" if max_passes == MAX_PASSES else ""
    dets[f"blazepose, {max_passes} passes{live_loop}"] = live
    dets["blazepose + hog"] = MergedDetector(live, dets["hog"])
    return dets


def _persons(root: Path, min_box_px: float = MIN_BOX_PX) -> list[dict[str, Any]]:
    """Every image of a synthetic folder with its persons' labels (those big enough)."""
    images = []
    for lab_path in sorted(root.glob("shard_*/labels.npz")):
        with np.load(lab_path, allow_pickle=False) as z:
            lab = {k: z[k] for k in z.files}
        for k, name in enumerate(lab["image_name"]):
            idx = np.flatnonzero(lab["person_image"] == k)
            box = lab["box_xyxy"][idx]
            keep = idx[(box[:, 3] - box[:, 1] >= min_box_px)
                       & (lab["joints2d"][idx, :, 2].sum(1) >= 6)]  # fmt: skip
            images.append({"path": lab_path.parent / str(name), "K": lab["K"][k],
                           "persons": [{key: lab[key][p] for key in
                                        ("box_xyxy", "box_amodal", "joints2d", "joints3d",
                                         "pose", "betas", "transl")} for p in keep]})  # fmt: skip
    if not images:
        raise ValueError(f"no shards (shard_*/labels.npz) under {root}; run python -m train.synth")
    return images


def _record(image: dict, person: dict, box: np.ndarray) -> Any:
    from multiroi.rois import base_boxes
    from train.datasets import PersonRecord

    c, b = base_boxes(np.asarray(box, np.float32)[None])
    kp2d = person["joints2d"].copy()
    vis = (kp2d[:, 2] > 0).astype(np.float32)
    kp2d[:, 2] = 1.0
    kp3d = np.concatenate([person["joints3d"], np.ones((24, 1), np.float32)], 1)
    truth = (person["pose"], person["betas"], person["transl"])
    return PersonRecord(image["path"], image["K"], c[0], float(b[0]), kp2d, kp3d, *truth,
                        True, True, vis)  # fmt: skip


def run(
    data: list[str], checkpoint: str | None, max_images: int | None, max_passes: int = 3,
    min_box_px: float = MIN_BOX_PX, runtime: str = "auto",
) -> list[dict[str, Any]]:  # fmt: skip
    """One row per (data folder, detector): see the module doc. ``checkpoint`` "none": no
    mesh cost."""
    import cv2
    from tqdm import tqdm

    from realtime.boxes import box_iou

    model = body = None
    if checkpoint != "none":
        from multiroi.body import load_body_model
        from multiroi.checkpoint import default_checkpoint_path, load_checkpoint

        model, _ = load_checkpoint(checkpoint or default_checkpoint_path())
        body = load_body_model(None)
    whole = model is not None and model.cfg.box_extent == "amodal"
    dets = offline_detectors(max_passes, runtime, "amodal" if whole else "visible")
    rows = []
    for root in data:
        images = _persons(Path(root), min_box_px)[:max_images]
        stats = {n: {"found": [], "iou": [], "iou_whole": [], "ms": [], "det": [], "gt": []}
                 for n in dets}  # fmt: skip
        for image in tqdm(images, desc=f"detect {Path(root).name}"):
            frame = cv2.imread(str(image["path"]), cv2.IMREAD_COLOR)
            h, w = frame.shape[:2]

            gt, gt_whole = (np.array([p[key] for p in image["persons"]], np.float32).reshape(-1, 4)
                            for key in ("box_xyxy", "box_amodal"))  # fmt: skip
            for name, det in dets.items():
                t0 = time.perf_counter()
                got = det(frame).boxes_xyxy
                stats[name]["ms"].append(1000 * (time.perf_counter() - t0))
                seen = got.copy()  # the part in the image, matched against the visible box
                seen[:, [0, 2]] = seen[:, [0, 2]].clip(0, w)
                seen[:, [1, 3]] = seen[:, [1, 3]].clip(0, h)
                iou = box_iou(gt, seen)
                match = match_one_to_one(iou)
                for p, person in enumerate(image["persons"]):
                    j = match[p]
                    stats[name]["found"].append(j >= 0)
                    if j >= 0:
                        stats[name]["iou"].append(iou[p, j])
                        stats[name]["iou_whole"].append(
                            box_iou(gt_whole[p : p + 1], got[j : j + 1])[0, 0]
                        )
                        stats[name]["det"].append(_record(image, person, got[j]))
                        truth = gt_whole[p] if whole else gt[p]
                        stats[name]["gt"].append(_record(image, person, truth))
        for name, s in stats.items():
            row = {"data": str(root), "detector": name, "persons": len(s["found"]),
                   "found_pct": 100 * float(np.mean(s["found"])) if s["found"] else 0.0,
                   "iou_median": float(np.median(s["iou"])) if s["iou"] else float("nan"),
                   "ms_median": float(np.median(s["ms"]))}  # fmt: skip
            if whole:
                row["iou_whole_median"] = (float(np.median(s["iou_whole"])) if s["iou_whole"]
                                           else float("nan"))  # fmt: skip
            if model is not None and s["det"]:
                row.update(_mesh_cost(model, body, s["det"], s["gt"]))
            rows.append(row)
            logger.info("%s", row)
    return rows


def _mesh_cost(model: Any, body: Any, det: list, gt: list) -> dict[str, float]:
    """PA-MPJPE and median depth error of the same persons from the detector's and the true
    boxes (records whose base box is already the model's kind of box)."""
    from train.datasets import PersonDataset
    from train.eval import evaluate

    out = {}
    for key, recs in (("det", det), ("gt", gt)):
        m = evaluate(model, body, PersonDataset(recs, model.cfg.num_rois), batch_size=16)
        out[f"pa_mpjpe_{key}"] = m["pa_mpjpe"]
        out[f"depth_median_{key}"] = m["depth_err_median"]
    return out


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| data | detector | persons | found | IoU (median) | ms per image (median) "
            "| PA-MPJPE, detector box / true box (mm) | depth error, median (mm) |")  # fmt: skip
    whole = any("iou_whole_median" in r for r in rows)
    if whole:
        head += " whole-body IoU (median) |"
    lines = [head, "|" + "---|" * (9 if whole else 8)]
    for r in rows:
        mesh = depth = "-"
        if "pa_mpjpe_det" in r:
            mesh = f"{r['pa_mpjpe_det']:.1f} / {r['pa_mpjpe_gt']:.1f}"
            depth = f"{r['depth_median_det']:.0f} / {r['depth_median_gt']:.0f}"
        lines.append(f"| {Path(r['data']).parent.name}/{Path(r['data']).name} | {r['detector']} "
                     f"| {r['persons']} | {r['found_pct']:.0f}% | {r['iou_median']:.2f} "
                     f"| {r['ms_median']:.1f} | {mesh} | {depth} |")  # fmt: skip
        if whole:
            lines[-1] += f" {r.get('iou_whole_median', float('nan')):.2f} |"
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m realtime.bench_detect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--data", nargs="+", required=True, help="python -m train.synth folders")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="network for the mesh cost (default: the default model; 'none': skip)",
    )
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--passes", type=int, default=3, help="the live loop's detector passes")
    p.add_argument(
        "--runtime",
        default="auto",
        choices=("auto", "torch", "onnxruntime"),
        help="the pose detector's runtime (auto: onnxruntime on a CPU, one thread)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch's CPU threads (the pose "
                   "detector in torch, the mesh cost); HOG uses OpenCV's own")  # fmt: skip
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    from realtime.bench import machine_info

    torch.set_num_threads(max(1, args.threads))
    try:
        rows = run(args.data, args.checkpoint, args.max_images, args.passes,
                   runtime=args.runtime)  # fmt: skip
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = to_markdown(rows)
    (out / "bench_detect.md").write_text(md)
    (out / "bench_detect.json").write_text(json.dumps({"machine": machine_info(), "rows": rows},
                                                      indent=1))  # fmt: skip
    print(json.dumps(machine_info()))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
