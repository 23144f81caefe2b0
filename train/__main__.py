"""``python -m train``: train the Multi-RoI network (see docs/training.md).

Examples::

    python -m train --data.train data/synth --data.val data/synth_val --run.out_dir runs/r18
    python -m train --run.out_dir runs/r18 --resume          # continue exactly where it stopped
    torchrun --nproc_per_node 4 -m train --config runs/r18/config.json   # multi-GPU (DDP)
"""

from __future__ import annotations

import argparse
import logging
import sys

from train.config import add_config_args, config_from_args, load_config


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    p = argparse.ArgumentParser(prog="python -m train", description="Train the Multi-RoI network.")
    p.add_argument(
        "--config", default=None, help="base config (JSON/YAML), e.g. a run's config.json"
    )
    p.add_argument("--resume", action="store_true", help="continue from run.out_dir/last.pt")
    add_config_args(p)
    args = p.parse_args(argv)
    base = None
    if args.resume and not args.config:
        from pathlib import Path

        from train.config import TrainConfig

        out = getattr(args, "run.out_dir", None) or TrainConfig().run.out_dir
        saved = Path(out) / "config.json"
        base = load_config(saved) if saved.is_file() else None
    cfg = config_from_args(args, base)
    from multiroi.checkpoint import CheckpointError
    from train.trainer import train

    try:
        result = train(cfg, resume=args.resume)
    except (CheckpointError, ValueError) as exc:  # a checkpoint or a setting that cannot be used
        logging.getLogger("train").error("%s", exc)
        return 2
    logging.getLogger("train").info(
        "finished at step %d, checkpoint %s", result.step, result.checkpoint
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
