"""The cost of the lifter's test-time flip (``ModelConfig.flip_test``), measured side by side.

    python -m realtime.bench_flip --persons 1 3 --iters 20 --out DIR

Times the network call (P persons x the checkpoint's RoIs) with the flip off and on, the two
alternating call by call so that both see the same machine state, for PyTorch fp32 and for
onnxruntime (the runtime the live loop picks on a CPU without fast bf16; each setting exported
once). Writes ``DIR/bench_flip.md``: p50 per setting and the ratio on / off. Inputs are random
crops; the weights are the checkpoint's (default: the shipped default model).
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)
RUNTIMES = ("torch", "onnxruntime")


def _callers(checkpoint: str | None, runtimes: Sequence[str], workdir: Path, threads: int):
    """{(runtime, flip): f(crops np.ndarray, box_info np.ndarray)} for the checkpoint."""
    import torch

    from multiroi.checkpoint import default_checkpoint_path, load_checkpoint
    from multiroi.model.network import set_flip_test

    torch.set_num_threads(threads)
    checkpoint = checkpoint or default_checkpoint_path()
    if checkpoint is None:
        raise ValueError("no default model here ($MULTIROI_CHECKPOINT is 'none'?): pass "
                         "--checkpoint FILE, a .pt with the keypoint lifter")  # fmt: skip
    out = {}
    for flip in (False, True):
        net, _ = load_checkpoint(checkpoint)
        set_flip_test(net, flip)
        if "torch" in runtimes:

            def run_torch(crops, info, net=net):
                with torch.no_grad():
                    net(torch.from_numpy(crops), torch.from_numpy(info))

            out[("torch", flip)] = run_torch
        if "onnxruntime" in runtimes:
            import onnxruntime as ort

            from export.onnx_export import OnnxExportConfig, export_onnx

            path = workdir / f"flip_{'on' if flip else 'off'}.onnx"
            export_onnx(net, path, OnnxExportConfig(exporter="torchscript", verify=False))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            out[("onnxruntime", flip)] = lambda c, i, s=sess: s.run(
                None, {"crops": c, "box_info": i}
            )
    return out, net.cfg.num_rois


def bench(checkpoint: str | None, persons: Sequence[int], runtimes: Sequence[str], iters: int,
          warmup: int, threads: int, workdir: Path) -> list[dict]:  # fmt: skip
    """Rows {runtime, persons, off_ms, on_ms, ratio}: p50 of ``iters`` alternating calls."""
    from tqdm import tqdm

    callers, rois = _callers(checkpoint, runtimes, workdir, threads)
    rng = np.random.default_rng(0)
    rows = []
    bar = tqdm(total=len(persons) * len(runtimes) * (iters + warmup), desc="flip bench")
    for p in persons:
        crops = rng.normal(size=(p, rois, 3, 256, 192)).astype(np.float32)
        info = (rng.normal(size=(p, rois, 3)) * 0.3).astype(np.float32)
        for rt in runtimes:
            times = {False: [], True: []}
            for i in range(warmup + iters):
                for flip in (False, True):
                    t = time.perf_counter()
                    callers[(rt, flip)](crops, info)
                    if i >= warmup:
                        times[flip].append(time.perf_counter() - t)
                bar.update(1)
            off, on = (float(np.median(times[f])) * 1e3 for f in (False, True))
            rows.append({"runtime": rt, "persons": p, "off_ms": off, "on_ms": on,
                         "ratio": on / off})  # fmt: skip
    bar.close()
    return rows


def markdown(rows: list[dict], threads: int) -> str:
    head = (f"Machine: {platform.machine()}, {threads} thread(s). p50 of the network call "
            "(RoI batch of P persons), flip off and on alternating.\n\n"
            "| runtime | persons | flip off, p50 ms | flip on, p50 ms | on / off |\n"
            "|---|---|---|---|---|\n")  # fmt: skip
    body = "".join(f"| {r['runtime']} | {r['persons']} | {r['off_ms']:.1f} | {r['on_ms']:.1f} "
                   f"| {r['ratio']:.2f} |\n" for r in rows)  # fmt: skip
    return head + body


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m realtime.bench_flip",
                                description=__doc__.splitlines()[0])  # fmt: skip
    p.add_argument("--checkpoint", default=None, help="a .pt with the lifter (default: shipped)")
    p.add_argument("--persons", type=int, nargs="+", default=[1, 3])
    p.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (the live loop's "
                   "on 2 cores: 1)")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.iters < 1 or min(args.persons) < 1:
        p.error("--iters and --persons must be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        rows = bench(args.checkpoint, args.persons, args.runtimes, args.iters, args.warmup,
                     args.threads, out)  # fmt: skip
    except ValueError as exc:  # a checkpoint without the lifter, a bad file
        logger.error("%s", exc)
        return 2
    text = markdown(rows, args.threads)
    (out / "bench_flip.md").write_text(text)
    logger.info("%s\nwrote %s", text, out / "bench_flip.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
