"""Typed configuration of the live loop: one dataclass per component, one for the whole pipeline.

Every field has a default that works on a machine with no camera and no GPU; the CLI
(``run_camera.py``) overrides them through :func:`config_from_args`.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from typing import Any

DETECTOR_KINDS = ("auto", "yolo", "blazepose", "hog", "motion", "mediapipe", "given")
TRACKER_KINDS = ("bytetrack", "botsort")
EXPORT_KINDS = ("glb", "bvh")
RENDER_MODES = ("auto", "open3d", "overlay", "headless", "none")


@dataclass
class SourceConfig:
    """Where frames come from.

    source: camera index ("0"), a video file, an RTSP/HTTP URL, an image, a folder of images,
      or "demo" (the bundled clip with ground truth).
    width, height, fps: what to ask a camera for (the driver may give something else).
    realtime: pace files at their native FPS and drop frames when behind (like a live source).
    reconnect_timeout_s: how long a live source keeps trying to reconnect after a drop.
    """

    source: str = "demo"
    width: int = 640
    height: int = 480
    fps: float = 30.0
    realtime: bool = False
    reconnect_timeout_s: float = 10.0


@dataclass
class DetectorConfig:
    """Person detection. kind "auto" = YOLO when its weights are at hand, else the offline
    detector: MediaPipe's pose detector ("blazepose", finds people from the waist up), or
    OpenCV's HOG people detector when MediaPipe's file is missing. every_n:
    run the detector on every n-th frame, carry boxes forward between. track_search: the pose
    detector also looks again around where each placed person was
    (``realtime.guided_detect``)."""

    kind: str = "auto"
    weights: str = "yolo11n.pt"
    conf: float = 0.3
    every_n: int = 1
    device: str = "cpu"
    hog_scale: float = 0.5
    imgsz: int = 640
    track_search: bool = True

    def __post_init__(self) -> None:
        if self.kind not in DETECTOR_KINDS:
            raise ValueError(f"detector kind must be one of {DETECTOR_KINDS}, got {self.kind!r}")
        if self.every_n < 1:
            raise ValueError(f"detect every_n must be >= 1, got {self.every_n}")


@dataclass
class TrackerConfig:
    """Tracking with ultralytics' trackers; at most max_persons tracks are kept per frame.
    reid: a person who comes back after the tracker gave up on them gets their old id, if the
    colours of their clothes match (``realtime.reid``), within reid_memory_frames."""

    kind: str = "bytetrack"
    max_persons: int = 8
    overrides: dict[str, Any] = field(default_factory=dict)
    reid: bool = True
    reid_memory_frames: int = 600

    def __post_init__(self) -> None:
        if self.kind not in TRACKER_KINDS:
            raise ValueError(f"tracker kind must be one of {TRACKER_KINDS}, got {self.kind!r}")
        if self.max_persons < 1:
            raise ValueError(f"max_persons must be >= 1, got {self.max_persons}")
        if self.reid_memory_frames < 1:
            raise ValueError(f"reid_memory_frames must be >= 1, got {self.reid_memory_frames}")


@dataclass
class CameraConfig:
    """Intrinsics: a calibration file, a horizontal FOV in degrees, a focal length in px, or the
    default (f = sqrt(W^2 + H^2)). undistort: remove lens distortion (needs a calibration)."""

    calib: str | None = None
    fov_deg: float | None = None
    focal_px: float | None = None
    undistort: bool = False

    def __post_init__(self) -> None:
        given = [n for n in ("calib", "fov_deg", "focal_px") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of --calib, --fov, --focal (got {given})")
        if self.undistort and self.calib is None:
            raise ValueError("--undistort needs --calib FILE (the distortion comes from it)")


PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class InferenceConfig:
    """The network and body model. backend: a registered name or "auto" (from the checkpoint
    suffix). smooth: One-Euro strength (0 = none, 1 = default, larger = smoother).
    threads: CPU threads of the network and body model (0 = auto: all cores but one, so
    capture, tracking and rendering keep a core; see :func:`cpu_threads`).
    precision: "auto" (torch: fp16 on CUDA, bf16 on a CPU with AMX / AVX512-BF16, else fp32),
    "fp32", "fp16" (CUDA) or "bf16" (CPU). With backend "auto" and a PyTorch checkpoint on a
    CPU without fast bf16, the network runs in onnxruntime (exported at start; on 2 cores
    3.6-6.0x faster than torch fp32 for the network, docs/benchmarks.md).
    flip_test: the lifter also reads each person's mirrored base crop (``ModelConfig.flip_test``;
    one more backbone call per person); None: as the checkpoint says. lifter_ik: the weight of
    the lifter's joints in the pose (``ModelConfig.lifter_ik``; 0: off; None: as the checkpoint
    says). lifter_turn: the weight of the turn lifter's torso in the body's turn
    (``ModelConfig.lifter_turn``). All three for PyTorch checkpoints only (an export keeps the
    settings it was exported with). hold_occluded: a track whose box is
    covered by at least this share by a nearer person's box keeps its last reliable pose,
    shape and depth (``realtime.occlusion``; 0 = off). coast_occluded: with the hold, a person
    the tracker lost while behind a nearer person is shown at their predicted box, held, for as
    long as the hold lasts. fit_2d: each body's global orientation and distance fitted to the
    network's 2D joints (``multiroi.geometry.fit2d``; networks with a lifter, and exports
    made with their 2D joints)."""

    backend: str = "auto"
    checkpoint: str | None = None
    num_rois: int | None = None  # None: the checkpoint's (5 for a network without one)
    device: str = "cpu"
    backbone: str | None = None
    body_model: str | None = None
    smooth: float = 1.0
    min_box_px: float = 16.0
    threads: int = 0
    precision: str = "auto"
    flip_test: bool | None = None
    lifter_ik: float | None = None
    lifter_turn: float | None = None
    hold_occluded: float = 0.5
    coast_occluded: bool = True
    fit_2d: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.hold_occluded <= 1:
            raise ValueError(f"--hold-occluded must be a share of the box in [0, 1] (0 = off), "
                             f"got {self.hold_occluded}")  # fmt: skip
        if self.lifter_turn is not None and not 0 <= self.lifter_turn <= 1:
            raise ValueError(f"--lifter-turn must be a weight in [0, 1] (0 = off), got "
                             f"{self.lifter_turn}")  # fmt: skip
        if self.lifter_ik is not None and not 0 <= self.lifter_ik <= 1:
            raise ValueError(f"--lifter-ik must be a weight in [0, 1] (0 = off), got "
                             f"{self.lifter_ik}")  # fmt: skip
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0 = auto), got {self.threads}")
        if self.num_rois is not None and not 1 <= self.num_rois <= 5:
            raise ValueError(f"--rois must be in 1..5, got {self.num_rois}")
        if self.smooth < 0:
            raise ValueError(f"smoothing strength must be >= 0, got {self.smooth}")


@dataclass
class OutputConfig:
    """render: "auto" (Open3D window, or headless when --headless), "open3d", "overlay",
    "headless" (MP4 into out_dir) or "none". record: write DIR/<name>.npz when out_dir is set.
    stream: ``udp://HOST:PORT`` to send each frame's persons to as JSON (``realtime.stream``).
    export: at the end, turn the recording into these (``"glb"``: ``realtime.gltf``, ``"bvh"``:
    ``realtime.bvh``, both on the floor found under the feet) next to it."""

    render: str = "auto"
    headless: bool = False
    out_dir: str | None = None
    record: bool = True
    stream: str | None = None
    export: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.render not in RENDER_MODES:
            raise ValueError(f"render mode must be one of {RENDER_MODES}, got {self.render!r}")
        if self.headless and self.out_dir is None:
            raise ValueError("--headless needs --out DIR (where the MP4 and the npz go)")
        if self.stream is not None:
            from realtime.stream import parse_target

            parse_target(self.stream)  # a clear error now, not at the first frame
        self.export = tuple(self.export)
        unknown = sorted(set(self.export) - set(EXPORT_KINDS))
        if unknown:
            raise ValueError(f"--export takes {' / '.join(EXPORT_KINDS)}, got {unknown}")
        if self.export and not (self.out_dir and self.record):
            raise ValueError("--export needs --out DIR (it turns the recording written there "
                             "into the files)")  # fmt: skip

    @property
    def render_mode(self) -> str:
        if self.render != "auto":
            return self.render
        return "headless" if self.headless else "open3d"


@dataclass
class PipelineConfig:
    """The whole live loop. queue_size: capacity of each inter-stage queue (live sources drop
    the oldest item when full; files block). max_frames: stop after this many frames (None =
    until the input ends). log_every_s: period of the live stats log line."""

    source: SourceConfig = field(default_factory=SourceConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    max_frames: int | None = None
    queue_size: int = 2
    log_every_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max-frames must be at least 1 (leave it out to run to the end), "
                             f"got {self.max_frames}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_arg_parser() -> argparse.ArgumentParser:
    """The CLI of ``run_camera.py`` (see the README for examples)."""
    p = argparse.ArgumentParser(description="Live multi-person 3D human meshes (Multi-RoI HMR).")
    a = p.add_argument
    a("--source", default="demo", help="camera INDEX, video FILE, URL, image DIR, 'demo', "
      "'demo:return' (the walker leaves and comes back) or 'demo:cross' (two walkers cross)")
    a("--checkpoint", default=None, help="model: a checkpoint (.pt) or an export (.onnx, "
      ".engine/.plan, .ts); default: the shipped default model")  # fmt: skip
    a("--backend", default="auto", help="torch | onnxruntime | tensorrt | ... (default auto: "
      "from the checkpoint's suffix, and for a .pt the fastest runtime on this machine)")
    a("--device", default="cpu", help="cpu or cuda[:N]")
    a("--flip-test", choices=("on", "off"), default=None,
      help="the lifter also reads the mirrored base crop: a little more accurate, one more "
      "backbone call per person (default: as the checkpoint says)")  # fmt: skip
    a("--lifter-ik", type=float, default=None, metavar="W",
      help="weight of the keypoint lifter's 3D joints in the pose, 0-1: the mesh decoder's pose "
      "is swung towards them (0: off; default: as the checkpoint says)")  # fmt: skip
    a("--lifter-turn", type=float, default=None, metavar="B",
      help="weight of the turn lifter's torso in each body's turn, 0-1 (0: off; default: as "
      "the checkpoint says)")  # fmt: skip
    a(
        "--rois",
        type=int,
        default=None,
        help="RoIs per person (1..5) of a network without checkpoint; else the checkpoint's",
    )
    cam = p.add_mutually_exclusive_group()
    cam.add_argument("--calib", default=None,
                     help="calibration YAML (from python -m calibration)")
    cam.add_argument("--fov", type=float, default=None, help="horizontal field of view, degrees")
    cam.add_argument("--focal", type=float, default=None,
                     help="focal length in pixels of the frames as delivered (scaled with "
                          "the width if their size changes)")  # fmt: skip
    a("--undistort", action="store_true", help="remove lens distortion (needs --calib)")
    a("--headless", action="store_true", help="no window: write DIR/*.mp4 and DIR/*.npz")
    a("--out", default=None, help="output folder (video and recording)")
    a("--export", nargs="+", default=(), choices=EXPORT_KINDS, metavar="glb|bvh",
      help="at the end, also write the recording as a glTF take (DIR/<name>.glb, for Unity, "
           "Unreal, Blender, three.js) and/or one BVH per track (needs --out)")
    a("--stream", default=None, metavar="udp://HOST:PORT",
      help="send each frame's persons there as JSON (realtime.stream)")
    a("--render", default="auto", choices=RENDER_MODES, help="renderer")
    a("--max-frames", type=int, default=None, help="stop after N frames")
    a("--detector", default=None, choices=DETECTOR_KINDS, help="person detector")
    a("--yolo-weights", default="yolo11n.pt", help="YOLO weights file")
    a("--detect-every", type=int, default=1, help="run the detector every N frames")
    a("--no-track-search", action="store_true",
      help="the pose detector does not look again around where each person was")  # fmt: skip
    a("--tracker", default="bytetrack", choices=TRACKER_KINDS)
    a("--no-reid", action="store_true",
      help="a person who comes back after the tracker gave up on them (30 processed frames) "
           "gets a new id (by default their old one, when the colours of their clothes match)")
    sm = p.add_mutually_exclusive_group()
    sm.add_argument("--smooth", type=float, default=1.0, help="One-Euro strength (1 = default)")
    sm.add_argument("--no-smooth", action="store_true", help="no temporal smoothing")
    a("--hold-occluded", type=float, default=0.5, metavar="SHARE",
      help="keep a person's last reliable pose and depth while this share of their box is "
           "covered by a nearer person (0 = off; default 0.5)")  # fmt: skip
    a("--no-coast", action="store_true",
      help="do not show a person the tracker lost behind a nearer one (shown, held, by default)")
    a("--fit-2d", choices=("on", "off"), default="on",
      help="fit each body's turn and distance to the network's 2D joints (default: on; "
           "networks with a lifter)")  # fmt: skip
    a("--realtime", action="store_true", help="pace files in real time (drop frames if behind)")
    a("--max-persons", type=int, default=8, help="cap on tracked persons")
    a("--width", type=int, default=640, help="camera width to ask for")
    a("--height", type=int, default=480, help="camera height to ask for")
    a("--fps", type=float, default=30.0, help="camera FPS to ask for")
    a("--backbone", default=None, help="backbone for a randomly initialised net (no checkpoint)")
    a("--body-model", default=None, help="body model .npz (default: the free model)")
    a(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="network precision (auto: fp16 on CUDA, bf16 on CPUs with AMX, else fp32)",
    )
    a(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for the network and body model (default 0 = all cores but one)",
    )
    a("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """Turn parsed CLI arguments into a :class:`PipelineConfig` (errors are ValueError)."""
    demo = args.source == "demo" or str(args.source).startswith("demo:")
    detector = args.detector or ("given" if demo else "auto")
    return PipelineConfig(
        source=SourceConfig(args.source, args.width, args.height, args.fps, args.realtime),
        detector=DetectorConfig(
            kind=detector,
            weights=args.yolo_weights,
            every_n=args.detect_every,
            device=args.device,
            track_search=not args.no_track_search,
        ),
        tracker=TrackerConfig(kind=args.tracker, max_persons=args.max_persons,
                              reid=not args.no_reid),
        camera=CameraConfig(args.calib, args.fov, args.focal, args.undistort),
        inference=InferenceConfig(
            backend=args.backend,
            checkpoint=args.checkpoint,
            num_rois=args.rois,
            device=args.device,
            backbone=args.backbone,
            body_model=args.body_model,
            smooth=0.0 if args.no_smooth else args.smooth,
            threads=args.threads,
            precision=args.precision,
            flip_test=None if args.flip_test is None else args.flip_test == "on",
            lifter_ik=args.lifter_ik,
            lifter_turn=args.lifter_turn,
            hold_occluded=args.hold_occluded,
            coast_occluded=not args.no_coast,
            fit_2d=args.fit_2d == "on",
        ),
        output=OutputConfig(render=args.render, headless=args.headless, out_dir=args.out,
                            stream=args.stream, export=tuple(args.export)),
        max_frames=args.max_frames,
    )


def cpu_threads(requested: int = 0, cores: int | None = None) -> int:
    """Threads for the network on the CPU: ``requested`` if > 0, else all cores but one (at
    least one). On two cores the network's two threads would fight the capture, tracking and
    render threads for the CPU (and spin-wait), which slowed the whole loop."""
    if requested > 0:
        return int(requested)
    cores = cores or os.cpu_count() or 1
    return max(1, cores - 1)
