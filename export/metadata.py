"""Self-describing exports: the metadata written into every ONNX file (``metadata_props``) and
read back (and checked) before an ONNX file is turned into an engine or served.

Keys are ``multiroi.<field>`` with string values (JSON for lists and dicts), so any ONNX tool
shows them, and onnxruntime exposes them as ``session.get_modelmeta().custom_metadata_map``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

PRODUCER = "multiroi"
FORMAT_VERSION = 1
KEY_PREFIX = "multiroi."
INPUT_NAMES = ("crops", "box_info")
OUTPUT_NAMES = ("rotmat", "betas", "cam_local")
BODY_OUTPUT_NAMES = ("vertices", "joints")
JOINTS_2D_NAME = "joints_2d"  # last, when the network has a lifter


class ExportError(RuntimeError):
    """An export step failed (export itself, verification, engine build); one line says why."""


class NotMultiRoiModelError(ValueError):
    """A model file was not written by ``python -m export`` (no multiroi metadata inside)."""


@dataclass
class ExportMetadata:
    """What an exported model is and how to feed it.

    num_rois: R (the graph's fixed RoI axis); crop_hw: (256, 192) px; mean/std: the ImageNet
    normalisation already applied to ``crops`` (RGB, [0,1] scale); backbone: timm name;
    body_model_id: id of the body model the checkpoint was trained with; with_body_model: the
    graph also outputs vertices/joints (metres, body frame without translation); opset: ONNX
    opset; model_config: the full ``ModelConfig`` as a dict; input_names/output_names: the
    graph's tensor names; project_version: multiroi's version at export time.
    """

    num_rois: int
    backbone: str
    body_model_id: str
    project_version: str
    opset: int
    crop_hw: tuple[int, int] = (256, 192)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    with_body_model: bool = False
    model_config: dict[str, Any] = field(default_factory=dict)
    input_names: tuple[str, ...] = INPUT_NAMES
    output_names: tuple[str, ...] = OUTPUT_NAMES
    producer: str = PRODUCER
    format_version: int = FORMAT_VERSION

    def to_props(self) -> dict[str, str]:
        """``{"multiroi.num_rois": "5", ...}``: every field as a string (JSON where needed)."""
        out = {}
        for key, value in asdict(self).items():
            text = value if isinstance(value, str) else json.dumps(value)
            out[KEY_PREFIX + key] = text
        return out

    @classmethod
    def from_props(cls, props: dict[str, str], where: str = "model") -> ExportMetadata:
        """Inverse of :meth:`to_props`; raises NotMultiRoiModelError when the keys are absent."""
        if props.get(KEY_PREFIX + "producer") != PRODUCER:
            raise NotMultiRoiModelError(
                f"{where} has no multiroi metadata (metadata keys: {sorted(props)[:6]}); it was "
                "not written by 'python -m export onnx'. Export your checkpoint with that command"
            )
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            raw = props.get(KEY_PREFIX + f.name)
            if raw is None:
                continue
            kwargs[f.name] = raw if f.type == "str" else json.loads(raw)
        for name in ("crop_hw", "mean", "std", "input_names", "output_names"):
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        try:
            meta = cls(**kwargs)
        except TypeError as exc:
            raise NotMultiRoiModelError(
                f"{where} has incomplete multiroi metadata: {exc}"
            ) from exc
        if meta.format_version > FORMAT_VERSION:
            raise NotMultiRoiModelError(
                f"{where} has export format {meta.format_version}; this multiroi reads up to "
                f"{FORMAT_VERSION}. Upgrade multiroi or re-export"
            )
        return meta

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


def write_onnx_metadata(model: Any, meta: ExportMetadata) -> None:
    """Set ``meta`` in an ``onnx.ModelProto``'s metadata_props (replacing older multiroi keys)."""
    kept = [p for p in model.metadata_props if not p.key.startswith(KEY_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_onnx_metadata(path: str | os.PathLike) -> ExportMetadata:
    """Read and check the metadata of one of our ONNX files.

    Raises FileNotFoundError (no file), NotMultiRoiModelError (not an ONNX model, or not ours,
    or its inputs/outputs do not match the metadata)."""
    import onnx

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"ONNX file not found: {p}; export one with 'python -m export onnx'"
        )
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise NotMultiRoiModelError(f"{p} is not a readable ONNX model ({exc})") from exc
    meta = ExportMetadata.from_props({e.key: e.value for e in model.metadata_props}, str(p))
    check_graph_io(model, meta, str(p))
    return meta


def check_graph_io(model: Any, meta: ExportMetadata, where: str) -> None:
    """Raise NotMultiRoiModelError unless the graph's inputs are (crops [P,R,3,H,W],
    box_info [P,R,3]) with R = meta.num_rois and every output named in the metadata exists."""
    inputs = {i.name: _dims(i) for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    for name in INPUT_NAMES:
        if name not in inputs:
            raise NotMultiRoiModelError(
                f"{where} lacks the input {name!r} (inputs: {sorted(inputs)}); re-export it with "
                "'python -m export onnx'"
            )
    h, w = meta.crop_hw
    want = {"crops": [None, meta.num_rois, 3, h, w], "box_info": [None, meta.num_rois, 3]}
    for name, dims in want.items():
        got = inputs[name]
        if len(got) != len(dims) or any(
            d is not None and g != d for g, d in zip(got, dims, strict=True)
        ):
            raise NotMultiRoiModelError(
                f"{where}: input {name} has shape {got}, expected {dims} for "
                f"{meta.num_rois} RoIs (P dynamic); the file was altered, re-export it"
            )
    missing = [n for n in meta.output_names if n not in outputs]
    if missing:
        raise NotMultiRoiModelError(f"{where} lacks the outputs {missing}; re-export it")


def _dims(value_info: Any) -> list[Any]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
