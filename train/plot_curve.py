"""Plot validation curves.

    python -m train.plot_curve RUN_DIR/eval.jsonl OUT.png
    python -m train.plot_curve STAGE1/eval.jsonl STAGE2/eval.jsonl ... OUT.png

One log: PA-MPJPE, MPJPE and PVE against the step. Several: the stages of one network (each
stage started from the last one's weights, ``--run.init``) end to end on one step axis, a
colour per held-out set (``data.val`` of the ``config.json`` beside each log), a dotted line
where a stage begins.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path


def _read_rows(eval_jsonl: str | Path) -> list[dict]:
    path = Path(eval_jsonl)
    if not path.is_file():
        raise ValueError(f"{path} does not exist; give the eval.jsonl of a training run")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    if not rows:
        raise ValueError(f"{eval_jsonl} holds no evaluations; train with --data.val")
    return rows


def plot_curve(eval_jsonl: str | Path, out_png: str | Path, title: str = "") -> Path:
    """PA-MPJPE and MPJPE (mm) on held-out data against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _read_rows(eval_jsonl)
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
    return _save(fig, out_png)


@dataclasses.dataclass
class Stage:
    """One stage's evaluations on the common step axis: ``x[i] = start + rows[i]['step']``."""

    name: str  # the run folder
    val: str  # its held-out set (config.json's data.val), "" when unknown
    start: int  # steps of the stages before it
    rows: list[dict]

    @property
    def x(self) -> list[int]:
        return [self.start + r["step"] for r in self.rows]


def read_stages(eval_jsonls: list[str | Path]) -> list[Stage]:
    """The stages in order; each starts where the one before it ended (its last step)."""
    stages, start = [], 0
    for path in map(Path, eval_jsonls):
        rows = _read_rows(path)
        config = path.parent / "config.json"
        val = ""
        if config.is_file():
            val = str(json.loads(config.read_text()).get("data", {}).get("val") or "")
        val = "/".join(Path(val).parts[-2:]) if val else ""
        stages.append(Stage(path.parent.name, val, start, rows))
        start += max(r["step"] for r in rows)
    return stages


def plot_stages(eval_jsonls: list[str | Path], out_png: str | Path, title: str = "") -> Path:
    """PA-MPJPE (left) and MPJPE (right) of a network trained in stages (see the module doc)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = read_stages(eval_jsonls)
    vals = list(dict.fromkeys(s.val or "held-out" for s in stages))
    colours = {v: f"C{i}" for i, v in enumerate(vals)}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120, sharex=True)
    for ax, key, name in ((axes[0], "pa_mpjpe", "PA-MPJPE"), (axes[1], "mpjpe", "MPJPE")):
        labelled = set()
        for s in stages:
            v = s.val or "held-out"
            ax.plot(s.x, [r[key] for r in s.rows], "o-", ms=3, color=colours[v],
                    label=None if v in labelled else v)  # fmt: skip
            labelled.add(v)
            if s.start:
                ax.axvline(s.start, color="0.5", lw=0.8, ls=":")
            ax.annotate(s.name, (s.start, 1.0), xycoords=("data", "axes fraction"), fontsize=6,
                        xytext=(2, -10), textcoords="offset points", color="0.3")  # fmt: skip
        first = stages[0].rows[0]
        if key == "pa_mpjpe" and first["step"] == 0:  # untrained: the target is 40% below it
            target = 0.6 * first[key]
            label = f"target on {stages[0].val or 'held-out'} ({target:.0f}: -40%)"
            ax.axhline(target, color="0.2", lw=1, ls="-.", label=label)
        ax.set_xlabel("training step, stages end to end")
        ax.set_ylabel(f"{name} on held-out synthetic data (mm)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    fig.suptitle(title or "Multi-RoI training, stage by stage", fontsize=10)
    return _save(fig, out_png)


def _save(fig, out_png: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    import logging

    p = argparse.ArgumentParser(prog="python -m train.plot_curve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("eval_jsonl", nargs="+", help="one run's eval.jsonl, or the stages' in order")
    p.add_argument("out_png")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    try:
        if len(args.eval_jsonl) == 1:
            plot_curve(args.eval_jsonl[0], args.out_png, args.title)
        else:
            plot_stages(args.eval_jsonl, args.out_png, args.title)
    except ValueError as exc:
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("train.plot_curve").error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
