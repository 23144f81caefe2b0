"""Train the keypoint lifter (multiroi.model.lifter) and put it into a network checkpoint.

    python -m train.lifter --cache runs/front/feat_bp5,runs/wide/feat_bp5 \\
        --init runs/bp5m/last.pt --out runs/lifter/init.pt
    python -m train --run.init runs/lifter/init.pt --model.lifter true \\
        --optim.freeze backbone,lifter ...

1. From the rendered persons of the feature caches (BlazePose's features of the base RoI and
   the labels of the same draw), for those whose 24 joints all lie inside the crop: a ridge
   regression from the 33 landmarks to the 24 joints in 2D (the lifter's ``landmark_map``), the
   2D errors it leaves (a pool of whole-body error vectors), and where the base box lies around
   the joints. Persons cut off by their box are only scored (BlazePose places even their
   visible joints three times worse; docs/experiments.md, run I).
   With ``--refine`` (the default): the lifter's ``Refiner2D``, an MLP from BlazePose's whole
   feature adding a correction to that map, trained on the rendered persons (cut-off ones
   included); a tenth of them is kept out of its training and gives the error pool instead
   (errors on the persons it was trained on would be too small).
2. Poses from the pose prior with shapes, facing directions, distances, fields of view, tilt
   and roll from the caches' scene ranges and the caches' in-plane rotation: 3D joints and
   their projection into a box placed as around a rendered person. No rendering: hundreds of
   thousands of pairs in a minute.
3. The MLP learns 2D (plus an error vector from the pool) -> root-relative 3D joints (L1).
   With ``--rendered-share S`` a share S of each batch is rendered persons instead: their
   2D estimates with their true 3D joints (errors that go with the pose and the image, which
   the pool's independent draws lack). It pays with tens of thousands of rendered persons
   (the default model: 0.5 on 197,347, docs/experiments.md runs Q, X and AA), not with a few
   thousand.
4. The network: ``--init``'s weights (the mesh decoder widened by zero columns for the lifted
   joints, so it starts exactly where ``--init`` stopped), ``model.lifter`` on, the lifter
   trained, ``model.box_extent`` that of the caches (``train.feature_cache --box-extent``);
   written atomically to ``--out``. A tenth of the rendered persons is held out of
   steps 1 and 3 and scores the lifter (PA-MPJPE), on those wholly in their crops and on all
   (cut-off persons included), in the log and in the checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from multiroi.model.lifter import NUM_JOINTS, KeypointLifter, Refiner2D
from train.lifter_pairs import PairSampler, box_placement, scene_ranges
from train.lifter_rendered import Rendered, fit_landmark_map, read_rendered
from train.runtime import add_device_argument

logger = logging.getLogger(__name__)

def _optimise(
    module: torch.nn.Module, batch_loss, *, steps: int, lr: float, weight_decay: float,
    desc: str, shown, progress: bool, pct_start: float = 0.3,
) -> None:  # fmt: skip
    """AdamW with a one-cycle schedule on ``module``: ``steps`` steps of ``batch_loss()`` (a
    fresh batch each call), progress bar ``desc`` showing ``shown(loss)``; ends in eval()."""
    from tqdm import tqdm

    opt = torch.optim.AdamW(module.parameters(), lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=pct_start)
    module.train()
    bar = tqdm(range(steps), desc=desc, unit="step", disable=not progress)
    for _ in bar:
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix_str(shown(loss.item()), refresh=False)
    module.eval()


def train_refiner(
    refiner: Refiner2D, features: np.ndarray, residuals: np.ndarray, *, steps: int, seed: int,
    batch: int = 256, lr: float = 1e-3, progress: bool = True,
) -> None:  # fmt: skip
    """Train ``refiner`` to predict ``residuals`` f32[N,24,2] (true 2D joints minus the landmark
    map's) from ``features`` [N,1464], from fresh weights, on the refiner's device; its
    standardisation is set from ``features``."""
    device = refiner.feat_mean.device
    x = torch.as_tensor(features, dtype=torch.float32).to(device)
    y = torch.as_tensor(residuals, dtype=torch.float32).to(device)
    # from scratch: weights warm-started from --init saw persons that may now be held out
    torch.manual_seed(seed + 1)
    refiner.reset()
    refiner.feat_mean.copy_(x.mean(0))
    refiner.feat_std.copy_(x.std(0) + 1e-3)
    gen = torch.Generator().manual_seed(seed + 1)

    def batch_loss() -> torch.Tensor:
        i = torch.randint(0, len(x), (batch,), generator=gen).to(device)
        return (refiner(x[i]) - y[i]).norm(dim=-1).mean()

    _optimise(refiner, batch_loss, steps=steps, lr=lr, weight_decay=1e-2, desc="2D refiner",
              shown=lambda v: f"err_box={v:.4f}", progress=progress)  # fmt: skip


def _refined(refiner: Refiner2D, features: np.ndarray, chunk: int = 4096) -> np.ndarray:
    device = refiner.feat_mean.device
    with torch.no_grad():
        parts = [refiner(torch.as_tensor(features[i : i + chunk], dtype=torch.float32)
                         .to(device)).cpu().numpy()
                 for i in range(0, len(features), chunk)]  # fmt: skip
    return np.concatenate(parts).astype(np.float32)


def train_lifter(
    lifter: KeypointLifter, rendered: Rendered, sampler: PairSampler, *, samples: int,
    steps: int, batch: int, lr: float, seed: int, progress: bool = True,
    refine_steps: int = 6000, fit_map: bool = True, rendered_share: float = 0.0,
    device: torch.device | str = "cpu",
) -> dict:  # fmt: skip
    """Fit ``landmark_map`` (``fit_map``; else keep the lifter's: a tuned 2D tail was trained
    through it), train the refiner (when the lifter has one) and the MLP (module doc).
    ``rendered_share``: that share of each batch is rendered persons, their 2D estimates with
    their true 3D joints (the rest pose-prior pairs); the held-out tenth is never among them.
    The refiner and the MLP train on ``device`` (the pairs are drawn on the CPU, as are the
    batches' indices, so a GPU run draws the same data); the lifter ends on the CPU.
    Returns scores in mm (2D errors in box heights)."""
    from tqdm import tqdm

    from multiroi.metrics import pa_mpjpe

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n = len(rendered.inputs)
    held = rng.permutation(n)[: max(n // 10, 1)]
    rest = np.setdiff1d(np.arange(n), held)
    fit = rest[rendered.whole[rest]]  # the map and its errors: persons wholly in their crops
    if fit_map:
        lmap = fit_landmark_map(rendered.inputs[fit], rendered.joints_2d[fit])
        lifter.landmark_map.copy_(torch.as_tensor(lmap))
    else:
        lmap = lifter.landmark_map.numpy().copy()
    mapped = (rendered.inputs @ lmap).reshape(n, NUM_JOINTS, 2).astype(np.float32)
    ridge_mapped = mapped
    pool = fit
    lifter.to(device)
    if lifter.refiner is not None:
        if rendered.features is None:
            raise ValueError("the lifter's 2D refiner needs the rendered persons' features")
        kept_out = rng.permutation(rest)[: max(len(rest) // 9, 1)]  # another tenth: the pool
        taught = np.setdiff1d(rest, kept_out)
        train_refiner(lifter.refiner, rendered.features[taught],
                      (rendered.joints_2d - mapped)[taught], steps=refine_steps, seed=seed,
                      progress=progress)  # fmt: skip
        mapped = mapped + _refined(lifter.refiner, rendered.features)
        pool = kept_out[rendered.whole[kept_out]]
        if len(pool) == 0:
            raise ValueError("no rendered person wholly in its crop was kept out of the 2D "
                             "refiner's training: cache more data")  # fmt: skip
    errors = torch.as_tensor(mapped[pool] - rendered.joints_2d[pool])
    # rendered pairs: persons whose 2D estimates no 2D stage was fitted on
    real = pool if lifter.refiner is not None else rest
    real_uv = torch.as_tensor(mapped[real])
    real_j3 = torch.as_tensor(rendered.joints_3d[real])
    n_real = int(round(batch * rendered_share)) if len(real) else 0
    t0 = time.time()
    uv, j3 = [], []
    for start in tqdm(range(0, samples, 5000), desc="pose prior", unit="x5000",
                      disable=not progress):  # fmt: skip
        a, b = sampler(rng, min(5000, samples - start))
        uv.append(a)
        j3.append(b)
    uv_t = torch.as_tensor(np.concatenate(uv)).to(device)
    j3_t = torch.as_tensor(np.concatenate(j3)).to(device)
    errors, real_uv, real_j3 = errors.to(device), real_uv.to(device), real_j3.to(device)
    logger.info("lifter: %d pose-prior pairs in %.0f s; %d rendered persons (%d held out)",
                len(uv_t), time.time() - t0, n, len(held))  # fmt: skip
    gen = torch.Generator().manual_seed(seed)

    def batch_loss() -> torch.Tensor:
        i = torch.randint(0, len(uv_t), (batch - n_real,), generator=gen).to(device)
        e = torch.randint(0, len(errors), (batch - n_real,), generator=gen).to(device)
        x, y = uv_t[i] + errors[e], j3_t[i]
        if n_real:
            r = torch.randint(0, len(real_uv), (n_real,), generator=gen).to(device)
            x, y = torch.cat([x, real_uv[r]]), torch.cat([y, real_j3[r]])
        return (lifter.lift(x) - y).abs().mean()

    _optimise(lifter, batch_loss, steps=steps, lr=lr, weight_decay=1e-4, desc="lifter",
              shown=lambda v: f"loss_mm={v * 1000:.0f}", progress=progress,
              pct_start=0.05)  # fmt: skip
    lifter.cpu()
    with torch.no_grad():
        x = torch.as_tensor(mapped[held])
        pred = lifter.lift(x).numpy()
    truth = rendered.joints_3d[held]
    err = pa_mpjpe(pred, truth)
    err_mean = pa_mpjpe(np.broadcast_to(sampler.mean_pose(rng), truth.shape), truth)
    whole = rendered.whole[held]
    scores = {
        "held_out_persons": int(whole.sum()),
        "pa_mpjpe_mm": float(err[whole].mean()),
        "pa_mpjpe_mean_pose_mm": float(err_mean[whole].mean()),
        "held_out_persons_all": int(len(held)),
        "pa_mpjpe_all_mm": float(err.mean()),
        "pa_mpjpe_all_mean_pose_mm": float(err_mean.mean()),
        "map_2d_error_box": float(np.median(np.linalg.norm(
            mapped[held][whole] - rendered.joints_2d[held][whole], axis=-1))),
        "map_2d_error_all_box": float(np.median(np.linalg.norm(
            mapped[held] - rendered.joints_2d[held], axis=-1))),
        "ridge_2d_error_all_box": float(np.median(np.linalg.norm(
            ridge_mapped[held] - rendered.joints_2d[held], axis=-1))),
        "refined_2d": lifter.refiner is not None,
    }  # fmt: skip
    logger.info("lifter on held-out rendered persons, PA-MPJPE (the prior's mean pose): %d wholly "
                "in their crops %.1f mm (%.1f), all %d %.1f mm (%.1f); 2D median error %.4f "
                "box heights on those wholly in their crops, %.4f on all (the landmark map "
                "alone: %.4f)", whole.sum(), scores["pa_mpjpe_mm"],
                scores["pa_mpjpe_mean_pose_mm"], len(held), scores["pa_mpjpe_all_mm"],
                scores["pa_mpjpe_all_mean_pose_mm"], scores["map_2d_error_box"],
                scores["map_2d_error_all_box"], scores["ridge_2d_error_all_box"])  # fmt: skip
    return scores


def check_caches_fit(model, caches: list[str], metas: list[dict], init: str | None) -> None:
    """ValueError unless the caches hold the features ``model``'s lifter reads: its tuned 2D
    tail's (slot R, made by train.feature_cache --init ``init``) when it has one, else RoI
    0's."""
    tail = model.cfg.lifter_tail
    if {bool(m.get("lifter_slot")) for m in metas} != {tail}:
        raise ValueError(
            f"the lifter's network {'has' if tail else 'has no'} tuned 2D tail (train.tune2d) "
            f"but caches {'without' if tail else 'with'} its features were given: make the "
            "caches with train.feature_cache --init the same checkpoint as --init"
        )
    if tail:  # the slot's features must be this tail's
        from train.feature_cache import backbone_fingerprint

        mine = backbone_fingerprint(model.backbone)
        other = [c for c, m in zip(caches, metas, strict=True) if m.get("fingerprint") != mine]
        if other:
            raise ValueError(f"{other[0]} was made with another backbone or 2D tail than "
                             f"{init}'s: make it with --init {init}")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.lifter", description=__doc__.split("\n")[0])
    p.add_argument("--cache", required=True,
                   help="blazepose_full feature cache(s), comma-separated")  # fmt: skip
    p.add_argument("--out", required=True, help="network checkpoint to write (.pt)")
    p.add_argument("--init", default=None, help="network checkpoint whose weights to start from")
    p.add_argument("--samples", type=int, default=300_000, help="pose-prior pairs")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--refine",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train a 2D refiner from BlazePose's whole feature (default: on)",
    )
    p.add_argument("--width", type=int, default=None,
                   help="the lifter MLP's width (default: --init's lifter's, else 512)")
    p.add_argument("--blocks", type=int, default=None,
                   help="its residual blocks (default: --init's lifter's, else 2); a lifter of "
                        "another size than --init's starts from fresh weights")  # fmt: skip
    p.add_argument("--refine-steps", type=int, default=6000, help="the 2D refiner's steps")
    p.add_argument(
        "--fit-map",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="refit the landmark map by ridge regression (default: on, except for a network "
        "with a tuned 2D tail, which was trained through --init's map)",
    )
    p.add_argument("--rendered-share", type=float, default=0.0,
                   help="share of each batch taken from the rendered persons (their 2D "
                        "estimates and true 3D joints) instead of the pose prior, 0-1 "
                        "(default 0; the default model: 0.5 on 197,347 rendered persons; on a "
                        "few thousand the lifter learns them by heart)")  # fmt: skip
    p.add_argument("--body-model", default=None, help="body model file (default: the free model)")
    add_device_argument(p, "the 2D refiner and the MLP train")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from multiroi.body import load_body_model
    from multiroi.checkpoint import CheckpointError, read_checkpoint_file, save_checkpoint
    from multiroi.model.config import ModelConfig
    from multiroi.model.network import MultiRoINet
    from train.config import split_list
    from train.runtime import pick_device
    from train.warm_start import earlier_stages, warm_start

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not 0.0 <= args.rendered_share <= 1.0:
        logger.error("--rendered-share must be a share in [0, 1], got %s", args.rendered_share)
        return 2
    try:
        device = pick_device(args.device)
        rendered, metas = read_rendered(split_list(args.cache))
        num_rois = {int(m["num_rois"]) for m in metas}  # only the base RoI is read
        if len(num_rois) != 1 and not args.init:
            raise ValueError(f"the caches have different RoI counts {sorted(num_rois)}; give "
                             "--init, whose network sets the count")  # fmt: skip
        box_extent = metas[0].get("box_extent", "visible")  # one for all (read_rendered)
        stages: list[dict] = []
        size = {k: v for k, v in (("lifter_width", args.width), ("lifter_blocks", args.blocks))
                if v is not None}  # fmt: skip
        if args.init:
            payload = read_checkpoint_file(args.init)
            cfg = ModelConfig.from_dict(
                dict(
                    payload["model_config"],
                    lifter=True,
                    lifter_refine=args.refine,
                    box_extent=box_extent,
                    **size,
                )
            )
            stages = earlier_stages(payload, args.init)
        else:
            cfg = ModelConfig(backbone="blazepose_full", num_rois=num_rois.pop(), lifter=True,
                              lifter_refine=args.refine, box_extent=box_extent,
                              **size)  # fmt: skip
        model = MultiRoINet(cfg, allow_random_init=True)
        if args.init:
            warm_start(payload, args.init, model)
        check_caches_fit(model, split_list(args.cache), metas, args.init)
    except (ValueError, CheckpointError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    body = load_body_model(args.body_model)
    offsets, extents = box_placement(rendered.joints_2d[rendered.whole])
    sampler = PairSampler(body, scene_ranges(metas), offsets, extents)
    scores = train_lifter(model.lifter, rendered, sampler, samples=args.samples,
                          steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                          progress=not args.no_progress,
                          refine_steps=args.refine_steps,
                          fit_map=not cfg.lifter_tail if args.fit_map is None
                          else args.fit_map, rendered_share=args.rendered_share,
                          device=device)  # fmt: skip
    recipe = {k: v for k, v in vars(args).items() if k not in ("no_progress", "out", "device")}
    recipe.update(width=cfg.lifter_width, blocks=cfg.lifter_blocks)  # the size it got
    # for the model card
    data = [{"cache": c, "persons": m.get("persons"), "source_meta": m.get("source_meta")}
            for c, m in zip(split_list(args.cache), metas, strict=True)]  # fmt: skip
    save_checkpoint(args.out, model, cfg, body_model_id=body.model_id, step=0,
                    extra={"stages": stages, "lifter": {"recipe": recipe, "scores": scores,
                                                        "data": data}})  # fmt: skip
    logger.info("wrote %s (%s)", args.out, cfg.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
