"""Person detectors: ``detector(image_bgr, frame_index=None) -> Detections`` (person class only).

* :class:`realtime.yolo.YoloDetector` - ultralytics YOLO (weights file must be on disk; never
  downloads here).
* :class:`realtime.pose_detector.BlazePoseDetector` - MediaPipe's pose detector converted to
  PyTorch, run in onnxruntime on a CPU (offline; its file comes from MediaPipe's wheel, fetched
  by ``make setup``): finds people seen from the waist up, by the face.
* :class:`HogDetector` - OpenCV's built-in HOG people detector (OpenCV 4.x; no download):
  whole standing people only.
* :class:`MergedDetector` - one detector's boxes plus another's that overlap none of them
  (realtime.bench_detect compares BlazePose + HOG with BlazePose alone).
* :class:`MotionDetector` - background subtraction blobs; the last-resort offline fallback
  (static camera) when this OpenCV build has no HOG (OpenCV 5 moved it to contrib).
* :class:`MediaPipeDetector` - MediaPipe's bundled pose detector (optional extra).
* :class:`GivenBoxesDetector` - boxes known in advance (the demo clip's ground truth).
* :class:`EveryNDetector` - runs an inner detector every n-th frame and carries boxes between.

:func:`create_detector` picks one from a :class:`realtime.config.DetectorConfig`, falling back
(with one warning line) to an offline detector (BlazePose; HOG when MediaPipe's file is
missing) when YOLO's weights are not at hand.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from multiroi.types import Detections
from realtime.boxes import box_area, box_intersection, box_iou, nms_xyxy
from realtime.yolo import YoloDetector, find_yolo_weights

logger = logging.getLogger(__name__)


class Detector(Protocol):
    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections: ...


def _as_detections(boxes_xyxy: Any, scores: Any) -> Detections:
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    return Detections(boxes, np.asarray(scores, np.float32).reshape(-1))


def hog_available() -> bool:
    """Whether this OpenCV build has the HOG people detector (OpenCV 4.x does, 5.x does not)."""
    import cv2

    return hasattr(cv2, "HOGDescriptor")


class HogDetector:
    """OpenCV's HOG + linear SVM people detector on a downscaled copy of the image, then NMS.
    Scores are the SVM margins squashed to [0, 1] with a logistic."""

    def __init__(self, scale: float = 0.5, conf: float = 0.3, nms_iou: float = 0.4) -> None:
        import cv2

        if not hog_available():
            raise RuntimeError(
                f"OpenCV {cv2.__version__} has no HOGDescriptor (moved out of OpenCV 5); "
                "install opencv-python<5 or use --detector yolo|motion"
            )
        if not 0.1 <= scale <= 1.0:
            raise ValueError(f"HOG scale must be in [0.1, 1], got {scale}")
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.scale, self.conf, self.nms_iou = scale, conf, nms_iou

    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections:
        import cv2

        if min(image_bgr.shape[:2]) * self.scale < 128:  # too small (and a 0x0 resize raises)
            return Detections.empty()
        small = cv2.resize(image_bgr, None, fx=self.scale, fy=self.scale)
        rects, weights = self._hog.detectMultiScale(small, winStride=(8, 8), scale=1.05)
        if len(rects) == 0:
            return Detections.empty()
        rects = np.asarray(rects, np.float32).reshape(-1, 4) / self.scale
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        scores = 1.0 / (1.0 + np.exp(-np.asarray(weights, np.float32).reshape(-1)))
        keep = nms_xyxy(boxes, scores, self.nms_iou)
        keep = keep[scores[keep] >= self.conf]
        return _as_detections(boxes[keep], scores[keep])


class MotionDetector:
    """Moving-blob person proposals from MOG2 background subtraction (static camera only):
    foreground blobs taller than wide and larger than ``min_area_frac`` of the image. A crude
    offline fallback that needs no model file; scores are the blob's foreground fill ratio."""

    def __init__(self, scale: float = 0.5, min_area_frac: float = 0.003) -> None:
        import cv2

        self._bg = cv2.createBackgroundSubtractorMOG2(history=300, detectShadows=False)
        self.scale, self.min_area_frac = scale, min_area_frac
        self._size_wh: tuple[int, int] | None = None

    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections:
        import cv2

        h, w = image_bgr.shape[:2]
        if self._size_wh != (w, h):  # a new size restarts the background model
            self._bg = cv2.createBackgroundSubtractorMOG2(history=300, detectShadows=False)
            self._size_wh = (w, h)
        small = cv2.resize(image_bgr, None, fx=self.scale, fy=self.scale)
        mask = self._bg.apply(small)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.dilate(mask, np.ones((7, 7), np.uint8))
        n, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8))
        area_min = self.min_area_frac * small.shape[0] * small.shape[1]
        boxes, scores = [], []
        for x, y, bw, bh, area in stats[1:n]:
            if bw * bh >= area_min and bh >= 0.8 * bw:
                boxes.append(np.array([x, y, x + bw, y + bh], np.float32) / self.scale)
                scores.append(min(1.0, area / float(bw * bh) + 0.3))
        return _as_detections(boxes, scores) if boxes else Detections.empty()


class MediaPipeDetector:
    """MediaPipe's bundled pose detector (one person per image; an optional extra)."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        try:
            import mediapipe as mp
        except ImportError as exc:
            raise RuntimeError(
                "the MediaPipe detector needs the mediapipe package (pip install mediapipe)"
            ) from exc
        self._pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=0,
                                            min_detection_confidence=min_confidence)  # fmt: skip

    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections:
        h, w = image_bgr.shape[:2]
        res = self._pose.process(np.ascontiguousarray(image_bgr[..., ::-1]))
        if res.pose_landmarks is None:
            return Detections.empty()
        pts = np.array([(p.x * w, p.y * h, p.visibility) for p in res.pose_landmarks.landmark])
        vis = pts[pts[:, 2] > 0.3]
        if len(vis) < 3:
            return Detections.empty()
        x1, y1 = vis[:, :2].min(0)
        x2, y2 = vis[:, :2].max(0)
        pad = 0.1 * (y2 - y1)
        box = [x1 - pad, y1 - pad, x2 + pad, y2 + pad]
        return _as_detections([box], [float(vis[:, 2].mean())])


class MergedDetector:
    """``primary``'s detections, then ``secondary``'s that overlap no primary box by more than
    ``iou_thresh`` (IoU) or lie mostly (``contain_thresh`` of their area) inside one."""

    def __init__(self, primary: Detector, secondary: Detector, iou_thresh: float = 0.4,
                 contain_thresh: float = 0.7) -> None:  # fmt: skip
        self.primary, self.secondary = primary, secondary
        self.iou_thresh, self.contain_thresh = iou_thresh, contain_thresh

    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections:
        a = self.primary(image_bgr, frame_index)
        b = self.secondary(image_bgr, frame_index)
        if not len(b):
            return a
        if not len(a):
            return b
        inside = box_intersection(b.boxes_xyxy, a.boxes_xyxy)
        inside /= np.maximum(box_area(b.boxes_xyxy), 1e-9)[:, None]
        iou = box_iou(b.boxes_xyxy, a.boxes_xyxy)
        new = ~((iou > self.iou_thresh) | (inside > self.contain_thresh)).any(1)
        return Detections(np.concatenate([a.boxes_xyxy, b.boxes_xyxy[new]]),
                          np.concatenate([a.scores, b.scores[new]]))  # fmt: skip


class GivenBoxesDetector:
    """Boxes known per frame index (e.g. ground truth): boxes_xyxy f32[T,P,4] px, with NaN
    rows (or rows of ``valid`` False) for absent persons. ``frame_index`` picks the row; without
    it an internal counter is used. Frames past the end give no detections."""

    def __init__(
        self, boxes_xyxy: np.ndarray, valid: np.ndarray | None = None, box_extent: str = "visible"
    ) -> None:
        self.box_extent = box_extent  # what the boxes are: the visible part or whole bodies
        boxes = np.asarray(boxes_xyxy, np.float32)
        if boxes.ndim != 3 or boxes.shape[2] != 4:
            raise ValueError(f"given boxes must be f32[T,P,4], got shape {boxes.shape}")
        ok = np.isfinite(boxes).all(-1)
        ok &= (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
        self.valid = ok if valid is None else ok & np.asarray(valid, bool)
        self.boxes = boxes
        self._counter = 0

    @classmethod
    def from_npz(cls, path: str | os.PathLike, box_extent: str = "visible") -> GivenBoxesDetector:
        """Read the demo clip's ground truth: ``box_xyxy`` (or ``boxes_xyxy``) f32[T,P,4], or
        with ``box_extent`` "amodal" the whole bodies' ``box_amodal``, and an optional
        ``visible``/``valid`` bool[T,P]."""
        names = ("box_amodal",) if box_extent == "amodal" else ("box_xyxy", "boxes_xyxy")
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in names if k in data), None)
            if key is None:
                raise ValueError(f"{path} has no {names[0]} array (keys: {sorted(data.keys())})")
            vkey = next((k for k in ("visible", "valid") if k in data), None)
            return cls(data[key], None if vkey is None else data[vkey], box_extent)

    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections:
        t = self._counter if frame_index is None else int(frame_index)
        self._counter = t + 1
        if not 0 <= t < len(self.boxes):
            return Detections.empty()
        keep = self.valid[t]
        boxes = self.boxes[t][keep]
        return Detections(boxes.copy(), np.full(len(boxes), 0.99, np.float32))


class EveryNDetector:
    """Run ``inner`` on every n-th frame; between, return the newest carried boxes: those set by
    :meth:`carry` (e.g. the boxes of the last mesh projection) or else the last detection.

    Carried boxes come from the inference thread, frames behind the detector: boxes of a frame
    older than the last real detection are ignored, so they never replace a newer detection.
    """

    def __init__(self, inner: Detector, every_n: int) -> None:
        if every_n < 1:
            raise ValueError(f"every_n must be >= 1, got {every_n}")
        self.inner, self.every_n = inner, every_n
        self._last = Detections.empty()
        self._last_index = -1  # frame index the boxes in _last belong to
        self._lock = threading.Lock()
        self._calls = 0

    def carry(self, detections: Detections, frame_index: int | None = None) -> None:
        """Boxes (of frame ``frame_index``; None = newest) to hand out until the next detection
        (and to ``inner`` when it takes carried boxes too)."""
        inner_carry = getattr(self.inner, "carry", None)
        if inner_carry is not None:
            inner_carry(detections, frame_index)
        with self._lock:
            if frame_index is not None and frame_index <= self._last_index:
                return
            self._last = detections
            if frame_index is not None:
                self._last_index = frame_index

    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections:
        run = self._calls % self.every_n == 0
        index = self._calls if frame_index is None else int(frame_index)
        self._calls += 1
        if run:
            dets = self.inner(image_bgr, frame_index)
            with self._lock:
                self._last, self._last_index = dets, index
        with self._lock:
            return self._last


def create_detector(
    cfg: Any, gt_path: str | os.PathLike | None = None, box_extent: str = "visible"
) -> Detector:
    """A detector from a :class:`realtime.config.DetectorConfig` ("auto" = YOLO, else the
    offline fallback with one warning). ``gt_path`` feeds the "given" detector. box_extent: the
    boxes the model was trained on (``ModelConfig.box_extent``): "amodal" asks MediaPipe's pose
    detector and the given boxes for whole bodies; the other detectors find the visible part,
    which :class:`realtime.pose_detector.WholeBodyBoxes` extends to the whole body."""
    det = _create_base_detector(cfg, gt_path, box_extent)
    if box_extent == "amodal" and not getattr(det, "box_extent", None) == "amodal":
        det = _whole_body_boxes(det, cfg)
    from realtime.pose_detector import BlazePoseDetector

    if getattr(cfg, "track_search", False) and isinstance(det, BlazePoseDetector):
        from realtime.guided_detect import TrackGuidedDetector

        det = TrackGuidedDetector(det)  # the live loop carries each frame's persons to it
    return EveryNDetector(det, cfg.every_n) if cfg.every_n > 1 else det


def _whole_body_boxes(det: Detector, cfg: Any) -> Detector:
    """``det`` (visible boxes) turned into whole-body boxes by MediaPipe's pose detector (for a
    model trained on them), or ``det`` with one warning when MediaPipe's file is missing."""
    from multiroi.model.blazepose import BlazePoseWeightsError
    from multiroi.model.tflite_graph import TFLiteGraphError
    from realtime.pose_detector import BlazePoseDetector, WholeBodyBoxes

    try:
        pose = BlazePoseDetector(device=cfg.device, download=False, box_extent="amodal")
    except (BlazePoseWeightsError, TFLiteGraphError) as exc:
        logger.warning("this model was trained on whole-body boxes; %s gives the visible part "
                       "only, so a person cut by the image border gets a squeezed body "
                       "(MediaPipe's pose detector, which estimates whole bodies, is not usable "
                       "here: %s)", type(det).__name__, exc)  # fmt: skip
        return det
    logger.info("whole-body boxes: MediaPipe's pose detector inside each %s box",
                type(det).__name__)  # fmt: skip
    return WholeBodyBoxes(det, pose)


def _create_base_detector(
    cfg: Any, gt_path: str | os.PathLike | None, box_extent: str = "visible"
) -> Detector:
    kind = cfg.kind
    if kind == "given":
        if gt_path is None:
            raise ValueError("--detector given needs known boxes: use it with --source demo")
        return GivenBoxesDetector.from_npz(gt_path, box_extent)
    if kind == "mediapipe":
        return MediaPipeDetector()
    if kind == "motion":
        return MotionDetector(scale=cfg.hog_scale)
    if kind == "hog":
        return _hog_or_motion(cfg)
    if kind == "blazepose":
        from realtime.pose_detector import BlazePoseDetector

        # never fetched on the fly (like YOLO's weights); a missing file: BlazePoseWeightsError,
        # which says how to fetch it (make setup does)
        return BlazePoseDetector(device=cfg.device, download=False, box_extent=box_extent)
    weights = find_yolo_weights(cfg.weights)
    if weights is None:
        fetch = (f"fetch them once with: python -c \"from ultralytics import YOLO; "
                 f"YOLO('{Path(cfg.weights).name}')\", or pass --yolo-weights PATH")  # fmt: skip
        if kind == "yolo":
            msg = f"--detector yolo: the YOLO weights {cfg.weights} are not on this machine"
            raise FileNotFoundError(f"{msg} (never downloaded on the fly); {fetch}")
        detector, name = _offline_detector(cfg, box_extent)
        logger.warning("YOLO weights %s are not on this machine (never downloaded on the fly; "
                       "%s); using %s", cfg.weights, fetch, name)  # fmt: skip
        return detector
    return YoloDetector(weights, conf=cfg.conf, device=cfg.device, imgsz=cfg.imgsz)


def _offline_detector(cfg: Any, box_extent: str = "visible") -> tuple[Detector, str]:
    """The best detector that needs no download now: MediaPipe's pose detector, else HOG (or
    motion); and a description for the log. HOG merged with the pose detector found no person
    it had missed on held-out renders (docs/benchmarks.md), so it is not merged in."""
    from multiroi.model.blazepose import BlazePoseWeightsError
    from multiroi.model.tflite_graph import TFLiteGraphError
    from realtime.pose_detector import BlazePoseDetector

    try:
        blazepose = BlazePoseDetector(device=cfg.device, path=None, download=False,
                                      box_extent=box_extent)  # fmt: skip
    except (BlazePoseWeightsError, TFLiteGraphError) as exc:
        fallback = _hog_or_motion(cfg)
        if isinstance(fallback, HogDetector):
            name = "OpenCV's HOG people detector, which finds whole standing people only"
        else:
            name = "the motion (background) detector, which needs a static camera"
        return fallback, f"{name} (MediaPipe's pose detector is not usable here: {exc})"
    return blazepose, "MediaPipe's pose detector (offline; finds people from the waist up)"


def _hog_or_motion(cfg: Any) -> Detector:
    if hog_available():
        return HogDetector(scale=cfg.hog_scale, conf=cfg.conf)
    logger.warning("this OpenCV has no HOG people detector; using the motion (background) "
                   "detector, which needs a static camera")  # fmt: skip
    return MotionDetector(scale=cfg.hog_scale)
