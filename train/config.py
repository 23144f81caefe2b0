"""Typed training configuration, overridable from the command line, saved beside checkpoints.

``TrainConfig`` nests ``model`` (multiroi ModelConfig), ``data``, ``augment``, ``loss``, ``optim``
and ``run``. Every leaf is a CLI flag ``--section.field VALUE`` (e.g. ``--optim.lr 5e-5``,
``--model.backbone mobilenetv3_large_100``); ``--config FILE.yaml`` loads a base first.
Ablation switches (the paper's): ``--model.fusion none`` (no RAF), ``--loss.cc 0`` (no camera
consistency), ``--loss.con 0`` (no contrastive loss; the head is then not built), and
``--model.num_rois R``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiroi.losses import LossWeights
from multiroi.model.config import ModelConfig
from train.augment import AugmentConfig


@dataclass
class DataConfig:
    """train/val: a synthetic folder or a SPIN/CLIFF .npz (train: also a feature cache, or
    several sources of one kind, comma-separated, joined into one data set); image_root for
    .npz (default: its folder); body_model: .npz path (None: the default free model);
    batch_size: persons per rank and step; num_workers: DataLoader processes; min_box_px:
    synthetic training persons whose visible box is shorter are skipped (validation keeps
    everyone from 16 px)."""

    train: str = "data/synth_train"
    val: str | None = None
    image_root: str | None = None
    body_model: str | None = None
    batch_size: int = 16
    num_workers: int = 2
    val_max_persons: int = 256
    min_box_px: float = 16.0


FREEZABLE = ("backbone", "fusion", "camera_decoder", "mesh_decoder", "lifter")


def split_list(spec: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c'] (a comma-separated flag value)."""
    return [x.strip() for x in str(spec).split(",") if x.strip()]


def train_sources(spec: str) -> list[str]:
    """``--data.train A,B``: the training sources, in order."""
    out = split_list(spec)
    if not out:
        raise ValueError("--data.train is empty; give a synthetic folder, an .npz or a cache")
    return out


def freeze_names(spec: str) -> list[str]:
    """'backbone, fusion' -> ['backbone', 'fusion']."""
    return split_list(spec)


@dataclass
class OptimConfig:
    """Adam (method.md 4); grad_clip: max global grad norm (0: off); amp: mixed precision
    (fp16 on CUDA, bf16 on CPUs with AMX or AVX512-BF16). schedule: 'constant' (the paper's) or
    'cosine' (decay to min_lr_ratio * lr at run.steps, for short fixed-budget runs);
    warmup_steps: linear ramp from 0 (either schedule). freeze: comma-separated parts of the
    network kept as they are (weights and BatchNorm statistics), e.g. 'backbone' to train the
    fusion and decoders on a backbone from ``--run.init`` (no backward pass through it)."""

    lr: float = 1e-4
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.05

    freeze: str = ""

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"optim.schedule must be 'constant' or 'cosine', got "
                             f"{self.schedule!r}")  # fmt: skip
        bad = sorted(set(freeze_names(self.freeze)) - set(FREEZABLE))
        if bad:
            raise ValueError(f"optim.freeze: unknown part(s) {bad}; use a comma-separated list "
                             f"of {', '.join(FREEZABLE)}")  # fmt: skip

    weight_decay: float = 0.0
    grad_clip: float = 1.0
    amp: bool = True


@dataclass
class RunConfig:
    """out_dir: checkpoints, config.json, TensorBoard logs; steps: total optimiser steps;
    init: 'imagenet' (the backbone's pretrained weights if they can be loaded, else scratch:
    timm's ImageNet weights, or MediaPipe's for blazepose_full), 'scratch', a multiroi
    checkpoint (its weights where names and shapes match: a warm start, e.g. 1 -> 5 RoIs) or a
    CLIFF checkpoint path; device: 'auto', 'cpu' or 'cuda'."""

    out_dir: str = "runs/train"
    steps: int = 100000
    seed: int = 0
    init: str = "imagenet"
    device: str = "auto"
    log_every: int = 20
    image_every: int = 500
    eval_every: int = 1000
    ckpt_every: int = 500
    keep_last: int = 3
    progress: bool = True
    stop_after: int = 0  # stop (as if killed) after this step, 0: never; for tests


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        cfg = cls()
        for section, values in d.items():
            if not hasattr(cfg, section):
                raise ValueError(f"unknown config section {section!r}; known: {_sections()}")
            sub = getattr(cfg, section)
            known = {f.name for f in dataclasses.fields(sub)}
            bad = sorted(set(values) - known)
            if bad:
                raise ValueError(f"unknown keys {bad} in config section {section!r}")
            setattr(cfg, section, dataclasses.replace(sub, **values))
        return cfg

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


def _sections() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _leaf_type(value: Any):
    if isinstance(value, bool):
        return _parse_bool
    if isinstance(value, (int, float)):
        return type(value)
    if value is None:  # an optional path: "none" clears it
        return lambda s: None if s.lower() == "none" else s
    return str  # a choice such as --model.fusion none stays the string "none"


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """One ``--section.field`` flag per leaf of TrainConfig (absent unless given: the config's
    value is kept)."""
    base = TrainConfig()
    for section in _sections():
        group = parser.add_argument_group(section)
        for f in dataclasses.fields(getattr(base, section)):
            value = getattr(getattr(base, section), f.name)
            group.add_argument(f"--{section}.{f.name}", dest=f"{section}.{f.name}",
                               type=_leaf_type(value), default=argparse.SUPPRESS,
                               metavar=type(value).__name__
                               if value is not None else "str")  # fmt: skip


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """Apply the ``--section.field`` flags that were given to ``base`` (or a file/defaults)."""
    cfg = base or TrainConfig()
    if getattr(args, "config", None):
        cfg = load_config(args.config)
    d = cfg.to_dict()
    for key, value in vars(args).items():
        if "." in key:  # only the flags that were given (the others are suppressed)
            section, name = key.split(".", 1)
            d[section][name] = value
    out = TrainConfig.from_dict(d)
    out.model.validate()
    return out


def load_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from JSON or YAML (the config.json written beside checkpoints)."""
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        d = yaml.safe_load(text)
    else:
        d = json.loads(text)
    return TrainConfig.from_dict(d)
