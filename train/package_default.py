"""Package a training checkpoint as a shippable model: contrastive head dropped, float16 storage.

    python -m train.package_default --checkpoint runs/x/last.pt \
        --out multiroi/assets/models/multiroi_default.pt

The result loads with :func:`multiroi.checkpoint.load_checkpoint` (weights back in float32) and
is what ``run_camera.py`` uses when no ``--checkpoint`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from multiroi.checkpoint import load_checkpoint, save_checkpoint
from multiroi.model import MultiRoINet

logger = logging.getLogger(__name__)


def package(checkpoint: str | Path, out: str | Path, *, half: bool = True) -> Path:
    """Copy the inference weights of ``checkpoint`` into a new checkpoint at ``out``."""
    net, meta = load_checkpoint(checkpoint)
    cfg = dataclasses.replace(meta.model_config, contrastive=False, pretrained=False)
    slim = MultiRoINet(cfg)
    state = {k: v for k, v in net.state_dict().items() if k in slim.state_dict()}
    missing = set(slim.state_dict()) - set(state)
    if missing:
        raise ValueError(f"{checkpoint}: weights missing for {sorted(missing)[:5]}")
    slim.load_state_dict(state)
    extra = {"source_checkpoint": Path(checkpoint).name, "source_step": meta.step}
    path = save_checkpoint(
        out, slim.eval(), cfg, body_model_id=meta.body_model_id, step=meta.step, extra=extra,
        half=half,
    )  # fmt: skip
    logger.info("wrote %s (%.1f MB, step %d)", path, path.stat().st_size / 1e6, meta.step)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--fp32", action="store_true", help="keep float32 storage")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    package(args.checkpoint, args.out, half=not args.fp32)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
