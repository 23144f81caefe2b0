"""``python -m train.ablate``: the paper's ablations at one budget (docs/training.md section 6).

Every row starts from the same initialisation, trains on the same data for the same steps with the
same seed and changes one thing (method.md section 6): the RoI count R = 1..5, no RAF
(``model.fusion none``), no camera consistency (``loss.cc 0``), no contrastive loss
(``loss.con 0``), none of the three. All rows are then evaluated on the same held-out persons.
``--seeds 0 1`` repeats the full model with more seeds, so the table shows how far two runs of the
same recipe land apart. Rows already evaluated are kept, an interrupted row resumes and a larger
``--run.steps`` extends the rows (in a copy of the folder too), so an ablation can be spread over
sessions; a folder that holds a run of another recipe is refused.

    python -m train.ablate --config runs/front_f/config.json --out runs/ablation \\
        --run.init runs/front_fc/last.pt --run.steps 500 --loss.kp2d 5 --loss.cc 1 --seeds 0 1

Writes ``OUT/<row>/`` (the row's run: config.json, checkpoints, eval.json), ``OUT/ablation.json``
and ``OUT/ablation.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.config import TrainConfig, add_config_args, config_from_args

logger = logging.getLogger(__name__)

FULL_ROIS = 5
TABLE_METRICS = ("mpjpe", "pa_mpjpe", "pve", "depth_err", "transl_err", "roi_disagreement")


@dataclass(frozen=True)
class Row:
    """One line of the ablation: a name, a folder name and the config changes (dotted keys)."""

    name: str
    slug: str
    changes: dict[str, Any] = field(default_factory=dict)


ROWS: tuple[Row, ...] = (
    *(Row(f"R = {r}", f"r{r}", {"model.num_rois": r}) for r in range(1, FULL_ROIS)),
    Row(f"full (R = {FULL_ROIS})", "full"),
    Row("without RAF", "no_raf", {"model.fusion": "none"}),
    Row("without camera consistency", "no_cc", {"loss.cc": 0.0}),
    Row("without contrastive", "no_con", {"loss.con": 0.0}),
    Row("without all three", "none", {"model.fusion": "none", "loss.cc": 0.0, "loss.con": 0.0}),
)


def row_config(base: TrainConfig, row: Row, out: Path, seed: int) -> TrainConfig:
    """``base`` with R = 5, then the row's changes, its own out_dir and ``seed``."""
    d = base.to_dict()
    d["model"]["num_rois"] = FULL_ROIS
    for key, value in row.changes.items():
        section, name = key.split(".", 1)
        d[section][name] = value
    d["run"]["out_dir"] = str(out / run_slug(row, seed))
    d["run"]["seed"] = seed
    cfg = TrainConfig.from_dict(d)
    cfg.model.validate()
    return cfg


def run_slug(row: Row, seed: int) -> str:
    return row.slug if seed == 0 else f"{row.slug}_seed{seed}"


def check_base(cfg: TrainConfig) -> None:
    """The full model must have all three parts on, or its row would be an ablation itself."""
    off = [name for name, is_off in (("--model.fusion raf", cfg.model.fusion != "raf"),
                                     ("--loss.cc > 0", cfg.loss.cc <= 0),
                                     ("--loss.con > 0", cfg.loss.con <= 0)) if is_off]  # fmt: skip
    if off:
        raise SystemExit(f"train.ablate: the full model needs {', '.join(off)}; the base config "
                         "has it off, so every row would lack it - pass it")  # fmt: skip
    if not cfg.data.val:
        raise SystemExit("train.ablate: no held-out data; pass --data.val DIR (a synthetic "
                         "folder or .npz)")  # fmt: skip


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """What makes two runs of a row the same: all but the step budget, the folder (a copied row
    continues) and the logging."""
    skip = ("steps", "out_dir", "progress", "log_every", "stop_after", "keep_last")
    run = {k: v for k, v in cfg["run"].items() if k not in skip}
    return {**cfg, "run": run}


def run_row(cfg: TrainConfig, max_persons: int) -> dict[str, Any]:
    """Train one row (resuming an interrupted one, or extending it to more steps) and evaluate
    it; the result (``train_s``: seconds of training in the call that finished the row) is cached
    in ``out_dir/eval.json`` and reused when its step count matches. A folder that holds a run of
    another recipe is refused."""
    from train.eval import evaluate_checkpoint
    from train.trainer import train

    out = Path(cfg.run.out_dir)
    saved = out / "config.json"
    if saved.is_file() and _recipe(json.loads(saved.read_text())) != _recipe(cfg.to_dict()):
        raise SystemExit(f"train.ablate: {out} holds a run of another recipe; pass another --out "
                         "or delete that folder")  # fmt: skip
    cached = out / "eval.json"
    if cached.is_file():
        done = json.loads(cached.read_text())
        if done.get("step") == cfg.run.steps:
            logger.info("%s: already evaluated at step %d, kept", out, cfg.run.steps)
            return done
    t0 = time.perf_counter()
    result = train(cfg, resume=(out / "last.pt").is_file())
    train_s = time.perf_counter() - t0
    metrics, step, persons = evaluate_checkpoint(
        result.checkpoint, cfg.data.val, cfg.data.image_root, cfg.data.body_model,
        max_persons=max_persons or None,
    )  # fmt: skip
    done = {"step": step, "persons": persons, "train_s": round(train_s, 1), "metrics": metrics}
    _write_json(cached, done)
    return done


def format_markdown(results: list[dict[str, Any]]) -> str:
    """The ablation table (mm), one line per row."""
    head = (
        "| row | R | RAF | L_cc | L_con | seed | MPJPE | PA-MPJPE | PVE | depth | transl "
        "| RoI disagr. |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        m = r["metrics"]
        lines.append("| " + " | ".join([
            r["name"], str(r["num_rois"]), "yes" if r["raf"] else "no",
            "yes" if r["cc"] else "no", "yes" if r["con"] else "no", str(r["seed"]),
            *(f"{m[k]:.1f}" for k in TABLE_METRICS)]) + " |")  # fmt: skip
    return "\n".join(lines)


def ablate(base: TrainConfig, out: Path, rows: list[Row], seeds: list[int],
           max_persons: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    """Run ``rows`` (the full one once per seed, the others with ``seeds[0]``) and write
    ``out/ablation.json`` and ``out/ablation.md``."""
    check_base(base)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(row, seed) for row in rows
            for seed in (seeds if row.slug == "full" else seeds[:1])]  # fmt: skip
    results = []
    for k, (row, seed) in enumerate(jobs, 1):
        cfg = row_config(base, row, out, seed)
        logger.info("ablation %d/%d: %s, seed %d (%s)", k, len(jobs), row.name, seed,
                    cfg.model.describe())  # fmt: skip
        done = run_row(cfg, max_persons)
        results.append({"name": row.name, "slug": run_slug(row, seed), "seed": seed,
                        "changes": row.changes, "num_rois": cfg.model.num_rois,
                        "raf": cfg.model.fusion == "raf", "cc": cfg.loss.cc > 0,
                        "con": cfg.loss.con > 0, **done})  # fmt: skip
        _write_json(out / "ablation.json", {"base": base.to_dict(), "rows": results})
    table = format_markdown(results)
    (out / "ablation.md").write_text(table + "\n")
    print(table)
    return results


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    p = argparse.ArgumentParser(prog="python -m train.ablate", description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="base config (JSON/YAML), e.g. a run's config")
    p.add_argument("--out", required=True, help="folder of the rows' runs and the table")
    p.add_argument(
        "--rows",
        default=",".join(r.slug for r in ROWS),
        help="comma-separated rows (default: all): " + ", ".join(r.slug for r in ROWS),
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="seeds of the full row (the other rows use the first)",
    )
    p.add_argument("--max-persons", type=int, default=0, help="held-out persons (0: all)")
    add_config_args(p)
    args = p.parse_args(argv)
    by_slug = {r.slug: r for r in ROWS}
    wanted = [s for s in args.rows.split(",") if s]
    unknown = [s for s in wanted if s not in by_slug]
    if unknown:
        p.error(f"unknown rows {unknown}; known: {', '.join(by_slug)}")
    base = config_from_args(args)
    ablate(base, Path(args.out), [by_slug[s] for s in wanted], args.seeds, args.max_persons)
    return 0


if __name__ == "__main__":
    sys.exit(main())
