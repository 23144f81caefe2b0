"""The training loop: Adam, AMP on CUDA, gradient clipping, DDP (torchrun), exact resume.

``train(cfg)`` runs until ``cfg.run.steps``. Every ``ckpt_every`` steps rank 0 writes
``out_dir/ckpt_XXXXXXX.pt`` and ``out_dir/last.pt`` atomically, holding the weights, the model
config, the optimizer and AMP-scaler state, the step, the RNG states and the full TrainConfig;
``resume=True`` continues from ``last.pt`` exactly (data order and augmentation are functions of
(seed, step), dropout's RNG is restored). TensorBoard scalars and image grids go to
``out_dir/tb``; evaluation on ``data.val`` every ``eval_every`` steps.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from multiroi.body import load_body_model, load_mean_params
from multiroi.checkpoint import (
    is_multiroi_payload,
    load_checkpoint,
    read_checkpoint_file,
    save_checkpoint,
)
from multiroi.cliff_import import import_cliff_backbone
from multiroi.model import MultiRoINet
from multiroi.model.blazepose import BLAZEPOSE_BACKBONE
from multiroi.model.network import set_lifter_ik
from train.config import FREEZABLE, TrainConfig, freeze_names, train_sources
from train.datasets import KeyedConcat, ResumableSampler, collate, open_dataset
from train.feature_cache import FeatureDataset, check_cache_for_model, is_feature_cache
from train.losses_step import compute_losses
from train.model_card import data_metas
from train.runtime import amp_mode, pick_device, rng_state, set_rng_state, setup_distributed
from train.warm_start import earlier_stages, warm_start

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """Where training ended: step, last checkpoint path, last logged losses, eval history
    (list of (step, metrics dict))."""

    step: int
    checkpoint: Path | None
    last_logs: dict
    evals: list


def build_model(cfg: TrainConfig, stages: list | None = None) -> MultiRoINet:
    """The network with the initialisation ``cfg.run.init`` (logged). A warm start appends the
    source checkpoint's training stages to ``stages`` when given."""
    mcfg = dataclasses.replace(cfg.model, contrastive=cfg.model.contrastive and cfg.loss.con > 0)
    init = cfg.run.init
    if init == "imagenet":
        mcfg = dataclasses.replace(mcfg, pretrained=True)
        model = MultiRoINet(mcfg, load_mean_params(), allow_random_init=True)
        source = ("MediaPipe's BlazePose" if mcfg.backbone == BLAZEPOSE_BACKBONE
                  else "timm ImageNet")  # fmt: skip
        logger.info("init: %s weights requested for %s (a warning above means they could not "
                    "be loaded and the backbone is random)", source, mcfg.backbone)  # fmt: skip
    elif init == "scratch":
        model = MultiRoINet(dataclasses.replace(mcfg, pretrained=False), load_mean_params())
        logger.info("init: scratch (random backbone %s)", mcfg.backbone)
    else:
        model = MultiRoINet(dataclasses.replace(mcfg, pretrained=False), load_mean_params())
        payload = read_checkpoint_file(init)  # read once, whichever kind it is
        if is_multiroi_payload(payload):
            n = warm_start(payload, init, model, frozen=tuple(freeze_names(cfg.optim.freeze)))
            if stages is not None:
                stages += earlier_stages(payload, init)
            logger.info("init: weights of multiroi checkpoint %s (%d tensors)", init, n)
        else:
            n = import_cliff_backbone(init, model, payload=payload)
            logger.info("init: CLIFF backbone from %s (%d tensors)", init, n)
    model.cfg = dataclasses.replace(model.cfg, pretrained=False)
    return model


def _train_mode_off(module: torch.nn.Module, mode: bool = True) -> torch.nn.Module:
    return torch.nn.Module.train(module, False)


def freeze_parts(model: MultiRoINet, names: list[str]) -> int:
    """Keep the named parts of ``model`` as they are: no gradients, and in eval mode whatever
    ``model.train()`` says (BatchNorm statistics and dropout fixed). Returns the number of
    parameters frozen."""
    frozen = 0
    for name in names:
        part = getattr(model, name, None) if name in FREEZABLE else None
        if part is None:
            raise ValueError(f"optim.freeze: the network has no part {name!r}; parts: "
                             f"{', '.join(FREEZABLE)}")  # fmt: skip
        for p in part.parameters():
            p.requires_grad_(False)
            frozen += p.numel()
        part.train = _train_mode_off.__get__(part)  # this instance only
        part.eval()
    if names:
        logger.info("frozen: %s (%.1fM parameters)", ", ".join(names), frozen / 1e6)
    return frozen


def lr_at(step: int, optim_cfg, total_steps: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): warm-up, then constant or cosine."""
    base = optim_cfg.lr
    if optim_cfg.warmup_steps and step < optim_cfg.warmup_steps:
        return base * (step + 1) / optim_cfg.warmup_steps
    if optim_cfg.schedule == "constant":  # OptimConfig allows only constant and cosine
        return base
    span = max(total_steps - optim_cfg.warmup_steps, 1)
    t = min(max(step - optim_cfg.warmup_steps, 0) / span, 1.0)
    floor = base * optim_cfg.min_lr_ratio
    return floor + 0.5 * (base - floor) * (1.0 + math.cos(math.pi * t))


class Trainer:
    """Holds the model, data and optimiser of one run; ``run()`` trains to ``cfg.run.steps``."""

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        self.cfg = cfg
        self.out = Path(cfg.run.out_dir)
        probe = pick_device(cfg.run.device)
        self.dist = setup_distributed(probe)
        self.device = pick_device(cfg.run.device, self.dist.local_rank)
        torch.manual_seed(cfg.run.seed + self.dist.rank)
        self.body = load_body_model(cfg.data.body_model, device=self.device)
        self.stages: list[dict] = []  # the training behind a warm start, oldest first
        built = cfg
        if resume and (self.out / "last.pt").is_file():  # weights and stages come from last.pt:
            # the --run.init file is neither read again nor needed any more
            built = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, init="scratch"))
        self.model = build_model(built, self.stages).to(self.device)
        if self.model.cfg.lifter_ik > 0:  # the rest joints of this run's body model
            set_lifter_ik(self.model, self.model.cfg.lifter_ik, self.body, replace_rest=True)
        freeze_parts(self.model, freeze_names(cfg.optim.freeze))
        # the fused kernel: one pass over all parameters (half the optimiser time on a CPU)
        fused = self.device.type in ("cpu", "cuda")
        self.optim = torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad], lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay, fused=fused,
        )  # fmt: skip
        self.amp, self.amp_dtype = amp_mode(cfg.optim.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.device.type == "cuda")
        if self.amp and self.device.type == "cpu":  # oneDNN's bf16 convolutions want NHWC
            self.model.to(memory_format=torch.channels_last)
        logger.info("precision: %s", self.amp_dtype if self.amp else torch.float32)
        self.step = 0
        if resume:
            self._resume()
        self.ddp = self.model
        if self.dist.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.data = self._training_data()
        self.data_metas = data_metas(cfg.data.train)  # recorded now: paths may be relative
        self.val = None
        if cfg.data.val and self.dist.main:
            self.val = open_dataset(cfg.data.val, cfg.model.num_rois, None, 0, cfg.data.image_root,
                                    box_extent=cfg.model.box_extent)  # fmt: skip
        self.writer = None
        if self.dist.main:
            cfg.save(self.out / "config.json")
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step or None)

    def _training_data(self) -> torch.utils.data.Dataset:
        """``--data.train``: one source or several, comma-separated (all feature caches, or all
        image data), joined by :class:`train.datasets.KeyedConcat`."""
        cfg = self.cfg
        sources = train_sources(cfg.data.train)
        caches = [is_feature_cache(s) for s in sources]
        if any(caches) and not all(caches):
            raise ValueError(
                f"--data.train {cfg.data.train}: feature caches and image data cannot be "
                "mixed; make a cache of every source or use none"
            )
        parts: list[torch.utils.data.Dataset] = []
        for src, cache in zip(sources, caches, strict=True):
            if cache:  # backbone features computed once
                part = FeatureDataset(src)
                check_cache_for_model(part, self.model, freeze_names(cfg.optim.freeze))
                logger.info("training data: feature cache %s (%d persons x %d draws)",
                            src, part.n, part.draws)  # fmt: skip
            else:
                part = open_dataset(src, cfg.model.num_rois, cfg.augment, cfg.run.seed,
                                    cfg.data.image_root, cfg.data.min_box_px,
                                    cfg.model.box_extent)  # fmt: skip
            parts.append(part)
        return parts[0] if len(parts) == 1 else KeyedConcat(parts)

    def _resume(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint {path}; start without --resume")
        loaded, meta = load_checkpoint(path, map_location=self.device)
        self.model.load_state_dict(loaded.state_dict())
        self.optim.load_state_dict(meta.optimizer_state)
        extra = meta.extra or {}
        if "scaler" in extra:
            self.scaler.load_state_dict(extra["scaler"])
        if "rng" in extra:
            rng = extra["rng"][self.dist.rank] if self.dist.rank < len(extra["rng"]) else None
            if rng is not None:
                set_rng_state(rng)
        self.stages = list(extra.get("stages") or [])
        self.step = meta.step
        logger.info("resumed from %s at step %d", path, self.step)

    def loader(self):
        sampler = ResumableSampler(len(self.data), self.cfg.data.batch_size, self.cfg.run.seed,
                                   self.step, self.dist.rank, self.dist.world)  # fmt: skip
        return torch.utils.data.DataLoader(
            self.data, batch_size=self.cfg.data.batch_size, sampler=sampler, collate_fn=collate,
            num_workers=self.cfg.data.num_workers, persistent_workers=False,
            prefetch_factor=2 if self.cfg.data.num_workers else None,
            generator=torch.Generator().manual_seed(self.cfg.run.seed),  # not the global RNG
        )  # fmt: skip

    def train_step(self, batch) -> dict:
        self.ddp.train()
        batch = batch.to(self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            out = self.ddp(batch.crops, batch.box_info)
        step_out = compute_losses(out, batch, self.body, self.cfg.loss)
        self.optim.zero_grad(set_to_none=True)
        lr = lr_at(self.step, self.cfg.optim, self.cfg.run.steps)
        for group in self.optim.param_groups:
            group["lr"] = lr
        self.scaler.scale(step_out.total).backward()
        self.scaler.unscale_(self.optim)
        if self.cfg.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.cfg.optim.grad_clip
            )
            step_out.logs["grad_norm"] = float(norm)
        self.scaler.step(self.optim)
        self.scaler.update()
        step_out.logs["lr"] = lr
        self.last = (batch, out, step_out)
        return step_out.logs

    def run(self) -> TrainResult:
        from tqdm import tqdm

        cfg = self.cfg.run
        logs: dict = {}
        evals: list = []
        ckpt = None
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", desc="train",
                   disable=not (cfg.progress and self.dist.main))  # fmt: skip
        t0 = time.perf_counter()
        if self.val is not None and cfg.eval_every and self.step == 0:
            evals.append((0, self.evaluate()))  # the untrained model: the curve's first point
        for batch in self.loader():
            if self.step >= cfg.steps:
                break
            logs = self.train_step(batch)
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{logs['total']:.3f}")
            ckpt = self._periodic(logs, evals, t0) or ckpt
            if cfg.stop_after and self.step >= cfg.stop_after:
                break
        bar.close()
        if self.step >= cfg.steps and self.step % cfg.ckpt_every:  # same decision on all ranks
            ckpt = self.save()
        if self.writer:
            self.writer.close()
        if self.dist.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
        return TrainResult(self.step, ckpt, logs, evals)

    def _periodic(self, logs: dict, evals: list, t0: float) -> Path | None:
        cfg, s = self.cfg.run, self.step
        if self.writer and s % cfg.log_every == 0:
            for k, v in logs.items():
                self.writer.add_scalar(
                    f"train/{k}" if k in ("grad_norm", "lr") else f"loss/{k}", v, s
                )
            self.writer.add_scalar("train/steps_per_s", s / max(time.perf_counter() - t0, 1e-9), s)
        crops = self.last[0].crops.ndim == 5  # a feature cache has no crops to draw on
        if self.writer and crops and cfg.image_every and s % cfg.image_every == 0:
            from train.visualize import mesh_grid

            batch, out, step_out = self.last
            self.writer.add_image("train/meshes", mesh_grid(batch, step_out, self.body), s,
                                  dataformats="HWC")  # fmt: skip
        if self.val is not None and cfg.eval_every and s % cfg.eval_every == 0:
            evals.append((s, self.evaluate()))
        if s % cfg.ckpt_every == 0:
            return self.save()
        return None

    def evaluate(self) -> dict:
        from train.eval import evaluate

        metrics = evaluate(self.model, self.body, self.val, self.cfg.data.batch_size, self.device,
                           max_persons=self.cfg.data.val_max_persons)  # fmt: skip
        for k, v in metrics.items():
            self.writer.add_scalar(f"val/{k}", v, self.step)
        logger.info("step %d val: %s", self.step,
                    ", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))  # fmt: skip
        with open(self.out / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **metrics}) + "\n")
        return metrics

    def save(self) -> Path | None:
        """Checkpoint (rank 0 writes; every rank's RNG state is gathered first)."""
        states = [rng_state()]
        if self.dist.world > 1:
            import torch.distributed as dist

            states = [None] * self.dist.world
            dist.all_gather_object(states, rng_state())
        if not self.dist.main:
            return None
        extra = {"train_config": self.cfg.to_dict(), "rng": states,
                 "scaler": self.scaler.state_dict(), "stages": self.stages,
                 "train_data_meta": self.data_metas}  # fmt: skip
        path = self.out / f"ckpt_{self.step:07d}.pt"
        save_checkpoint(path, self.model, self.model.cfg, body_model_id=self.body.model_id,
                        step=self.step, optimizer=self.optim, extra=extra)  # fmt: skip
        save_checkpoint(self.out / "last.pt", self.model, self.model.cfg,
                        body_model_id=self.body.model_id, step=self.step, optimizer=self.optim,
                        extra=extra)  # fmt: skip
        old = sorted(self.out.glob("ckpt_*.pt"))[: -self.cfg.run.keep_last or None]
        for p in old if self.cfg.run.keep_last else []:
            p.unlink(missing_ok=True)
        return path


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train with ``cfg``; ``resume`` continues from ``cfg.run.out_dir/last.pt``."""
    return Trainer(cfg, resume).run()
