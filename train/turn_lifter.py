"""Train the turn lifter (multiroi.model.lifter.TurnLifter) into a keypoint-lifter network.

Everything else in the network is kept.

    python -m train.turn_lifter --cache CACHES --init runs/r/lifter.pt --out runs/t/turn.pt

The keypoint lifter reads the 2D joints in box heights from the crop's centre, so it cannot
tell along which ray the person is seen: a body seen 25 degrees left of the optical axis shows
the camera its side turned by 25 degrees, and the lifter answers with an average over rays.
The turn lifter reads the same 2D joints and the base box's CLIFF box information (where the
box lies in the image, in focal lengths) and learns root-relative 3D joints in camera axes,
whose torso then turns the body (``ModelConfig.lifter_turn``, ``--weight``).

Data as ``train.lifter``'s: pose-prior poses projected without rendering (with the box
information of where they were placed) plus an error vector of the 2D stage from the rendered
persons, and ``--rendered-share`` of each batch rendered persons (the network's 2D estimates
with their true 3D joints and box information). A tenth of the rendered persons is held out
and scores the turn (degrees between the torso's predicted and true orientation) against the
keypoint lifter's on the same persons.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from train.lifter_pairs import PairSampler

logger = logging.getLogger(__name__)


def torso_turn_deg(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Degrees between the orientations of two sets of joints f[N,24,3]: the angle of the
    rotation that best maps the predicted torso onto the true one (after centring)."""
    from multiroi.geometry.joint_ik import TORSO
    from multiroi.geometry.procrustes import similarity_transform

    _, rot, _ = similarity_transform(
        *(torch.as_tensor(np.asarray(j, np.float64)[:, list(TORSO)]) for j in (pred, truth)))
    rot = rot.numpy()
    cos = np.clip((np.trace(rot, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def mapped_2d(model, features: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The network's 2D joints f32[N,24,2] of cached lifter features f16[N,1464]."""
    out = []
    with torch.no_grad():
        for s in range(0, len(features), chunk):
            f = torch.as_tensor(np.asarray(features[s : s + chunk], np.float32))
            out.append(model.lifter.joints_2d(f).numpy())
    return np.concatenate(out).astype(np.float32)


def train_turn_lifter(
    model, rendered, sampler: PairSampler, *, samples: int, steps: int, batch: int, lr: float,
    seed: int, rendered_share: float, progress: bool = True, joints_2d: np.ndarray | None = None,
) -> dict:  # fmt: skip
    """Train ``model.lifter.turn`` (module doc); returns the held-out scores. ``joints_2d``
    f32[N,24,2]: the rendered persons' 2D estimates, if known (else the network's 2D stage
    reads them from the cached features)."""
    from tqdm import tqdm

    from train.lifter import _optimise

    if rendered.box_info is None or (rendered.features is None and joints_2d is None):
        raise ValueError("the turn lifter needs the rendered persons' features and box "
                         "information: make the caches again with train.feature_cache")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n = len(rendered.inputs)
    held = rng.permutation(n)[: max(n // 10, 1)]
    rest = np.setdiff1d(np.arange(n), held)
    mapped = mapped_2d(model, rendered.features) if joints_2d is None else joints_2d
    pool = rest[rendered.whole[rest]]
    if len(pool) == 0:
        raise ValueError("no rendered person wholly in its crop: cache more data")
    errors = torch.as_tensor(mapped[pool] - rendered.joints_2d[pool])
    real = [torch.as_tensor(a[rest]) for a in (mapped, rendered.joints_3d, rendered.box_info)]
    n_real = int(round(batch * rendered_share))
    t0 = time.time()
    parts = [sampler.with_box_info(rng, min(5000, samples - s))
             for s in tqdm(range(0, samples, 5000), desc="pose prior", unit="x5000",
                           disable=not progress)]  # fmt: skip
    uv, j3, info = (torch.as_tensor(np.concatenate([p[k] for p in parts])) for k in range(3))
    logger.info("turn lifter: %d pose-prior pairs in %.0f s; %d rendered persons (%d held out)",
                len(uv), time.time() - t0, n, len(held))  # fmt: skip
    turn = model.lifter.turn
    gen = torch.Generator().manual_seed(seed)

    def batch_loss() -> torch.Tensor:
        i = torch.randint(0, len(uv), (batch - n_real,), generator=gen)
        e = torch.randint(0, len(errors), (batch - n_real,), generator=gen)
        x, y, b = uv[i] + errors[e], j3[i], info[i]
        if n_real:
            r = torch.randint(0, len(real[0]), (n_real,), generator=gen)
            x, y, b = (torch.cat([u, v[r]]) for u, v in zip((x, y, b), real, strict=True))
        return (turn(x, b) - y).abs().mean()

    _optimise(turn, batch_loss, steps=steps, lr=lr, weight_decay=1e-4, desc="turn lifter",
              shown=lambda v: f"loss_mm={v * 1000:.0f}", progress=progress,
              pct_start=0.05)  # fmt: skip
    with torch.no_grad():
        x = torch.as_tensor(mapped[held])
        pred = turn(x, torch.as_tensor(rendered.box_info[held])).numpy()
        plain = model.lifter.lift(x).numpy()
    truth = rendered.joints_3d[held]
    scores = {
        "held_out_persons": int(len(held)),
        "turn_error_deg": float(torso_turn_deg(pred, truth).mean()),
        "lifter_turn_error_deg": float(torso_turn_deg(plain, truth).mean()),
    }
    logger.info("held-out rendered persons (%d): torso turn error %.1f degrees (the keypoint "
                "lifter's %.1f)", len(held), scores["turn_error_deg"],
                scores["lifter_turn_error_deg"])  # fmt: skip
    return scores


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.turn_lifter",
                                description=__doc__.split("\n")[0])  # fmt: skip
    p.add_argument("--cache", required=True,
                   help="blazepose_full feature cache(s) of --init's network, comma-separated")
    p.add_argument("--init", required=True,
                   help="network checkpoint with a keypoint lifter (train.lifter's output, the "
                        "one the caches were made for)")  # fmt: skip
    p.add_argument("--lifter-ik", type=float, default=None, metavar="W",
                   help="the lifted joints' weight in the pose, which the turn needs above 0 "
                        "(default: --init's)")  # fmt: skip
    p.add_argument("--out", required=True, help="network checkpoint to write (.pt)")
    p.add_argument("--weight", type=float, default=0.75,
                   help="ModelConfig.lifter_turn: how far the body is turned onto the turn "
                        "lifter's torso, 0-1 (default 0.75)")  # fmt: skip
    p.add_argument("--samples", type=int, default=300_000, help="pose-prior pairs")
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rendered-share", type=float, default=0.5,
                   help="share of each batch taken from the rendered persons (default 0.5)")
    p.add_argument("--body-model", default=None, help="body model file (default: the free model)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from multiroi.body import load_body_model
    from multiroi.checkpoint import CheckpointError, read_checkpoint_file, save_checkpoint
    from multiroi.model.config import ModelConfig
    from multiroi.model.network import MultiRoINet, set_lifter_ik
    from train.config import split_list
    from train.lifter import check_caches_fit
    from train.lifter_pairs import box_placement, scene_ranges
    from train.lifter_rendered import read_rendered
    from train.warm_start import earlier_stages, warm_start

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if not 0.0 < args.weight <= 1.0:
            raise ValueError(f"--weight must be in (0, 1], got {args.weight}")
        if not 0.0 <= args.rendered_share <= 1.0:
            raise ValueError(f"--rendered-share must be in [0, 1], got {args.rendered_share}")
        payload = read_checkpoint_file(args.init)
        src = ModelConfig.from_dict(payload["model_config"])
        ik = src.lifter_ik if args.lifter_ik is None else args.lifter_ik
        if not (src.lifter and ik > 0):
            raise ValueError(f"{args.init} ({src.describe()}) needs a keypoint lifter and its "
                             "joints in the pose: train it with train.lifter, give "
                             "--lifter-ik W")  # fmt: skip
        cfg = ModelConfig.from_dict(dict(payload["model_config"], lifter_ik=ik,
                                         lifter_turn=args.weight))  # fmt: skip
        model = MultiRoINet(cfg, allow_random_init=True)
        warm_start(payload, args.init, model)
        model.eval()
        caches = split_list(args.cache)
        rendered, metas = read_rendered(caches)
        if rendered.box_info is None:
            raise ValueError(f"{args.cache}: the caches keep no box information (made before "
                             "it was kept): make them again with train.feature_cache")  # fmt: skip
        check_caches_fit(model, caches, metas, args.init)
    except (ValueError, CheckpointError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    body = load_body_model(args.body_model)
    if not model.ik_joint_template.abs().sum() > 0:  # --init held none: the body model's
        set_lifter_ik(model, cfg.lifter_ik, body, replace_rest=True)
    offsets, extents = box_placement(rendered.joints_2d[rendered.whole])
    sampler = PairSampler(body, scene_ranges(metas), offsets, extents)
    scores = train_turn_lifter(model, rendered, sampler, samples=args.samples,
                               steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
                               rendered_share=args.rendered_share,
                               progress=not args.no_progress)  # fmt: skip
    recipe = {k: v for k, v in vars(args).items() if k not in ("no_progress", "out")}
    data = [{"cache": c, "persons": m.get("persons"), "source_meta": m.get("source_meta")}
            for c, m in zip(caches, metas, strict=True)]  # fmt: skip
    save_checkpoint(args.out, model, cfg, body_model_id=body.model_id, step=0,
                    extra={"stages": earlier_stages(payload, args.init),
                           "turn_lifter": {"recipe": recipe, "scores": scores, "data": data}})
    logger.info("wrote %s (%s)", args.out, cfg.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
