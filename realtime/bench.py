"""FPS and latency against RoI count and persons, for every available backend and precision.

``python -m realtime.bench --rois 1 2 3 4 5 --persons 1 4 8 --out DIR`` writes ``DIR/bench.csv``
(backend, precision, rois, persons, mode, fps, p50_ms, p95_ms), ``DIR/bench.md`` (table, with
each row's speed-up over torch fp32 of the same configuration, all measured in this run) and
``DIR/bench.png``, and prints the machine.

Modes: ``model`` times ``backend(RoiBatch)`` alone (P persons x R RoIs per call); ``e2e`` times
the inference stage of the live loop per frame of the demo clip (RoI crops, network, full-image
camera, body model), with the clip's boxes repeated/shifted to P persons. Capture, detection and
tracking run in their own threads in the live loop and are not part of this number.
fps = 1000 / p50_ms (frames per second at P persons per frame). Weights are random (speed only).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from realtime.bench_report import (  # noqa: F401  (re-exported)
    CSV_FIELDS,
    BenchRow,
    markdown_table,
    plot,
    read_csv,
    write_csv,
)

logger = logging.getLogger(__name__)

MIN_BOX_PX = 16.0  # the inference stage skips smaller boxes


@dataclass
class BenchConfig:
    """rois/persons: the grid; backends: names or ("auto",) for all available here; modes:
    "model" and/or "e2e"; backbone: timm name of the (random-init) network; downsample/pool:
    the ModelConfig fields of that name (crops pooled to 1/2 or 1/4; "avg" or "spatial"
    features); warmup/iters: calls per configuration; threads: intra-op threads for torch and
    onnxruntime (None = all cores); clip_frames: demo-clip frames for e2e; body_model:
    body-model file (None: the default);
    channels_last: torch in channels_last memory format."""

    rois: tuple[int, ...] = (1, 2, 3, 4, 5)
    persons: tuple[int, ...] = (1, 4, 8)
    backends: tuple[str, ...] = ("auto",)
    modes: tuple[str, ...] = ("model", "e2e")
    backbone: str = "mobilenetv3_large_100"
    hidden: int = 1024
    downsample: int = 1
    pool: str = "avg"
    warmup: int = 3
    iters: int = 20
    threads: int | None = None
    device: str = "cpu"
    clip_frames: int = 30
    clip_size_wh: tuple[int, int] = (640, 480)
    channels_last: bool = True
    cache_dir: str | None = None
    body_model: str | None = None


@dataclass
class _Runner:
    backend: str
    precision: str
    run: Any = field(repr=False)  # a multiroi Backend


def machine_info() -> dict[str, str]:
    """CPU, cores, GPU and library versions (what the numbers depend on)."""
    import importlib.metadata as md

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    info = {"cpu": cpu, "cores": str(os.cpu_count()), "gpu": gpu,
            "python": platform.python_version(), "os": platform.platform()}  # fmt: skip
    for pkg in ("torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "torch-tensorrt", "timm"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return info


def time_calls(fn: Callable[[], Any], warmup: int, iters: int) -> tuple[float, float]:
    """(median ms, p95 ms) of ``iters`` calls after ``warmup`` untimed ones."""
    return time_side_by_side([fn], warmup, iters)[0]


def time_side_by_side(
    fns: Sequence[Callable[[], Any]], warmup: int, iters: int
) -> list[tuple[float, float]]:
    """(median ms, p95 ms) per function; the functions are called in turn (round-robin), so
    a busy machine slows all of them alike and their ratios stay meaningful."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(iters):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return [(float(np.median(t)), float(np.percentile(t, 95))) for t in times]


def _available(name: str, device: str) -> bool:
    import importlib.util

    import torch

    gpu = torch.cuda.is_available() and device.startswith("cuda")
    has = lambda mod: importlib.util.find_spec(mod) is not None  # noqa: E731
    needs = {"torch": True, "onnxruntime": has("onnxruntime"), "tensorrt": gpu and has("tensorrt"),
             "torch-trt": gpu and has("torch_tensorrt")}  # fmt: skip
    return needs.get(name, False)


def _resolve_backends(cfg: BenchConfig) -> list[str]:
    if tuple(cfg.backends) == ("auto",):
        # torch-trt is compiled from a checkpoint file; add it explicitly with --backends.
        return [b for b in ("torch", "onnxruntime", "tensorrt") if _available(b, cfg.device)]
    missing = [b for b in cfg.backends if not _available(b, cfg.device)]
    if missing:
        raise ValueError(f"backends {missing} are not available here (device {cfg.device})")
    return list(cfg.backends)


def _build_net(cfg: BenchConfig, num_rois: int) -> Any:
    import torch

    from multiroi.model import ModelConfig, MultiRoINet

    torch.manual_seed(0)
    mcfg = ModelConfig(backbone=cfg.backbone, num_rois=num_rois, hidden=cfg.hidden,
                       contrastive=False, downsample=cfg.downsample, pool=cfg.pool)  # fmt: skip
    return MultiRoINet(mcfg).eval()


def _runners(cfg: BenchConfig, net: Any, workdir: Path) -> list[_Runner]:
    """One runner per (backend, precision) available for this network."""
    import torch

    from multiroi.backends.cpu import cpu_has_fast_bf16
    from multiroi.backends.torch_backend import TorchBackend

    r = int(net.cfg.num_rois)
    out: list[_Runner] = []
    gpu = cfg.device.startswith("cuda")
    names = _resolve_backends(cfg)
    if "torch" in names:
        tnet = net.to(memory_format=torch.channels_last) if cfg.channels_last else net
        precs = ("fp32", "fp16") if gpu else ("fp32", "bf16") if cpu_has_fast_bf16() else ("fp32",)
        for prec in precs:
            out.append(_Runner("torch", prec, TorchBackend(
                net=tnet, device=cfg.device, fp16=prec == "fp16", bf16=prec == "bf16"
            )))  # fmt: skip
    onnx_path = None
    if {"onnxruntime", "tensorrt"} & set(names):
        from export.onnx_export import OnnxExportConfig, export_onnx

        onnx_path = workdir / f"bench_r{r}.onnx"
        export_onnx(net.float().to(memory_format=torch.contiguous_format).cpu(), onnx_path,
                    OnnxExportConfig(exporter="torchscript", verify=False))  # fmt: skip
    if "onnxruntime" in names:
        from multiroi.backends.onnxruntime_backend import OnnxRuntimeBackend

        ort = OnnxRuntimeBackend(onnx_path, num_rois=r, device=cfg.device,
                                 threads=cfg.threads or os.cpu_count())  # fmt: skip
        out.append(_Runner("onnxruntime", "fp32", ort))
    if "tensorrt" in names:
        out.extend(_trt_runners(onnx_path, r, cfg, workdir))
    return out


def _trt_runners(onnx_path: Path, r: int, cfg: BenchConfig, workdir: Path) -> list[_Runner]:
    from export.tensorrt_build import TrtBuildConfig, build_engine
    from multiroi.backends.tensorrt_backend import TensorRTBackend

    runners = []
    top = max(cfg.persons)
    for prec in ("fp32", "fp16", "int8"):
        bcfg = TrtBuildConfig(precision=prec, persons_min=1, persons_opt=min(4, top),
                              persons_max=top, calib_batches=4, out_dir=str(workdir),
                              timing_cache=str(workdir / "timing.cache"))  # fmt: skip
        engine = build_engine(onnx_path, bcfg)
        runners.append(_Runner("tensorrt", prec, TensorRTBackend(engine, r, cfg.device)))
    return runners


def _model_batch(r: int, persons: int) -> Any:
    from multiroi.types import RoiBatch

    rng = np.random.default_rng(0)
    crops = rng.standard_normal((persons, r, 3, 256, 192), dtype=np.float32)
    info = rng.uniform(-0.5, 0.5, (persons, r, 3)).astype(np.float32)
    return RoiBatch(crops, info, np.zeros((persons, r, 2), np.float32),
                    np.full((persons, r), 200.0, np.float32), 800.0, (640, 480))  # fmt: skip


def _clip_frames(cfg: BenchConfig) -> tuple[list[np.ndarray], np.ndarray, Any]:
    """Frames (BGR) of the demo clip, its boxes f32[N,P,4] (NaN = absent), its camera."""
    import cv2

    from realtime.demo import ensure_demo_clip

    clip = ensure_demo_clip(
        cache_dir=cfg.cache_dir, body_model_path=cfg.body_model,
        size_wh=tuple(cfg.clip_size_wh), num_frames=max(cfg.clip_frames, 2),
    )  # fmt: skip
    cap = cv2.VideoCapture(str(clip.video_path))
    frames = []
    while len(frames) < cfg.clip_frames:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    gt = clip.load_gt()
    boxes = np.where(gt["visible"][..., None], gt["box_xyxy"], np.nan).astype(np.float32)
    return frames, boxes[: len(frames)], clip.camera()


def _tracks_for(boxes: np.ndarray, persons: int, image_wh: tuple[int, int]) -> Any:
    """P tracks from a frame's visible boxes, repeated with a small shift to reach P."""
    from multiroi.types import Tracks

    ok = np.isfinite(boxes).all(1)
    with np.errstate(invalid="ignore"):
        ok &= np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_PX
    base = boxes[ok]
    if len(base) == 0:
        w, h = image_wh
        base = np.array([[w * 0.4, h * 0.2, w * 0.6, h * 0.9]], np.float32)
    reps = [base[i % len(base)] + 7.0 * (i // len(base)) for i in range(persons)]
    return Tracks(np.arange(persons, dtype=np.int64), np.stack(reps).astype(np.float32))


def _e2e_timer(runner: _Runner, frames_data: tuple, persons: int, cfg: BenchConfig) -> Callable:
    from multiroi.body import load_body_model
    from multiroi.types import Frame
    from realtime.cameras import CameraProvider
    from realtime.infer import InferenceStage

    frames, boxes, camera = frames_data
    stage = InferenceStage(
        runner.run, load_body_model(cfg.body_model), CameraProvider(None, camera)
    )
    wh = (frames[0].shape[1], frames[0].shape[0])
    items = [(Frame(i, 0.0, img), _tracks_for(boxes[i], persons, wh))
             for i, img in enumerate(frames)]  # fmt: skip
    state = {"i": 0}

    def step() -> None:
        frame, tracks = items[state["i"] % len(items)]
        state["i"] += 1
        people = stage(frame, tracks)
        if len(people) != len(tracks):
            raise RuntimeError(
                f"e2e frame {frame.index}: {len(people)} of {len(tracks)} persons came out; "
                "the timing would not be for P persons"
            )

    return step


def _call(runner: _Runner, r: int, p: int, mode: str, frames_data: Any, cfg: BenchConfig):
    if mode == "model":
        batch = _model_batch(r, p)
        return lambda: runner.run(batch)
    return _e2e_timer(runner, frames_data, p, cfg)


def run_bench(cfg: BenchConfig, workdir: Path | None = None) -> list[BenchRow]:
    """Measure every (backend, precision) x rois x persons x mode; return the rows."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    frames_data = _clip_frames(cfg) if "e2e" in cfg.modes else None
    rows: list[BenchRow] = []
    with tempfile.TemporaryDirectory(prefix="multiroi-bench-") as tmp:
        work = Path(workdir or tmp)
        for r in cfg.rois:
            runners = _runners(cfg, _build_net(cfg, r), work)
            for p in cfg.persons:
                for mode in cfg.modes:
                    fns = [_call(rn, r, p, mode, frames_data, cfg) for rn in runners]
                    timed = time_side_by_side(fns, cfg.warmup, cfg.iters)
                    for rn, (p50, p95) in zip(runners, timed, strict=True):
                        row = BenchRow(rn.backend, rn.precision, r, p, mode, 1000.0 / p50,
                                       p50, p95)  # fmt: skip
                        logger.info("%s", _fmt(row))
                        rows.append(row)
            for runner in runners:
                runner.run.close()
    return rows


def _fmt(row: BenchRow) -> str:
    return (f"{row.backend:12s} {row.precision:5s} R={row.rois} P={row.persons} {row.mode:5s} "
            f"{row.fps:7.2f} fps  p50 {row.p50_ms:7.1f} ms  p95 {row.p95_ms:7.1f} ms")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m realtime.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    d = BenchConfig()
    p.add_argument("--rois", type=int, nargs="+", default=list(d.rois))
    p.add_argument("--persons", type=int, nargs="+", default=list(d.persons))
    p.add_argument("--backends", nargs="+", default=list(d.backends),
                   help="auto | torch onnxruntime tensorrt torch-trt")  # fmt: skip
    p.add_argument("--modes", nargs="+", choices=("model", "e2e"), default=list(d.modes))
    p.add_argument("--backbone", default=d.backbone)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--downsample", type=int, choices=(1, 2, 4), default=d.downsample,
                   help="backbone at 1/N resolution (ModelConfig.downsample)")  # fmt: skip
    p.add_argument("--pool", choices=("avg", "spatial"), default=d.pool,
                   help="feature pooling (ModelConfig.pool)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--iters", type=int, default=d.iters)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (all cores)")
    p.add_argument("--device", default=d.device)
    p.add_argument("--clip-frames", type=int, default=d.clip_frames)
    p.add_argument("--clip-size", type=int, nargs=2, default=list(d.clip_size_wh))
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--cache-dir", default=None, help="demo-clip cache (default ~/.cache)")
    p.add_argument("--body-model", default=None, help="body-model .npz (default resolution)")
    p.add_argument("--out", required=True, help="output folder")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = BenchConfig(
        rois=tuple(args.rois), persons=tuple(args.persons), backends=tuple(args.backends),
        modes=tuple(args.modes), backbone=args.backbone, hidden=args.hidden, warmup=args.warmup,
        downsample=args.downsample, pool=args.pool,
        iters=args.iters, threads=args.threads, device=args.device,
        clip_frames=args.clip_frames, clip_size_wh=tuple(args.clip_size),
        channels_last=not args.no_channels_last, cache_dir=args.cache_dir,
        body_model=args.body_model,
    )  # fmt: skip
    if min(cfg.rois) < 1 or max(cfg.rois) > 5 or min(cfg.persons) < 1 or cfg.iters < 1:
        raise SystemExit("error: --rois must be in 1..5, --persons and --iters >= 1")
    machine = machine_info()
    for k, v in machine.items():
        print(f"{k:15s} {v}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = run_bench(cfg)
    command = "python -m realtime.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    write_csv(rows, out / "bench.csv")
    (out / "bench.md").write_text(markdown_table(rows, machine, command))
    plot(rows, out / "bench.png")
    print(f"wrote {out / 'bench.csv'}, {out / 'bench.md'}, {out / 'bench.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
