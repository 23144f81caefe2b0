"""Dataclasses that cross the seams of the system.

Conventions: pixels for image quantities, metres for 3D quantities, camera axes x right,
y down, z forward (OpenCV). ``P``/``M`` = persons, ``R`` = RoIs per person.
Arrays are numpy unless a field says torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Frame:
    """One captured image.

    index: running frame number from the source (0-based).
    t_capture_s: time.perf_counter() seconds when the frame was grabbed.
    image_bgr: uint8 [H,W,3], BGR (OpenCV order).
    """

    index: int
    t_capture_s: float
    image_bgr: np.ndarray
    source_name: str = ""

    @property
    def size_wh(self) -> tuple[int, int]:
        return int(self.image_bgr.shape[1]), int(self.image_bgr.shape[0])


@dataclass
class Detections:
    """Person detections in one image: boxes_xyxy f32[N,4] px, scores f32[N] in [0,1]."""

    boxes_xyxy: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return int(self.boxes_xyxy.shape[0])


@dataclass
class Tracks:
    """Tracked persons: track_ids i64[M] (stable across frames), boxes_xyxy f32[M,4] px,
    scores f32[M]; and the tracks lost in the last frames that the tracker still looks for,
    lost_ids i64[L] with their boxes predicted for this frame, lost_boxes f32[L,4] px (the live
    loop shows the ones hidden behind a nearer person, ``realtime.occlusion``)."""

    track_ids: np.ndarray
    boxes_xyxy: np.ndarray
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    lost_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    lost_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))

    @staticmethod
    def empty() -> Tracks:
        return Tracks(np.zeros((0,), np.int64), np.zeros((0, 4), np.float32))

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])


@dataclass
class RoiBatch:
    """The R RoIs of M persons, ready for the network.

    crops: f32[M,R,3,256,192], RGB, ImageNet-normalised.
    box_info: f32[M,R,3], CLIFF box information (method.md section 1.4).
    centers: f32[M,R,2] px, RoI window centres in the full image.
    sizes: f32[M,R] px, RoI window heights b_k (width is 0.75 b_k).
    focal_px: focal length used for box_info.
    image_wh: (W, H) of the full image.
    """

    crops: np.ndarray
    box_info: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    focal_px: float
    image_wh: tuple[int, int]

    def __len__(self) -> int:
        return int(self.crops.shape[0])


@dataclass
class HmrOutput:
    """Network output for M persons, the same for every backend (numpy f32).

    rotmat: [M,24,3,3] SMPL joint rotations (parent-relative; joint 0 = global orientation
      in the camera frame).
    betas: [M,10] shape coefficients.
    cam_local: [M,R,3] weak-perspective camera (s, tx, ty) per RoI.
    joints_2d: [M,24,2] the lifter's 2D joints in the base RoI's crop (box heights from the
      crop centre), or None (a network without a lifter, or an export made before them); the
      pipeline fits each body's turn and distance to them (multiroi.geometry.fit2d).
    """

    rotmat: np.ndarray
    betas: np.ndarray
    cam_local: np.ndarray
    joints_2d: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.rotmat.shape[0])


@dataclass
class PersonState:
    """One person in one frame, placed in the full camera.

    track_id: stable id; box_xyxy f32[4] px; rotmat f32[24,3,3]; betas f32[10];
    transl_m f32[3]: full-camera translation T of the body model's origin (metres, camera frame);
    vertices_m: f32[V,3] in the camera frame (metres) or None when not computed.
    joints_m: f32[24,3] in the camera frame (metres) or None.
    held: pose, shape and depth are an earlier frame's, held while a nearer person covers or
    hides this one (``realtime.occlusion``): the place is this frame's, the pose is not.
    """

    track_id: int
    box_xyxy: np.ndarray
    rotmat: np.ndarray
    betas: np.ndarray
    transl_m: np.ndarray
    vertices_m: np.ndarray | None = None
    joints_m: np.ndarray | None = None
    held: bool = False
