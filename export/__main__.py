"""``python -m export {onnx,trt,torch-trt,triton} ...``: one subcommand per export step."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

logger = logging.getLogger("export")


def _add_onnx(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("onnx", help="checkpoint -> verified ONNX (P dynamic, R fixed)")
    p.add_argument("--checkpoint", help="multiroi checkpoint (.pt); omit only with --random-init")
    p.add_argument(
        "--random-init",
        action="store_true",
        help="export a randomly initialised network (benchmarks/smoke tests only)",
    )
    p.add_argument("--backbone", default="resnet18", help="backbone for --random-init")
    p.add_argument("--rois", type=int, default=None, help="R (default: the checkpoint's)")
    p.add_argument("--out", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript")
    p.add_argument("--with-body-model", action="store_true", help="vertices/joints in the graph")
    p.add_argument("--body-model", default=None, help="body-model .npz (default resolution)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--atol", type=float, default=1e-4, help="max abs diff allowed in verify")
    p.add_argument(
        "--flip-test",
        choices=("on", "off"),
        default=None,
        help="the lifter's test-time flip in the graph (default: the checkpoint's)",
    )
    p.add_argument("--lifter-ik", type=float, default=None, metavar="W",
                   help="weight of the lifter's joints in the pose in the graph, 0-1 (0: off; "
                        "default: the checkpoint's)")  # fmt: skip


def _add_trt(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(name, help=help_text)
    if name == "trt":
        p.add_argument("--onnx", required=True, help="ONNX file from 'export onnx'")
        p.add_argument("--timing-cache", default=None, help="timing cache file (read/updated)")
        p.add_argument("--calib-dir", default=None, help="int8: folder of crop images")
        p.add_argument("--calib-batches", type=int, default=32)
        p.add_argument("--calib-cache", default=None, help="int8 calibration cache file")
        p.add_argument("--dla-core", type=int, default=-1, help="Jetson DLA core (GPU fallback)")
    else:
        p.add_argument("--checkpoint", required=True)
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    p.add_argument(
        "--persons", type=int, nargs=3, default=(1, 4, 16), metavar=("MIN", "OPT", "MAX")
    )
    p.add_argument("--workspace-mib", type=int, default=2048)
    p.add_argument("--out-dir", default=None, help="where the engine goes (default: beside input)")


def _add_triton(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("triton", help="Triton model repository (engine or ONNX + config.pbtxt)")
    p.add_argument("--model", required=True, help=".onnx or .engine/.plan")
    p.add_argument("--repo", required=True, help="model repository folder")
    p.add_argument("--name", default=None)
    p.add_argument("--max-batch", type=int, default=16, help="most persons per server batch")
    p.add_argument("--preferred", type=int, nargs="+", default=(4, 8))
    p.add_argument("--delay-us", type=int, default=2000, help="dynamic batching queue delay")
    p.add_argument("--instances", type=int, default=1)
    p.add_argument("--kind", choices=("KIND_GPU", "KIND_CPU"), default="KIND_GPU")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_onnx(sub)
    _add_trt(sub, "trt", "ONNX -> TensorRT engine (fp32/fp16/int8) built on this GPU")
    _add_trt(sub, "torch-trt", "checkpoint -> torch-tensorrt compiled module (.ts)")
    _add_triton(sub)
    return parser


def _run_onnx(args: argparse.Namespace) -> str:
    from export.onnx_export import OnnxExportConfig, export_checkpoint, export_onnx

    cfg = OnnxExportConfig(
        num_rois=args.rois, opset=args.opset, exporter=args.exporter,
        with_body_model=args.with_body_model, body_model=args.body_model,
        verify=not args.no_verify, atol=args.atol,
        flip_test=None if args.flip_test is None else args.flip_test == "on",
        lifter_ik=args.lifter_ik,
    )  # fmt: skip
    if args.checkpoint:
        return str(export_checkpoint(args.checkpoint, args.out, cfg).path)
    if not args.random_init:
        raise ValueError("pass --checkpoint FILE (or --random-init for a benchmark-only export)")
    from multiroi.model import ModelConfig, MultiRoINet

    net = MultiRoINet(ModelConfig(backbone=args.backbone, num_rois=args.rois or 5,
                                  contrastive=False))  # fmt: skip
    logger.warning("exporting a RANDOMLY INITIALISED network (benchmarks only)")
    return str(export_onnx(net, args.out, cfg, body_model_id="none").path)


def _trt_config(args: argparse.Namespace):
    from export.tensorrt_build import TrtBuildConfig

    lo, opt, hi = args.persons
    extra = {}
    if args.command == "trt":
        extra = dict(timing_cache=args.timing_cache, calib_dir=args.calib_dir,
                     calib_batches=args.calib_batches, calib_cache=args.calib_cache,
                     dla_core=args.dla_core)  # fmt: skip
    return TrtBuildConfig(precision=args.precision, persons_min=lo, persons_opt=opt,
                          persons_max=hi, workspace_mib=args.workspace_mib,
                          out_dir=args.out_dir, **extra)  # fmt: skip


def run(args: argparse.Namespace) -> str:
    """Run one subcommand; return the path written."""
    if args.command == "onnx":
        return _run_onnx(args)
    if args.command == "trt":
        from export.tensorrt_build import build_engine

        return str(build_engine(args.onnx, _trt_config(args)))
    if args.command == "torch-trt":
        from pathlib import Path

        from export.torch_trt import compile_torch_trt

        out_dir = args.out_dir or str(Path(args.checkpoint).parent)
        return str(compile_torch_trt(args.checkpoint, out_dir, _trt_config(args)))
    from export.triton import TritonConfig, write_triton_repository

    cfg = TritonConfig(name=args.name, max_batch_size=args.max_batch,
                       preferred_batch_sizes=tuple(args.preferred),
                       max_queue_delay_us=args.delay_us, instances=args.instances,
                       kind=args.kind)  # fmt: skip
    return str(write_triton_repository(args.model, args.repo, cfg))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        out = run(args)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
