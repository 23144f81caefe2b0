"""MediaPipe's BlazePose person detector converted to PyTorch (and run in onnxruntime on a CPU):
an offline detector that finds people seen from the waist up (a webcam's user), which OpenCV's
HOG detector cannot.

MediaPipe's wheel (PyPI, Apache-2.0; fetched by ``make setup`` for the BlazePose backbone)
carries ``pose_detection.tflite``, the first stage of MediaPipe Pose: an SSD on a 224 x 224
letterboxed image that detects a person by the face and regresses four body keypoints (mid-hip
centre, a point whose distance from it gives the full body's extent, mid-shoulder centre, the
same for the upper body) over 2254 anchors. :mod:`multiroi.model.tflite_graph` converts it
(its outputs equal TensorFlow Lite's, tests/test_pose_detector.py); the decoding follows
MediaPipe's pose detection graph: fixed-size SSD anchors (strides 8, 16, 32, 32, 32), sigmoid
scores above ``min_score``, weighted non-maximum suppression at IoU 0.3.

The person box: the body keypoints give the body's axis (hip centre -> head) and its half
length ``r``; the body spans ``BODY_UP * r`` towards the head, ``BODY_DOWN * r`` towards the
feet and ``BODY_SIDE * r`` to each side of the axis, united with the face box and clipped to
the image (set on the real photos of tests/test_pose_detector.py; on held-out renders the
best-fitting factors match the true boxes better by 0.01 IoU only). A person cut by the image
border gets the box of what is in the image, for networks trained on such boxes; for those
trained on whole-body boxes (``ModelConfig.box_extent`` "amodal") the box is not clipped.

The network finds the most prominent person of an image; the others score near zero. So it
runs again on the image with the faces found blacked out, until a pass finds nobody
(``max_passes``). ``BlazePoseDetector()(image_bgr) -> Detections``; on one core of a 2-core
CPU a pass takes 15 ms in onnxruntime (the default there), 28 ms in torch (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from multiroi.types import Detections
from realtime.boxes import box_iou, nms_xyxy

logger = logging.getLogger(__name__)

INPUT_SIZE = 224
NUM_ANCHORS = 2254
# the classifier and regressor convolutions of the three heads (strides 8, 16, 32), in the order
# of the model's own concatenation
_P = "model_1/model/"
HEAD_TENSORS = [
    f"{_P}classifier_person_8_NO_PRUNING/BiasAdd;{_P}classifier_person_16_NO_PRUNING/Conv2D;"
    f"{_P}classifier_person_8_NO_PRUNING/Conv2D;"
    f"{_P}classifier_person_8_NO_PRUNING/BiasAdd/ReadVariableOp/resource1",
    f"{_P}classifier_person_16_NO_PRUNING/BiasAdd;{_P}classifier_person_16_NO_PRUNING/Conv2D;"
    f"{_P}classifier_person_16_NO_PRUNING/BiasAdd/ReadVariableOp/resource1",
    f"{_P}classifier_person_32_NO_PRUNING/BiasAdd;{_P}classifier_person_32_NO_PRUNING/Conv2D;"
    f"{_P}classifier_person_32_NO_PRUNING/BiasAdd/ReadVariableOp/resource1",
    f"{_P}regressor_person_8_NO_PRUNING/BiasAdd;{_P}regressor_person_16_NO_PRUNING/Conv2D;"
    f"{_P}regressor_person_8_NO_PRUNING/Conv2D;"
    f"{_P}regressor_person_8_NO_PRUNING/BiasAdd/ReadVariableOp/resource1",
    f"{_P}regressor_person_16_NO_PRUNING/BiasAdd;{_P}regressor_person_16_NO_PRUNING/Conv2D;"
    f"{_P}regressor_person_16_NO_PRUNING/BiasAdd/ReadVariableOp/resource1",
    f"{_P}regressor_person_32_NO_PRUNING/BiasAdd;{_P}regressor_person_32_NO_PRUNING/Conv2D1",
]
# the body around its keypoints, in units of r = |full-body point - hip centre|
BODY_UP = 1.0
BODY_DOWN = 1.0
BODY_SIDE = 0.35
PERSON_NMS_IOU = 0.6  # person boxes overlapping more are one person found in two passes
MAX_PASSES = 3  # at most this many persons per frame (one per pass); the live loop's


def find_pose_detection_tflite(download: bool = True) -> Path:
    """The path of MediaPipe's ``pose_detection.tflite`` ($MULTIROI_POSE_DETECTOR_TFLITE, an
    installed mediapipe, or the project's cache of MediaPipe's wheel; see
    :func:`multiroi.model.blazepose.find_mediapipe_tflite`)."""
    from multiroi.model.blazepose import (
        POSE_DETECTION_ENV_VAR,
        POSE_DETECTION_MEMBER,
        find_mediapipe_tflite,
    )

    return find_mediapipe_tflite(POSE_DETECTION_MEMBER, POSE_DETECTION_ENV_VAR, download)


def ssd_anchors() -> np.ndarray:
    """The detector's anchor centres f32[2254, 2] in [0, 1] (MediaPipe's SsdAnchorsCalculator
    with fixed anchor size: 2 anchors per cell at strides 8 and 16, 6 at stride 32)."""
    out = []
    for stride, per_cell in ((8, 2), (16, 2), (32, 6)):
        n = INPUT_SIZE // stride
        ys, xs = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(cells, per_cell, axis=0))
    anchors = np.concatenate(out).astype(np.float32)
    assert len(anchors) == NUM_ANCHORS
    return anchors


def letterbox(image_bgr: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """The image resized into a black 224 x 224 square, aspect kept and centred, as RGB in
    [-1, 1] f32[224, 224, 3], with (scale, left, top): input px = (image px * scale) + offset."""
    h, w = image_bgr.shape[:2]
    scale = INPUT_SIZE / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_AREA)
    left, top = (INPUT_SIZE - nw) // 2, (INPUT_SIZE - nh) // 2
    canvas = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    canvas[top : top + nh, left : left + nw] = small
    x = canvas[..., ::-1].astype(np.float32) / 127.5 - 1.0
    return x, scale, float(left), float(top)


def decode(
    scores_logit: np.ndarray, raw: np.ndarray, anchors: np.ndarray, min_score: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The anchors whose score passes ``min_score``: scores f32[K], face boxes f32[K,4] (x1, y1,
    x2, y2) and keypoints f32[K,4,2], in the 224 x 224 input's pixels."""
    logits = np.clip(scores_logit.reshape(-1).astype(np.float64), -100.0, 100.0)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= min_score)
    raw, a = raw[keep].astype(np.float32), anchors[keep] * INPUT_SIZE
    centre = raw[:, :2] + a
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], 1)
    keypoints = raw[:, 4:12].reshape(-1, 4, 2) + a[:, None]
    return scores[keep].astype(np.float32), boxes, keypoints


def weighted_nms(
    scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray, iou_thresh: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression: the best remaining detection takes every
    other one overlapping it by more than ``iou_thresh`` and becomes their score-weighted mean
    (boxes and keypoints); its score stays the best one's."""
    remaining = np.argsort(-scores)
    out_s, out_b, out_k = [], [], []
    while remaining.size:
        best = remaining[0]
        near = box_iou(boxes[best : best + 1], boxes[remaining])[0] > iou_thresh
        near[0] = True  # the best one is in its own group, even with a zero-area box
        group = remaining[near]
        wts = scores[group][:, None]
        out_s.append(scores[best])
        out_b.append((boxes[group] * wts).sum(0) / wts.sum())
        out_k.append((keypoints[group] * wts[:, :, None]).sum(0) / wts.sum())
        remaining = remaining[~near]
    if not out_s:
        return (np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
                np.zeros((0, 4, 2), np.float32))  # fmt: skip
    return (np.array(out_s, np.float32), np.array(out_b, np.float32),
            np.array(out_k, np.float32))  # fmt: skip


MASK_GROW = 1.4  # a found face is blacked out this much larger, and as far again below


def _mask_faces(image: np.ndarray, face_boxes: np.ndarray, grow: float = MASK_GROW) -> np.ndarray:
    """``image`` (modified in place) with each face box, ``grow`` times larger and extended
    down by its height (the neck), set to black."""
    h, w = image.shape[:2]
    for b in face_boxes:
        c, half = (b[:2] + b[2:]) / 2, (b[2:] - b[:2]) * grow / 2
        lo = np.clip(np.floor(c - half), 0, [w, h]).astype(int)
        hi = np.clip(np.ceil(c + half + [0, b[3] - b[1]]), 0, [w, h]).astype(int)
        if (hi > lo).all():  # a box outside the image masks nothing
            image[lo[1] : hi[1], lo[0] : hi[0]] = 0
    return image


def person_boxes(
    face_boxes: np.ndarray, keypoints: np.ndarray, image_wh: tuple[int, int],
    up: float = BODY_UP, down: float = BODY_DOWN, side: float = BODY_SIDE, clip: bool = True,
) -> np.ndarray:  # fmt: skip
    """Boxes f32[K,4] of the persons from the face boxes f32[K,4] and body keypoints f32[K,4,2]
    (image px): the body's rectangle along its axis (see the module doc), united with the face
    box; clipped to the image (the visible part), or not (``clip`` False: the whole body, parts
    outside the image included)."""
    hip, top = keypoints[:, 0], keypoints[:, 1]
    axis = top - hip
    r = np.linalg.norm(axis, axis=1, keepdims=True)
    u = axis / np.maximum(r, 1e-6)  # towards the head
    v = np.stack([-u[:, 1], u[:, 0]], 1)
    corners = np.stack([hip + r * (su * u + sv * side * v)
                        for su in (up, -down) for sv in (-1.0, 1.0)], 1)  # fmt: skip
    lo = np.minimum(corners.min(1), face_boxes[:, :2])
    hi = np.maximum(corners.max(1), face_boxes[:, 2:])
    w, h = image_wh
    box = np.concatenate([lo, hi], 1)
    if clip:
        box[:, [0, 2]] = box[:, [0, 2]].clip(0, w)
        box[:, [1, 3]] = box[:, [1, 3]].clip(0, h)
    return box.astype(np.float32)


class BlazePoseDetector:
    """MediaPipe's pose detector as a :class:`realtime.detect.Detector` (see the module doc).

    path: a ``pose_detection.tflite`` (default: :func:`find_pose_detection_tflite`, which may
    fetch MediaPipe's wheel once); min_score: the detection threshold (MediaPipe's 0.5);
    nms_iou: the suppression overlap; min_box_px: smaller persons are dropped; max_passes: at
    most this many persons are found (one per pass, see :meth:`detect`); download: whether a
    missing file may be fetched (MediaPipe's wheel from the package registry); runtime:
    "onnxruntime" (exported at start; 1.8x torch's speed on a CPU core), "torch", or "auto"
    (onnxruntime on the CPU when installed, else torch); threads: onnxruntime's CPU threads
    (the live loop's detector shares a core with the other stages); box_extent: "visible"
    (boxes clipped to the image) or "amodal" (the whole body's box, for models trained on it,
    ``ModelConfig.box_extent``)."""

    def __init__(
        self, path: str | Path | None = None, min_score: float = 0.5, nms_iou: float = 0.3,
        min_box_px: float = 16.0, max_passes: int = MAX_PASSES, device: str = "cpu",
        download: bool = True, runtime: str = "auto", threads: int = 1,
        box_extent: str = "visible",
    ) -> None:  # fmt: skip
        from multiroi.model.tflite_graph import GraphNet, read_tflite

        if box_extent not in ("visible", "amodal"):
            raise ValueError(f"box_extent must be visible or amodal, got {box_extent!r}")
        self.box_extent = box_extent
        path = Path(path) if path is not None else find_pose_detection_tflite(download)
        spec, weights = read_tflite(path, HEAD_TENSORS)
        self.net = GraphNet(spec).eval().to(device)
        self.net.load_tflite_weights(weights)
        self.device = device
        self.anchors = ssd_anchors()
        self.min_score, self.nms_iou, self.min_box_px = min_score, nms_iou, min_box_px
        self.max_passes = max(1, int(max_passes))
        if runtime not in ("auto", "torch", "onnxruntime"):
            raise ValueError(f"runtime must be auto, torch or onnxruntime, got {runtime!r}")
        self._session = None
        if runtime == "onnxruntime" or (runtime == "auto" and device == "cpu"):
            self._session = self._onnx_session(threads, required=runtime == "onnxruntime")
        self.runtime = "onnxruntime" if self._session is not None else "torch"
        logger.info("person detector: MediaPipe's pose detector from %s (%s)", path, self.runtime)

    def _onnx_session(self, threads: int, required: bool) -> object | None:
        """The heads exported to ONNX (in memory) in an onnxruntime CPU session; None
        (torch runs it) when onnxruntime is missing or the export fails, unless ``required``."""
        import io
        import warnings

        try:
            import onnxruntime as ort

            buf = io.BytesIO()  # in memory: no file is left behind
            dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, device=self.device)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings
                torch.onnx.export(self.net, (dummy,), buf, input_names=["image"],
                                  dynamic_axes={"image": {0: "n"}}, opset_version=17,
                                  dynamo=False)  # fmt: skip
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, int(threads))
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            return ort.InferenceSession(buf.getvalue(), opts,
                                        providers=["CPUExecutionProvider"])  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - any failure: torch runs it instead
            if required:
                raise RuntimeError(f"the pose detector cannot run in onnxruntime: {exc}") from exc
            logger.debug("pose detector stays in torch (onnxruntime: %s)", exc)
            return None

    @torch.no_grad()
    def raw(self, x_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network on letterboxed inputs f32[N,224,224,3]: score logits f32[N,2254] and
        regressions f32[N,2254,12] (the .tflite's two outputs)."""
        x = torch.from_numpy(np.ascontiguousarray(x_nhwc)).permute(0, 3, 1, 2)
        if self._session is not None:
            feed = {"image": np.ascontiguousarray(x.numpy())}
            heads = [torch.from_numpy(h) for h in self._session.run(None, feed)]
        else:
            heads = self.net(x.to(self.device))
        n = x.shape[0]

        def flat(t: torch.Tensor, k: int) -> torch.Tensor:  # NCHW -> [N, H*W*A, k] as NHWC
            return t.permute(0, 2, 3, 1).reshape(n, -1, k)

        cls = torch.cat([flat(t, 1) for t in heads[:3]], 1)[..., 0]
        reg = torch.cat([flat(t, 12) for t in heads[3:]], 1)
        return cls.float().cpu().numpy(), reg.float().cpu().numpy()

    def detect(
        self, image_bgr: np.ndarray, max_passes: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(scores f32[K], face boxes f32[K,4], body keypoints f32[K,4,2]) in image pixels.

        The network finds the most prominent person of an image (others score near zero), so
        it runs up to ``max_passes`` times, each pass on the image with the faces found so far
        blacked out, until a pass finds nobody. The mask is drawn on the full-size image and
        letterboxed again each pass: masking the 224 x 224 input instead saves 2.5 of 38 ms
        but loses Zidane in zidane.jpg (score 0.51) and 1 in 112 close-ups."""
        image = image_bgr
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for _ in range(self.max_passes if max_passes is None else max(1, int(max_passes))):
            x, scale, left, top = letterbox(image)
            cls, reg = self.raw(x[None])
            scores, boxes, kps = decode(cls[0], reg[0], self.anchors, self.min_score)
            scores, boxes, kps = weighted_nms(scores, boxes, kps, self.nms_iou)
            if not len(scores):
                break
            offset = np.array([left, top], np.float32)
            boxes = ((boxes.reshape(-1, 2, 2) - offset) / scale).reshape(-1, 4)
            found.append((scores, boxes, (kps - offset) / scale))
            image = _mask_faces(image if image is not image_bgr else image.copy(), boxes)
        if not found:
            return (np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
                    np.zeros((0, 4, 2), np.float32))  # fmt: skip
        scores, boxes, kps = (np.concatenate(parts) for parts in zip(*found, strict=True))
        return scores, boxes, kps

    def around(
        self, image_bgr: np.ndarray, box: np.ndarray, grow: float, max_passes: int = 1,
        min_px: int = 2,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """The persons found in the square around ``box`` f32[4] (``grow`` times its longer
        side, cut to the image; nobody when under ``min_px`` a side), in image px: (scores
        f32[K], visible boxes f32[K,4] clipped to the image, whole-body boxes f32[K,4])."""
        h, w = image_bgr.shape[:2]
        box = np.asarray(box, np.float32)
        centre = (box[:2] + box[2:]) / 2
        half = grow * float(max(box[2] - box[0], box[3] - box[1])) / 2
        lo = np.clip(np.floor(centre - half), 0, [w, h]).astype(int)
        hi = np.clip(np.ceil(centre + half), 0, [w, h]).astype(int)
        none = np.zeros((0, 4), np.float32)
        if (hi - lo < max(min_px, 2)).any():
            return np.zeros(0, np.float32), none, none
        window = image_bgr[lo[1] : hi[1], lo[0] : hi[0]]
        scores, faces, kps = self.detect(window, max_passes=max_passes)
        if not len(scores):
            return scores, none, none
        offset = lo.astype(np.float32)
        faces = (faces.reshape(-1, 2, 2) + offset).reshape(-1, 4)
        seen = person_boxes(faces, kps + offset, (w, h), clip=True)
        whole = person_boxes(faces, kps + offset, (w, h), clip=False)
        return scores, seen, whole

    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections:
        h, w = image_bgr.shape[:2]
        scores, faces, kps = self.detect(image_bgr)
        if not len(scores):
            return Detections.empty()
        boxes = person_boxes(faces, kps, (w, h), clip=self.box_extent == "visible")
        ok = np.flatnonzero((boxes[:, 3] - boxes[:, 1] >= self.min_box_px)
                            & (boxes[:, 2] > boxes[:, 0]))  # fmt: skip
        keep = ok[nms_xyxy(boxes[ok], scores[ok], PERSON_NMS_IOU)]  # a person found twice
        return Detections(boxes[keep], scores[keep])


WINDOW_GROW = 1.6  # the square searched around a visible box, this many times its longer side
MATCH_IOU = 0.3  # a whole-body box, clipped to the image, must overlap the visible box this much


class WholeBodyBoxes:
    """Whole-body boxes for a detector that finds the visible part (YOLO, HOG), for models
    trained on whole-body boxes (``ModelConfig.box_extent`` "amodal"): for each box of
    ``inner``, MediaPipe's pose detector (``pose``, a :class:`BlazePoseDetector`) runs once on
    the square around it (``WINDOW_GROW`` times the box's longer side) and its body keypoints
    give the whole body's box, unclipped; a box it finds nobody in, or nobody overlapping it
    (IoU of the clipped box > ``MATCH_IOU``), stays as it is. One pass of 15 ms per person on a
    CPU core. ``WholeBodyBoxes(inner, pose)(image_bgr, frame_index) -> Detections``."""

    box_extent = "amodal"

    def __init__(self, inner, pose: BlazePoseDetector) -> None:
        self.inner, self.pose = inner, pose

    def __call__(self, image_bgr: np.ndarray, frame_index: int | None = None) -> Detections:
        dets = self.inner(image_bgr, frame_index)
        if not len(dets):
            return dets
        h, w = image_bgr.shape[:2]
        boxes = np.array(dets.boxes_xyxy, np.float32, copy=True)
        for i, box in enumerate(dets.boxes_xyxy):
            whole = self.whole_body(image_bgr, box)
            if whole is not None:
                boxes[i] = whole
        return Detections(boxes, dets.scores)

    def whole_body(self, image_bgr: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The whole-body box f32[4] of the person in the visible ``box``, or None."""
        scores, seen, whole = self.pose.around(image_bgr, box, WINDOW_GROW)
        if not len(scores):
            return None
        iou = box_iou(np.asarray(box, np.float32)[None], seen)[0]
        best = int(np.argmax(iou))
        return whole[best] if iou[best] > MATCH_IOU else None
