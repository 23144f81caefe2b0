"""Package a training checkpoint as a shippable model: contrastive head dropped, smaller storage.

    python -m train.package_default --checkpoint runs/x/last.pt \
        --out multiroi/assets/models/multiroi_default.pt --storage int8

Storage: fp16 (half the size), int8 (weight-only, per-output-channel scales: a quarter; a
ResNet-18 model is 15 MB instead of 59 MB) or int8-heads (only the linear layers outside the
backbone in int8, the rest fp16: what the BlazePose network stands without loss).
``--check DATA`` evaluates the packaged model against the source checkpoint on held-out data
and prints both. A model card (``OUT.md``: network, training recipe and data, the metrics of
``--check``, limitations, licence) is written beside the model (train/model_card.py).

The result loads with :func:`multiroi.checkpoint.load_checkpoint` (weights back in float32) and
is what ``run_camera.py`` uses when no ``--checkpoint`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from multiroi.checkpoint import STORAGE_NOTES, STORAGES, load_checkpoint, save_checkpoint
from multiroi.model import MultiRoINet

logger = logging.getLogger(__name__)


def package(checkpoint: str | Path, out: str | Path, *, storage: str = "fp16",
            lifter_ik: float | None = None, body_model: str | None = None) -> Path:  # fmt: skip
    """Copy the inference weights of ``checkpoint`` into a new checkpoint at ``out``.
    ``lifter_ik``: the weight of the lifter's joints in the pose (``ModelConfig.lifter_ik``;
    None: the checkpoint's); its rest joints come from ``body_model`` (default: the free
    model), which must be the one the network was trained for."""
    from multiroi.model.network import set_lifter_ik

    net, meta = load_checkpoint(checkpoint)
    cfg = dataclasses.replace(meta.model_config, contrastive=False, pretrained=False)
    weight = cfg.lifter_ik if lifter_ik is None else lifter_ik
    # the turn lifter turns by the lifted joints' rest joints: off with them
    slim = MultiRoINet(dataclasses.replace(cfg, lifter_ik=weight,
                                           lifter_turn=cfg.lifter_turn if weight else 0.0))
    rest = {"ik_joint_template", "ik_joint_dirs"}  # the body model's, set below when absent
    state = {k: v for k, v in net.state_dict().items() if k in slim.state_dict()}
    missing = set(slim.state_dict()) - set(state) - rest
    if missing:
        raise ValueError(f"{checkpoint}: weights missing for {sorted(missing)[:5]}")
    slim.load_state_dict(state, strict=False)
    if weight:
        from multiroi.body import load_body_model

        body = load_body_model(body_model)
        if body.model_id != meta.body_model_id:
            raise ValueError(f"--lifter-ik: {checkpoint} was trained for body model "
                             f"{meta.body_model_id}, not {body.model_id}: pass --body-model "
                             "with that model's file")  # fmt: skip
        set_lifter_ik(slim, weight, body, replace_rest=not rest <= set(state))
    cfg = slim.cfg
    source = Path(checkpoint).name
    if "storage" in (meta.extra or {}):  # a packaged model packaged again: the same weights
        source = meta.extra.get("source_checkpoint") or source
    extra = {"source_checkpoint": source, "source_step": meta.step, "storage": storage}
    train_cfg = (meta.extra or {}).get("train_config")
    if train_cfg:  # the recipe and the data description travel with the weights (model card)
        from train.model_card import data_metas

        extra["train_config"] = train_cfg
        extra["stages"] = (meta.extra or {}).get("stages") or []
        # recorded by the trainer; read again for checkpoints older than that
        metas = (meta.extra or {}).get("train_data_meta") or data_metas(
            train_cfg.get("data", {}).get("train")
        )
        if metas:
            extra["train_data_meta"] = metas[0] if len(metas) == 1 else metas
    elif any((meta.extra or {}).get(k) for k in ("lifter", "turn_lifter", "tune2d")):
        # straight from python -m train.lifter, train.turn_lifter or train.tune2d
        stages = (meta.extra or {}).get("stages") or []
        extra["stages"] = stages
        for key in ("lifter", "turn_lifter", "tune2d"):
            if meta.extra.get(key):
                extra[key] = meta.extra[key]
        # the decoders' data: that of the last stage that trained them
        data = [st["train_data_meta"] for st in stages if st.get("train_data_meta")]
        if data:
            extra["train_data_meta"] = data[-1]
    path = save_checkpoint(
        out, slim.eval(), cfg, body_model_id=meta.body_model_id, step=meta.step, extra=extra,
        storage=storage,
    )  # fmt: skip
    logger.info("wrote %s (%.1f MB, step %d)", path, path.stat().st_size / 1e6, meta.step)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.package_default",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--storage", choices=STORAGES, default="fp16",
                    help="; ".join(f"{k}: {v}" for k, v in STORAGE_NOTES.items())
                    + " (default fp16)")  # fmt: skip
    ap.add_argument("--lifter-ik", type=float, default=None, metavar="W",
                    help="weight of the lifter's joints in the pose, 0-1 (0: off; default: the "
                         "checkpoint's)")  # fmt: skip
    ap.add_argument("--body-model", default=None,
                    help="the body model the network was trained for (default: the free model)")
    ap.add_argument("--check", default=None, help="held-out data: evaluate source and package")
    ap.add_argument("--check-persons", type=int, default=300)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = package(args.checkpoint, args.out, storage=args.storage,
                      lifter_ik=args.lifter_ik, body_model=args.body_model)  # fmt: skip
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    packed, meta = load_checkpoint(out)  # as users will load it: checked and described
    metrics, persons = None, None
    if args.check:
        from multiroi.body import load_body_model
        from multiroi.geometry.fit2d import Fit2DConfig
        from train.datasets import open_dataset
        from train.eval import evaluate

        body = load_body_model(args.body_model)
        data = open_dataset(args.check, packed.cfg.num_rois, None, 0, None,
                            box_extent=packed.cfg.box_extent)  # fmt: skip
        persons = min(len(data), args.check_persons)
        for name, net in (("source", load_checkpoint(args.checkpoint)[0]), ("packaged", packed)):
            metrics = evaluate(net, body, data, 16, "cpu", max_persons=args.check_persons,
                               fit_2d=Fit2DConfig())  # as the live pipeline places them
            logger.info("%-9s %s", name, ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))
    from train.model_card import model_card

    card = out.with_suffix(".md")
    card.write_text(model_card(out, meta, metrics=metrics, eval_data=args.check,
                               eval_persons=persons,
                               fit_2d=packed.lifter is not None))  # fmt: skip
    logger.info("wrote %s", card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
