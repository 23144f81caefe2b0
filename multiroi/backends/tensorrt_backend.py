"""TensorRT engine backend (``.engine`` / ``.plan`` built by ``python -m export trt``).

An engine is tied to one GPU model, one TensorRT version and one RoI count, so every engine has
a metadata JSON beside it (``<engine>.json``, :class:`EngineMetadata`) that is checked before the
engine is deserialised; a mismatch or a damaged file gives one clear error.
At run time: device buffers pre-allocated for the profile's max persons (torch CUDA tensors),
one CUDA stream, and optionally a CUDA graph per person count. ``tensorrt`` is imported here only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from multiroi.backends.base import BackendError, box_extent_of, check_batch, empty_output
from multiroi.types import HmrOutput, RoiBatch

logger = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan")
OUTPUTS = ("rotmat", "betas", "cam_local")
JOINTS_2D = "joints_2d"  # optional: engines of networks with a lifter


class EngineMismatchError(BackendError):
    """The engine was built for another GPU, TensorRT version or RoI count."""


class EngineCorruptedError(BackendError):
    """The engine file or its metadata is damaged, missing or not a multiroi engine."""


@dataclass
class EngineMetadata:
    """Written beside every engine as ``<engine>.json``.

    gpu_name / compute_capability: the GPU it was built on ("NVIDIA H100 80GB HBM3", "9.0");
    tensorrt_version: e.g. "10.9.0"; precision: fp32 | fp16 | int8; num_rois: R;
    persons_min/opt/max: the optimisation profile of the person axis; dla_core: -1 = GPU;
    sha256: of the engine bytes; onnx: the ONNX file's multiroi metadata (a dict).
    """

    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    num_rois: int
    persons_min: int
    persons_opt: int
    persons_max: int
    sha256: str
    dla_core: int = -1
    built_utc: str = ""
    onnx: dict[str, Any] = field(default_factory=dict)
    producer: str = "multiroi"

    def write(self, engine_path: str | os.PathLike) -> Path:
        path = metadata_path(engine_path)
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        return path

    @classmethod
    def read(cls, engine_path: str | os.PathLike) -> EngineMetadata:
        path = metadata_path(engine_path)
        if not path.is_file():
            raise EngineCorruptedError(
                f"no metadata {path.name} beside engine {Path(engine_path).name}; engines are "
                "only usable with it: rebuild with 'python -m export trt --onnx MODEL.onnx'"
            )
        try:
            data = json.loads(path.read_text())
            if data.get("producer") != "multiroi":
                raise ValueError("producer is not multiroi")
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise EngineCorruptedError(
                f"engine metadata {path} is damaged ({exc}); rebuild"
            ) from exc


def metadata_path(engine_path: str | os.PathLike) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gpu_identity(device_index: int = 0) -> tuple[str, str]:
    """(name, "major.minor") of a CUDA GPU (via torch)."""
    import torch

    major, minor = torch.cuda.get_device_capability(device_index)
    return torch.cuda.get_device_name(device_index), f"{major}.{minor}"


def check_engine_file(path: str | os.PathLike, num_rois: int | None = None) -> EngineMetadata:
    """Checks that need no GPU: the file exists, its metadata is ours, its bytes match the
    recorded checksum (a damaged/truncated engine), and its RoI count is the one asked for."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"engine not found: {p}; build one with 'python -m export trt'")
    meta = EngineMetadata.read(p)
    if sha256_file(p) != meta.sha256:
        raise EngineCorruptedError(
            f"engine {p.name} is corrupted (its checksum differs from {metadata_path(p).name}); "
            "rebuild it with 'python -m export trt'"
        )
    if num_rois is not None and meta.num_rois != num_rois:
        raise EngineMismatchError(
            f"engine {p.name} was built for {meta.num_rois} RoIs but {num_rois} were asked for; "
            f"run with --rois {meta.num_rois} or build an engine from a {num_rois}-RoI ONNX"
        )
    return meta


def check_engine_runtime(meta: EngineMetadata, path: Path, trt_version: str, gpu: tuple) -> None:
    """Raise EngineMismatchError when this machine's TensorRT or GPU differs from the build's."""
    if meta.tensorrt_version != trt_version:
        raise EngineMismatchError(
            f"engine {path.name} was built with TensorRT {meta.tensorrt_version}, this is "
            f"{trt_version}; rebuild it here with 'python -m export trt' (engines are not "
            "portable)"
        )
    name, capability = gpu
    if (meta.gpu_name, meta.compute_capability) != (name, capability):
        raise EngineMismatchError(
            f"engine {path.name} was built for {meta.gpu_name} (sm {meta.compute_capability}), "
            f"this GPU is {name} (sm {capability}); rebuild it on this machine from the ONNX"
        )


def require_cuda(what: str = "TensorRT") -> None:
    """Raise BackendError when no CUDA GPU is usable."""
    import torch

    if not torch.cuda.is_available():
        raise BackendError(
            f"{what} needs an NVIDIA GPU with CUDA, and none is available here; use the torch "
            "or onnxruntime backend on CPU (--backend onnxruntime with an .onnx file)"
        )


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(
            "the TensorRT backend needs the tensorrt package: pip install 'multiroi[trt]' "
            "(on Jetson it comes with JetPack)"
        ) from exc
    return trt


class TensorRTBackend:
    """``TensorRTBackend(checkpoint=ENGINE, num_rois=5, device="cuda:0", cuda_graph=False)``.

    Runs a multiroi engine; persons beyond the profile's max are run in chunks.
    """

    name = "tensorrt"

    def __init__(
        self,
        checkpoint: str | os.PathLike | None = None,
        num_rois: int | None = 5,
        device: str = "cuda:0",
        *,
        cuda_graph: bool = False,
        **_: Any,
    ) -> None:
        if checkpoint is None or Path(checkpoint).suffix.lower() not in ENGINE_SUFFIXES:
            raise BackendError(
                f"the tensorrt backend needs an engine file ({'/'.join(ENGINE_SUFFIXES)}), got "
                f"{checkpoint!r}; build one with 'python -m export trt --onnx MODEL.onnx'"
            )
        self.path = Path(checkpoint)
        self.meta = check_engine_file(self.path, num_rois)
        require_cuda()
        trt = import_tensorrt()
        import torch

        self.device = device if device.startswith("cuda") else "cuda:0"
        dev = torch.device(self.device)
        check_engine_runtime(self.meta, self.path, trt.__version__, gpu_identity(dev.index or 0))
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self._trt_logger)
        self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineCorruptedError(
                f"TensorRT could not deserialise {self.path.name}; rebuild it"
            )
        self.context = self.engine.create_execution_context()
        self.num_rois = int(self.meta.num_rois)
        self.box_extent = box_extent_of((self.meta.onnx or {}).get("model_config"))
        self.max_persons = int(self.meta.persons_max)
        self.stream = torch.cuda.Stream(device=dev)
        self._buffers = self._allocate(trt, torch, dev)
        self.cuda_graph = cuda_graph
        self._graphs: dict[int, Any] = {}
        logger.info("TensorRT engine %s (%s, %d RoIs)", self.path.name, self.meta.precision,
                    self.num_rois)  # fmt: skip

    def _allocate(self, trt: Any, torch: Any, dev: Any) -> dict[str, Any]:
        """One device tensor per I/O tensor, sized for persons_max; addresses bound once."""
        buffers = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = list(self.engine.get_tensor_shape(name))
            shape[0] = self.max_persons
            if any(d < 0 for d in shape):
                raise EngineCorruptedError(f"engine tensor {name} has an unresolved axis: {shape}")
            dtype = torch.from_numpy(np.zeros(0, trt.nptype(self.engine.get_tensor_dtype(name))))
            buffers[name] = torch.empty(shape, dtype=dtype.dtype, device=dev)
            self.context.set_tensor_address(name, buffers[name].data_ptr())
        missing = [n for n in ("crops", "box_info", *OUTPUTS) if n not in buffers]
        if missing:
            raise EngineCorruptedError(f"engine {self.path.name} lacks tensors {missing}")
        return buffers

    def __call__(self, batch: RoiBatch) -> HmrOutput:
        check_batch(batch, self.num_rois)
        if len(batch) == 0:
            return empty_output(self.num_rois)
        parts = []
        for start in range(0, len(batch), self.max_persons):
            stop = start + self.max_persons
            parts.append(self._run(batch.crops[start:stop], batch.box_info[start:stop]))
        rotmat, betas, cam = (np.concatenate([p[i] for p in parts]) for i in range(3))
        j2 = np.concatenate([p[3] for p in parts]) if len(parts[0]) > 3 else None
        return HmrOutput(rotmat, betas, cam, j2)

    def _run(self, crops: np.ndarray, box_info: np.ndarray) -> tuple[np.ndarray, ...]:
        import torch

        p = crops.shape[0]
        p_eff = max(p, int(self.meta.persons_min))
        bufs = self._buffers
        with torch.cuda.stream(self.stream):
            bufs["crops"][:p].copy_(torch.from_numpy(np.ascontiguousarray(crops)), True)
            bufs["box_info"][:p].copy_(torch.from_numpy(np.ascontiguousarray(box_info)), True)
            self._execute(p_eff)
            names = OUTPUTS + ((JOINTS_2D,) if JOINTS_2D in bufs else ())
            outs = [bufs[n][:p].float().cpu() for n in names]
        self.stream.synchronize()
        return tuple(o.numpy() for o in outs)

    def _execute(self, persons: int) -> None:
        """Enqueue the engine for ``persons`` on the stream (replaying a CUDA graph if asked)."""
        import torch

        r = self.num_rois
        self.context.set_input_shape("crops", (persons, r, 3, 256, 192))
        self.context.set_input_shape("box_info", (persons, r, 3))
        if not self.cuda_graph:
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError("TensorRT execution failed (see the TensorRT log above)")
            return
        graph = self._graphs.get(persons)
        if graph is None:
            self.context.execute_async_v3(self.stream.cuda_stream)  # warm-up before capture
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self.context.execute_async_v3(self.stream.cuda_stream)
            self._graphs[persons] = graph
        graph.replay()

    def close(self) -> None:
        self._graphs.clear()
        self._buffers = {}
        self.context = None
        self.engine = None
