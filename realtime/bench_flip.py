"""The cost of the lifter's test-time flip (``ModelConfig.flip_test``), measured side by side.

    python -m realtime.bench_flip --persons 1 3 --iters 20 --out DIR
    python -m realtime.bench_flip --checkpoint NEW.pt --against OLD.pt --out DIR

With ``--against OTHER.pt`` the two settings are instead that checkpoint and ``--checkpoint``,
both with the flip off (e.g. the cost of a tuned 2D tail, ``ModelConfig.lifter_tail``).

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


def _callers(checkpoint: str | None, runtimes: Sequence[str], workdir: Path, threads: int,
             against: str | None = None):  # fmt: skip
    """{(runtime, setting): f(crops np.ndarray, box_info np.ndarray)}: setting False / True is
    the flip off / on, or with ``against`` that checkpoint / ``checkpoint``, flip off."""
    import torch

    from multiroi.checkpoint import default_checkpoint_path, load_checkpoint
    from multiroi.model.network import set_flip_test

    torch.set_num_threads(threads)
    checkpoint = checkpoint or default_checkpoint_path()
    if checkpoint is None:
        raise ValueError("no default model here ($MULTIROI_CHECKPOINT is 'none'?): pass "
                         "--checkpoint FILE, a .pt with the keypoint lifter")  # fmt: skip
    out = {}
    rois = set()
    for flip in (False, True):
        if against is None:
            net, _ = load_checkpoint(checkpoint)
            set_flip_test(net, flip)
        else:
            net, _ = load_checkpoint(checkpoint if flip else against)
            if net.cfg.lifter:
                set_flip_test(net, False)
        rois.add(net.cfg.num_rois)
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
    if len(rois) != 1:
        raise ValueError(f"{against} and {checkpoint} have different RoI counts {sorted(rois)}")
    return out, rois.pop()


def bench(checkpoint: str | None, persons: Sequence[int], runtimes: Sequence[str], iters: int,
          warmup: int, threads: int, workdir: Path,
          against: str | None = None) -> list[dict]:  # fmt: skip
    """Rows {runtime, persons, off_ms, on_ms, ratio}: p50 of ``iters`` alternating calls
    (with ``against``: off = that checkpoint, on = ``checkpoint``)."""
    from tqdm import tqdm

    callers, rois = _callers(checkpoint, runtimes, workdir, threads, against)
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


def markdown(rows: list[dict], threads: int, names: tuple[str, str] | None = None) -> str:
    """The table; ``names``: the two checkpoints' names (``--against``), else flip off / on."""
    a, b = names or ("flip off", "flip on")
    what = f"{a} and {b}" if names else "flip off and on"
    ratio = f"{b} / {a}" if names else "on / off"
    head = (f"Machine: {platform.machine()}, {threads} thread(s). p50 of the network call "
            f"(RoI batch of P persons), {what} alternating.\n\n"
            f"| runtime | persons | {a}, p50 ms | {b}, p50 ms | {ratio} |\n"
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
    p.add_argument("--against", default=None, help="time this checkpoint against "
                   "--checkpoint instead, both with the flip off")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.iters < 1 or min(args.persons) < 1:
        p.error("--iters and --persons must be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        rows = bench(args.checkpoint, args.persons, args.runtimes, args.iters, args.warmup,
                     args.threads, out, args.against)  # fmt: skip
    except (ValueError, OSError) as exc:  # a checkpoint without the lifter, a bad file
        logger.error("%s", exc)
        return 2
    names = None
    if args.against:
        names = (Path(args.against).name, Path(args.checkpoint or "default").name)
        if names[0] == names[1]:
            names = (args.against, args.checkpoint)
    text = markdown(rows, args.threads, names)
    (out / "bench_flip.md").write_text(text)
    logger.info("%s\nwrote %s", text, out / "bench_flip.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
