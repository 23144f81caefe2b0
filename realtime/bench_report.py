"""Bench results: the row type, CSV in and out, the markdown table and the plot."""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

CSV_FIELDS = ("backend", "precision", "rois", "persons", "mode", "fps", "p50_ms", "p95_ms")


@dataclass
class BenchRow:
    backend: str
    precision: str
    rois: int
    persons: int
    mode: str
    fps: float
    p50_ms: float
    p95_ms: float


def write_csv(rows: Sequence[BenchRow], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            d = asdict(row)
            d.update({k: f"{d[k]:.6g}" for k in ("fps", "p50_ms", "p95_ms")})
            writer.writerow(d)
    return path


def read_csv(path: Path) -> list[BenchRow]:
    types = {f.name: f.type for f in fields(BenchRow)}
    casts = {"int": int, "float": float, "str": str}
    with open(path, newline="") as fh:
        return [BenchRow(**{k: casts[types[k]](v) for k, v in rec.items()})
                for rec in csv.DictReader(fh)]  # fmt: skip


def markdown_table(rows: Sequence[BenchRow], machine: dict[str, str], command: str) -> str:
    """Markdown: machine, command, date, then one line per row with the speed-up over torch
    fp32 at the same (rois, persons, mode) measured in the same run."""
    ref = {(r.rois, r.persons, r.mode): r.p50_ms for r in rows
           if (r.backend, r.precision) == ("torch", "fp32")}  # fmt: skip
    lines = [f"Machine: {machine.get('cpu')} ({machine.get('cores')} cores), GPU: "
             f"{machine.get('gpu')}; " + ", ".join(f"{k} {v}" for k, v in machine.items()
                                                  if k not in ("cpu", "cores", "gpu", "os")),
             f"Command: `{command}`", f"Date: {time.strftime('%Y-%m-%d %H:%M')}", "",
             "| backend | precision | mode | RoIs | persons | FPS | p50 ms | p95 ms "
             "| vs torch fp32 |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda x: (x.mode, x.backend, x.precision, x.persons, x.rois)):
        base = ref.get((r.rois, r.persons, r.mode))
        ratio = f"{base / r.p50_ms:.2f}x" if base else "-"
        lines.append(f"| {r.backend} | {r.precision} | {r.mode} | {r.rois} | {r.persons} | "
                     f"{r.fps:.2f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {ratio} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[BenchRow], path: Path) -> Path:
    """FPS against RoI count, one line per (backend, precision, persons), one panel per mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({r.mode for r in rows})
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        keys = sorted({(r.backend, r.precision, r.persons) for r in rows if r.mode == mode})
        for b, prec, p in keys:
            sel = [
                r
                for r in rows
                if (r.mode, r.backend, r.precision, r.persons) == (mode, b, prec, p)
            ]
            pts = sorted((r.rois, r.fps) for r in sel)
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{b} {prec} P={p}")
        ax.set(title=f"{mode}", xlabel="RoIs per person", ylabel="FPS (1000 / median ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
