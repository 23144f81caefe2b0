"""The bundled demo clip: three people from the body model in a procedural room, with ground truth.

``ensure_demo_clip()`` returns the cached clip, generating it on first use (a progress bar; about
10-30 s on 2 CPU cores with the default "raster" backend). The cache folder is keyed by the body
model id, the generator version and the clip settings, and is written atomically (a temporary
folder renamed into place), so an interrupted run never leaves a half-written clip behind.

Ground truth (``demo_gt.npz``, loads with ``allow_pickle=False``), N frames x P persons:
``track_ids`` i64[P], ``box_xyxy`` f32[N,P,4] px (projected mesh bbox, clipped to the image),
``box_amodal`` f32[N,P,4] px (the same, not clipped: the whole body), ``visible`` bool[N,P]
(box not empty after clipping), ``in_frame_fraction`` f32[N,P] (share of projected vertices
inside the image), ``rotmat`` f32[N,P,24,3,3] (joint 0 = global orientation in the camera
frame), ``betas`` f32[N,P,10], ``transl`` f32[N,P,3] m (body-model translation, camera frame),
``joints`` f32[N,P,24,3] m (camera frame), ``K`` f64[3,3], ``image_wh`` i64[2], ``fps``,
``model_id``, ``generator_version``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from multiroi.geometry.camera import Camera
from realtime.demo.background import add_blob_shadows, room_background
from realtime.demo.scene import (
    CAMERA_HEIGHT_M,
    R_TILT,
    SCENARIO_FRAMES,
    clothing_colors,
    pose_at,
    scene_scripts,
)

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: box_amodal in the ground truth
VIDEO_NAME, GT_NAME = "demo.mp4", "demo_gt.npz"


@dataclass(frozen=True)
class DemoClip:
    """Paths of the cached clip: video_path (MP4, BGR frames) and gt_path (npz, see module doc)."""

    video_path: Path
    gt_path: Path

    def load_gt(self) -> dict[str, np.ndarray]:
        with np.load(self.gt_path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def camera(self) -> Camera:
        gt = self.load_gt()
        return Camera(gt["K"], tuple(int(v) for v in gt["image_wh"]))


def default_cache_dir() -> Path:
    """``$MULTIROI_CACHE`` or ``~/.cache/multiroi``."""
    return Path(os.environ.get("MULTIROI_CACHE") or Path.home() / ".cache" / "multiroi")


def ensure_demo_clip(
    cache_dir: str | os.PathLike | None = None,
    num_frames: int | None = None,
    size_wh: tuple[int, int] = (640, 480),
    body_model_path: str | os.PathLike | None = None,
    fps: float = 30.0,
    backend: str = "raster",
    seed: int = 0,
    shadows: bool = True,
    scenario: str = "default",
) -> DemoClip:
    """Return the demo clip, generating and caching it first if needed.

    body_model_path: the body model (default: the free model; see ``multiroi.body``);
    backend: "raster" (numpy, fast) or "open3d" (Filament lighting; ~1-3 s per frame on a CPU);
    scenario: ``realtime.demo.scene.SCENARIOS`` (num_frames defaults to the scenario's).
    """
    from multiroi.body import load_body_model

    scene_scripts(scenario)  # a clear error for an unknown scenario, before any work
    num_frames = SCENARIO_FRAMES[scenario] if num_frames is None else int(num_frames)

    if num_frames < 1 or min(size_wh) < 16:
        raise ValueError(f"need num_frames >= 1 and a size of at least 16 px, got "
                         f"{num_frames}, {size_wh}")  # fmt: skip
    model = load_body_model(body_model_path)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    w, h = int(size_wh[0]), int(size_wh[1])
    key = f"demo-{model.model_id}-g{GENERATOR_VERSION}-{w}x{h}-{num_frames}f-{fps:g}fps-{backend}"
    key += f"-s{seed}" + ("" if shadows else "-noshadow")
    key += "" if scenario == "default" else f"-{scenario}"
    folder = root / re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
    clip = DemoClip(folder / VIDEO_NAME, folder / GT_NAME)
    if clip.video_path.is_file() and clip.gt_path.is_file():
        return clip
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    try:
        generate_clip(model, tmp, num_frames, (w, h), fps, backend, seed, shadows, scenario)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first: keep theirs
            if not (clip.video_path.is_file() and clip.gt_path.is_file()):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("demo clip cached in %s", folder)
    return clip


@dataclass
class _People:
    """Simulated people, N frames x P persons (float32; camera frame)."""

    rotmat: np.ndarray  # [N,P,24,3,3]
    betas: np.ndarray  # [N,P,10]
    transl: np.ndarray  # [N,P,3]
    vertices: np.ndarray  # [N,P,V,3]
    joints: np.ndarray  # [N,P,24,3]
    feet_xz: np.ndarray  # [N,P,2] floor position in the level frame


def simulate_people(model, scripts, num_frames: int, fps: float) -> _People:
    """Run the scripts through the body model, with every person's feet on the floor."""
    import torch

    n, p = num_frames, len(scripts)
    rot = np.zeros((n, p, 24, 3, 3))
    target = np.zeros((n, p, 3))
    for i in range(n):
        for j, s in enumerate(scripts):
            rot[i, j], target[i, j] = pose_at(s, i / fps)
    betas = np.broadcast_to(np.stack([s.betas for s in scripts]), (n, p, 10))
    with torch.no_grad():
        out = model(
            torch.as_tensor(rot.reshape(-1, 24, 3, 3), dtype=torch.float32),
            torch.as_tensor(betas.reshape(-1, 10), dtype=torch.float32),
        )
    v0 = out.vertices.numpy().astype(np.float64).reshape(n, p, -1, 3)
    j0 = out.joints.numpy().astype(np.float64).reshape(n, p, 24, 3)
    # level frame L: pelvis at the scripted (x, z); lowest vertex on the floor (y_L = height)
    v0_l, j0_l = v0 @ R_TILT, j0[:, :, 0] @ R_TILT
    d_l = np.stack(
        [target[..., 0] - j0_l[..., 0], CAMERA_HEIGHT_M - v0_l[..., 1].max(-1),
         target[..., 2] - j0_l[..., 2]], -1,
    )  # fmt: skip
    transl = d_l @ R_TILT.T
    feet = (v0_l + d_l[:, :, None]).mean(2)[..., [0, 2]]
    return _People(
        rot.astype(np.float32), betas.astype(np.float32).copy(), transl.astype(np.float32),
        (v0 + transl[:, :, None]).astype(np.float32), (j0 + transl[:, :, None]).astype(np.float32),
        feet.astype(np.float32),
    )  # fmt: skip


def projected_boxes(
    vertices: np.ndarray, K: np.ndarray, size_wh: tuple[int, int], clip: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices f[...,V,3] (camera) -> (box_xyxy f32[...,4] clipped to the image, or with
    ``clip`` False the whole body's box; share of vertices inside the image f32[...])."""
    w, h = size_wh
    uv = (vertices @ np.asarray(K).T)[..., :2] / np.maximum(vertices[..., 2:], 1e-6)
    lo, hi = uv.min(-2), uv.max(-2)
    if clip:
        lo, hi = np.clip(lo, 0, [w, h]), np.clip(hi, 0, [w, h])
    box = np.concatenate([lo, hi], -1)
    inside = (uv[..., 0] >= 0) & (uv[..., 0] <= w) & (uv[..., 1] >= 0) & (uv[..., 1] <= h)
    return box.astype(np.float32), inside.mean(-1).astype(np.float32)


def generate_clip(
    model, out_dir: Path, num_frames: int, size_wh: tuple[int, int], fps: float,
    backend: str = "raster", seed: int = 0, shadows: bool = True, scenario: str = "default",
) -> DemoClip:  # fmt: skip
    """Render the clip and its ground truth into out_dir (no caching; see ensure_demo_clip)."""
    from tqdm import tqdm

    from realtime.render.offscreen import MeshRenderer

    w, h = size_wh
    camera = Camera.default((w, h))
    scripts = scene_scripts(scenario, seed)
    people = simulate_people(model, scripts, num_frames, fps)
    weights = model.layer.lbs_weights.detach().cpu().numpy()
    colors = [clothing_colors(weights, s) for s in scripts]
    faces = np.asarray(model.faces, np.int64)
    background, floor_xz = room_background(camera.K, (w, h), seed)
    renderer = MeshRenderer(camera, w, h, backend=backend)
    video = out_dir / VIDEO_NAME
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {video} with OpenCV's mp4v codec")
    try:
        for i in tqdm(range(num_frames), desc="demo clip", unit="frame", leave=False):
            feet = list(people.feet_xz[i]) if shadows else []
            bg = add_blob_shadows(background, floor_xz, feet)
            meshes = [(people.vertices[i, j], faces, colors[j]) for j in range(len(scripts))]
            img, _ = renderer.render(meshes, background_bgr=bg)
            writer.write(img)
    finally:
        writer.release()
        renderer.close()
    box, frac = projected_boxes(people.vertices, camera.K, (w, h))
    amodal, _ = projected_boxes(people.vertices, camera.K, (w, h), clip=False)
    np.savez(
        out_dir / GT_NAME, track_ids=np.array([s.person_id for s in scripts], np.int64),
        box_xyxy=box, box_amodal=amodal,
        visible=(box[..., 2] > box[..., 0]) & (box[..., 3] > box[..., 1]),
        in_frame_fraction=frac, rotmat=people.rotmat, betas=people.betas, transl=people.transl,
        joints=people.joints, K=camera.K, image_wh=np.array([w, h], np.int64),
        fps=np.float64(fps), frame_index=np.arange(num_frames, dtype=np.int64),
        model_id=np.array(str(model.model_id)), generator_version=np.int64(GENERATOR_VERSION),
    )  # fmt: skip
    return DemoClip(video, out_dir / GT_NAME)
