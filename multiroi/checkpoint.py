"""Checkpoints: save/load the Multi-RoI network with its config and metadata; import the
ResNet-50 encoder of a CLIFF checkpoint.

File layout (a dict written by ``torch.save``, readable with ``torch.load(weights_only=True)``):
``format="multiroi-checkpoint"``, ``format_version`` (int), ``model_config`` (dict of
ModelConfig), ``state_dict``, ``body_model_id`` (str), ``project_version`` (str), ``step``
(int), optional ``optimizer`` (an optimizer state_dict) and ``extra`` (plain data).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import multiroi
from multiroi.model.config import ModelConfig
from multiroi.model.network import MultiRoINet

logger = logging.getLogger(__name__)

ENV_CHECKPOINT = "MULTIROI_CHECKPOINT"
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "models" / "multiroi_default.pt"

FORMAT = "multiroi-checkpoint"
FORMAT_VERSION = 1
# how each storage keeps the weights (all are float32 once loaded): --storage help, model cards
STORAGE_NOTES = {
    "fp32": "fp32",
    "fp16": "fp16 (half the size)",
    "int8": "int8 (weight matrices and conv kernels, one scale per output row: a quarter of "
    "the size), fp16 for the rest",
    "int8-heads": "int8 for the linear layers of the decoders and the lifter (one scale per "
    "output row), fp16 for the rest",
}
STORAGES = tuple(STORAGE_NOTES)
# small buffers kept in float32 by every storage: the rest joints of ModelConfig.lifter_ik
# (fp16 would move them by up to 0.2 mm) and the lifter's landmark map (19 KB; in int8, one
# scale per landmark row, it moves the lifter's 2D joints enough to cost the default model
# 7.7 mm PA-MPJPE facing the camera, more than all other layers of its heads together)
FULL_PRECISION = ("ik_joint_template", "ik_joint_dirs", "lifter.landmark_map")
# Config fields that change the weights or the inference graph (pretrained/dropout do not).
ARCH_FIELDS = (
    "backbone",
    "num_rois",
    "fusion",
    "pos_enc",
    "pe_levels",
    "relative_mode",
    "n_iter",
    "hidden",
    "downsample",
    "pool",
)
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message is one line: what was expected, what was found."""


@dataclass
class CheckpointMeta:
    """Everything in a checkpoint besides the weights.

    optimizer_state: the optimizer's state_dict or None; extra: plain data or None.
    """

    path: str
    format_version: int
    model_config: ModelConfig
    body_model_id: str
    project_version: str
    step: int
    optimizer_state: dict | None = None
    extra: dict | None = None


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    cfg: ModelConfig,
    *,
    body_model_id: str,
    step: int = 0,
    optimizer: torch.optim.Optimizer | None = None,
    extra: dict | None = None,
    half: bool = False,
    storage: str | None = None,
) -> Path:
    """Write ``model`` (weights on CPU) with ``cfg`` and metadata atomically (tmp + os.replace).

    ``extra`` must be plain data (dict/list/str/numbers/tensors) so that it loads with
    ``weights_only=True``. ``storage``: "fp32" (default), "fp16" (= ``half=True``: half the
    size), "int8" (a quarter: weight matrices and conv kernels as int8 with one float32 scale
    per output channel, everything else float16) or "int8-heads" (the weight matrices of the
    linear layers outside the backbone, the decoders' and the lifter's, as int8, everything
    else float16: BlazePose's convolutions lose accuracy in int8, those layers none,
    docs/experiments.md "After run Q"). Loading always gives float32 weights.
    Returns the path written.
    """
    storage = storage or ("fp16" if half else "fp32")
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if getattr(model, "cfg", cfg) != cfg:
        raise ValueError(
            f"cfg ({cfg.describe()}) differs from the model's own config "
            f"({model.cfg.describe()}); pass model.cfg"
        )
    if not isinstance(body_model_id, str) or not body_model_id:
        raise ValueError("body_model_id must be a non-empty string naming the body model used")
    if extra is not None:
        _check_plain(extra, "extra")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": cfg.to_dict(),
        "state_dict": {},
        "body_model_id": body_model_id,
        "project_version": multiroi.__version__,
        "step": int(step),
    }
    scales = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if k in FULL_PRECISION:
            payload["state_dict"][k] = v.float()
        elif _as_int8(storage, k, v):
            payload["state_dict"][k], scales[k] = quantize_int8(v)
        elif storage != "fp32" and v.is_floating_point():
            payload["state_dict"][k] = v.half()
        else:
            payload["state_dict"][k] = v
    if scales:
        payload["int8_scales"] = scales
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if extra is not None:
        payload["extra"] = extra
    return _atomic_save(payload, Path(path))


def _as_int8(storage: str, key: str, v: torch.Tensor) -> bool:
    """Whether ``storage`` keeps the tensor ``key`` of a state_dict as int8."""
    if not (v.is_floating_point() and v.ndim >= 2 and v.numel() >= 1024):
        return False
    if storage == "int8":
        return True
    return storage == "int8-heads" and v.ndim == 2 and not key.startswith("backbone.")


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: (q int8 like w, scale f32[w.shape[0]]), w ~ q * scale."""
    flat = w.float().reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def _dequantized(payload: dict, p: Path) -> Any:
    """The state_dict with int8-stored weights turned back into float32."""
    state, scales = payload["state_dict"], payload.get("int8_scales") or {}
    if not scales:
        return state
    if not isinstance(state, Mapping) or not isinstance(scales, Mapping):
        raise CheckpointError(f"checkpoint {p}: malformed int8 weights")
    out = dict(state)
    for k, scale in scales.items():
        q = state.get(k)
        if q is None or q.dtype != torch.int8 or scale.shape != (q.shape[0],):
            raise CheckpointError(f"checkpoint {p}: int8 weight {k!r} does not match its scales")
        out[k] = q.float() * scale.float().reshape(-1, *([1] * (q.ndim - 1)))
    return out


def _atomic_save(payload: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    logger.info("saved checkpoint %s (step %d)", path, payload["step"])
    return path


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_plain(k, where)
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise ValueError(
            f"{where} holds a {type(value).__name__}; checkpoints accept only dicts, lists, "
            "str, numbers, bools, None and tensors (convert numpy arrays with torch.as_tensor)"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".strip()


def read_checkpoint_file(
    path: str | os.PathLike, map_location: Any = "cpu", *, allow_pickle: bool = False
) -> Any:
    """``torch.load`` with one-line CheckpointErrors for missing, truncated or non-torch files.

    allow_pickle=True uses ``weights_only=False`` (only for files you trust)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} not found; expected a file written by torch.save")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} is not a file")
    with open(p, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save: a zip, or an old pickle
        raise CheckpointError(
            f"checkpoint {p} is not a torch file (neither a zip archive nor a pickle); expected "
            "a file written by torch.save, or an export named by its suffix (.onnx, .engine)"
        )
    try:
        return torch.load(p, map_location=map_location, weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointError(
                f"checkpoint {p} contains Python objects that safe loading (weights_only=True) "
                "refuses; expected tensors and plain data only"
            ) from None
        raise CheckpointError(
            f"checkpoint {p} is not a readable torch file (corrupted or another format): "
            f"{_first_line(exc)}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - garbage bytes fail anywhere in the unpickler
        raise CheckpointError(
            f"checkpoint {p} is not a readable torch file (truncated, corrupted or another "
            f"format; size {p.stat().st_size} bytes): {_first_line(exc)}"
        ) from None


def _validate_payload(payload: Any, p: Path) -> ModelConfig:
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"checkpoint {p} holds a {type(payload).__name__}; expected a dict with "
            f"format={FORMAT!r} written by multiroi.checkpoint.save_checkpoint"
        )
    fmt = payload.get("format")
    if fmt != FORMAT:
        keys = sorted(str(k) for k in payload)[:6]
        hint = ""
        if any(str(k).startswith(("encoder.", "module.")) for k in payload) or {
            "model",
            "state_dict",
        } & set(payload):
            hint = "; for a CLIFF checkpoint use import_cliff_backbone"
        raise CheckpointError(
            f"checkpoint {p} is not a multiroi checkpoint: expected format={FORMAT!r}, found "
            f"format={fmt!r} and keys {keys}{hint}"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {p} has format_version {version!r}; this multiroi "
            f"({multiroi.__version__}) reads versions up to {FORMAT_VERSION}: upgrade multiroi"
        )
    missing = [k for k in ("model_config", "state_dict", "body_model_id") if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {p} lacks the entries {missing}; it is incomplete")
    try:
        return ModelConfig.from_dict(payload["model_config"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {p} has an unusable model_config: {exc}") from None


def _check_expected(cfg: ModelConfig, expected: ModelConfig | None, p: Path) -> None:
    if expected is None:
        return
    diff = [f for f in ARCH_FIELDS if getattr(cfg, f) != getattr(expected, f)]
    if diff:
        found = ", ".join(f"{f}={getattr(cfg, f)!r}" for f in diff)
        want = ", ".join(f"{f}={getattr(expected, f)!r}" for f in diff)
        raise CheckpointError(
            f"checkpoint {p} was trained with {cfg.describe()}; expected {want} but it has {found}"
        )


def _load_weights(model: nn.Module, state_dict: Any, cfg: ModelConfig, p: Path) -> None:
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"checkpoint {p}: state_dict is a {type(state_dict).__name__}")
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shape = [
        k for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shape:
        example = (shape or missing or unexpected)[0]
        raise CheckpointError(
            f"checkpoint {p} was trained with {cfg.describe()}; its weights do not match that "
            f"architecture in this multiroi {multiroi.__version__} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shape)} of another shape, e.g. {example!r}); "
            "was it written by another version?"
        )
    model.load_state_dict(state_dict, strict=True)


def default_checkpoint_path() -> Path | None:
    """The checkpoint used when none is given: ``$MULTIROI_CHECKPOINT`` if set ("none": no
    default, a random network), else the shipped default model (trained on synthetic data from
    the free body model), else None."""
    env = os.environ.get(ENV_CHECKPOINT)
    if env and env.strip().lower() == "none":
        return None
    if env:
        return Path(env).expanduser()
    return DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None


def load_checkpoint(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    *,
    expected_config: ModelConfig | None = None,
) -> tuple[MultiRoINet, CheckpointMeta]:
    """Rebuild the network from a checkpoint: ``(model in eval mode, meta)``.

    The backbone is built without downloading pretrained weights (the checkpoint has them).
    ``expected_config``: raise CheckpointError when the architecture fields differ.
    Every problem raises one :class:`CheckpointError` line.
    """
    p = Path(path)
    return model_from_payload(read_checkpoint_file(p, map_location), p, map_location,
                              expected_config=expected_config)  # fmt: skip


def is_multiroi_payload(payload: Any) -> bool:
    """True for what :func:`read_checkpoint_file` returns from a save_checkpoint file."""
    return isinstance(payload, dict) and payload.get("format") == FORMAT


def model_from_payload(
    payload: Any, path: str | os.PathLike, map_location: Any = "cpu", *,
    expected_config: ModelConfig | None = None,
) -> tuple[MultiRoINet, CheckpointMeta]:  # fmt: skip
    """:func:`load_checkpoint` on a file already read (``path`` names it in errors)."""
    p = Path(path)
    cfg = _validate_payload(payload, p)
    _check_expected(cfg, expected_config, p)
    model = MultiRoINet(dataclasses.replace(cfg, pretrained=False))
    _load_weights(model, _dequantized(payload, p), cfg, p)
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    model.cfg = cfg
    model.eval()
    meta = CheckpointMeta(
        path=str(p),
        format_version=payload["format_version"],
        model_config=cfg,
        body_model_id=str(payload["body_model_id"]),
        project_version=str(payload.get("project_version", "unknown")),
        step=int(payload.get("step", 0)),
        optimizer_state=payload.get("optimizer"),
        extra=payload.get("extra"),
    )
    logger.info("loaded checkpoint %s (%s, step %d)", p, cfg.describe(), meta.step)
    return model, meta
