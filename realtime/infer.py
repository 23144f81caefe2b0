"""The inference stage: (frame, tracks) -> one PersonState per tracked person.

make_roi_batch -> backend (all persons x R RoIs in one call) -> full-image translation from
RoI 0's local camera (CLIFF, method.md section 3) -> per-track One-Euro smoothing -> body model
(one batched forward) -> PersonState with vertices in the camera frame (metres, OpenCV axes).
Persons with tiny or off-image boxes, with non-finite outputs, or placed implausibly far away
(a collapsed camera scale s puts a person kilometres off) are skipped for that frame
(the first occurrence of each kind is logged as a warning, later ones at debug level).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from multiroi.geometry.camera import Camera
from multiroi.geometry.cliff import local_to_full
from multiroi.geometry.fit2d import Fit2DConfig, fit_people
from multiroi.rois import make_roi_batch, valid_box_mask
from multiroi.types import Frame, HmrOutput, PersonState, Tracks
from realtime.cameras import CameraProvider

DEFAULT_FIT = Fit2DConfig()  # docs/experiments.md, "After run R"

logger = logging.getLogger(__name__)


class _WarnOnce:
    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, kind: str, msg: str, *args: Any) -> None:
        level = logging.DEBUG if kind in self._seen else logging.WARNING
        self._seen.add(kind)
        logger.log(level, msg, *args)


@dataclass
class Prepared:
    """One frame between the inference steps: usable track ids i64[M], boxes f32[M,4] px, the
    camera and RoI batch (None when M = 0), and the seconds spent on it so far; the tracks
    lost lately, lost_ids i64[L] and their predicted boxes lost_boxes f32[L,4] px."""

    frame: Frame
    ids: np.ndarray
    boxes: np.ndarray
    camera: Camera | None
    batch: Any
    seconds: float = 0.0
    lost_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    lost_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


class InferenceStage:
    """``stage(frame, tracks) -> list[PersonState]`` (one per usable track, in track order),
    or the same in three steps that the pipeline runs in three threads, so the network's thread
    does nothing else: ``finish(p, run_network(p))`` with ``p = prepare(frame, tracks)``.

    backend: a :class:`multiroi.backends.Backend`; body_model: a
    :class:`multiroi.body.BodyModel`; cameras: a :class:`CameraProvider`; smoothers: a
    ``realtime.smoothing.TrackSmoothers`` or None; timer: ``(stage_name, seconds) -> None``
    for the sub-stage timings ("rois", "model", "body"); media_fps: for files, smooth over the
    media time ``frame.index / media_fps`` (files are read faster or slower than they were
    filmed); None = over the capture time (live sources); max_depth_m: persons placed
    farther away are skipped that frame (a collapsed scale s, not a real distance);
    occlusion: a ``realtime.occlusion.OcclusionGuard`` or None (held before the smoothing);
    fit_2d: a :class:`multiroi.geometry.fit2d.Fit2DConfig` (each body's global orientation and
    distance fitted to the network's 2D joints, when the backend gives them) or None (off).
    """

    def __init__(
        self,
        backend: Any,
        body_model: Any,
        cameras: CameraProvider | None = None,
        smoothers: Any = None,
        min_box_px: float = 16.0,
        timer: Callable[[str, float], None] | None = None,
        media_fps: float | None = None,
        max_depth_m: float = 100.0,
        occlusion: Any = None,
        fit_2d: Fit2DConfig | None = DEFAULT_FIT,
    ) -> None:
        self.backend = backend
        self.fit_2d = fit_2d
        self._told_no_2d = False
        self.occlusion = occlusion
        # the person boxes the model was trained on (ModelConfig.box_extent): the detector's
        self.box_extent = getattr(backend, "box_extent", "visible")
        self.max_depth_m = max_depth_m
        self.media_fps = media_fps
        self.body_model = body_model
        self.cameras = cameras or CameraProvider()
        self.smoothers = smoothers
        self.min_box_px = min_box_px
        self.timer = timer
        self.faces = np.asarray(body_model.faces)
        self._warn = _WarnOnce()
        self.skipped_nan = 0
        self._size_wh: tuple[int, int] | None = None

    def _time(self, name: str, t0: float) -> float:
        now = time.perf_counter()
        if self.timer is not None:
            self.timer(name, now - t0)
        return now

    def usable_mask(self, boxes_xyxy: np.ndarray, image_wh: tuple[int, int]) -> np.ndarray:
        """bool[M]: finite boxes at least min_box_px wide and tall that overlap the image."""
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        ok = valid_box_mask(boxes, self.min_box_px)
        w, h = image_wh
        with np.errstate(invalid="ignore"):
            inside = (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < w) & (boxes[:, 1] < h)
        if (ok & ~inside).any() or (~ok).any():
            self._warn("box", "skipping %d tiny/invalid/off-image box(es) (min %g px)",
                       int((~(ok & inside)).sum()), self.min_box_px)  # fmt: skip
        return ok & inside

    def __call__(self, frame: Frame, tracks: Tracks) -> list[PersonState]:
        """All three steps in the calling thread (the pipeline runs them in three threads)."""
        prepared = self.prepare(frame, tracks)
        return self.finish(prepared, self.run_network(prepared))

    def prepare(self, frame: Frame, tracks: Tracks) -> Prepared:
        """Step 1 (CPU, OpenCV): usable boxes, the camera, the RoI crops of every person."""
        t0 = time.perf_counter()
        keep = self.usable_mask(tracks.boxes_xyxy, frame.size_wh)
        ids = np.asarray(tracks.track_ids, np.int64)[keep]
        boxes = np.asarray(tracks.boxes_xyxy, np.float32).reshape(-1, 4)[keep]
        prepared = Prepared(frame, ids, boxes, None, None,
                            lost_ids=np.asarray(tracks.lost_ids, np.int64).reshape(-1),
                            lost_boxes=np.asarray(tracks.lost_boxes, np.float32).reshape(-1, 4))
        if len(ids):
            prepared.camera = self.cameras(frame.size_wh)
            prepared.batch = make_roi_batch(frame.image_bgr, boxes, self.backend.num_rois,
                                            prepared.camera)  # fmt: skip
        prepared.seconds += self._time("rois", t0) - t0
        return prepared

    def run_network(self, prepared: Prepared) -> HmrOutput | None:
        """Step 2: the backend on all persons x RoIs at once (None when nobody is usable)."""
        if prepared.batch is None:
            return None
        t0 = time.perf_counter()
        out = self.backend(prepared.batch)
        prepared.seconds += self._time("model", t0) - t0
        return out

    def finish(self, prepared: Prepared, out: HmrOutput | None) -> list[PersonState]:
        """Step 3, in frame order: full-image camera, NaN checks, smoothing, body model."""
        t0 = time.perf_counter()
        frame, ids = prepared.frame, prepared.ids
        if frame.size_wh != self._size_wh:  # a new frame size: start every filter afresh
            for keeper in (self.smoothers, self.occlusion):
                if self._size_wh is not None and keeper is not None:
                    keeper.prune([])
            self._size_wh = frame.size_wh
        alive = ids.tolist() + prepared.lost_ids.tolist()  # a lost track may come back
        for keeper in (self.smoothers, self.occlusion):
            if keeper is not None:
                keeper.prune(alive)
        if out is None or len(ids) == 0:
            return []
        batch, camera = prepared.batch, prepared.camera
        transl = local_to_full(
            np.asarray(out.cam_local[:, 0], np.float64), batch.centers[:, 0],
            batch.sizes[:, 0], camera.focal, camera.principal,
        ).astype(np.float32)  # fmt: skip
        good = self._finite_mask(out, transl, ids)
        people: list[PersonState] = []
        if good.any():
            t_s = frame.index / self.media_fps if self.media_fps else frame.t_capture_s
            rotmat = np.asarray(out.rotmat[good], np.float32)
            betas = np.asarray(out.betas[good], np.float32)
            transl = np.asarray(transl[good], np.float32)
            if self.fit_2d is not None and out.joints_2d is not None:
                rotmat, transl = self._fit(rotmat, betas, transl, out.joints_2d[good],
                                           batch, good, camera)  # fmt: skip
            elif self.fit_2d is not None and not self._told_no_2d:
                self._told_no_2d = True
                logger.info("the network gives no 2D joints (no keypoint lifter, or exported "
                            "before they were an output): bodies are placed by its cameras "
                            "alone, not fitted (export a lifter network again for the fit)")
            ids, boxes = ids[good], prepared.boxes[good]
            held = np.zeros(len(ids), bool)
            if self.occlusion is not None:  # before the smoothing: it sees the held states
                rotmat, betas, transl, held = self.occlusion(
                    t_s, ids, boxes, rotmat, betas, transl, camera.focal, camera.principal,
                )  # fmt: skip
                more = self.occlusion.coast(  # the lost persons hidden behind these
                    t_s, boxes, transl[:, 2], prepared.lost_ids, prepared.lost_boxes,
                    camera.focal, camera.principal,
                )  # fmt: skip
                if more is not None:
                    ids, boxes, rotmat, betas, transl = (
                        np.concatenate([a, b]) for a, b in
                        zip((ids, boxes, rotmat, betas, transl), more, strict=True)
                    )  # fmt: skip
                    held = np.concatenate([held, np.ones(len(more[0]), bool)])
            rotmat, betas, transl = self._smooth(t_s, ids, rotmat, betas, transl)
            people = self._place(ids, boxes, rotmat, betas, transl, held)
        prepared.seconds += self._time("body", t0) - t0
        return people

    def _fit(
        self, rotmat: np.ndarray, betas: np.ndarray, transl: np.ndarray, joints_2d: np.ndarray,
        batch: Any, good: np.ndarray, camera: Any,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Global orientations and translations fitted to the 2D joints (multiroi.geometry.fit2d);
        persons whose fit fails keep the network's."""
        dev = next(iter(self.body_model.buffers()), torch.zeros(0)).device
        with torch.no_grad():
            joints = self.body_model.joints(torch.from_numpy(rotmat).to(dev),
                                            torch.from_numpy(betas).to(dev))  # fmt: skip
        rotmat, transl, _ = fit_people(
            rotmat, joints.float().cpu().numpy(), transl, joints_2d, batch.centers[good, 0],
            batch.sizes[good, 0], camera.focal, camera.principal, self.fit_2d,
        )  # fmt: skip
        return rotmat, transl

    def _finite_mask(self, out: HmrOutput, transl: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """bool[M]: finite rotmat, betas and T, a positive RoI-0 scale s, depth <= max_depth_m.

        s <= 0 has no full-camera meaning: local_to_full clamps s to 1e-6, which would place the
        person about 1e9 m away, so such persons are skipped like non-finite ones; so are
        persons whose tiny s places them beyond max_depth_m."""
        m = len(ids)
        with np.errstate(invalid="ignore"):
            scale_ok = np.asarray(out.cam_local, np.float64).reshape(m, -1, 3)[:, 0, 0] > 0
        good = (
            np.isfinite(out.rotmat.reshape(m, -1)).all(1)
            & np.isfinite(out.betas.reshape(m, -1)).all(1)
            & np.isfinite(transl).all(1)
            & (transl[:, 2] > 0)
            & (transl[:, 2] <= self.max_depth_m)
            & scale_ok
        )
        if not good.all():
            self.skipped_nan += int((~good).sum())
            self._warn("nan", "skipping person(s) %s this frame: non-finite network output, "
                       "scale s <= 0 or placed beyond %g m", ids[~good].tolist(),
                       self.max_depth_m)  # fmt: skip
        return good

    def _smooth(
        self, t_s: float, ids: np.ndarray, rotmat: np.ndarray, betas: np.ndarray,
        transl: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        if self.smoothers is None:
            return rotmat, betas, transl
        for i, tid in enumerate(ids.tolist()):
            rotmat[i], betas[i], transl[i] = self.smoothers(tid, t_s, rotmat[i], betas[i],
                                                             transl[i])  # fmt: skip
        return rotmat, betas, transl

    @torch.inference_mode()
    def _place(
        self, ids: np.ndarray, boxes: np.ndarray, rotmat: np.ndarray, betas: np.ndarray,
        transl: np.ndarray, held: np.ndarray | None = None,
    ) -> list[PersonState]:  # fmt: skip
        """Body model forward for all persons at once; vertices/joints in the camera frame."""
        dev = next(iter(self.body_model.buffers()), torch.zeros(0)).device
        body = self.body_model(
            torch.from_numpy(rotmat).to(dev), torch.from_numpy(betas).to(dev),
            torch.from_numpy(transl).to(dev),
        )  # fmt: skip
        verts = body.vertices.float().cpu().numpy()
        joints = body.joints.float().cpu().numpy()
        people = []
        for i, tid in enumerate(ids.tolist()):
            if not np.isfinite(verts[i]).all():
                self._warn("nan", "skipping person %d this frame: non-finite vertices", tid)
                continue
            people.append(PersonState(
                track_id=int(tid), box_xyxy=boxes[i].copy(), rotmat=rotmat[i], betas=betas[i],
                transl_m=transl[i], vertices_m=verts[i], joints_m=joints[i],
                held=bool(held[i]) if held is not None else False,
            ))  # fmt: skip
        return people


def projected_boxes(people: list[PersonState], camera: Camera) -> np.ndarray:
    """f32[M,4] px: the bounding box of each person's vertices projected with ``camera``
    (for carrying boxes forward between detections)."""
    if not people:
        return np.zeros((0, 4), np.float32)
    out = []
    K = camera.K
    for p in people:
        v = np.asarray(p.vertices_m, np.float64)
        z = np.clip(v[:, 2], 1e-6, None)
        uv = np.stack([K[0, 0] * v[:, 0] / z + K[0, 2], K[1, 1] * v[:, 1] / z + K[1, 2]], 1)
        out.append([*uv.min(0), *uv.max(0)])
    return np.asarray(out, np.float32)


def choose_backend(
    inf: Any, threads: int, backbone: str | None = None
) -> tuple[str, dict[str, Any]]:
    """(backend name, its extra keyword arguments) for an InferenceConfig: the asked-for backend,
    or for "auto" on a CPU the fastest one there (torch bf16 for a ResNet-family network where
    the CPU has AMX / AVX512-BF16, else onnxruntime fp32); raises ValueError for a precision the
    backend lacks. backbone: the network's backbone when it is already loaded (else
    ``inf.backbone``)."""
    from multiroi.backends import resolve_backend_name
    from multiroi.backends.cpu import cpu_has_fast_bf16
    from multiroi.backends.torch_backend import CPU_BACKBONE

    name = resolve_backend_name(inf.backend, inf.checkpoint)
    cpu = inf.device == "cpu"
    auto = inf.backend in (None, "", "auto")
    # bf16 pays off for dense convolutions (ResNet: 2x over onnxruntime fp32 on AMX); depthwise
    # ones (MobileNet) run slower in bf16 than onnxruntime fp32 (docs/benchmarks.md)
    dense = str(backbone or inf.backbone or CPU_BACKBONE).startswith(DENSE_BACKBONES)
    fast_bf16 = cpu and dense and cpu_has_fast_bf16()
    if auto and name == "torch" and cpu and not fast_bf16 and inf.precision in ("auto", "fp32"):
        name = "onnxruntime"
    extra: dict[str, Any] = {"backbone": inf.backbone} if inf.backbone else {}
    precision = inf.precision
    if name == "torch":
        if precision == "auto":
            precision = "fp16" if not cpu else "bf16" if fast_bf16 else "fp32"
        if (precision == "bf16") != cpu and precision in ("bf16", "fp16"):
            where = "the CPU" if precision == "bf16" else "CUDA"
            raise ValueError(f"--precision {precision} is for {where}; use fp32 or auto")
        extra.update(fp16=precision == "fp16", bf16=precision == "bf16")
    elif name == "onnxruntime":
        if precision not in ("auto", "fp32"):
            raise ValueError(f"--precision {precision}: the onnxruntime backend runs the fp32 "
                             "graph; use --backend torch for reduced precision")  # fmt: skip
        extra["threads"] = threads
    elif precision != "auto":
        raise ValueError(f"--precision {precision}: backend {name} takes its precision from the "
                         "engine it loads; leave --precision auto")  # fmt: skip
    return name, extra


DENSE_BACKBONES = ("resnet", "resnext", "wide_resnet")


def build_inference_stage(
    cfg: Any,
    timer: Callable[[str, float], None] | None = None,
    source_camera: Camera | None = None,
) -> InferenceStage:
    """An :class:`InferenceStage` from a :class:`realtime.config.PipelineConfig`."""
    from multiroi.backends import create_backend, resolve_backend_name
    from multiroi.backends.torch_backend import load_network
    from multiroi.body import load_body_model
    from multiroi.model.network import set_flip_test, set_lifter_ik, set_lifter_turn
    from realtime.config import cpu_threads
    from realtime.occlusion import OcclusionGuard
    from realtime.smoothing import TrackSmoothers

    inf = cfg.inference
    threads = cpu_threads(inf.threads)
    torch.set_num_threads(threads)  # the torch backend and the body model
    net, body = None, load_body_model(inf.body_model)
    if resolve_backend_name(inf.backend, inf.checkpoint) == "torch":
        # a PyTorch checkpoint (or none): load it once, here, so the choice of runtime can see
        # its backbone; the torch and onnxruntime backends both take the loaded network
        net = load_network(inf.checkpoint, inf.num_rois, inf.backbone)
        set_flip_test(net, inf.flip_test)
        set_lifter_ik(net, inf.lifter_ik, body)  # rest joints: the network's, else the body's
        set_lifter_turn(net, inf.lifter_turn)
    elif any(v is not None for v in (inf.flip_test, inf.lifter_ik, inf.lifter_turn)):
        raise ValueError(
            f"--flip-test, --lifter-ik and --lifter-turn apply to PyTorch checkpoints (.pt); "
            f"{inf.checkpoint} keeps the settings it was exported with: leave them out"
        )
    name, extra = choose_backend(inf, threads, net.cfg.backbone if net is not None else None)
    if net is not None and name in ("torch", "onnxruntime"):
        extra = {k: v for k, v in extra.items() if k != "backbone"} | {"net": net}
    backend = create_backend(name, inf.checkpoint, num_rois=inf.num_rois, device=inf.device,
                             **extra)  # fmt: skip
    logger.info("backend %s (%s) on %s, %d RoIs, %d CPU threads; body model %s", backend.name,
                getattr(backend, "precision", "fp32"), backend.device, backend.num_rois, threads,
                body.model_id)  # fmt: skip
    trained_for = getattr(backend, "body_model_id", None)
    if trained_for and trained_for not in ("unknown", body.model_id):
        logger.warning(
            "the network was trained with body model %s but %s is loaded: its shapes (betas) "
            "belong to the other model; pass --body-model for %s", trained_for, body.model_id,
            trained_for,
        )  # fmt: skip
    smoothers = TrackSmoothers(strength=inf.smooth) if inf.smooth > 0 else None
    guard = OcclusionGuard(inf.hold_occluded, coast=getattr(inf, "coast_occluded", True)) \
        if inf.hold_occluded > 0 else None  # fmt: skip
    cameras = CameraProvider(cfg.camera, source_camera)
    fit = DEFAULT_FIT if inf.fit_2d else None
    logger.info("bodies fitted to the network's 2D joints: %s", "off" if fit is None else "on")
    return InferenceStage(backend, body, cameras, smoothers, inf.min_box_px, timer,
                          occlusion=guard, fit_2d=fit)  # fmt: skip
