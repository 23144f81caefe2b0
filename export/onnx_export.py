"""Checkpoint -> ONNX: a chain of checked steps (build graph, export, write metadata, check the
file, verify against PyTorch with onnxruntime). The result describes itself (see metadata.py).

Graph: inputs ``crops f32[P,R,3,256,192]`` (ImageNet-normalised RGB) and ``box_info f32[P,R,3]``
(CLIFF); outputs ``rotmat f32[P,24,3,3]``, ``betas f32[P,10]``, ``cam_local f32[P,R,3]`` and, with
the body model inside, ``vertices f32[P,V,3]`` and ``joints f32[P,24,3]`` (metres, body frame).
P is dynamic, R fixed. The contrastive head is not part of the graph.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import multiroi
from export.metadata import (
    BODY_OUTPUT_NAMES,
    INPUT_NAMES,
    JOINTS_2D_NAME,
    OUTPUT_NAMES,
    ExportError,
    ExportMetadata,
    read_onnx_metadata,
    write_onnx_metadata,
)

logger = logging.getLogger(__name__)

EXPORTERS = ("dynamo", "torchscript")
MAX_PERSONS = 256


@dataclass
class OnnxExportConfig:
    """num_rois: R to export (None: the checkpoint's; a different value is an error);
    opset: ONNX opset; exporter: "dynamo" (torch.export based) or "torchscript" (legacy, faster
    to run); with_body_model: vertices/joints in the graph; body_model: path of the body-model
    file (None: the default resolution); verify: check against PyTorch after export;
    atol: max abs difference allowed (fp32); flip_test: the test-time flip of the lifter in the
    graph (``ModelConfig.flip_test``; None: as the checkpoint says); lifter_ik: the weight of
    the lifter's joints in the pose in the graph (``ModelConfig.lifter_ik``; None: as the
    checkpoint says; rest joints from ``body_model`` when the checkpoint has none)."""

    num_rois: int | None = None
    opset: int = 18
    exporter: str = "dynamo"
    with_body_model: bool = False
    body_model: str | None = None
    verify: bool = True
    atol: float = 1e-4
    flip_test: bool | None = None
    lifter_ik: float | None = None

    def validate(self) -> None:
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {EXPORTERS}, got {self.exporter!r}")
        if self.num_rois is not None and self.num_rois not in (1, 2, 3, 4, 5):
            raise ValueError(f"--rois must be 1..5 for export, got {self.num_rois}")
        if not 13 <= self.opset <= 23:
            raise ValueError(f"opset must be in 13..23, got {self.opset}")


@dataclass
class ExportResult:
    """path: the ONNX file; metadata: what was written into it; max_abs_diff: per output, from
    the verification (empty when skipped)."""

    path: Path
    metadata: ExportMetadata
    max_abs_diff: dict[str, float]


class InferenceGraph(nn.Module):
    """What gets exported: the network without its contrastive head, optionally followed by the
    body model. ``forward(crops, box_info) -> (rotmat, betas, cam_local[, vertices, joints]
    [, joints_2d])``: ``joints_2d`` f32[P,24,2] (the lifter's 2D joints, which the pipeline fits
    each body's turn and distance to) when the network has a lifter."""

    def __init__(self, net: nn.Module, body: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        self.body = body

    def forward(self, crops: torch.Tensor, box_info: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(crops, box_info)
        outs: tuple[torch.Tensor, ...] = (out.rotmat, out.betas, out.cam_local)
        if self.body is not None:
            outs += tuple(self.body(out.rotmat, out.betas))
        return outs if out.joints_2d is None else outs + (out.joints_2d,)

    @property
    def output_names(self) -> list[str]:
        names = list(OUTPUT_NAMES) + (list(BODY_OUTPUT_NAMES) if self.body is not None else [])
        return names + ([JOINTS_2D_NAME] if getattr(self.net, "lifter", None) is not None else [])


def build_graph(net: nn.Module, cfg: OnnxExportConfig) -> tuple[InferenceGraph, str | None]:
    """The eval-mode export graph, and the body-model id when the body model is inside."""
    cfg.validate()
    r = int(net.cfg.num_rois)
    if cfg.num_rois is not None and cfg.num_rois != r:
        raise ValueError(
            f"the checkpoint's network has {r} RoIs but --rois {cfg.num_rois} was asked for; "
            f"export with --rois {r} (R is fixed by training)"
        )
    body, body_id = None, None
    if cfg.with_body_model:
        from export.body_graph import LbsGraph
        from multiroi.body import load_body_model

        lbs = LbsGraph(load_body_model(cfg.body_model))
        body, body_id = lbs.eval(), lbs.model_id
    return InferenceGraph(net.eval(), body).eval(), body_id


def dummy_inputs(num_rois: int, persons: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plausible inputs: crops ~ N(0,1) (normalised pixels), box_info with centre offsets in
    [-0.6, 0.6] and a size term in [-3, 6] (boxes from ~0.06 f to ~0.6 f tall)."""
    gen = torch.Generator().manual_seed(seed)
    crops = torch.randn(persons, num_rois, 3, 256, 192, generator=gen)
    info = torch.rand(persons, num_rois, 3, generator=gen)
    info = info * torch.tensor([1.2, 1.2, 9.0]) - torch.tensor([0.6, 0.6, 3.0])
    return crops, info


def _torch_export(graph: InferenceGraph, path: Path, cfg: OnnxExportConfig, names: list) -> None:
    r = int(graph.net.cfg.num_rois)
    args = dummy_inputs(r, 2)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if cfg.exporter == "dynamo":
            persons = torch.export.Dim("persons", min=1, max=MAX_PERSONS)
            torch.onnx.export(
                graph, args, str(path), input_names=list(INPUT_NAMES), output_names=names,
                dynamic_shapes={"crops": {0: persons}, "box_info": {0: persons}},
                opset_version=cfg.opset, dynamo=True, external_data=False, verbose=False,
            )  # fmt: skip
        else:
            axes = {n: {0: "persons"} for n in list(INPUT_NAMES) + names}
            torch.onnx.export(
                graph, args, str(path), input_names=list(INPUT_NAMES), output_names=names,
                dynamic_axes=axes, opset_version=cfg.opset, dynamo=False,
            )  # fmt: skip


def export_onnx(
    net: nn.Module,
    out_path: str | os.PathLike,
    cfg: OnnxExportConfig | None = None,
    *,
    body_model_id: str = "unknown",
) -> ExportResult:
    """Export ``net`` (a MultiRoINet) to ``out_path`` and verify it; raise ExportError on any
    failed step (the file is not left behind when verification fails)."""
    import onnx

    cfg = cfg or OnnxExportConfig()
    graph, graph_body_id = build_graph(net, cfg)
    names = graph.output_names
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = ExportMetadata(
        num_rois=int(net.cfg.num_rois), backbone=str(net.cfg.backbone),
        body_model_id=graph_body_id or body_model_id, project_version=multiroi.__version__,
        opset=cfg.opset, with_body_model=graph.body is not None,
        model_config=net.cfg.to_dict(), output_names=tuple(names),
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="multiroi-export-", dir=out.parent) as tmp:
        raw = Path(tmp) / "raw.onnx"
        logger.info("exporting %s with the %s exporter", net.cfg.describe(), cfg.exporter)
        try:
            _torch_export(graph, raw, cfg, names)
            model = onnx.load(str(raw))
            write_onnx_metadata(model, meta)
            onnx.checker.check_model(model, full_check=True)
        except Exception as exc:
            raise ExportError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
        _check_standard_ops(model)
        staged = Path(tmp) / out.name
        onnx.save(model, str(staged))
        read_onnx_metadata(staged)
        diffs: dict[str, float] = {}
        if cfg.verify:
            from export.verify import verify_onnx

            diffs = verify_onnx(staged, graph, atol=cfg.atol)
        os.replace(staged, out)
    logger.info(
        "wrote %s (%d RoIs, %s)", out, meta.num_rois, "verified" if diffs else "unverified"
    )
    return ExportResult(path=out, metadata=meta, max_abs_diff=diffs)


def _check_standard_ops(model: object) -> None:
    """No custom ops: every node must be in the default ONNX domain."""
    domains = {node.domain for node in model.graph.node} - {"", "ai.onnx"}
    if domains:
        raise ExportError(f"the exported graph uses custom op domains {sorted(domains)}")


def export_checkpoint(
    checkpoint: str | os.PathLike, out_path: str | os.PathLike, cfg: OnnxExportConfig | None = None
) -> ExportResult:
    """``python -m export onnx``: load a checkpoint (multiroi.checkpoint) and export it."""
    from multiroi.checkpoint import load_checkpoint
    from multiroi.model.network import set_flip_test, set_lifter_ik

    net, meta = load_checkpoint(checkpoint)
    cfg = cfg or OnnxExportConfig()
    set_flip_test(net, cfg.flip_test)
    if cfg.lifter_ik:  # rest joints: the network's, else those of the body model
        from multiroi.body import load_body_model

        set_lifter_ik(net, cfg.lifter_ik, load_body_model(cfg.body_model))
    else:
        set_lifter_ik(net, cfg.lifter_ik)
    return export_onnx(net, out_path, cfg, body_model_id=meta.body_model_id)
