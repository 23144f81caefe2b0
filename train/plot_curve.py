"""Plot a run's validation curve: ``python -m train.plot_curve RUN_DIR/eval.jsonl OUT.png``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def plot_curve(eval_jsonl: str | Path, out_png: str | Path, title: str = "") -> Path:
    """PA-MPJPE and MPJPE (mm) on held-out data against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(eval_jsonl).read_text().splitlines() if line]
    if not rows:
        raise ValueError(f"{eval_jsonl} holds no evaluations; train with --data.val")
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for key, style in (("pa_mpjpe", "o-"), ("mpjpe", "s--"), ("pve", "^:")):
        ax.plot(steps, [r[key] for r in rows], style, label=key.upper().replace("_", "-"), ms=3)
    if rows[0]["step"] == 0:  # the untrained network: the target is 40% below its PA-MPJPE
        target = 0.6 * rows[0]["pa_mpjpe"]
        ax.axhline(target, color="tab:green", lw=1, ls="-.",
                   label=f"PA-MPJPE target ({target:.0f}: -40% of step 0)")  # fmt: skip
    ax.set_xlabel("training step")
    ax.set_ylabel("error on held-out synthetic data (mm)")
    ax.set_title(title or "Multi-RoI training curve")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.plot_curve", description=__doc__)
    p.add_argument("eval_jsonl")
    p.add_argument("out_png")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    plot_curve(args.eval_jsonl, args.out_png, args.title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
