"""Backbone features of a training set, computed once, to train what follows a frozen backbone.

    python -m train.feature_cache --data runs/front/train --out runs/front/feat_bp5 \\
        --backbone blazepose_full --num-rois 5 --draws 4 --min-box-px 48
    python -m train --data.train runs/front/feat_bp5 --data.val runs/front/val \\
        --model.backbone blazepose_full --model.num_rois 5 --optim.freeze backbone ...

With ``--optim.freeze backbone`` the backbone's output for a crop never changes, yet the trainer
runs it on every crop of every step: on a CPU that is most of a step. The cache stores, for
``--draws`` augmentation draws of every person (draw d of person i is the draw the trainer
itself makes in epoch d: key = d * N + i, same seed), the features f16[N,R,D] and every label
of the batch. ``python -m train`` reads a cache folder like image data; epoch e uses draw
e mod draws. Validation still runs the whole network on images.

The cache records the backbone's name, RoI count and a fingerprint of its weights (sha256 of
the tensors); the trainer refuses a cache made with other weights than its own backbone, or
without ``--optim.freeze backbone``. Written to ``OUT.part`` and renamed when complete: an
interrupted run leaves no cache that looks finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from multiroi.model.blazepose import LIFTER_TAP, LIFTER_TAPS
from train import augment as aug
from train.datasets import Batch, collate, open_dataset
from train.runtime import add_device_argument

logger = logging.getLogger(__name__)

META = "meta.json"
KIND = "multiroi-feature-cache"
LABEL_FIELDS = [f.name for f in fields(Batch) if f.name not in ("crops", "key")]


def backbone_fingerprint(backbone: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of the backbone's parameters and buffers in float32."""
    h = hashlib.sha256()
    for name, t in sorted(backbone.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def is_feature_cache(path: str | Path) -> bool:
    meta = Path(path) / META
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("kind") == KIND
    except (OSError, ValueError):
        return False


class FeatureDataset(torch.utils.data.Dataset):
    """A cache folder as a data set: len = N persons; item ``key`` is person key mod N under
    draw (key div N) mod draws, a dict like :class:`train.datasets.PersonDataset`'s with the
    features f32[R,D] under "crops"."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not is_feature_cache(self.root):
            raise ValueError(f"{root} is not a feature cache (python -m train.feature_cache)")
        self.meta = json.loads((self.root / META).read_text())
        self.n = int(self.meta["persons"])
        self.draws = int(self.meta["draws"])
        self._features: list[np.ndarray] | None = None  # opened lazily (once per worker)
        self.labels = []
        for d in range(self.draws):
            with np.load(self.root / f"draw_{d}" / "labels.npz", allow_pickle=False) as z:
                self.labels.append({k: z[k] for k in z.files})

    @property
    def num_rois(self) -> int:
        return int(self.meta["num_rois"])

    def __len__(self) -> int:
        return self.n

    def draw_features(self, d: int) -> np.ndarray:
        """The features f16[N,R,D] of draw ``d`` (memory-mapped, opened once per process)."""
        if self._features is None:
            self._features = [
                np.load(self.root / f"draw_{k}" / "features.npy", mmap_mode="r")
                for k in range(self.draws)
            ]
        return self._features[d]

    def __getitem__(self, key: int) -> dict[str, np.ndarray]:
        d, i = (int(key) // self.n) % self.draws, int(key) % self.n
        item = {k: v[i] for k, v in self.labels[d].items()}
        item["crops"] = np.asarray(self.draw_features(d)[i], dtype=np.float32)
        item["key"] = np.int64(key)
        return item


def check_cache_for_model(cache: FeatureDataset, model, freeze: list[str]) -> None:
    """Raise ValueError unless the cache was made by this model's (frozen) backbone."""
    meta = cache.meta
    if "backbone" not in freeze:
        raise ValueError("training from a feature cache needs a frozen backbone: add "
                         "--optim.freeze backbone")  # fmt: skip
    if meta["backbone"] != model.cfg.backbone or cache.num_rois != model.cfg.num_rois:
        raise ValueError(
            f"feature cache {cache.root} holds {meta['backbone']} features of "
            f"{cache.num_rois} RoIs; the model is {model.cfg.backbone} with "
            f"{model.cfg.num_rois} RoIs: make a cache for this model"
        )
    boxes = meta.get("box_extent", "visible")  # caches before box_extent: visible boxes
    if boxes != model.cfg.box_extent:
        raise ValueError(
            f"feature cache {cache.root} has {boxes} boxes; the model is trained on "
            f"{model.cfg.box_extent} boxes (--model.box_extent): make the cache with "
            f"--box-extent {model.cfg.box_extent}"
        )
    if bool(meta.get("lifter_slot")) != bool(model.cfg.lifter_tail):
        has = "has" if meta.get("lifter_slot") else "has no"
        raise ValueError(
            f"feature cache {cache.root} {has} the lifter tail's features; the model "
            f"{'has' if model.cfg.lifter_tail else 'has no'} lifter tail: make the cache "
            "with --init the training's --run.init"
        )
    mine = backbone_fingerprint(model.backbone)
    if meta["fingerprint"] != mine:
        raise ValueError(
            f"feature cache {cache.root} was made with other backbone weights (fingerprint "
            f"{meta['fingerprint']}, this model {mine}, from {meta['init']}); make the cache "
            "with the same --init as the training's --run.init"
        )


def build_backbone_for_cache(name: str, init: str) -> torch.nn.Module:
    """The backbone as ``python -m train --run.init INIT`` builds it (pretrained or a
    checkpoint's)."""
    from multiroi.model.backbone import build_backbone

    if init in ("imagenet", "pretrained"):
        return build_backbone(name, pretrained=True)
    if init == "scratch":
        raise ValueError("a cache of a random backbone is of no use; use --init imagenet or a "
                         "checkpoint")  # fmt: skip
    from multiroi.checkpoint import load_checkpoint

    net, _ = load_checkpoint(init)
    if net.cfg.backbone != name:
        raise ValueError(f"{init} has backbone {net.cfg.backbone}, not {name}")
    return net.backbone


def write_cache(
    data: str, out: str | Path, *, backbone: str, num_rois: int, draws: int, init: str,
    seed: int = 0, min_box_px: float = 16.0, batch_size: int = 32, num_workers: int = 1,
    augment: aug.AugmentConfig | None = None, image_root: str | None = None,
    box_extent: str = "visible", tap: str | None = None, device: str = "cpu",
) -> Path:  # fmt: skip
    """Compute and write the cache (see the module doc); returns its folder. ``tap``: also
    write BlazePose's map of the base RoI at that tensor (one of ``LIFTER_TAPS``), ``tap.npy``
    f16[N,C,H,W] (what train.tune2d trains the lifter's tail on). A backbone with a lifter
    tail (``ModelConfig.lifter_tail``) adds its features of the base RoI as an extra slot R.
    ``device``: where the backbone runs ('cpu', 'cuda' or 'auto'; mixed precision there as the
    training's, ``train.runtime.amp_mode``)."""
    from tqdm import tqdm

    from train.runtime import amp_mode, pick_device

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another --out")
    dev = pick_device(device)
    augment = augment or aug.AugmentConfig()
    ds = open_dataset(data, num_rois, augment, seed, image_root, min_box_px, box_extent)
    n = len(ds)
    bb = build_backbone_for_cache(backbone, init).eval().to(dev)
    lifter_slot = getattr(bb, "lifter_tail", None) is not None
    if tap and not hasattr(bb, "forward_with_taps"):
        raise ValueError(f"--tap needs the blazepose_full backbone, not {backbone}")
    if tap and tap not in LIFTER_TAPS:
        raise ValueError(f"--tap {tap!r} is not one of {sorted(LIFTER_TAPS)}")
    names = ([bb.lifter_tap] if lifter_slot else []) + ([tap] if tap else [])
    names = list(dict.fromkeys(names))  # the maps the batches need, each once
    amp, dtype = amp_mode(True, dev)
    fingerprint = backbone_fingerprint(bb)
    part = out.with_name(out.name + ".part")
    if part.exists():
        shutil.rmtree(part)
    part.mkdir(parents=True)
    bar = tqdm(total=n * draws, unit="person", desc="features")
    for d in range(draws):
        folder = part / f"draw_{d}"
        folder.mkdir()
        feats = taps = None
        labels: dict[str, list[np.ndarray]] = {k: [] for k in LABEL_FIELDS}
        keys = list(range(d * n, (d + 1) * n))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(ds, keys), batch_size=batch_size, collate_fn=collate,
            num_workers=num_workers,
        )  # fmt: skip
        row = 0
        for batch in loader:
            p = len(batch)
            crops = batch.crops.flatten(0, 1).to(dev, non_blocking=True)
            with torch.no_grad(), torch.autocast(dev.type, dtype=dtype, enabled=amp):
                if names:
                    f, maps = bb.forward_with_taps(crops, tuple(names))
                    base = {k: m.float().reshape(p, num_rois, *m.shape[1:])[:, 0]
                            for k, m in zip(names, maps, strict=True)}  # fmt: skip
                    f = f.float().reshape(p, num_rois, -1)
                    if lifter_slot:
                        slot = bb.lifter_features(base[bb.lifter_tap]).float()
                        f = torch.cat([f, slot[:, None]], dim=1)
                    t = base[tap] if tap else None
                else:
                    f = bb(crops).float().reshape(p, num_rois, -1)
            f, t = f.cpu(), (t.cpu() if tap else None)
            if feats is None:
                shape = (n, int(f.shape[1]), int(f.shape[-1]))
                feats = np.lib.format.open_memmap(
                    folder / "features.npy", mode="w+", dtype=np.float16, shape=shape
                )
            if tap and taps is None:
                taps = np.lib.format.open_memmap(
                    folder / "tap.npy", mode="w+", dtype=np.float16, shape=(n, *t.shape[1:])
                )
            feats[row : row + p] = f.numpy().astype(np.float16)
            if tap:
                taps[row : row + p] = t.numpy().astype(np.float16)
            for k in LABEL_FIELDS:
                labels[k].append(getattr(batch, k).numpy())
            row += p
            bar.update(p)
        feats.flush()
        del feats
        if taps is not None:
            taps.flush()
            del taps
        np.savez(folder / "labels.npz", **{k: np.concatenate(v) for k, v in labels.items()})
    bar.close()
    meta = {
        "kind": KIND, "backbone": backbone, "num_rois": num_rois, "persons": n, "draws": draws,
        "fingerprint": fingerprint, "init": init, "source": str(data), "seed": seed,
        "min_box_px": min_box_px, "box_extent": box_extent, "augment": dataclasses.asdict(augment),
        "feature_dim": int(bb.num_features), "lifter_slot": lifter_slot, "tap": tap,
    }  # fmt: skip
    source_meta = Path(data) / "meta.json"
    if source_meta.is_file():
        meta["source_meta"] = json.loads(source_meta.read_text())
    (part / META).write_text(json.dumps(meta, indent=1) + "\n")
    part.rename(out)
    logger.info("wrote %d persons x %d draws of %s features to %s", n, draws, backbone, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.feature_cache", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--data", required=True, help="synthetic folder or SPIN/CLIFF .npz")
    parser.add_argument("--out", required=True, help="new folder for the cache")
    parser.add_argument("--backbone", default="blazepose_full")
    parser.add_argument("--num-rois", type=int, default=5)
    parser.add_argument("--draws", type=int, default=2, help="augmentation draws per person")
    parser.add_argument("--init", default="imagenet",
                        help="the backbone's weights, as the training's --run.init")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="the training's --run.seed")
    parser.add_argument("--min-box-px", type=float, default=16.0)
    parser.add_argument("--image-root", default=None)
    parser.add_argument(
        "--box-extent",
        default="visible",
        choices=["visible", "amodal"],
        help="base box around the visible pixels or the whole body (amodal)",
    )
    parser.add_argument("--workers", type=int, default=1)
    add_device_argument(parser)
    parser.add_argument("--no-augment", action="store_true",
                        help="the crops as they are (held-out sets), no augmentation draws")
    parser.add_argument("--tap", nargs="?", const=LIFTER_TAP, default=None,
                        choices=sorted(LIFTER_TAPS), metavar="TENSOR",
                        help="also write the base RoI's BlazePose map at TENSOR for "
                             f"train.tune2d ({', '.join(sorted(LIFTER_TAPS))}; default "
                             f"{LIFTER_TAP})")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        write_cache(args.data, args.out, backbone=args.backbone, num_rois=args.num_rois,
                    draws=args.draws, init=args.init, seed=args.seed,
                    min_box_px=args.min_box_px, num_workers=args.workers,
                    image_root=args.image_root, box_extent=args.box_extent, tap=args.tap,
                    augment=aug.AugmentConfig(enabled=not args.no_augment),
                    device=args.device)  # fmt: skip
    except (ValueError, FileExistsError, OSError) as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
