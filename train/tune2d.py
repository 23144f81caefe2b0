"""Fine-tune the lifter's own copy of BlazePose's last layers for 2D joints on rendered persons.

    python -m train.feature_cache --data runs/front/train --out runs/front/tap \\
        --num-rois 1 --draws 1 --min-box-px 48 --box-extent amodal --tap
    python -m train.tune2d --cache runs/front/tap,runs/close/tap --val runs/front/tap_val \\
        --init multiroi/assets/models/multiroi_default.pt --out runs/tune2d/tail.pt

BlazePose was trained on photos; on rendered persons its 2D landmarks are the lifter's largest
error (docs/experiments.md, runs K and L). Fine-tuning the whole backbone would change the
features the decoders read as well. Instead the network gets a second copy of the layers after
the trunk's 8x8 map, or its 16x16 one (``ModelConfig.lifter_tail`` and ``lifter_tap``,
``BlazePoseBackbone.add_lifter_tail``), read by the lifter only, and that copy is trained here:

1. The caches' ``tap.npy`` (the base RoI's map at the layer ``feature_cache --tap`` named; the
   tail starts there; every cache must hold the same layer's) and
   labels: each person's 24 joints in 2D, box heights from the crop centre (cut-off ones too).
2. The tail -> landmarks -> the ``--init`` lifter's landmark map -> 24 joints; L1 of the 2D
   distance to the true joints (mean over joints); AdamW, one-cycle schedule.
3. Scored before and after on the ``--val`` caches (persons kept out): median 2D error in box
   heights, of the persons wholly in their crops and of all.
4. Written atomically to ``--out``: ``--init``'s network with ``lifter_tail`` on and the tuned
   copy (a tail moved to another layer keeps ``--init``'s tuned layers, :func:`fill_tail`).
   Then ``train.feature_cache --init OUT`` (the caches get the tail's features as slot R)
   and ``train.lifter --init OUT`` refit the landmark map, refiner and lifter on images the
   tail never saw.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

import numpy as np
import torch

from multiroi.model.blazepose import LIFTER_TAP
from multiroi.model.lifter import in_crop
from train.runtime import add_device_argument

logger = logging.getLogger(__name__)
TRAIN_SCORE_PERSONS = 5000  # the training persons scored after tuning (evenly spaced)


class MappedTaps:
    """The kept persons' maps f16[N,C,H,W] left in their memory-mapped ``tap.npy`` files and
    read batch by batch: ``len()``, ``shape`` and indexing by an integer array or tensor give
    what a tensor of all of them would (rows in cache order; indices: a 1-D integer array or
    tensor). For sets larger than the machine's memory; the operating system caches what
    fits."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]]):
        self.parts = parts  # (memory-mapped maps, kept rows of that file)
        self.starts = np.cumsum([0] + [len(rows) for _, rows in parts])
        first = parts[0][0]
        self.shape = (int(self.starts[-1]), *first.shape[1:])
        self.dtype = first.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        return torch.from_numpy(self.read(index))

    def read(self, index, out: np.ndarray | None = None) -> np.ndarray:
        """The maps of persons ``index`` (a 1-D integer array or tensor), into ``out`` where
        given (an array of their shape and dtype, e.g. a slice of a larger one)."""
        index = np.asarray(index)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise TypeError(f"index the maps with a 1-D integer array, not {index.dtype} "
                            f"of shape {index.shape}")  # fmt: skip
        index = index.astype(np.int64)
        if len(index) and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"persons {index.min()}..{index.max()} of {len(self)}")
        index = index % max(len(self), 1)
        if out is None:
            out = np.empty((len(index), *self.shape[1:]), self.dtype)
        part = np.searchsorted(self.starts, index, side="right") - 1
        for k in np.unique(part):
            at = np.flatnonzero(part == k)
            maps, rows = self.parts[k]
            want = rows[index[at] - self.starts[k]]
            order = np.argsort(want, kind="stable")  # the file read front to back
            out[at[order]] = maps[want[order]]
        return out


def memory_available() -> int | None:
    """Bytes of memory this process can still take: Linux's MemAvailable, or less where a
    control group (a container's memory limit, cgroup v2) allows less; None where unknown."""
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if limit != "max":
            room = max(int(limit) - used, 0)
            free = room if free is None else min(free, room)
    except (OSError, ValueError):
        pass
    return free


@dataclasses.dataclass
class TapSet:
    """taps f16[N,C,H,W] (the base RoI's map at ``tap``, one of LIFTER_TAPS; in memory, or a
    :class:`MappedTaps` read batch by batch); joints_2d
    f32[N,24,2] box heights from the crop centre; whole bool[N]: every joint inside the crop
    window."""

    taps: torch.Tensor | MappedTaps
    joints_2d: torch.Tensor
    whole: torch.Tensor
    metas: list[dict] = dataclasses.field(default_factory=list)
    tap: str = LIFTER_TAP


def read_taps(cache_dirs: list[str], chunk: int = 4096, maps: str = "auto") -> TapSet:
    """The persons of ``feature_cache --tap`` caches with labelled 2D joints (every draw).
    ``maps``: "memory" reads the maps straight into one preallocated array, chunk by chunk, so
    they need their size in memory once (197,000 persons at the 32x32 map: 12.9 GB), not
    twice; "mmap" leaves them in their files (:class:`MappedTaps`); "auto" reads them into
    memory when they take at most half of the memory available, else leaves them mapped."""
    if maps not in ("auto", "memory", "mmap"):
        raise ValueError(f"maps must be auto, memory or mmap, not {maps!r}")
    from train.feature_cache import FeatureDataset
    from train.lifter_rendered import base_roi_joints

    parts, j2, metas, names = [], [], [], {}  # parts: (map file, kept rows)
    for root in cache_dirs:
        cache = FeatureDataset(root)
        metas.append(cache.meta)
        if not cache.meta.get("tap"):
            raise ValueError(f"{root} has no tap.npy: make it with python -m "
                             "train.feature_cache --tap")  # fmt: skip
        tap = cache.meta["tap"]  # caches made before the taps had names hold LIFTER_TAP's
        names[root] = LIFTER_TAP if tap is True else str(tap)
        if len(set(names.values())) > 1:  # before reading gigabytes of maps that cannot mix
            raise ValueError(f"the caches hold maps of different layers ({names}): make them "
                             "all with the same train.feature_cache --tap")  # fmt: skip
        for d in range(cache.draws):
            uv, keep = base_roi_joints(cache.labels[d])
            parts.append((np.load(cache.root / f"draw_{d}" / "tap.npy", mmap_mode="r"),
                          np.flatnonzero(keep)))  # fmt: skip
            j2.append(torch.from_numpy(uv[keep]))
    total = sum(len(rows) for _, rows in parts)
    if total == 0:
        raise ValueError(f"no labelled persons in {cache_dirs}")
    joints = torch.cat(j2)
    tap_name = next(iter(names.values()))
    mapped = MappedTaps(parts)  # every cache holds the same layer's maps (checked above)
    size = mapped.dtype.itemsize * int(np.prod(mapped.shape))
    free = memory_available()
    if maps == "mmap" or (maps == "auto" and free is not None and size > free // 2):
        logger.info("2D tail: %d persons' maps (%.1f GB) read from their files batch by batch "
                    "(memory available: %s)", total, size / 1e9,
                    f"{free / 1e9:.1f} GB" if free is not None else "unknown")  # fmt: skip
        return TapSet(mapped, joints, in_crop(joints).all(1), metas, tap_name)
    taps = np.empty(mapped.shape, mapped.dtype)
    for i in range(0, total, chunk):  # chunk by chunk, straight into the array
        mapped.read(np.arange(i, min(i + chunk, total)), out=taps[i : i + chunk])
    return TapSet(torch.from_numpy(taps), joints, in_crop(joints).all(1), metas, tap_name)


def joints_2d(model, taps: torch.Tensor) -> torch.Tensor:
    """The lifter's mapped 2D joints f32[N,24,2] from maps where its tail starts (no
    refiner)."""
    return model.lifter.mapped_2d(model.backbone.lifter_features(taps.float()))


def score(model, data: TapSet, chunk: int = 512, limit: int | None = None) -> dict:
    """Median 2D error (box heights) of the mapped joints: wholly in the crop, all (the maps
    are moved to the model's device chunk by chunk). ``limit``: at most that many persons,
    evenly spaced through the set (118,534 training persons took 16 minutes to score on 2
    CPU cores)."""
    device = next(model.parameters()).device
    n = len(data.taps)
    pick = torch.linspace(0, n - 1, limit).long() if limit and n > limit else torch.arange(n)
    with torch.no_grad():
        pred = torch.cat([joints_2d(model, data.taps[pick[i : i + chunk]].to(device)).cpu()
                          for i in range(0, len(pick), chunk)])  # fmt: skip
    err = (pred - data.joints_2d[pick]).norm(dim=-1)
    return {"persons": len(err), "error_2d_whole_box": float(err[data.whole[pick]].median()),
            "error_2d_all_box": float(err.median())}  # fmt: skip


def batches(data: TapSet, steps: int, batch: int, gen: torch.Generator, ahead: int = 2):
    """``steps`` batches of ``batch`` persons drawn at random (with ``gen``): (maps, 2D joints).
    The maps of the next ``ahead`` batches are read in a second thread while the current one
    trains (from memory-mapped files one batch of 64 takes about 0.5 s of a 1.3 s step)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    picks = [torch.randint(0, len(data.taps), (batch,), generator=gen) for _ in range(steps)]
    with ThreadPoolExecutor(1, thread_name_prefix="tune2d-read") as pool:
        coming = deque(pool.submit(data.taps.__getitem__, i) for i in picks[:ahead])
        for step, i in enumerate(picks):
            maps = coming.popleft().result()
            if step + ahead < steps:
                coming.append(pool.submit(data.taps.__getitem__, picks[step + ahead]))
            yield maps, data.joints_2d[i]


def tune(model, train: TapSet, val: TapSet | None, *, steps: int, batch: int, lr: float,
         seed: int, progress: bool = True) -> dict:  # fmt: skip
    """Train ``model.backbone.lifter_tail`` (everything else frozen) on the device its
    parameters are on (the maps stay in host memory; each batch is moved there); returns the
    scores."""
    from tqdm import tqdm

    tail = model.backbone.lifter_tail
    device = next(model.parameters()).device
    for p in model.parameters():
        p.requires_grad_(False)
    for p in tail.parameters():
        p.requires_grad_(True)
    scores = {"val_before": score(model, val) if val is not None else None}
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(tail.parameters(), lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    model.eval()  # no dropout or batch statistics anywhere; only the tail learns
    bar = tqdm(batches(train, steps, batch, gen), total=steps, desc="2D tail", unit="step",
               disable=not progress)  # fmt: skip
    for taps, truth in bar:
        taps, truth = taps.to(device), truth.to(device)
        loss = (joints_2d(model, taps) - truth).norm(dim=-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix_str(f"err_box={loss.item():.4f}", refresh=False)
    for p in tail.parameters():
        p.requires_grad_(False)
    scores["train_after"] = score(model, train, limit=TRAIN_SCORE_PERSONS)
    scores["val_after"] = score(model, val) if val is not None else None
    return scores


def fill_tail(model, state: dict) -> list[str]:
    """After a warm start: the tail's layers that ``state`` (the --init checkpoint's weights)
    holds no tuned copy of start from the shared (MediaPipe's) layers. A tail moved to an
    earlier tap so starts as the old one (its tuned layers kept, the new ones as the trunk's
    that fed it). Returns the names of the layers filled."""
    tail, graph = model.backbone.lifter_tail, model.backbone.graph
    filled = [n for n in tail.convs if f"backbone.lifter_tail.convs.{n}.weight" not in state]
    with torch.no_grad():
        for name in filled:
            tail.convs[name].load_state_dict(graph.convs[name].state_dict())
    if filled:
        logger.info("2D tail: %d of its %d layers start from the shared ones", len(filled),
                    len(tail.convs))  # fmt: skip
    return filled


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.tune2d", description=__doc__.split("\n")[0])
    p.add_argument("--cache", required=True, help="feature caches with --tap, comma-separated")
    p.add_argument("--val", default=None, help="held-out caches with --tap, comma-separated")
    p.add_argument("--init", required=True, help="network checkpoint with the keypoint lifter")
    p.add_argument("--out", required=True, help="network checkpoint to write (.pt)")
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--maps", choices=("auto", "memory", "mmap"), default="auto",
                   help="where the maps (training and --val) are kept: memory, their "
                   "memory-mapped files (read batch by batch; for sets larger than the "
                   "memory) or auto (memory when they take at most half of what is "
                   "available)")  # fmt: skip
    add_device_argument(p)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from multiroi.checkpoint import CheckpointError, read_checkpoint_file, save_checkpoint
    from multiroi.model.config import ModelConfig
    from multiroi.model.network import MultiRoINet
    from train.config import split_list
    from train.runtime import pick_device
    from train.warm_start import earlier_stages, warm_start

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        device = pick_device(args.device)
        payload = read_checkpoint_file(args.init)
        src = ModelConfig.from_dict(payload["model_config"])
        if not src.lifter:
            raise ValueError(f"{args.init} has no keypoint lifter ({src.describe()}): give a "
                             "checkpoint of python -m train.lifter")  # fmt: skip
        train = read_taps(split_list(args.cache), maps=args.maps)
        val = read_taps(split_list(args.val), maps=args.maps) if args.val else None
        if val is not None and val.tap != train.tap:
            raise ValueError(f"--val caches hold maps at {val.tap}, --cache ones at "
                             f"{train.tap}: make them with the same feature_cache --tap")
        cfg = dataclasses.replace(src, lifter_tail=True, lifter_tap=train.tap)
        model = MultiRoINet(cfg, allow_random_init=True)
        warm_start(payload, args.init, model)
        fill_tail(model, payload["state_dict"])  # all of it when --init has no tail
    except (ValueError, CheckpointError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2
    logger.info("2D tail: %d rendered persons to train on, %s held out, on %s",
                len(train.taps), len(val.taps) if val is not None else "none", device)  # fmt: skip
    model.to(device)
    scores = tune(model, train, val, steps=args.steps, batch=args.batch, lr=args.lr,
                  seed=args.seed, progress=not args.no_progress)  # fmt: skip
    for name, s in scores.items():
        if s:
            logger.info("%s: %d persons, median 2D error %.4f box heights wholly in the crop, "
                        "%.4f all", name, s["persons"], s["error_2d_whole_box"],
                        s["error_2d_all_box"])  # fmt: skip
    model.cpu()
    skip = ("no_progress", "out", "device", "maps")  # how, not what, it trained
    recipe = {k: v for k, v in vars(args).items() if k not in skip}
    data = [{"cache": c, "persons": m.get("persons"), "source_meta": m.get("source_meta")}
            for c, m in zip(split_list(args.cache), train.metas, strict=True)]  # fmt: skip
    save_checkpoint(args.out, model, cfg, body_model_id=payload.get("body_model_id", ""),
                    step=0, extra={"stages": earlier_stages(payload, args.init),
                                   "tune2d": {"recipe": recipe, "scores": scores,
                                              "data": data}})  # fmt: skip
    logger.info("wrote %s (%s)", args.out, cfg.describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
