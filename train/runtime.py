"""Where and how a training process runs: its device, its place in a torchrun group, mixed
precision, and the RNG states a checkpoint keeps for an exact resume (train.trainer)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch

from multiroi.backends.cpu import cpu_has_fast_bf16


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """Join the torchrun group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' (CUDA where PyTorch sees a GPU, else the CPU), 'cpu', 'cuda' or 'cuda:N'; a
    CUDA device PyTorch cannot see raises ValueError (one line: what to use instead)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this PyTorch sees no CUDA GPU "
                         f"(torch {torch.__version__}); use device 'cpu' or 'auto'")  # fmt: skip
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def add_device_argument(parser: argparse.ArgumentParser, what: str = "") -> None:
    """The --device option of the training tools that pick with pick_device ('auto' by
    default); `what` says what runs there, appended to the help."""
    tail = f": where {what}" if what else ""
    help_ = f"auto (a CUDA GPU where PyTorch sees one), cpu or cuda{tail}"
    parser.add_argument("--device", default="auto", help=help_)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def amp_mode(requested: bool, device: torch.device) -> tuple[bool, torch.dtype]:
    """(enabled, dtype) of mixed precision: fp16 with loss scaling on CUDA, bf16 on a CPU with
    hardware bf16 (2-3x faster ResNet steps on AMX), off elsewhere."""
    if not requested:
        return False, torch.float32
    if device.type == "cuda":
        return True, torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return True, torch.bfloat16
    return False, torch.float32
