"""Evaluation: ``python -m train.eval --checkpoint CKPT --data DIR_OR_NPZ``.

Metrics (method.md 5, mm): MPJPE and PA-MPJPE over the SMPL joints with ground truth (all 24 on
synthetic data), PVE (persons with SMPL ground truth), the error of the full translation T and of
its depth (persons with a ground-truth translation; RoI 0's camera, or where the fit to the 2D
joints moved it, ``--fit-2d``), and the RoI camera disagreement (mean distance of the RoIs' T
from their mean, the cameras' own). Printed as a table, written as JSON.

One diagnostic in percent, ``mirror_closer``: the share of persons whose predicted joints lie
closer (PA-MPJPE) to the left-right mirror image of the true joints than to the true joints. A
network that reads which limb is which scores near 0; one that cannot tell (front and back
confused, or a pose that is nearly symmetric) near 50.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch

from multiroi import metrics as M
from multiroi.geometry.fit2d import Fit2DConfig, fit_people
from multiroi.geometry.rotations import rot6d_to_rotmat
from train.augment import FLIP_PERM
from train.datasets import PersonDataset, collate
from train.losses_step import focal_principal, full_translations

logger = logging.getLogger(__name__)

METRIC_NAMES = ("mpjpe", "pa_mpjpe", "pve", "transl_err", "depth_err", "depth_err_median",
                "roi_disagreement", "mirror_closer", "mpjpe_full_view", "pa_mpjpe_full_view",
                "full_view")  # fmt: skip
UNITS = {"mirror_closer": "%", "full_view": "%"}  # the others: mm


def mirror_joints(kp3d: np.ndarray) -> np.ndarray:
    """The left-right mirror image of SMPL joints [..., 24, C] (x negated, sides swapped)."""
    out = np.array(kp3d[..., FLIP_PERM, :], copy=True)
    out[..., 0] *= -1
    return out


def _joint_metrics(
    pred_j: np.ndarray, gt_kp3d: np.ndarray, scored: list[int] | None = None
) -> tuple[list, list, list]:
    """Per person MPJPE / PA-MPJPE over the joints with confidence > 0 (pelvis needed), and
    100 where the prediction is closer to the mirrored truth (joints whose mirror partner has a
    confidence too), else 0. ``scored`` (optional) gets the index of every person scored."""
    mp, pa, mirror = [], [], []
    gt_mirror = mirror_joints(gt_kp3d)
    for p in range(len(pred_j)):
        sel = gt_kp3d[p, :, 3] > 0
        if sel.sum() < 4 or not sel[0]:
            continue
        if scored is not None:
            scored.append(p)
        idx = np.flatnonzero(sel)  # pelvis (0) first
        mp.append(M.mpjpe(pred_j[p : p + 1, idx], gt_kp3d[p : p + 1, idx, :3])[0])
        pa.append(M.pa_mpjpe(pred_j[p : p + 1, idx], gt_kp3d[p : p + 1, idx, :3])[0])
        both = np.flatnonzero(sel & (gt_mirror[p, :, 3] > 0))
        if len(both) >= 4:
            pj = pred_j[p : p + 1, both]
            # all joints have their partner (synthetic data): PA-MPJPE to the truth is known
            direct = pa[-1] if len(both) == len(idx) else M.pa_mpjpe(
                pj, gt_kp3d[p : p + 1, both, :3])[0]  # fmt: skip
            mirror.append(100.0 * (M.pa_mpjpe(pj, gt_mirror[p : p + 1, both, :3])[0] < direct))
    return mp, pa, mirror


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, body, dataset: PersonDataset, batch_size: int = 16,
    device: torch.device | str = "cpu", max_persons: int | None = None, progress: bool = False,
    fit_2d: Fit2DConfig | None = None,
) -> dict[str, float]:  # fmt: skip
    """Mean metrics (mm; ``mirror_closer`` and ``full_view`` in %) of ``model`` on ``dataset``
    (its first ``max_persons`` persons, no augmentation); NaN for a metric without ground truth.

    ``*_full_view``: the same over the persons whose every joint is seen (none outside the image
    or behind another object; synthetic data only), ``full_view`` their share. The other
    metrics score every joint of every person, the hidden ones too, which no image shows.

    ``fit_2d``: each person's global orientation and translation fitted to the network's 2D
    joints first, as the live pipeline does (multiroi.geometry.fit2d; networks without a
    lifter have no 2D joints and are scored as they are).
    """
    was_training = model.training
    model.eval()
    n = len(dataset) if not max_persons else min(len(dataset), max_persons)
    acc: dict[str, list] = {k: [] for k in METRIC_NAMES}
    from tqdm import tqdm

    for start in tqdm(range(0, n, batch_size), desc="eval", disable=not progress):
        index = range(start, min(start + batch_size, n))
        batch = collate([dataset[i] for i in index]).to(device)
        out = model(batch.crops, batch.box_info)
        transl = cams = full_translations(out.cam_local.float(), batch)
        if fit_2d is not None and getattr(out, "joints_2d", None) is not None:
            out, transl = _fitted(out, transl, batch, body, fit_2d)
        pred = body(out.rotmat.float(), out.betas.float())
        scored: list[int] = []
        mp, pa, mirror = _joint_metrics(pred.joints.cpu().numpy(), batch.kp3d.cpu().numpy(),
                                        scored)  # fmt: skip
        acc["mpjpe"] += mp
        acc["pa_mpjpe"] += pa
        acc["mirror_closer"] += mirror
        records = getattr(dataset, "records", None)  # per-joint visibility lives there
        known = [records is not None and records[index[p]].visible is not None for p in scored]
        if any(known):
            full = [records[index[p]].full_view for p in scored]
            acc["full_view"] += [100.0 * f for f, k in zip(full, known, strict=True) if k]
            acc["mpjpe_full_view"] += [e for e, f in zip(mp, full, strict=True) if f]
            acc["pa_mpjpe_full_view"] += [e for e, f in zip(pa, full, strict=True) if f]
        has = batch.has_smpl.bool()
        if has.any():
            gt = body(batch.rotmat[has], batch.betas[has])
            acc["pve"] += list(M.pve(pred.vertices[has], gt.vertices, pred.joints[has, 0],
                                     gt.joints[:, 0]))  # fmt: skip
        acc["roi_disagreement"] += list(M.roi_disagreement(cams))  # the RoIs' own cameras
        ht = batch.has_transl.bool()
        if ht.any():
            acc["transl_err"] += list(M.translation_error(transl[ht, 0], batch.transl[ht]))
            acc["depth_err"] += list(M.depth_error(transl[ht, 0], batch.transl[ht]))
    model.train(was_training)
    # the mean depth error is ruled by a few persons placed kilometres away; the median is not
    acc["depth_err_median"] = [float(np.median(acc["depth_err"]))] if acc["depth_err"] else []
    return {k: float(np.mean(v)) if v else float("nan") for k, v in acc.items()}


def _fitted(out, transl: torch.Tensor, batch, body, cfg: Fit2DConfig):
    """(out with the global orientations turned, transl f32[P,R,3] with RoI 0's moved) after
    :func:`multiroi.geometry.fit2d.fit_people` on the base RoI."""
    rotmat = out.rotmat.float()
    joints = body.joints(rotmat, out.betas.float())
    f, pp = focal_principal(batch.K)
    new_rot, new_t, _ = fit_people(
        rotmat.cpu().numpy(), joints.cpu().numpy(), transl[:, 0].cpu().numpy(),
        out.joints_2d.float().cpu().numpy(), batch.centers[:, 0].cpu().numpy(),
        batch.sizes[:, 0].cpu().numpy(), f.cpu().numpy(), pp.cpu().numpy(), cfg,
    )  # fmt: skip
    transl = transl.clone()
    transl[:, 0] = torch.from_numpy(new_t).to(transl)
    out = copy.copy(out)
    out.rotmat = torch.from_numpy(new_rot).to(out.rotmat)
    return out, transl


class MeanPose(torch.nn.Module):
    """A network whose every person gets its mean pose and shape (the decoders' starting point,
    what the untrained network outputs), placed by its own cameras: the baseline of "from the
    untrained model" on the same persons."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, crops: torch.Tensor, box_info: torch.Tensor):
        out = self.net(crops, box_info)
        rotmat = rot6d_to_rotmat(self.net.init_pose6d.reshape(-1, 6)).to(out.rotmat.dtype)
        # no 2D joints: the mean pose is scored as the cameras place it, not fitted
        return dataclasses.replace(out, joints_2d=None,
                                   rotmat=rotmat.expand_as(out.rotmat).contiguous(),
                                   betas=self.net.init_betas.reshape(1, -1).expand_as(
                                       out.betas).contiguous())  # fmt: skip


def evaluate_checkpoint(
    checkpoint: str | Path, data: str | Path, image_root: str | None = None,
    body_model: str | None = None, batch_size: int = 16, device: str = "cpu",
    max_persons: int | None = None, box_extent: str | None = None,
    flip_test: bool | None = None, lifter_ik: float | None = None, mean_pose: bool = False,
    fit_2d: Fit2DConfig | None = None, lifter_turn: float | None = None,
) -> tuple[dict[str, float], int, int]:  # fmt: skip
    """:func:`evaluate` of a checkpoint file on a synthetic folder or ``.npz`` (crops cut for the
    checkpoint's RoI count, around the boxes it was trained on unless ``box_extent`` says
    "visible" or "amodal"; ``flip_test`` True/False: the lifter's test-time flip on/off, None:
    the checkpoint's; ``lifter_ik``: the weight of the lifter's joints in the pose, None: the
    checkpoint's; ``mean_pose``: score :class:`MeanPose` of it instead; ``fit_2d``: see
    :func:`evaluate`; ``lifter_turn``: the turn lifter's weight, None: the checkpoint's).
    Returns (metrics, the checkpoint's step, persons evaluated)."""
    from multiroi.body import load_body_model
    from multiroi.checkpoint import load_checkpoint
    from multiroi.model.network import set_flip_test, set_lifter_ik, set_lifter_turn
    from train.datasets import open_dataset

    model, meta = load_checkpoint(checkpoint, map_location=device)
    set_flip_test(model, flip_test)
    body = load_body_model(body_model, device=device)
    set_lifter_ik(model, lifter_ik, body)
    set_lifter_turn(model, lifter_turn)
    dataset = open_dataset(data, model.cfg.num_rois, None, 0, image_root,
                           box_extent=box_extent or model.cfg.box_extent)  # fmt: skip
    net = MeanPose(model) if mean_pose else model
    metrics = evaluate(net, body, dataset, batch_size, device, max_persons, progress=True,
                       fit_2d=fit_2d)  # fmt: skip
    return metrics, meta.step, min(len(dataset), max_persons or len(dataset))


def format_table(metrics: dict[str, float], title: str = "") -> str:
    """A text table of metrics: name, value, unit (mm unless ``UNITS`` says otherwise)."""
    lines = [title] if title else []
    lines += [f"{'metric':<18}{'value':>10}  unit", "-" * 34]
    lines += [f"{k:<18}{v:>10.1f}  {UNITS.get(k, 'mm')}" for k, v in metrics.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m train.eval", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="synthetic folder or SPIN/CLIFF .npz")
    p.add_argument("--image-root", default=None, help="image folder of an .npz (default: its dir)")
    p.add_argument("--body-model", default=None, help="body-model .npz (default: the free model)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-persons", type=int, default=0, help="0: all")
    p.add_argument("--device", default="cpu")
    p.add_argument("--box-extent", choices=["visible", "amodal"], default=None,
                   help="synthetic data: the person boxes (default: those the model was trained "
                        "on)")  # fmt: skip
    p.add_argument(
        "--flip-test",
        choices=("on", "off"),
        default=None,
        help="the lifter's test-time flip (default: as the checkpoint says)",
    )
    p.add_argument("--lifter-ik", type=float, default=None, metavar="W",
                   help="weight of the lifter's joints in the pose, 0-1 (0: off; default: as "
                        "the checkpoint says)")  # fmt: skip
    p.add_argument("--lifter-turn", type=float, default=None, metavar="B",
                   help="weight of the turn lifter's torso in the body's turn, 0-1 (0: off; "
                        "default: as the checkpoint says)")  # fmt: skip
    p.add_argument("--mean-pose", action="store_true",
                   help="score the checkpoint's mean pose and shape for every person instead "
                        "(what the untrained network outputs; the baseline of 'from the "
                        "untrained model'), placed by its cameras")  # fmt: skip
    p.add_argument("--fit-2d", choices=("on", "off"), default="on",
                   help="fit each person's global orientation and distance to the network's "
                        "2D joints, as the live pipeline does (default: on; networks without "
                        "a lifter are scored as they are)")  # fmt: skip
    p.add_argument("--json", default=None, help="output JSON (default: beside the checkpoint)")
    args = p.parse_args(argv)
    from multiroi.checkpoint import CheckpointError

    try:
        metrics, step, persons = evaluate_checkpoint(
            args.checkpoint, args.data, args.image_root, args.body_model, args.batch_size,
            args.device, args.max_persons or None, args.box_extent,
            None if args.flip_test is None else args.flip_test == "on", args.lifter_ik,
            args.mean_pose, Fit2DConfig() if args.fit_2d == "on" else None, args.lifter_turn,
        )  # fmt: skip
    except (CheckpointError, ValueError) as exc:
        logger.error("%s", exc)
        return 2
    what = f"{args.checkpoint}'s mean pose" if args.mean_pose else args.checkpoint
    print(format_table(metrics, f"{what} (step {step}) on {args.data}"))
    suffix = ".mean_pose.eval.json" if args.mean_pose else ".eval.json"
    out = Path(args.json) if args.json else Path(args.checkpoint).with_suffix(suffix)
    out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "step": step,
                               "mean_pose": args.mean_pose, "fit_2d": args.fit_2d == "on",
                               "data": str(args.data), "persons": persons,
                               "metrics_mm": {k: v for k, v in metrics.items() if k not in UNITS},
                               "mirror_closer_pct": metrics["mirror_closer"],
                               "full_view_pct": metrics["full_view"]},
                              indent=2))  # fmt: skip
    logger.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
