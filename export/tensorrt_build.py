"""ONNX -> TensorRT engine with the TensorRT Python API (``python -m export trt``).

Steps: read and check the ONNX file's multiroi metadata; parse it; builder config (precision,
workspace limit, timing cache, DLA with GPU fallback); one optimisation profile on the person
axis; int8 entropy calibration (cache saved); build; write the engine, named by GPU, precision,
RoI count and person range, with :class:`EngineMetadata` beside it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from export.metadata import ExportError, read_onnx_metadata
from multiroi.backends.tensorrt_backend import (
    EngineMetadata,
    gpu_identity,
    import_tensorrt,
    require_cuda,
    sha256_file,
)

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class TrtBuildConfig:
    """precision: fp32 | fp16 | int8; persons_min/opt/max: optimisation profile of the person
    axis; workspace_mib: builder workspace limit; timing_cache: file read and updated (None: no
    cache); calib_dir: folder of crop images for int8 (None: generated crops); calib_batches /
    calib_persons: how much int8 calibration data; calib_cache: file (None: beside the engine);
    dla_core: DLA core (Jetson) or -1 for the GPU; out_dir: where the engine goes (None: beside
    the ONNX file)."""

    precision: str = "fp16"
    persons_min: int = 1
    persons_opt: int = 4
    persons_max: int = 16
    workspace_mib: int = 2048
    timing_cache: str | None = None
    calib_dir: str | None = None
    calib_batches: int = 32
    calib_persons: int = 4
    calib_cache: str | None = None
    dla_core: int = -1
    out_dir: str | None = None

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 1 <= self.persons_min <= self.persons_opt <= self.persons_max:
            raise ValueError(
                "persons must satisfy 1 <= min <= opt <= max, got "
                f"{self.persons_min}/{self.persons_opt}/{self.persons_max}"
            )
        if self.workspace_mib < 64:
            raise ValueError(f"--workspace-mib must be >= 64, got {self.workspace_mib}")
        if self.calib_batches < 1 or self.calib_persons < 1:
            raise ValueError("--calib-batches and --calib-persons must be >= 1")


def gpu_slug(name: str) -> str:
    """'NVIDIA GeForce RTX 4090' -> 'rtx4090'; 'Orin' -> 'orin' (file-name safe)."""
    s = name.lower().replace("nvidia", "").replace("geforce", "")
    return re.sub(r"[^a-z0-9]+", "", s) or "gpu"


def engine_name(onnx_path: Path, gpu_name: str, cfg: TrtBuildConfig, num_rois: int) -> str:
    """``<onnx stem>_<gpu>_<precision>_r<R>_p<min>-<max>[_dla<N>].engine``."""
    dla = f"_dla{cfg.dla_core}" if cfg.dla_core >= 0 else ""
    return (
        f"{onnx_path.stem}_{gpu_slug(gpu_name)}_{cfg.precision}_r{num_rois}_"
        f"p{cfg.persons_min}-{cfg.persons_max}{dla}.engine"
    )


def _parse(trt: Any, builder: Any, onnx_path: Path, trt_logger: Any) -> Any:
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    return network, parser


def _profile(builder: Any, cfg: TrtBuildConfig, num_rois: int, crop_hw: tuple) -> Any:
    profile = builder.create_optimization_profile()
    h, w = crop_hw
    ps = (cfg.persons_min, cfg.persons_opt, cfg.persons_max)
    profile.set_shape("crops", *[(p, num_rois, 3, h, w) for p in ps])
    profile.set_shape("box_info", *[(p, num_rois, 3) for p in ps])
    return profile


def _configure(trt: Any, builder: Any, cfg: TrtBuildConfig, profile: Any) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    config.add_optimization_profile(profile)
    if cfg.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16, not fp32
    if cfg.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_calibration_profile(profile)
    if cfg.dla_core >= 0:
        if builder.num_DLA_cores <= cfg.dla_core:
            raise ExportError(
                f"--dla-core {cfg.dla_core} asked for but this device has "
                f"{builder.num_DLA_cores} DLA cores (Jetson Orin AGX/NX have 2, Orin Nano none)"
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = cfg.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers DLA cannot run go to the GPU
    return config


def _timing_cache(config: Any, path: str | None) -> Any:
    data = Path(path).read_bytes() if path and Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(onnx_path: str | os.PathLike, cfg: TrtBuildConfig | None = None) -> Path:
    """Build the engine for ``onnx_path`` (one of our ONNX files) on this machine's GPU; return
    the engine path. Raises NotMultiRoiModelError, BackendError (no GPU / no TensorRT) or
    ExportError (parse or build failure)."""
    cfg = cfg or TrtBuildConfig()
    cfg.validate()
    onnx_path = Path(onnx_path)
    onnx_meta = read_onnx_metadata(onnx_path)
    require_cuda("building a TensorRT engine")
    trt = import_tensorrt()
    gpu_name, capability = gpu_identity(0)
    out_dir = Path(cfg.out_dir) if cfg.out_dir else onnx_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    engine_path = out_dir / engine_name(onnx_path, gpu_name, cfg, onnx_meta.num_rois)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network, _parser = _parse(trt, builder, onnx_path, trt_logger)
    profile = _profile(builder, cfg, onnx_meta.num_rois, tuple(onnx_meta.crop_hw))
    config = _configure(trt, builder, cfg, profile)
    cache = _timing_cache(config, cfg.timing_cache)
    if cfg.precision == "int8":
        from export.int8_calibration import calibration_batches, make_entropy_calibrator

        calib_cache = cfg.calib_cache or str(engine_path.with_suffix(".calib"))
        batches = calibration_batches(
            onnx_meta.num_rois, cfg.calib_persons, cfg.calib_batches, cfg.calib_dir
        )
        config.int8_calibrator = make_entropy_calibrator(trt, batches, calib_cache)
    logger.info("building %s on %s (TensorRT %s)...", engine_path.name, gpu_name, trt.__version__)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build {engine_path.name} (see the log above)")
    engine_path.write_bytes(bytes(serialized))
    if cfg.timing_cache:
        Path(cfg.timing_cache).write_bytes(bytes(cache.serialize()))
    EngineMetadata(
        gpu_name=gpu_name, compute_capability=capability, tensorrt_version=trt.__version__,
        precision=cfg.precision, num_rois=onnx_meta.num_rois, persons_min=cfg.persons_min,
        persons_opt=cfg.persons_opt, persons_max=cfg.persons_max,
        sha256=sha256_file(engine_path), dla_core=cfg.dla_core,
        built_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), onnx=asdict(onnx_meta),
    ).write(engine_path)  # fmt: skip
    logger.info("wrote %s in %.0f s", engine_path, time.perf_counter() - t0)
    return engine_path
