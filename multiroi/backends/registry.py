"""Backends by name and by model-file suffix; entries are import strings, so a runtime's package
is imported only when that backend is created.

``create_backend("torch")``, ``create_backend("onnxruntime", "model.onnx")`` or just
``create_backend("model.onnx")`` (the suffix picks the backend). Others plug in with
``register_backend("tensorrt", "export.trt_backend:TensorRTBackend", suffixes=(".engine",))``.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

from multiroi.backends.base import Backend, BackendError

logger = logging.getLogger(__name__)

_BY_NAME: dict[str, str] = {}
_BY_SUFFIX: dict[str, str] = {}


def register_backend(name: str, target: str, suffixes: tuple[str, ...] = ()) -> None:
    """Register ``target`` ("package.module:Class", a callable taking (checkpoint, num_rois,
    device, **kwargs)) under ``name`` and for model files ending in ``suffixes``."""
    if ":" not in target:
        raise ValueError(f"backend target must be 'module:Class', got {target!r}")
    _BY_NAME[name] = target
    for suffix in suffixes:
        _BY_SUFFIX[suffix.lower()] = name


def available_backends() -> dict[str, tuple[str, ...]]:
    """Registered names and the file suffixes each one handles."""
    return {n: tuple(s for s, b in _BY_SUFFIX.items() if b == n) for n in _BY_NAME}


def backend_for_path(path: str | os.PathLike) -> str | None:
    """The backend name registered for this file's suffix (".pt" -> "torch"), or None."""
    return _BY_SUFFIX.get(Path(path).suffix.lower())


def resolve_backend_name(name: str | None, checkpoint: str | os.PathLike | None) -> str:
    """ "auto"/None -> from the checkpoint suffix (torch when there is no checkpoint); a path
    given as the name -> from its suffix; otherwise the name itself (checked)."""
    if name in (None, "", "auto"):
        if checkpoint is None:
            return "torch"
        return backend_for_path(checkpoint) or "torch"
    if name in _BY_NAME:
        return name
    by_suffix = backend_for_path(name)
    if by_suffix is not None:
        return by_suffix
    raise BackendError(
        f"unknown backend {name!r}; registered: {sorted(_BY_NAME)} (suffixes: "
        f"{sorted(_BY_SUFFIX)})"
    )


def create_backend(
    name: str | None = "auto",
    checkpoint: str | os.PathLike | None = None,
    num_rois: int | None = None,
    device: str = "cpu",
    **kwargs: Any,
) -> Backend:
    """Create a backend by name (or "auto" / a model path: chosen from the file suffix).
    ``num_rois`` None: the model's RoI count (5 for a random network); a number must match it."""
    if checkpoint is None and name not in _BY_NAME and name not in (None, "", "auto"):
        checkpoint = name  # create_backend("model.onnx")
    resolved = resolve_backend_name(name, checkpoint)
    module_name, _, attr = _BY_NAME[resolved].partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise BackendError(
            f"backend {resolved!r} needs a package that is not installed ({exc}); install the "
            "matching extra (e.g. pip install 'multiroi[trt]')"
        ) from exc
    logger.debug("creating backend %s (checkpoint %s, %s)", resolved, checkpoint, device)
    return factory(checkpoint=checkpoint, num_rois=num_rois, device=device, **kwargs)


register_backend("torch", "multiroi.backends.torch_backend:TorchBackend", (".pt", ".pth", ".ckpt"))
register_backend("onnxruntime", "multiroi.backends.onnxruntime_backend:OnnxRuntimeBackend",
                 (".onnx",))  # fmt: skip
register_backend("tensorrt", "multiroi.backends.tensorrt_backend:TensorRTBackend",
                 (".engine", ".plan"))  # fmt: skip
register_backend("torch-trt", "multiroi.backends.torch_trt_backend:TorchTRTBackend",
                 (".ts",))  # fmt: skip
