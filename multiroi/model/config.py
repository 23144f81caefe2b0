"""Typed configuration of the Multi-RoI network (saved beside every checkpoint and export)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

VALID_NUM_ROIS = (1, 2, 3, 4, 5, 9)
VALID_FUSION = ("raf", "none", "raf_mlp")
VALID_POS_ENC = ("relative", "absolute", "none")
VALID_RELATIVE_MODE = ("pe_diff", "diff_pe")
VALID_BOX_EXTENT = ("visible", "amodal")
# where the lifter's own copy of BlazePose's last layers can start (blazepose.LIFTER_TAPS)
LIFTER_TAP_NAMES = ("t269", "t251", "t226")


@dataclass
class ModelConfig:
    """Architecture of :class:`multiroi.model.MultiRoINet`.

    backbone: timm model name (resnet18, resnet50, hrnet_w48, mobilenetv3_large_100,
      efficientnet_b0, ... any timm model with a pooled feature).
    pretrained: load timm's ImageNet weights when building (needs the weights locally or a
      download; tests use False).
    num_rois: R, RoIs per person (1..5 or 9, method.md 1.2).
    fusion: "raf" (RoI-aware fusion, method.md 2.2), "none" (g_i = f_i) or "raf_mlp" (the
      authors' variant: pair embeddings of width 256 -> tanh MLP -> R logits).
    pos_enc: what the fusion weights see besides f_j: "relative" (r_ij), "absolute" (PE(c_j))
      or "none" (nothing).
    pe_levels: L, NeRF frequencies per box-info number (3 + 6L numbers in all).
    relative_mode: "pe_diff" r_ij = PE(c_i) - PE(c_j) (the paper) or "diff_pe"
      r_ij = PE(c_i - c_j) (the authors' code). With fusion="raf" the PE(c_i) part of
      "pe_diff" cancels in the softmax over j, so only "diff_pe" makes alpha_ij depend on i;
      "diff_pe" is therefore the default (method.md 2.2 allows either; this one is named).
    n_iter: iterations of both iterative decoders.
    hidden: width of the two FC layers of each decoder.
    dropout: dropout after each FC layer (SPIN/CLIFF use nn.Dropout() = 0.5).
    proj_dim: d, output width of the contrastive projection head.
    contrastive: build the contrastive projection head (training only).
    downsample: average-pool the 256x192 crops by this factor (1, 2 or 4) before the backbone.
      2 gives the backbone 128x96 pixels: 3x cheaper, and most crops are upsampled from boxes
      under 128 px tall anyway (far persons), so little detail is lost. The network's inputs
      stay [P,R,3,256,192].
    pool: "avg" (global average pooling, the paper's) or "spatial" (the feature map reduced to
      64 channels on a 4x3 grid, D = 768: keeps positions; see multiroi.model.backbone).
    lifter: add the keypoint lifter (ours, multiroi.model.lifter): BlazePose's landmarks of the
      base RoI lifted to 24 3D joints, an extra input of the mesh decoder. Needs the
      ``blazepose_full`` backbone; its weights come from ``python -m train.lifter``.
    lifter_width, lifter_blocks: the lifter's MLP: its width and its number of residual blocks
      (512 and 2 until run Q; a larger one fits the 25 MB default model only with its linear
      layers stored in int8, ``train.package_default --storage int8-heads``).
    lifter_refine: the lifter's 2D joints also read BlazePose's whole feature (an MLP adding a
      correction to the landmarks' linear map, trained on rendered persons by
      ``python -m train.lifter``); needs ``lifter``.
    lifter_tail: the lifter reads its own copy of BlazePose's last 40 ops (from the trunk's
      8x8 map on, 1.7 M parameters), fine-tuned on rendered persons for the 2D joints
      (``python -m train.tune2d``), while the decoders keep MediaPipe's features. Costs those
      ops once more for the base RoI; needs ``lifter``.
    lifter_tap: where that copy starts, a tensor of BlazePose's graph
      (``multiroi.model.blazepose.LIFTER_TAPS``): "t269", the 8x8 map above, or "t251", the
      trunk's 16x16x88 map before its last stride-2 stage (2.7 M parameters, about as fast),
      or "t226", its 32x32x32 map before the stage into 16x16 (3.1 M parameters).
    flip_test: the lifter also reads the base RoI's left-right mirror image and lifts the mean
      of the two 2D estimates (ours; inference from crops only, not from cached features). One
      more backbone call per person; on held-out renders 0.7-1.6 mm lower PA-MPJPE and 3-6 mm
      lower MPJPE (docs/training.md, "Test-time flip"). Needs ``lifter``.
    lifter_ik: the weight w of the lifter's joints in the pose's joint targets (ours,
      ``multiroi.geometry.joint_ik``; at inference, and in training, where the decoders then
      learn for the swung pose): the lifted joints are turned onto the mesh
      decoder's torso, blended with the decoder's own joints (w lifted + (1 - w) decoder's),
      and the decoder's pose is swung bone by bone to point at them, keeping each bone's twist.
      0: off. Needs ``lifter`` and the body model's rest joints in the network
      (``multiroi.model.network.set_lifter_ik``). On held-out renders 4 mm lower PA-MPJPE and
      3 mm lower MPJPE at w = 0.7 (docs/training.md, "Lifted joints into the pose").
    lifter_turn: the weight b of the turn lifter (ours; ``multiroi.model.lifter.TurnLifter``,
      trained by ``train.turn_lifter``): a second MLP lifts the 2D joints together with the
      base box's place in the image (CLIFF box information, which tells along which ray the
      person is seen) to 3D joints, and the body is turned about its pelvis onto b of their
      torso plus 1 - b of its own. Its turn is 3 degrees closer to the truth than the mesh
      decoder's facing the camera (docs/experiments.md, run S). 0: no turn lifter
      (a network built with b > 0 has one). Needs ``lifter`` and lifter_ik > 0 (the same rest
      joints).
    feature_dropout: training only: the probability that a person's fused feature is zeroed
      for the mesh decoder, so that it learns to pose from the lifter's joints alone too; the
      camera decoder keeps the image (0: off).
    box_extent: the person box the network was trained on, and so must be given: "visible"
      (the visible part, method.md 1.1; what YOLO and HOG give) or "amodal" (the whole body,
      parts cut off by the image border or hidden included; MediaPipe's pose detector
      estimates it, ``realtime.pose_detector``). With "amodal" a person seen from the waist up
      gets a crop in which the whole body would fit, as BlazePose was trained on, instead of a
      whole body squeezed into the visible part (docs/experiments.md, run K).
    """

    backbone: str = "resnet18"
    pretrained: bool = False
    num_rois: int = 5
    fusion: str = "raf"
    pos_enc: str = "relative"
    pe_levels: int = 32
    relative_mode: str = "diff_pe"
    n_iter: int = 3
    hidden: int = 1024
    dropout: float = 0.5
    proj_dim: int = 128
    contrastive: bool = True
    downsample: int = 1
    pool: str = "avg"
    lifter: bool = False
    lifter_width: int = 512
    lifter_blocks: int = 2
    lifter_refine: bool = False
    lifter_tail: bool = False
    lifter_tap: str = "t269"
    flip_test: bool = False
    lifter_ik: float = 0.0
    lifter_turn: float = 0.0
    feature_dropout: float = 0.0
    box_extent: str = "visible"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad field, the value found and what is allowed."""
        _check(
            isinstance(self.backbone, str) and self.backbone.strip() != "",
            "backbone",
            self.backbone,
            "a timm model name such as 'resnet50'",
        )
        _check(isinstance(self.pretrained, bool), "pretrained", self.pretrained, "True or False")
        _check(
            _is_int(self.num_rois) and self.num_rois in VALID_NUM_ROIS,
            "num_rois",
            self.num_rois,
            f"one of {VALID_NUM_ROIS}",
        )
        _check(self.fusion in VALID_FUSION, "fusion", self.fusion, f"one of {VALID_FUSION}")
        _check(self.pos_enc in VALID_POS_ENC, "pos_enc", self.pos_enc, f"one of {VALID_POS_ENC}")
        _check(
            _is_int(self.pe_levels) and 0 <= self.pe_levels <= 64,
            "pe_levels",
            self.pe_levels,
            "an integer in 0..64",
        )
        _check(
            self.relative_mode in VALID_RELATIVE_MODE,
            "relative_mode",
            self.relative_mode,
            f"one of {VALID_RELATIVE_MODE}",
        )
        _check(_is_int(self.n_iter) and self.n_iter >= 1, "n_iter", self.n_iter, "an integer >= 1")
        _check(_is_int(self.hidden) and self.hidden >= 1, "hidden", self.hidden, "an integer >= 1")
        _check(
            isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0,
            "dropout",
            self.dropout,
            "a number in [0, 1)",
        )
        _check(
            _is_int(self.proj_dim) and self.proj_dim >= 1,
            "proj_dim",
            self.proj_dim,
            "an integer >= 1",
        )
        _check(
            isinstance(self.contrastive, bool), "contrastive", self.contrastive, "True or False"
        )
        _check(
            _is_int(self.downsample) and self.downsample in (1, 2, 4),
            "downsample",
            self.downsample,
            "1, 2 or 4",
        )
        _check(self.pool in ("avg", "spatial"), "pool", self.pool, "'avg' or 'spatial'")
        _check(isinstance(self.lifter, bool), "lifter", self.lifter, "True or False")
        _check(_is_int(self.lifter_width) and 8 <= self.lifter_width <= 8192, "lifter_width",
               self.lifter_width, "an integer in 8..8192")
        _check(_is_int(self.lifter_blocks) and 0 <= self.lifter_blocks <= 16, "lifter_blocks",
               self.lifter_blocks, "an integer in 0..16")
        _check(
            isinstance(self.lifter_refine, bool) and (self.lifter or not self.lifter_refine),
            "lifter_refine",
            self.lifter_refine,
            "True or False, and True only with lifter=True",
        )
        _check(
            isinstance(self.lifter_tail, bool) and (self.lifter or not self.lifter_tail),
            "lifter_tail",
            self.lifter_tail,
            "True or False, and True only with lifter=True",
        )
        _check(self.lifter_tap in LIFTER_TAP_NAMES, "lifter_tap", self.lifter_tap,
               "'t269' (the trunk's 8x8 map), 't251' (its 16x16 map) or 't226' (its 32x32 map)")
        _check(
            isinstance(self.flip_test, bool) and (self.lifter or not self.flip_test),
            "flip_test",
            self.flip_test,
            "True or False, and True only with lifter=True",
        )
        _check(
            isinstance(self.lifter_ik, (int, float)) and not isinstance(self.lifter_ik, bool)
            and 0.0 <= self.lifter_ik <= 1.0 and (self.lifter or self.lifter_ik == 0.0),
            "lifter_ik",
            self.lifter_ik,
            "a number in [0, 1], and above 0 only with lifter=True",
        )
        _check(
            isinstance(self.lifter_turn, (int, float)) and not isinstance(self.lifter_turn, bool)
            and 0.0 <= self.lifter_turn <= 1.0
            and (self.lifter_turn == 0.0 or (self.lifter and self.lifter_ik > 0)),
            "lifter_turn",
            self.lifter_turn,
            "a number in [0, 1], and above 0 only with lifter=True and lifter_ik > 0 (it "
            "needs the same rest joints)",
        )
        _check(
            isinstance(self.feature_dropout, (int, float)) and 0.0 <= self.feature_dropout < 1.0,
            "feature_dropout",
            self.feature_dropout,
            "a number in [0, 1)",
        )
        _check(
            self.box_extent in VALID_BOX_EXTENT,
            "box_extent",
            self.box_extent,
            f"one of {VALID_BOX_EXTENT}",
        )
        _check(
            not self.lifter or self.backbone == "blazepose_full",
            "lifter",
            self.lifter,
            "False with any backbone but 'blazepose_full' (only its features carry landmarks)",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtin types (safe for torch.load(weights_only=True), JSON, YAML)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict; unknown keys raise ValueError, missing keys take the defaults."""
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a dict, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown model config keys {unknown}; known keys are {sorted(known)} "
                "(was it written by a newer multiroi?)"
            )
        return cls(**data)

    def describe(self) -> str:
        """Short human description, e.g. 'backbone resnet50, 5 RoIs, fusion raf/relative'."""
        fusion = self.fusion if self.fusion == "none" else f"{self.fusion}/{self.pos_enc}"
        scale = f" at 1/{self.downsample} resolution" if self.downsample > 1 else ""
        pool = ", spatial pooling" if self.pool == "spatial" else ""
        rois = f"{self.num_rois} RoI" + ("s" if self.num_rois != 1 else "")
        lifter = ", keypoint lifter" if self.lifter else ""
        if self.lifter and (self.lifter_width, self.lifter_blocks) != (512, 2):
            lifter += f" ({self.lifter_width} wide, {self.lifter_blocks} blocks)"
        lifter += " (2D refined)" if self.lifter_refine else ""
        if self.lifter_tail:
            lifter += ", tuned 2D tail" + {"t251": " from the 16x16 map",
                                           "t226": " from the 32x32 map"}.get(self.lifter_tap, "")
        lifter += ", flip test" if self.flip_test else ""
        lifter += f", joints into the pose (w {self.lifter_ik:g})" if self.lifter_ik else ""
        lifter += f", turn lifter (b {self.lifter_turn:g})" if self.lifter_turn else ""
        boxes = ", whole-body boxes" if self.box_extent == "amodal" else ""
        return f"backbone {self.backbone}{scale}{pool}, {rois}, fusion {fusion}{lifter}{boxes}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, name: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"ModelConfig.{name}={value!r} is invalid; expected {expected}")
