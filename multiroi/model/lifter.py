"""Keypoint lifter: BlazePose's 2D landmarks of the base RoI -> 24 root-relative 3D joints.

Ours, not the paper's (docs/experiments.md, run I). A head trained on rendered persons sees a few
tens of thousands of bodies; lifting 2D joints to 3D needs far more. The lifter learns it from
poses of the pose prior alone, without rendering (train.lifter: hundreds of thousands of 2D-3D
pairs in minutes), with the 2D errors BlazePose makes on rendered persons added back.

    landmarks f32[N,39,5] of the base crop (x/256, y/256, z/256, visibility, presence)
      -> 33 body landmarks: x, y in box heights from the crop centre, visibility (+ 1)
      -> ``landmark_map`` (a ridge regression fit on rendered persons) -> 24 joints f32[N,24,2]
         (+ with ``refine``: a correction from the whole feature, ``Refiner2D``)
      -> MLP (``width``, ``blocks`` residual blocks) -> joints f32[N,24,3] m, root-relative,
         axes of the crop's camera.

The mesh decoder reads the lifted joints as an extra input (``ModelConfig.lifter``). Only the
``blazepose_full`` backbone has landmarks in its feature.
"""

from __future__ import annotations

import torch
from torch import nn

from multiroi.body.files import FLIP_PERM
from multiroi.model.blazepose_layout import NUM_FEATURES, NUM_LANDMARKS
from multiroi.rois import CROP_ASPECT_W_OVER_H

BODY_LANDMARKS = 33  # BlazePose's 33 body landmarks; the last 6 are its crop helpers
LANDMARK_OFFSET = 288 * 4  # where the landmarks start in a blazepose_full feature
LANDMARK_INPUTS = BODY_LANDMARKS * 3 + 1  # x, y, visibility per landmark, and a constant 1
NUM_JOINTS = 24
LIFTED_DIM = NUM_JOINTS * 3
FEATURE_DIM = NUM_FEATURES  # 1464, a blazepose_full feature
# The letterboxed 256x256 input is one box height wide and tall, centred on the crop.
_CENTRE = 0.5
# the crop window (one box height tall, 0.75 wide) in box heights from its centre
CROP_HALF_W, CROP_HALF_H = CROP_ASPECT_W_OVER_H / 2, 0.5
TURN_WIDTH = 256  # the turn lifter's MLP (0.3 M parameters)


def in_crop(joints_2d: torch.Tensor) -> torch.Tensor:
    """f32[...,2] box heights from the crop centre -> bool[...]: inside the crop window."""
    return (joints_2d[..., 0].abs() < CROP_HALF_W) & (joints_2d[..., 1].abs() < CROP_HALF_H)


def mirror_2d(joints_2d: torch.Tensor) -> torch.Tensor:
    """f32[N,24,2] joints of a crop -> those of its left-right mirror image (x negated, left and
    right swapped). Its own inverse."""
    out = joints_2d[:, list(FLIP_PERM)]
    return torch.stack([-out[..., 0], out[..., 1]], dim=-1)


def landmark_inputs(features: torch.Tensor) -> torch.Tensor:
    """blazepose_full features f32[N,1464] -> f32[N,100]: the 33 landmarks' x, y (box heights
    from the crop centre), their visibility, and a constant 1."""
    lm = features[:, LANDMARK_OFFSET : LANDMARK_OFFSET + NUM_LANDMARKS * 5]
    lm = lm.reshape(-1, NUM_LANDMARKS, 5)[:, :BODY_LANDMARKS]
    xy = (lm[..., :2] - _CENTRE).flatten(1)
    ones = torch.ones_like(lm[:, :1, 3])
    return torch.cat([xy, lm[..., 3], ones], dim=1)


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(h))))


class Refiner2D(nn.Module):
    """forward(features f32[N,1464]) -> f32[N,24,2] box heights: a correction to the landmark
    map's 2D joints from BlazePose's whole feature (its feature map pooled, landmarks, world
    landmarks), trained on rendered persons (train.lifter). The linear map alone reads only the
    landmarks' positions; the feature map also tells, for example, which side is which.
    The features are standardised with the training set's mean and spread (buffers)."""

    def __init__(self, in_dim: int = FEATURE_DIM, width: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.register_buffer("feat_mean", torch.zeros(in_dim))
        self.register_buffer("feat_std", torch.ones(in_dim))
        self.mlp = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(in_dim, width), nn.GELU(),
            nn.Dropout(dropout), nn.Linear(width, width), nn.GELU(),
            nn.Linear(width, NUM_JOINTS * 2),
        )  # fmt: skip
        self.reset()

    def reset(self) -> None:
        """Fresh weights that make no correction (the last layer zero)."""
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                layer.reset_parameters()
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = (features - self.feat_mean) / self.feat_std
        return self.mlp(x).reshape(-1, NUM_JOINTS, 2)


class TurnLifter(nn.Module):
    """forward(joints_2d f32[N,24,2] box heights from the crop centre, box_info f32[N,3] the
    base RoI's CLIFF box information) -> joints f32[N,24,3] m, root-relative, camera axes.
    The keypoint lifter's MLP without the image's place cannot tell along which ray the person
    is seen, so its body's turn is an average over rays; with the box information this one
    learns the turn (``ModelConfig.lifter_turn`` reads only its torso)."""

    def __init__(self, width: int = TURN_WIDTH, blocks: int = 2) -> None:
        super().__init__()
        self.inp = nn.Linear(NUM_JOINTS * 2 + 3, width)
        self.blocks = nn.ModuleList([_Block(width) for _ in range(blocks)])
        self.out = nn.Linear(width, LIFTED_DIM)

    def forward(self, joints_2d: torch.Tensor, box_info: torch.Tensor) -> torch.Tensor:
        h = self.inp(torch.cat([joints_2d.flatten(1), box_info], dim=1))
        for block in self.blocks:
            h = block(h)
        return self.out(h).reshape(-1, NUM_JOINTS, 3)


class KeypointLifter(nn.Module):
    """forward(features f32[N,1464]) -> joints f32[N,24,3] m (see the module doc).
    ``joints_2d(features)`` -> f32[N,24,2], the mapped (and with ``refine`` corrected) 2D
    joints the MLP reads. ``forward(features, mirrored)``, with the features of the crop's
    left-right mirror image too (``ModelConfig.flip_test``), lifts the mean of the two
    estimates of the 2D joints (the mirror's mirrored back)."""

    def __init__(self, width: int = 512, blocks: int = 2, refine: bool = False,
                 turn: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.register_buffer("landmark_map", torch.zeros(LANDMARK_INPUTS, NUM_JOINTS * 2))
        self.refiner = Refiner2D() if refine else None
        self.turn = TurnLifter() if turn else None
        self.inp = nn.Linear(NUM_JOINTS * 2, width)
        self.blocks = nn.ModuleList([_Block(width) for _ in range(blocks)])
        self.out = nn.Linear(width, LIFTED_DIM)

    def mapped_2d(self, features: torch.Tensor) -> torch.Tensor:
        """The landmark map's 2D joints f32[N,24,2], without the refiner's correction."""
        return (landmark_inputs(features) @ self.landmark_map).reshape(-1, NUM_JOINTS, 2)

    def joints_2d(self, features: torch.Tensor) -> torch.Tensor:
        joints = self.mapped_2d(features)
        return joints if self.refiner is None else joints + self.refiner(features)

    def lift(self, joints_2d: torch.Tensor) -> torch.Tensor:
        """f32[N,24,2] (box heights from the crop centre) -> f32[N,24,3] m."""
        h = self.inp(joints_2d.flatten(1))
        for block in self.blocks:
            h = block(h)
        return self.out(h).reshape(-1, NUM_JOINTS, 3)

    def estimate_2d(self, features: torch.Tensor, mirrored: torch.Tensor | None = None
                    ) -> torch.Tensor:  # fmt: skip
        """The 2D joints f32[N,24,2] the MLP lifts: :meth:`joints_2d`, averaged with the
        mirror image's mirrored back when ``mirrored`` is given."""
        joints = self.joints_2d(features)
        if mirrored is not None:
            joints = 0.5 * (joints + mirror_2d(self.joints_2d(mirrored)))
        return joints

    def forward(self, features: torch.Tensor, mirrored: torch.Tensor | None = None,
                joints_2d: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """``joints_2d``: :meth:`estimate_2d`'s output when the caller has it already (the
        network keeps it as an output), else it is computed here."""
        if joints_2d is None:
            joints_2d = self.estimate_2d(features, mirrored)
        return self.lift(joints_2d)
