"""Checkpoint -> torch-tensorrt compiled module (``python -m export torch-trt``).

The torch-tensorrt path compiles the PyTorch graph directly (no ONNX), falling back to PyTorch
for any op TensorRT cannot take. The result is saved as TorchScript (``.ts``) with the same
metadata JSON beside it as a TensorRT engine (GPU, TensorRT version, RoI count, precision).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import multiroi
from export.metadata import ExportMetadata
from export.tensorrt_build import TrtBuildConfig, gpu_slug
from multiroi.backends.tensorrt_backend import (
    BackendError,
    EngineMetadata,
    gpu_identity,
    require_cuda,
    sha256_file,
)

logger = logging.getLogger(__name__)


def _import_torch_tensorrt():
    try:
        import torch_tensorrt
    except ImportError as exc:
        raise BackendError(
            "torch-trt export needs torch-tensorrt: pip install 'multiroi[trt]'"
        ) from exc
    return torch_tensorrt


def compile_torch_trt(
    checkpoint: str | os.PathLike, out_dir: str | os.PathLike, cfg: TrtBuildConfig | None = None
) -> Path:
    """Compile the checkpoint's network (without contrastive head) with torch-tensorrt for the
    person range of ``cfg``; fp32 or fp16 (int8 is only offered through ``export trt``)."""
    import torch

    from export.onnx_export import InferenceGraph
    from multiroi.checkpoint import load_checkpoint

    cfg = cfg or TrtBuildConfig()
    cfg.validate()
    if cfg.precision == "int8":
        raise ValueError("torch-trt supports fp32/fp16 here; use 'python -m export trt' for int8")
    require_cuda("torch-tensorrt")
    torch_tensorrt = _import_torch_tensorrt()
    net, ckpt_meta = load_checkpoint(checkpoint)
    r = int(net.cfg.num_rois)
    graph = InferenceGraph(net.eval()).eval().cuda()
    ps = (cfg.persons_min, cfg.persons_opt, cfg.persons_max)
    inputs = [
        torch_tensorrt.Input(min_shape=(ps[0], r, 3, 256, 192), opt_shape=(ps[1], r, 3, 256, 192),
                             max_shape=(ps[2], r, 3, 256, 192), dtype=torch.float32),
        torch_tensorrt.Input(min_shape=(ps[0], r, 3), opt_shape=(ps[1], r, 3),
                             max_shape=(ps[2], r, 3), dtype=torch.float32),
    ]  # fmt: skip
    precisions = {torch.float16, torch.float32} if cfg.precision == "fp16" else {torch.float32}
    t0 = time.perf_counter()
    module = torch_tensorrt.compile(
        graph, ir="dynamo", inputs=inputs, enabled_precisions=precisions,
        workspace_size=cfg.workspace_mib << 20,
    )  # fmt: skip
    gpu_name, capability = gpu_identity(0)
    out = Path(out_dir) / (
        f"{Path(checkpoint).stem}_{gpu_slug(gpu_name)}_{cfg.precision}_r{r}_"
        f"p{cfg.persons_min}-{cfg.persons_max}.ts"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    example = [torch.zeros(ps[1], r, 3, 256, 192).cuda(), torch.zeros(ps[1], r, 3).cuda()]
    torch_tensorrt.save(module, str(out), output_format="torchscript", inputs=example)
    onnx_like = ExportMetadata(
        num_rois=r, backbone=net.cfg.backbone, body_model_id=ckpt_meta.body_model_id,
        project_version=multiroi.__version__, opset=0, model_config=net.cfg.to_dict(),
    )  # fmt: skip
    import tensorrt as trt

    EngineMetadata(
        gpu_name=gpu_name, compute_capability=capability, tensorrt_version=trt.__version__,
        precision=cfg.precision, num_rois=r, persons_min=ps[0], persons_opt=ps[1],
        persons_max=ps[2], sha256=sha256_file(out), onnx=asdict(onnx_like),
        built_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    ).write(out)  # fmt: skip
    logger.info("wrote %s in %.0f s", out, time.perf_counter() - t0)
    return out
