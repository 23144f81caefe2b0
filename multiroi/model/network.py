"""The Multi-RoI network: shared backbone -> RoI-aware fusion -> camera and mesh decoders."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from multiroi.geometry.joint_ik import blend_into_pose, turn_towards
from multiroi.geometry.rotations import rot6d_to_rotmat, rotmat_to_rot6d
from multiroi.model.backbone import build_backbone
from multiroi.model.config import ModelConfig
from multiroi.model.decoders import CAM_DIM, NUM_BETAS, NUM_JOINTS, CameraDecoder, MeshDecoder
from multiroi.model.fusion import build_fusion
from multiroi.model.heads import ProjectionHead
from multiroi.model.lifter import LIFTED_DIM, KeypointLifter

logger = logging.getLogger(__name__)


@dataclass
class NetOutput:
    """Output of :class:`MultiRoINet` for P persons with R RoIs (torch tensors).

    rotmat: f32[P,24,3,3] SMPL joint rotations (joint 0 = global orientation, camera frame).
    betas: f32[P,10]. cam_local: f32[P,R,3] weak-perspective (s, tx, ty) per RoI crop.
    pose6d: f32[P,144] the raw 6D pose (24 x 6). features: f32[P,R,D] pre-fusion backbone
    features. proj: f32[P,R,d] L2-normalised contrastive projections, only in training with
    the head built, else None. fusion_weights: f32[P,R,R] alpha_ij (rows sum to 1).
    joints_2d: f32[P,24,2] the lifter's 2D joints in the base RoI's crop (box heights from the
    crop centre, x right, y down; multiroi.geometry.fit2d reads them), None without a lifter.
    """

    rotmat: torch.Tensor
    betas: torch.Tensor
    cam_local: torch.Tensor
    pose6d: torch.Tensor
    features: torch.Tensor
    proj: torch.Tensor | None = None
    fusion_weights: torch.Tensor | None = None
    joints_2d: torch.Tensor | None = None


def default_mean_params() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Built-in mean, the same as :meth:`multiroi.body.MeanParams.default`: pose6d f32[24,6]
    (root = rotation of pi about x, an upright SMPL body facing an OpenCV camera; other joints
    identity; 6D = ``rotmat[:, :, :2].reshape(24, 6)``), betas f32[10] zeros, cam f32[3]
    (0.9, 0, 0)."""
    from multiroi.body.mean_params import MeanParams

    mean = MeanParams.default()
    return mean.pose6d.copy(), mean.betas.copy(), mean.cam.copy()


def _mean_tensors(mean_params: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accept None or any object with pose6d [24,6] or [144], betas [>=10], cam [3]."""
    if mean_params is None:
        pose6d, betas, cam = default_mean_params()
    else:
        try:
            pose6d, betas, cam = mean_params.pose6d, mean_params.betas, mean_params.cam
        except AttributeError:
            raise TypeError(
                f"mean_params must have .pose6d, .betas and .cam (multiroi.body.MeanParams), "
                f"got {type(mean_params).__name__}"
            ) from None
    pose6d = torch.as_tensor(np.asarray(pose6d, np.float32).reshape(-1))
    betas = torch.as_tensor(np.asarray(betas, np.float32).reshape(-1))
    cam = torch.as_tensor(np.asarray(cam, np.float32).reshape(-1))
    if pose6d.numel() != NUM_JOINTS * 6 or betas.numel() < NUM_BETAS or cam.numel() != CAM_DIM:
        raise ValueError(
            f"mean_params has pose6d {pose6d.numel()}, betas {betas.numel()}, cam {cam.numel()} "
            f"numbers; expected {NUM_JOINTS * 6}, {NUM_BETAS} and {CAM_DIM}"
        )
    return pose6d, betas[:NUM_BETAS].clone(), cam


def _exporting() -> bool:
    return (
        torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()
    )


class MultiRoINet(nn.Module):
    """Multi-RoI HMR network (method.md section 2).

    MultiRoINet(cfg, mean_params=None): mean_params is a multiroi.body.MeanParams (or any object
    with pose6d, betas, cam); None uses :func:`default_mean_params`. The means are persistent
    buffers (init_pose6d f32[144], init_betas f32[10], init_cam f32[3]), saved in checkpoints.
    """

    def __init__(
        self, cfg: ModelConfig, mean_params: Any = None, *, allow_random_init: bool = False
    ) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = build_backbone(
            cfg.backbone, cfg.pretrained, allow_random_init=allow_random_init,
            downsample=cfg.downsample, pool=cfg.pool,
        )  # fmt: skip
        if cfg.lifter_tail:
            self.backbone.add_lifter_tail(cfg.lifter_tap)
        d = self.backbone.num_features
        self.fusion = build_fusion(
            cfg.fusion, d, cfg.num_rois, cfg.pos_enc, cfg.pe_levels, cfg.relative_mode
        )
        self.camera_decoder = CameraDecoder(d, cfg.hidden, cfg.dropout, cfg.n_iter)
        self.lifter = None
        if cfg.lifter:
            self.lifter = KeypointLifter(cfg.lifter_width, cfg.lifter_blocks, cfg.lifter_refine,
                                         turn=cfg.lifter_turn > 0)  # fmt: skip
        extra = LIFTED_DIM if cfg.lifter else 0
        self.mesh_decoder = MeshDecoder(d, cfg.hidden, cfg.dropout, cfg.n_iter, extra_dim=extra)
        self.proj_head = ProjectionHead(d, cfg.proj_dim) if cfg.contrastive else None
        pose6d, betas, cam = _mean_tensors(mean_params)
        self.register_buffer("init_pose6d", pose6d)
        self.register_buffer("init_betas", betas)
        self.register_buffer("init_cam", cam)
        if cfg.lifter_ik > 0:  # the body model's rest joints, set by set_lifter_ik
            self.register_buffer("ik_joint_template", torch.zeros(NUM_JOINTS, 3))
            self.register_buffer("ik_joint_dirs", torch.zeros(NUM_JOINTS, 3, NUM_BETAS))

    @property
    def feature_dim(self) -> int:
        """D, the backbone feature width."""
        return self.backbone.num_features

    @property
    def residual_heads(self) -> list[nn.Linear]:
        """The Linear layers whose outputs are added to the estimates (pose, shape, cam)."""
        return self.mesh_decoder.residual_heads + self.camera_decoder.residual_heads

    def check_inputs(self, crops: torch.Tensor, box_info: torch.Tensor) -> None:
        """Raise ValueError unless crops f32[P,R,3,H,W] (or backbone features f32[P,R,D]) and
        box_info f32[P,R,3], R = num_rois."""
        r, d = self.cfg.num_rois, self.feature_dim
        slots = r + 1 if self.cfg.lifter_tail else r  # + the lifter tail's features of RoI 0
        is_features = crops.ndim == 3 and crops.shape[1] == slots and crops.shape[2] == d
        if not is_features and (crops.ndim != 5 or crops.shape[1] != r or crops.shape[2] != 3):
            raise ValueError(
                f"crops must be [P,{r},3,256,192] (P persons, {r} RoIs, RGB) or backbone "
                f"features [P,{slots},{d}], got {list(crops.shape)}"
            )
        if tuple(box_info.shape) != (crops.shape[0], r, 3):
            raise ValueError(
                f"box_info must be [P,{r},3] with P={crops.shape[0]} as in crops, got "
                f"{list(box_info.shape)}"
            )
        if not (crops.is_floating_point() and box_info.is_floating_point()):
            raise ValueError(
                f"crops and box_info must be float tensors, got {crops.dtype}, {box_info.dtype}"
            )

    def forward(self, crops: torch.Tensor, box_info: torch.Tensor) -> NetOutput:
        """crops f32[P,R,3,256,192] (ImageNet-normalised RGB), box_info f32[P,R,3] (CLIFF)
        -> NetOutput. P = 0 returns empty tensors of the right shapes. crops may instead be the
        backbone's features f32[P,R,D] (a feature cache of a frozen backbone, training only):
        the backbone is then skipped."""
        if not _exporting():
            self.check_inputs(crops, box_info)
            if crops.shape[0] == 0:
                return self._empty_output(crops)
        p, r, d = crops.shape[0], self.cfg.num_rois, self.feature_dim
        mirrored = None  # the base RoI's mirror image's features, for the lifter (flip_test)
        lifter_in = None  # the lifter's features of the base RoI: lifter_tail's, else RoI 0's
        tail = self.cfg.lifter_tail
        if crops.ndim == 3:  # precomputed features (train.feature_cache), slot R: lifter_tail
            features = crops[:, :r]
            lifter_in = crops[:, r] if tail else None
        else:
            images = crops.flatten(0, 1)  # one backbone call for P*R (+ P mirrored base crops)
            flip = self.lifter is not None and self.cfg.flip_test and not self.training
            if flip:
                images = torch.cat([images, torch.flip(crops[:, 0], dims=[-1])])
            if tail:  # then the tail for the P base crops (and their mirror images)
                out, taps = self.backbone.forward_with_tap(images)
                base = taps[: p * r].reshape(p, r, *taps.shape[1:])[:, 0]
                lifter_out = self.backbone.lifter_features(torch.cat([base, taps[p * r :]]))
                lifter_in = lifter_out[:p]
                mirrored = lifter_out[p:] if flip else None
            else:
                out = self.backbone(images)
                mirrored = out[p * r :] if flip else None
            features = out[: p * r].reshape(p, r, d)
        fused = self.fusion(features, box_info)
        init_cam = self.init_cam.expand(p * r, -1)
        cam = self.camera_decoder(
            fused.roi_features.flatten(0, 1), box_info.flatten(0, 1), init_cam
        )
        if lifter_in is None:
            lifter_in = features[:, 0]
        joints_2d = lifted = None
        if self.lifter is not None:
            joints_2d = self.lifter.estimate_2d(lifter_in, mirrored)
            lifted = self.lifter(lifter_in, mirrored, joints_2d=joints_2d).flatten(1)
        pose6d, betas = self.mesh_decoder(
            self._drop_features(fused.shared),
            box_info[:, 0],
            self.init_pose6d.expand(p, -1),
            self.init_betas.expand(p, -1),
            lifted,
        )
        rotmat = rot6d_to_rotmat(pose6d.reshape(p, NUM_JOINTS, 6))
        if lifted is not None and self.cfg.lifter_ik > 0:  # in training too: the decoders
            # then learn for the swung pose, which is what the network outputs
            turn = None
            if self.lifter.turn is not None and self.cfg.lifter_turn > 0:
                turn = self.lifter.turn(joints_2d, box_info[:, 0])
            swung = self._lifted_into_pose(rotmat, betas, lifted.reshape(p, NUM_JOINTS, 3),
                                           turn)  # fmt: skip
            pose6d = rotmat_to_rot6d(swung).flatten(1)  # and back: rotations to the last bit
            rotmat = rot6d_to_rotmat(pose6d.reshape(p, NUM_JOINTS, 6))
        proj = None
        if self.training and self.proj_head is not None:
            proj = self.proj_head(features.flatten(0, 1)).reshape(p, r, -1)
        return NetOutput(
            rotmat=rotmat,
            betas=betas,
            cam_local=cam.reshape(p, r, CAM_DIM),
            pose6d=pose6d,
            features=features,
            proj=proj,
            fusion_weights=fused.weights,
            joints_2d=joints_2d,
        )

    def _lifted_into_pose(self, rotmat: torch.Tensor, betas: torch.Tensor,
                          lifted: torch.Tensor, turn: torch.Tensor | None = None
                          ) -> torch.Tensor:  # fmt: skip
        """``cfg.lifter_ik``: the decoder's pose f32[P,24,3,3] swung towards the lifted joints
        f32[P,24,3] (multiroi.geometry.joint_ik.blend_into_pose), then, with ``turn`` (the turn
        lifter's joints f32[P,24,3]), turned about the pelvis towards their torso by
        ``cfg.lifter_turn`` (joint_ik.turn_towards); in float32 also under autocast (in bf16
        the polar iteration and the chained rotations drift by millimetres)."""
        template = getattr(self, "ik_joint_template", None)
        if template is None or not (_exporting() or self._ik_ready(template)):
            raise ValueError("ModelConfig.lifter_ik needs the body model's rest joints in the "
                             "network: call multiroi.model.network.set_lifter_ik(net, weight, "
                             "body) first")  # fmt: skip
        with torch.autocast(rotmat.device.type, enabled=False):
            rest = template.float() + torch.einsum(
                "pb,jkb->pjk", betas.float(), self.ik_joint_dirs.float())
            out = blend_into_pose(rotmat.float(), rest, lifted.float(), self.cfg.lifter_ik)
            if turn is not None:
                out = turn_towards(out, rest, turn.float(), self.cfg.lifter_turn)
        return out.to(rotmat.dtype)

    def _ik_ready(self, template: torch.Tensor) -> bool:
        """Whether the rest joints were set (not the zeros a new network starts with); checked
        once, not on every call (on a GPU each check waits for the device)."""
        if not getattr(self, "_ik_checked", False):
            self._ik_checked = bool(template.abs().sum() > 0)
        return self._ik_checked

    def _drop_features(self, shared: torch.Tensor) -> torch.Tensor:
        """Training with ``cfg.feature_dropout``: zero each person's fused feature f32[P,D] for
        the mesh decoder with that probability. The camera decoder and the lifter still read
        the image (dropping it for the camera decoder too misplaced the meshes)."""
        rate = self.cfg.feature_dropout
        if not self.training or rate <= 0.0:
            return shared
        keep = torch.rand(shared.shape[0], 1, device=shared.device) >= rate
        return shared * keep.to(shared.dtype)

    def _empty_output(self, crops: torch.Tensor) -> NetOutput:
        r, d = self.cfg.num_rois, self.feature_dim
        z = dict(dtype=crops.dtype, device=crops.device)
        proj = None
        if self.training and self.proj_head is not None:
            proj = torch.zeros(0, r, self.cfg.proj_dim, **z)
        return NetOutput(
            rotmat=torch.zeros(0, NUM_JOINTS, 3, 3, **z),
            betas=torch.zeros(0, NUM_BETAS, **z),
            cam_local=torch.zeros(0, r, CAM_DIM, **z),
            pose6d=torch.zeros(0, NUM_JOINTS * 6, **z),
            features=torch.zeros(0, r, d, **z),
            proj=proj,
            fusion_weights=torch.zeros(0, r, r, **z),
            joints_2d=None if self.lifter is None else torch.zeros(0, NUM_JOINTS, 2, **z),
        )


def set_flip_test(net: MultiRoINet, flip_test: bool | None) -> None:
    """Turn the network's test-time flip (``ModelConfig.flip_test``) on or off (``--flip-test
    on|off`` of the live loop, the export and the evaluation); None: leave it as it is."""
    if flip_test is None or net.cfg.flip_test == flip_test:
        return
    if not net.cfg.lifter:
        raise ValueError(f"--flip-test on needs a network with the keypoint lifter; this one is "
                         f"{net.cfg.describe()}: leave --flip-test out")  # fmt: skip
    net.cfg = dataclasses.replace(net.cfg, flip_test=flip_test)
    logger.info("test-time flip %s", "on" if flip_test else "off")


def set_lifter_ik(net: MultiRoINet, weight: float | None, body: Any = None, *,
                  replace_rest: bool = False) -> None:  # fmt: skip
    """Set the weight of the lifter's joints in the pose (``ModelConfig.lifter_ik``; 0: off;
    None: leave it). ``body`` (a multiroi.body.BodyModel, the one the network was trained for)
    gives the rest joints the step needs when the network holds none (or ``replace_rest``);
    a network that holds them keeps its own."""
    has_rest = hasattr(net, "ik_joint_template")
    take_body = body is not None and (replace_rest or not has_rest)
    if weight is None or (net.cfg.lifter_ik == weight and (weight == 0 or not take_body)):
        return
    if weight and not net.cfg.lifter:
        raise ValueError(f"--lifter-ik needs a network with the keypoint lifter; this one is "
                         f"{net.cfg.describe()}: leave --lifter-ik out")  # fmt: skip
    if weight and not (has_rest or take_body):
        raise ValueError("--lifter-ik: this network holds no rest joints; pass the body model")
    cfg = dataclasses.replace(net.cfg, lifter_ik=float(weight),  # validates the weight
                              lifter_turn=net.cfg.lifter_turn if weight else 0.0)
    if weight and take_body:  # float32 on the network's device, whatever its dtype
        where = dict(device=net.init_cam.device, dtype=torch.float32)
        template = body.joint_template.to(**where)
        dirs = body.joint_dirs[..., :NUM_BETAS].to(**where)
        net._buffers.pop("ik_joint_template", None)
        net._buffers.pop("ik_joint_dirs", None)
        net.register_buffer("ik_joint_template", template.clone())
        net.register_buffer("ik_joint_dirs", dirs.clone())
    if not weight:  # off: the rest joints go, so that a saved network loads as configured
        for name in ("ik_joint_template", "ik_joint_dirs"):
            net._buffers.pop(name, None)
        if net.cfg.lifter_turn:  # it turns by the same rest joints
            logger.info("the turn lifter is off too (it needs the lifted joints' rest joints)")
    net.cfg = cfg
    net._ik_checked = False
    logger.info("lifted joints into the pose: %s", f"weight {weight:g}" if weight else "off")


def set_lifter_turn(net: MultiRoINet, weight: float | None) -> None:
    """Set the turn lifter's weight (``ModelConfig.lifter_turn``; 0: off; None: leave it). A
    weight above 0 needs a network trained with a turn lifter (``train.turn_lifter``)."""
    if weight is None or net.cfg.lifter_turn == weight:
        return
    if weight and (net.lifter is None or net.lifter.turn is None):
        raise ValueError(f"--lifter-turn needs a network with a turn lifter (train.turn_lifter); "
                         f"this one is {net.cfg.describe()}: leave --lifter-turn out")  # fmt: skip
    net.cfg = dataclasses.replace(net.cfg, lifter_turn=float(weight))  # validates the weight
    logger.info("turn lifter: %s", f"weight {weight:g}" if weight else "off")


class ExportWrapper(nn.Module):
    """Inference graph for ONNX/TensorRT: (crops f32[P,R,3,256,192], box_info f32[P,R,3]) ->
    (rotmat f32[P,24,3,3], betas f32[P,10], cam_local f32[P,R,3][, joints_2d f32[P,24,2]]):
    ``joints_2d`` (the lifter's 2D joints, NetOutput.joints_2d) when the network has a lifter,
    see ``output_names``; the contrastive head is dropped. Put it in eval() before exporting.
    The exported graph needs P >= 1 (onnxruntime rejects P = 0 in a Reshape): callers skip
    empty batches."""

    OUTPUT_NAMES = ("rotmat", "betas", "cam_local")
    JOINTS_2D = "joints_2d"
    INPUT_NAMES = ("crops", "box_info")

    def __init__(self, net: MultiRoINet) -> None:
        super().__init__()
        self.net = net

    @property
    def output_names(self) -> tuple[str, ...]:
        has_2d = getattr(self.net, "lifter", None) is not None
        return self.OUTPUT_NAMES + ((self.JOINTS_2D,) if has_2d else ())

    def forward(self, crops: torch.Tensor, box_info: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(crops, box_info)
        if out.joints_2d is None:
            return out.rotmat, out.betas, out.cam_local
        return out.rotmat, out.betas, out.cam_local, out.joints_2d
