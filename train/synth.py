"""Synthetic training data: ``python -m train.synth --out DIR --num N --seed S``.

Writes ``DIR/meta.json`` and shards ``DIR/shard_00000/`` each holding ``images/000123.jpg`` (global
image index) and ``labels.npz`` (see :func:`write_shard`). Image ``i`` is drawn from the random
generator seeded with ``(seed, i)``, so the same seed gives the same data whatever the number of
workers or shards. Workers are processes, one shard at a time; a progress bar counts images.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import asdict, fields
from pathlib import Path

import cv2
import numpy as np

from train.scene import RANGE_FIELDS, Scene, SceneConfig, SceneRenderer

logger = logging.getLogger(__name__)

LABEL_KEYS = (
    "person_image", "pose", "betas", "transl", "joints3d", "joints2d", "box_xyxy", "box_amodal",
    "visible_px", "activity", "image_index", "image_name", "K", "image_wh",
)  # fmt: skip


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index`` for ``seed`` (independent of workers and shards)."""
    return np.random.default_rng([int(seed), int(index)])


def labels_of(scenes: list[Scene], indices: list[int]) -> dict[str, np.ndarray]:
    """Flatten scenes into the label arrays of one shard (persons indexed by person_image)."""
    people = [(k, p) for k, s in enumerate(scenes) for p in s.people]
    out = {
        "person_image": np.array([k for k, _ in people], np.int64),
        "pose": np.array([p.pose_aa.reshape(72) for _, p in people], np.float32).reshape(-1, 72),
        "betas": np.array([p.betas for _, p in people], np.float32).reshape(-1, 10),
        "transl": np.array([p.transl for _, p in people], np.float32).reshape(-1, 3),
        "joints3d": np.array([p.joints3d for _, p in people], np.float32).reshape(-1, 24, 3),
        "joints2d": np.array([p.joints2d for _, p in people], np.float32).reshape(-1, 24, 3),
        "box_xyxy": np.array([p.box_xyxy for _, p in people], np.float32).reshape(-1, 4),
        "box_amodal": np.array([p.box_amodal for _, p in people], np.float32).reshape(-1, 4),
        "visible_px": np.array([p.visible_px for _, p in people], np.int64),
        "activity": np.array([p.activity for _, p in people], dtype="U16"),
        "image_index": np.array(indices, np.int64),
        "image_name": np.array([f"images/{i:06d}.jpg" for i in indices]),
        "K": np.array([s.K for s in scenes], np.float32).reshape(-1, 3, 3),
        "image_wh": np.array([s.image_rgb.shape[1::-1] for s in scenes], np.int64).reshape(-1, 2),
    }
    return out


def write_shard(out_dir: Path, shard: int, indices: list[int], scenes: list[Scene]) -> Path:
    """Write one shard: JPEG images and ``labels.npz`` (written last, atomically)."""
    sdir = out_dir / f"shard_{shard:05d}"
    (sdir / "images").mkdir(parents=True, exist_ok=True)
    for i, s in zip(indices, scenes, strict=True):
        bgr = cv2.cvtColor(s.image_rgb, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(sdir / "images" / f"{i:06d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
    tmp = sdir / "labels.tmp.npz"
    np.savez(tmp, **labels_of(scenes, indices))
    os.replace(tmp, sdir / "labels.npz")
    return sdir


_WORKER: dict = {}


def _init_worker(body_path: str | None, cfg_dict: dict) -> None:
    import torch

    torch.set_num_threads(1)
    from multiroi.body import load_body_model

    _WORKER["renderer"] = SceneRenderer(load_body_model(body_path), SceneConfig(**cfg_dict))


def _render_shard(job: tuple[str, int, int, list[int]]) -> int:
    out_dir, seed, shard, indices = job
    renderer: SceneRenderer = _WORKER["renderer"]
    scenes = [renderer.render(scene_rng(seed, i)) for i in indices]
    write_shard(Path(out_dir), shard, indices, scenes)
    return len(indices)


def generate(
    out_dir: str | os.PathLike,
    num: int,
    seed: int = 0,
    cfg: SceneConfig | None = None,
    body_model_path: str | None = None,
    workers: int = 2,
    shard_size: int = 100,
    progress: bool = True,
) -> dict:
    """Render ``num`` images into shards under ``out_dir``; returns (and writes) the meta."""
    if num < 1 or shard_size < 1 or workers < 1:
        raise ValueError(f"num, shard_size and workers must be >= 1, got {num}, {shard_size}, "
                         f"{workers}")  # fmt: skip
    cfg = cfg or SceneConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), seed, k, list(range(s, min(s + shard_size, num))))
            for k, s in enumerate(range(0, num, shard_size))]  # fmt: skip
    t0 = time.perf_counter()
    args = (body_model_path, asdict(cfg))
    from tqdm import tqdm

    bar = tqdm(total=num, unit="img", desc="synth", disable=not progress)
    if workers == 1:
        _init_worker(*args)
        for job in jobs:
            bar.update(_render_shard(job))
    else:
        with mp.get_context("fork").Pool(workers, _init_worker, args) as pool:
            for n in pool.imap_unordered(_render_shard, jobs):
                bar.update(n)
    bar.close()
    seconds = time.perf_counter() - t0
    meta = {"num_images": num, "seed": seed, "num_shards": len(jobs), "shard_size": shard_size,
            "scene": asdict(cfg), "body_model": body_model_path or "default",
            "seconds": round(seconds, 2), "images_per_s": round(num / seconds, 2)}  # fmt: skip
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    logger.info("wrote %d images in %d shards to %s (%.1f images/s)", num, len(jobs), out,
                num / seconds)  # fmt: skip
    return meta


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--num", type=int, required=True, help="number of images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--shard-size", type=int, default=100)
    p.add_argument("--body-model", default=None, help="body-model .npz (default: the free model)")
    for f in fields(SceneConfig):
        name = "--" + f.name.replace("_", "-")
        if f.name in RANGE_FIELDS:
            p.add_argument(name, type=float, nargs=2, default=None, metavar=("LO", "HI"))
        elif f.name == "num_people":
            p.add_argument(name, type=int, nargs=2, default=None, metavar=("LO", "HI"))
        else:
            p.add_argument(name, type=type(f.default) if f.default is not None else str,
                           default=None)  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = _parser()
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in fields(SceneConfig)
                 if getattr(args, f.name) is not None}  # fmt: skip
    for k, v in overrides.items():
        if isinstance(v, list):
            overrides[k] = tuple(v)
    try:
        cfg = SceneConfig(**overrides)
    except ValueError as exc:
        parser.error(str(exc))
    generate(args.out, args.num, args.seed, cfg, args.body_model, args.workers,
             args.shard_size)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
