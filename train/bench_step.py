"""``python -m train.bench_step``: where the time of one training step goes, on this machine.

Takes the training flags (``--model.*``, ``--loss.*``, ``--data.batch_size``, ``--run.device``)
and times, interleaved over ``--repeats`` rounds on a generated batch (no data set needed):
the whole step as the trainer runs it, its forward and loss + backward parts, the body model's
joints alone against the same joints taken from the full mesh (forward + backward), and fused
Adam against the per-tensor loop. Prints a markdown table of medians and the two ratios.

    python -m train.bench_step --model.backbone resnet18 --model.downsample 2 --data.batch_size 32
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import time
from collections.abc import Callable

import torch

from multiroi.body import load_body_model
from multiroi.geometry.rotations import axis_angle_to_rotmat
from train.config import TrainConfig, add_config_args, config_from_args
from train.datasets import Batch
from train.losses_step import compute_losses

logger = logging.getLogger(__name__)


def synthetic_batch(body, p: int, r: int, seed: int = 0) -> Batch:
    """P persons with R RoIs of noise crops and ground truth consistent with ``body`` (CPU)."""
    g = torch.Generator().manual_seed(seed)
    rot = axis_angle_to_rotmat(0.3 * torch.randn(p, 24, 3, generator=g))
    betas = torch.randn(p, 10, generator=g)
    transl = torch.tensor([0.0, 0.0, 4.0]).repeat(p, 1)
    dev = body.joint_template.device
    with torch.no_grad():
        joints = body.joints(rot.to(dev), betas.to(dev), transl.to(dev)).cpu()
    K = torch.tensor([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]]).repeat(p, 1, 1)
    uvw = joints @ K[0].T
    return Batch(
        crops=torch.randn(p, r, 3, 256, 192, generator=g), box_info=0.3 * torch.randn(p, r, 3),
        centers=torch.tensor([320.0, 240.0]).repeat(p, r, 1), sizes=torch.full((p, r), 300.0),
        K=K, kp2d=torch.cat([uvw[..., :2] / uvw[..., 2:], torch.ones(p, 24, 1)], -1),
        kp3d=torch.cat([joints - transl[:, None], torch.ones(p, 24, 1)], -1), rotmat=rot,
        betas=betas, transl=transl, has_smpl=torch.ones(p), has_transl=torch.ones(p),
        key=torch.arange(p),
    )  # fmt: skip


def _median_ms(fns: dict[str, Callable[[], object]], repeats: int, sync) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up: allocator, oneDNN primitives, autocast caches
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():  # interleaved, so drifts of the machine hit every row
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times[name].append(1e3 * (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in times.items()}


def bench_step(cfg: TrainConfig, repeats: int = 10) -> dict[str, float]:
    """Median milliseconds of the step and its parts (see the module docstring)."""
    from train.runtime import amp_mode, pick_device
    from train.trainer import build_model

    device = pick_device(cfg.run.device)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, init="scratch"))
    model = build_model(cfg).to(device).train()
    amp, amp_dtype = amp_mode(cfg.optim.amp, device)
    if amp and device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    body = load_body_model(cfg.data.body_model, device=device)
    batch = synthetic_batch(body, cfg.data.batch_size, cfg.model.num_rois).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimisers = {
        "fused": torch.optim.Adam(params, lr=1e-6, fused=device.type in ("cpu", "cuda")),
        "loop": torch.optim.Adam(params, lr=1e-6, foreach=False, fused=False),
    }

    def forward():
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
            return model(batch.crops, batch.box_info)

    def loss_backward():
        out = forward()
        model.zero_grad(set_to_none=True)
        compute_losses(out, batch, body, cfg.loss).total.backward()

    def step():
        loss_backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        optimisers["fused"].step()

    rot = batch.rotmat.clone().requires_grad_(True)

    def joints_alone():
        torch.autograd.grad(body.joints(rot, batch.betas).square().sum(), rot)

    def joints_via_mesh():
        torch.autograd.grad(body(rot, batch.betas).joints.square().sum(), rot)

    loss_backward()  # gradients for the optimiser rows

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return _median_ms(
        {
            "training step": step,
            "forward": forward,
            "forward + losses + backward": loss_backward,
            "body joints alone (fwd+bwd)": joints_alone,
            "body joints via the mesh (fwd+bwd)": joints_via_mesh,
            "Adam, fused": optimisers["fused"].step,
            "Adam, per-tensor loop": optimisers["loop"].step,
        },
        repeats,
        sync,
    )


def format_table(ms: dict[str, float]) -> str:
    lines = ["| part | median ms |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in ms.items()]
    lines.append("")
    mesh = ms["body joints via the mesh (fwd+bwd)"] / ms["body joints alone (fwd+bwd)"]
    adam = ms["Adam, per-tensor loop"] / ms["Adam, fused"]
    lines.append(f"joints via the mesh / joints alone: {mesh:.1f}x; "
                 f"Adam loop / fused: {adam:.2f}x")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(
        prog="python -m train.bench_step", description="Time the parts of one training step."
    )
    p.add_argument("--repeats", type=int, default=10, help="timed rounds (median reported)")
    add_config_args(p)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1, got {args.repeats}")
    cfg = config_from_args(args)
    ms = bench_step(cfg, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {cfg.data.batch_size} x {cfg.model.num_rois} RoIs, {cfg.model.backbone}, "
          f"downsample {cfg.model.downsample}, pool {cfg.model.pool}")  # fmt: skip
    print(format_table(ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
