"""Parity of an exported ONNX file with the PyTorch graph it came from (onnxruntime, CPU, fp32)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.metadata import ExportError

logger = logging.getLogger(__name__)

VERIFY_PERSONS = (1, 3)  # differs from the export's dummy batch, so the dynamic axis is tested


def onnx_session(path: str | os.PathLike, threads: int | None = None, optimize: bool = True):
    """A CPU onnxruntime session (all graph optimisations, ``threads`` intra-op threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    level = ort.GraphOptimizationLevel
    opts.graph_optimization_level = level.ORT_ENABLE_ALL if optimize else level.ORT_DISABLE_ALL
    if threads:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def max_abs_diffs(
    session: object, graph: nn.Module, crops: torch.Tensor, box_info: torch.Tensor
) -> dict[str, float]:
    """Per output name: max |onnxruntime - torch| on one batch."""
    with torch.inference_mode():
        ref = graph(crops, box_info)
    feeds = {"crops": crops.numpy(), "box_info": box_info.numpy()}
    names = [o.name for o in session.get_outputs()]
    got = session.run(names, feeds)
    diffs = {}
    for name, a, b in zip(names, got, ref, strict=True):
        if a.shape != tuple(b.shape):
            raise ExportError(
                f"output {name}: onnxruntime shape {a.shape} != torch {tuple(b.shape)}"
            )
        diffs[name] = float(np.max(np.abs(a - b.numpy()))) if a.size else 0.0
    return diffs


def verify_onnx(
    path: str | os.PathLike,
    graph: nn.Module,
    atol: float = 1e-4,
    persons: tuple[int, ...] = VERIFY_PERSONS,
) -> dict[str, float]:
    """Run ``path`` with onnxruntime and ``graph`` with torch on the same random inputs for each
    person count; return the worst max-abs difference per output. Raise ExportError naming the
    output and the difference when any exceeds ``atol``."""
    from export.onnx_export import dummy_inputs

    session = onnx_session(path)
    r = int(session.get_inputs()[0].shape[1])
    worst: dict[str, float] = {}
    for i, p in enumerate(persons):
        crops, info = dummy_inputs(r, p, seed=100 + i)
        for name, diff in max_abs_diffs(session, graph, crops, info).items():
            worst[name] = max(worst.get(name, 0.0), diff)
    bad = {n: d for n, d in worst.items() if not d <= atol}
    if bad:
        raise ExportError(
            f"{Path(path).name} differs from PyTorch beyond {atol:g}: "
            + ", ".join(f"{n} max|diff|={d:.3g}" for n, d in bad.items())
            + "; the export is wrong, do not use it (try --exporter torchscript or another opset)"
        )
    logger.info(
        "verified %s against PyTorch: %s", Path(path).name,
        ", ".join(f"{n} {d:.2g}" for n, d in worst.items()),
    )  # fmt: skip
    return worst
