"""Triton Inference Server model repository (``python -m export triton``): many camera streams
send their persons to one GPU server; dynamic batching merges them along the person axis.

Layout: ``REPO/<name>/config.pbtxt`` and ``REPO/<name>/1/model.plan`` (TensorRT engine, its
metadata JSON beside it) or ``REPO/<name>/1/model.onnx`` (served by Triton's onnxruntime backend).
The person axis P is Triton's batch axis, so dims below leave it out.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.metadata import read_onnx_metadata

logger = logging.getLogger(__name__)


@dataclass
class TritonConfig:
    """name: model name (None: multiroi_r<R>); max_batch_size: most persons per server batch
    (for an engine: at most its persons_max); preferred_batch_sizes and max_queue_delay_us:
    dynamic batching; instances: model instances per GPU; kind: KIND_GPU or KIND_CPU."""

    name: str | None = None
    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] = (4, 8)
    max_queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "KIND_GPU"


def _onnx_output_dims(path: Path) -> dict[str, list[int]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = {}
    for out in model.graph.output:
        shape = out.type.tensor_type.shape.dim
        dims[out.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in shape][1:]
    return dims


def _known_dims(num_rois: int) -> dict[str, list[int]]:
    """Output dims without P (exporters may leave some of them symbolic)."""
    return {"rotmat": [24, 3, 3], "betas": [10], "cam_local": [num_rois, 3], "joints": [24, 3],
            "joints_2d": [24, 2]}


def _model_info(model_path: Path) -> tuple[str, dict[str, Any], dict[str, list[int]], int | None]:
    """(platform, onnx metadata dict, output dims without P, engine persons_max or None)."""
    if model_path.suffix.lower() == ".onnx":
        meta = read_onnx_metadata(model_path)
        known = _known_dims(meta.num_rois)
        dims = {n: known.get(n, d) for n, d in _onnx_output_dims(model_path).items()}
        return "onnxruntime_onnx", meta.__dict__, dims, None
    if model_path.suffix.lower() in (".engine", ".plan"):
        from multiroi.backends.tensorrt_backend import check_engine_file

        emeta = check_engine_file(model_path)
        onnx_meta, known = emeta.onnx, _known_dims(emeta.num_rois)
        dims = {n: known.get(n, [-1, 3]) for n in onnx_meta.get("output_names", known)}
        return "tensorrt_plan", onnx_meta, dims, emeta.persons_max
    raise ValueError(f"triton needs an .onnx or .engine/.plan file, got {model_path.name}")


def _quote(text: str) -> str:
    return json.dumps(text)


def _tensor(name: str, dims: list[int]) -> str:
    return f'  {{ name: "{name}" data_type: TYPE_FP32 dims: [ {", ".join(map(str, dims))} ] }}'


def config_pbtxt(
    name: str,
    platform: str,
    meta: dict[str, Any],
    out_dims: dict[str, list[int]],
    cfg: TritonConfig,
) -> str:
    """The text of ``config.pbtxt`` (Triton's ModelConfig in protobuf text format)."""
    r = int(meta["num_rois"])
    h, w = meta.get("crop_hw", (256, 192))
    inputs = [_tensor("crops", [r, 3, h, w]), _tensor("box_info", [r, 3])]
    outputs = [_tensor(n, d) for n, d in out_dims.items()]
    params = {
        "num_rois": r,
        "crop_hw": list(meta.get("crop_hw", (h, w))),
        "mean": list(meta.get("mean", ())),
        "std": list(meta.get("std", ())),
        "backbone": meta.get("backbone", ""),
        "body_model_id": meta.get("body_model_id", ""),
    }
    param_txt = "\n".join(
        f'parameters {{ key: "multiroi.{k}" value: {{ string_value: {_quote(json.dumps(v))} }} }}'
        for k, v in params.items()
    )
    preferred = ", ".join(str(b) for b in cfg.preferred_batch_sizes if b <= cfg.max_batch_size)
    sep = ",\n"
    return (
        f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {cfg.max_batch_size}\n'
        f"input [\n{sep.join(inputs)}\n]\noutput [\n{sep.join(outputs)}\n]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {preferred} ]\n"
        f"  max_queue_delay_microseconds: {cfg.max_queue_delay_us}\n}}\n"
        f"instance_group [ {{ count: {cfg.instances} kind: {cfg.kind} }} ]\n{param_txt}\n"
    )


def write_triton_repository(
    model_path: str | os.PathLike, repo_dir: str | os.PathLike, cfg: TritonConfig | None = None
) -> Path:
    """Copy the ONNX file or engine into a Triton model repository and write its config.pbtxt;
    return the model folder. The engine's metadata JSON is copied beside ``model.plan``."""
    cfg = cfg or TritonConfig()
    src = Path(model_path)
    if not src.is_file():
        raise FileNotFoundError(f"model file not found: {src}")
    platform, meta, dims, persons_max = _model_info(src)
    if persons_max is not None and cfg.max_batch_size > persons_max:
        raise ValueError(
            f"--max-batch {cfg.max_batch_size} exceeds the engine's persons_max {persons_max}; "
            "pass a smaller --max-batch or rebuild the engine with a larger --persons-max"
        )
    name = cfg.name or f"multiroi_r{int(meta['num_rois'])}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"Triton model name must be letters, digits, '_', '.', '-'; got {name!r}")
    model_dir = Path(repo_dir) / name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / ("model.onnx" if platform == "onnxruntime_onnx" else "model.plan")
    shutil.copyfile(src, target)
    if platform == "tensorrt_plan":
        shutil.copyfile(src.with_name(src.name + ".json"), target.with_name("model.plan.json"))
    (model_dir / "config.pbtxt").write_text(config_pbtxt(name, platform, meta, dims, cfg))
    logger.info("wrote Triton model %s (%s) in %s", name, platform, repo_dir)
    return model_dir


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"#]+))')


def parse_pbtxt(text: str) -> dict[str, Any]:
    """A small protobuf text-format reader (no schema): messages become dicts, repeated fields
    and ``[...]`` lists become lists, numbers become int/float, enums stay strings."""
    tokens = [m.group(2) or m.group(3) or m.group(4) for m in _TOKEN.finditer(text)
              if not m.group(1) and m.group(0).strip()]  # fmt: skip
    pos, body = _parse_fields(tokens, 0, end=None)
    return body


def _parse_fields(tokens: list[str], pos: int, end: str | None) -> tuple[int, dict[str, Any]]:
    out: dict[str, Any] = {}
    while pos < len(tokens) and tokens[pos] != end:
        key = tokens[pos]
        pos += 1
        if tokens[pos] == ":":
            pos += 1
        pos, value = _parse_value(tokens, pos)
        if key in out:
            prev = out[key]
            out[key] = (prev if isinstance(prev, list) else [prev]) + (
                value if isinstance(value, list) else [value]
            )
        else:
            out[key] = value
        if pos < len(tokens) and tokens[pos] == ",":
            pos += 1
    if end is not None and pos >= len(tokens):
        raise ValueError(f"unbalanced braces in pbtxt: missing {end!r}")
    return pos + (end is not None), out


def _parse_value(tokens: list[str], pos: int) -> tuple[int, Any]:
    tok = tokens[pos]
    if tok == "{":
        return _parse_fields(tokens, pos + 1, "}")
    if tok == "[":
        items, pos = [], pos + 1
        while tokens[pos] != "]":
            pos, item = _parse_value(tokens, pos)
            items.append(item)
            if tokens[pos] == ",":
                pos += 1
        return pos + 1, items
    if tok.startswith('"'):
        return pos + 1, json.loads(tok)
    for cast in (int, float):
        try:
            return pos + 1, cast(tok)
        except ValueError:
            pass
    return pos + 1, tok
