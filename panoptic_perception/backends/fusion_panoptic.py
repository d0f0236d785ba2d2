"""Fusion panoptic (paper 002): one ResNet-FPN for Mask R-CNN instances and an atrous semantic head,
fused by the paper's heuristic into semantic, instance and panoptic output.

Costea, Petrovai, Nedevschi, *Fusion Scheme for Semantic and Instance-level Segmentation*.

§III-A ResNet-FPN
    ResNet-50 or -101 with frozen BatchNorm and a 4-level FPN (P2-P5, 256 channels, plus P6 by max
    pooling for the RPN): :mod:`panoptic_perception.nn.resnet`, :mod:`panoptic_perception.nn.fpn`.
    Mask R-CNN (RPN, box head, mask head) on top: :mod:`panoptic_perception.nn.mask_rcnn`, whose
    parameter names are torchvision's ``maskrcnn_resnet50_fpn``.
§III-B Semantic segmentation head (:class:`SemanticHead`)
    At 1/32 and 1/16 an Atrous Spatial Pyramid (:class:`AtrousSpatialPyramid`: one 1x1 and three 3x3
    convolutions with dilation 6, 12, 18, each followed by GroupNorm and ReLU, concatenated, then 128
    1x1 filters); at 1/8 and 1/4 two 3x3 convolutions with GroupNorm and ReLU (:class:`ConvStack`);
    every level gives 128 feature maps. The refinement pyramid (:class:`RefinementPyramid`) adds, from
    the coarsest level down, each level to its coarser neighbour upsampled x2; the four refined maps
    are upsampled to 1/4, concatenated (512 maps) and a 1x1 convolution predicts the classes.
§IV Output fusion
    :func:`panoptic_perception.core.panoptic_fusion.fuse` (or Kirillov et al.'s heuristic, a
    config option).

Choices where the paper is silent (module-level decisions, all configurable in
:class:`FusionPanopticConfig`):

- ASP branch width: each of the four branches has 128 channels (the paper gives only the 128 1x1
  filters after the concatenation); the 1x1 projection after the concatenation is also followed by
  GroupNorm and ReLU, like every other convolution of the head.
- GroupNorm uses 32 groups (Wu & He's default), i.e. 4 channels per group at 128 channels.
- Upsampling in the refinement pyramid and to 1/4 is bilinear (``align_corners=False``); the class
  logits are bilinearly interpolated to the input image before the argmax.

Weights of other frameworks (:mod:`panoptic_perception.backends.rcnn_weights`): a torchvision Mask R-CNN
state dict or a Detectron2 Mask R-CNN checkpoint (its ``.pkl``) loads as ``weights`` directly (e.g. the
COCO weights of either). Its predictor keeps its classes (``detector_classes: coco91`` / ``coco80``;
detections of COCO classes without a Cityscapes counterpart are dropped, riders come out as persons; a
Detectron2 checkpoint also sets Detectron2's conventions: ``stride_in_1x1``, ``roi_aligned``,
``roi_sampling_ratio: 0``, ``round_anchors: false``) and the network has no semantic head
(``semantic_head: false``): the backend
then publishes detections and instance masks, as a panoptic image of the detected things only (every other
pixel void, placed by Kirillov et al.'s rule: by score, whole masks), and no semantic map; its
capabilities say so, so the node opens no ``~/semantic`` topic, and a warning says how to get the rest.
A random semantic head never feeds an output.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.labels import CITYSCAPES
from ..core.postprocess import class_maps
from ..core.preprocess import Geometry, ResizeMode, normalize
from ..core.semantic_instance_fusion import FusionConfig, InstanceSegmentation, fuse
from ..core.types import Capability, PerceptionResult
from ..data.synthetic.fusion_benchmark import benchmark_fusion
from ..nn.mask_rcnn import MaskRCNN
from ..nn.resnet import FrozenBatchNorm2d
from ..nn.roi_heads import ROI_FEATURE_NAMES, paste_masks_in_boxes
from .base import Backend, Thresholds
from .rcnn_weights import (
    DETECTOR_CLASSES,
    THING_IDS,  # the Cityscapes things, the rows after the background of this backend's own predictor
    cityscapes_ids_of_rows,
    from_detectron2,
    from_torchvision,
    is_detectron2_rcnn,
    is_torchvision_mask_rcnn,
    num_predictor_rows,
)
from .registry import register_backend
from .weights import Checkpoint

NORMS = {"frozen_batch_norm": FrozenBatchNorm2d, "batch_norm": nn.BatchNorm2d}


def conv_gn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1, groups: int = 32) -> nn.Sequential:
    """Convolution (no bias: GroupNorm follows) → GroupNorm → ReLU; padding keeps the size."""
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.GroupNorm(min(groups, out_channels), out_channels),
        nn.ReLU(inplace=True),
    )


class AtrousSpatialPyramid(nn.Module):
    """The ASP of §III-B (DeepLab's ASPP without image pooling): a 1x1 branch and 3x3 branches at the
    given dilation ``rates``, each Conv → GN → ReLU, concatenated, then a 1x1 Conv → GN → ReLU to
    ``out_channels``. Input (N, in_channels, h, w) → (N, out_channels, h, w)."""

    def __init__(self, in_channels: int, out_channels: int = 128, rates: Sequence[int] = (6, 12, 18),
                 branch_channels: int = 128, groups: int = 32) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_gn_relu(in_channels, branch_channels, 1, groups=groups)]
            + [conv_gn_relu(in_channels, branch_channels, 3, rate, groups) for rate in rates]
        )
        self.project = conv_gn_relu(branch_channels * (1 + len(rates)), out_channels, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], 1))


class ConvStack(nn.Module):
    """Two 3x3 Conv → GN → ReLU (Kirillov et al.'s semantic FPN branch), for the 1/8 and 1/4 levels."""

    def __init__(self, in_channels: int, out_channels: int = 128, groups: int = 32) -> None:
        super().__init__()
        self.convs = nn.Sequential(conv_gn_relu(in_channels, out_channels, groups=groups),
                                   conv_gn_relu(out_channels, out_channels, groups=groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


def upsample_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=False)


class RefinementPyramid(nn.Module):
    """The RP of §III-B: ``r_k = h_k + up(r_{k+1})`` from the coarsest level down (each level learns the
    residue with respect to the coarser ones), then every ``r_k`` upsampled to the finest level and
    concatenated. Inputs finest first, each (N, C, h_k, w_k); output (N, C · levels, h_0, w_0)."""

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        refined = [levels[-1]]
        for level in reversed(levels[:-1]):
            refined.append(level + upsample_to(refined[-1], level))
        finest = refined[-1]
        return torch.cat([upsample_to(r, finest) if r is not finest else r for r in reversed(refined)], 1)


class SemanticHead(nn.Module):
    """§III-B: per FPN level P2..P5 (strides 4, 8, 16, 32) a branch to ``channels`` maps (ConvStack at
    1/4 and 1/8, AtrousSpatialPyramid at 1/16 and 1/32), the refinement pyramid, and a 1x1 classifier.

    Input: the four FPN maps (N, in_channels, H/s, W/s), finest first. Output: (N, num_classes, H/4, W/4)
    class logits (interpolated to the image by the caller).
    """

    def __init__(self, in_channels: int = 256, num_classes: int = 19, channels: int = 128,
                 rates: Sequence[int] = (6, 12, 18), groups: int = 32) -> None:
        super().__init__()
        self.branches = nn.ModuleList([
            ConvStack(in_channels, channels, groups),
            ConvStack(in_channels, channels, groups),
            AtrousSpatialPyramid(in_channels, channels, rates, channels, groups),
            AtrousSpatialPyramid(in_channels, channels, rates, channels, groups),
        ])
        self.refinement = RefinementPyramid()
        self.classifier = nn.Conv2d(4 * channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != 4:
            raise ValueError(f"SemanticHead takes the four FPN levels P2..P5, got {len(features)} maps")
        return self.classifier(self.refinement([branch(x) for branch, x in zip(self.branches, features)]))


@dataclass
class FusionPanopticConfig:
    """Architecture and output options of a fusion-panoptic checkpoint.

    ``depth`` 50 or 101 and ``width`` (1.0: the paper's ResNet; e.g. 0.25 for a CPU variant) of the ResNet;
    ``norm``: ``frozen_batch_norm`` (the paper, §III-C, fine-tuning from COCO weights) or ``batch_norm``
    (training statistics, for training from scratch where no pretrained weights exist). ``fpn_channels``,
    ``representation_size`` (box head), ``mask_channels`` (mask head) and ``semantic_channels`` are the
    paper's / torchvision's 256, 1024, 256 and 128 at full size. ``anchor_sizes``: one RPN anchor size
    per level P2..P6 (torchvision's 32-512 for ~1024-pixel inputs; smaller networks inputs want smaller
    anchors); ``rpn_post_nms_top_n_train`` and ``box_batch_size_per_image``: proposals kept and sampled
    per image in training (torchvision's 2000 and 512). ``fusion``: ``paper`` or ``kirillov``;
    ``min_area``: smallest new instance of the paper's fusion, in input-image pixels.
    ``batch_norm_eps``: the ResNet's BatchNorm eps (1e-5; torchvision's COCO Mask R-CNN weights use 0).
    ``detector_classes``: the box and mask predictors' rows (see
    :data:`~panoptic_perception.backends.rcnn_weights.DETECTOR_CLASSES`): ``cityscapes`` (background and
    the 8 Cityscapes things, this package's checkpoints), ``coco91`` (torchvision's COCO weights) or
    ``coco80`` (Detectron2's); COCO rows without a Cityscapes class are dropped in post-processing.
    ``semantic_head``: false builds the Mask R-CNN alone (weights converted from a detector whose semantic
    head is yet to be trained): detections and instance masks only, no semantic map (module docstring).
    ``stride_in_1x1``, ``roi_aligned``, ``roi_sampling_ratio``, ``round_anchors``: torchvision's
    conventions by default (false, false, 2, true); Detectron2's (true, true, 0, false) for its weights (see
    :class:`~panoptic_perception.nn.mask_rcnn.MaskRCNN`).
    """

    input_width: int = 1024
    input_height: int = 512
    depth: int = 50
    width: float = 1.0
    norm: str = "frozen_batch_norm"
    fpn_channels: int = 256
    representation_size: int = 1024
    mask_channels: int = 256
    semantic_channels: int = 128
    group_norm_groups: int = 32
    box_score_threshold: float = 0.05
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    rpn_post_nms_top_n_train: int = 2000
    box_batch_size_per_image: int = 512
    fusion: str = "paper"
    min_area: int = 256
    batch_norm_eps: float = 1e-5
    detector_classes: str = "cityscapes"
    semantic_head: bool = True
    stride_in_1x1: bool = False
    roi_aligned: bool = False
    roi_sampling_ratio: int = 2
    round_anchors: bool = True

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.fusion not in ("paper", "kirillov"):
            raise ValueError(f"fusion must be 'paper' or 'kirillov', got {self.fusion!r}")
        if self.detector_classes not in DETECTOR_CLASSES:
            raise ValueError(f"detector_classes must be one of {', '.join(DETECTOR_CLASSES)}, got {self.detector_classes!r}")
        self.anchor_sizes = tuple(self.anchor_sizes)
        if len(self.anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes needs one size per level P2..P6, got {self.anchor_sizes}")


class DenseOutputs(NamedTuple):
    """The convolutional outputs of :meth:`FusionPanopticNetwork.dense` for a (N, 3, H, W) batch."""

    semantic_logits: torch.Tensor | None  # (N, 19, H/4, W/4); None without a semantic head
    levels: list[torch.Tensor]  # FPN P2..P5, (N, fpn_channels, H/s, W/s), s = 4..32: what RoIAlign pools
    objectness: list[torch.Tensor]  # RPN logits on P2..P6, (N, A, H/s, W/s)
    deltas: list[torch.Tensor]  # RPN box deltas on P2..P6, (N, 4A, H/s, W/s)


class FusionPanopticNetwork(MaskRCNN):
    """Mask R-CNN (torchvision's parameter layout: ``backbone``, ``rpn``, ``roi_heads``) and the
    :class:`SemanticHead` (``semantic_head``; None where ``config.semantic_head`` is false) on one ResNet-FPN.

    ``forward(images, image_sizes, targets=None)``: ``images`` (N, 3, H, W) normalised, H and W multiples
    of 32. Training: ``(losses, semantic_logits)``, the five Mask R-CNN losses and (N, 19, H/4, W/4)
    logits. Evaluation: ``(semantic_logits, detections)``, detections per image with ``boxes`` (D, 4),
    ``labels`` (D,) (predictor rows of ``config.detector_classes``: 1-based indices into
    :data:`THING_IDS` for ``cityscapes``), ``scores`` and ``masks`` (D, 1, 28, 28) probabilities, not
    pasted: the backend pastes them at the input image's resolution. Without a semantic head the logits
    are None.
    """

    def __init__(self, config: FusionPanopticConfig) -> None:
        super().__init__(
            num_predictor_rows(config.detector_classes), depth=config.depth, width=config.width,
            norm_layer=functools.partial(NORMS[config.norm], eps=config.batch_norm_eps),
            fpn_channels=config.fpn_channels, representation_size=config.representation_size,
            mask_layers=(config.mask_channels,) * 4, box_score_thresh=config.box_score_threshold,
            stride_in_1x1=config.stride_in_1x1, roi_sampling_ratio=config.roi_sampling_ratio,
            roi_aligned=config.roi_aligned, rpn_round_anchors=config.round_anchors,
            rpn_anchor_sizes=tuple((size,) for size in config.anchor_sizes),
            rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
            box_batch_size_per_image=config.box_batch_size_per_image,
        )
        self.semantic_head = SemanticHead(config.fpn_channels, len(CITYSCAPES), config.semantic_channels,
                                          groups=config.group_norm_groups) if config.semantic_head else None

    def semantic_logits(self, features) -> torch.Tensor | None:
        if self.semantic_head is None:
            return None
        return self.semantic_head([features[level] for level in ROI_FEATURE_NAMES])

    def forward(self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]], targets=None):
        if self.training:
            features, losses = self.forward_with_features(images, image_sizes, targets)
            return losses, self.semantic_logits(features)
        self._check_inputs(images, image_sizes, None)
        dense = self.dense(images)
        return dense.semantic_logits, self.detect(dense, image_sizes, tuple(images.shape[-2:]))

    def dense(self, images: torch.Tensor) -> DenseOutputs:
        """The convolutional part of evaluation, a fixed graph (what ONNX export takes): the ResNet-FPN,
        the semantic head and the RPN head on every level."""
        features = self.backbone(images)
        objectness, deltas = self.rpn.head(list(features.values()))
        levels = [features[name] for name in ROI_FEATURE_NAMES]
        return DenseOutputs(self.semantic_logits(features), levels, objectness, deltas)

    def detect(self, dense: DenseOutputs, image_sizes: Sequence[tuple[int, int]], batch_shape: tuple[int, int]):
        """The data-dependent rest of evaluation: proposals (top-N, NMS), RoIAlign, box and mask heads, the
        box head's NMS → detections per image as :meth:`forward` returns them."""
        proposals = self.rpn.proposals_from_head(dense.objectness, dense.deltas, image_sizes, batch_shape)
        detections, _ = self.roi_heads(dict(zip(ROI_FEATURE_NAMES, dense.levels)), proposals, image_sizes)
        return detections


@register_backend("fusion_panoptic")
class FusionPanopticBackend(Backend):
    """Semantic, instance and panoptic segmentation with the paper's fusion (detections from the fused
    instances).

    Pre-processing: resize to the network size (a multiple of 32), RGB, ImageNet mean / std. Post-
    processing per image: class logits bilinearly to the input size, argmax → Cityscapes label ids;
    detections with a score at least the score threshold (box head NMS at the IoU threshold, at most
    ``max_detections``), their 28x28 masks pasted at the input resolution and cut at the mask threshold;
    then :func:`~panoptic_perception.core.panoptic_fusion.fuse` (the paper's or Kirillov's heuristic).
    With the paper's fusion the semantic output is the fused one (§IV); with Kirillov's baseline it is
    the semantic head's own (the baseline only builds the panoptic image), so evaluating both
    (``--options fusion=paper --options fusion=kirillov``) shows what the fusion adds to each output.
    ``fast=True`` folds the ResNet's BatchNorms into its convolutions. :meth:`forward` is the fixed-graph
    part (:meth:`FusionPanopticNetwork.dense`), the one ONNX Runtime and TensorRT run; :meth:`finish` keeps
    the data-dependent rest in torch (proposals, RoIAlign, box and mask heads, their NMS).

    Without a semantic head (``semantic_head: false``, weights converted from a torchvision or Detectron2
    Mask R-CNN):
    capabilities detection and panoptic only; the panoptic image holds the detected things, placed by
    Kirillov et al.'s rule (by score, whole masks) on an all-void background; no semantic map.
    """

    capabilities = frozenset({Capability.DETECTION, Capability.SEMANTIC, Capability.PANOPTIC})
    config_type = FusionPanopticConfig
    label_map = CITYSCAPES
    resize_mode = ResizeMode.RESIZE
    default_thresholds = Thresholds(score=0.5, iou=0.5, max_detections=100, mask=0.5)
    bundled_weights = "fusion_panoptic_synthetic.pth"
    dropped_instances: int = 0  # instances fusion dropped beyond 999 of one class, over this backend's frames
    converts = frozenset({"Detectron2"})
    other_formats = ("fusion_panoptic also loads torchvision maskrcnn_resnet50_fpn state dicts and Detectron2 Mask "
                     "R-CNN R50/R101-FPN checkpoints, converting them: README, Checkpoint formats")

    def __init__(self, *args, **kwargs) -> None:
        """As :class:`~panoptic_perception.backends.base.Backend`; without a semantic head the capabilities
        lose the semantic map, and a warning says what is published and how to get the rest."""
        super().__init__(*args, **kwargs)
        if not self.config.semantic_head:
            self.capabilities = frozenset({Capability.DETECTION, Capability.PANOPTIC})
            origin = self.metadata.get("converted_from", "semantic_head=false")
            self.log.warning(
                "%s: these weights have no semantic head (%s): publishing detections and instance masks only (a "
                "panoptic image of the detected things, every other pixel void), no semantic map. For semantic and "
                "panoptic output, train the semantic head starting from these weights (init_weights in a training "
                "config).", self.name, origin)

    @classmethod
    def adapt_checkpoint(cls, checkpoint: Checkpoint, path: str) -> Checkpoint:
        """Detectron2 checkpoints (a ``.pkl``, or its names in a torch file) and torchvision Mask R-CNN state
        dicts convert (:mod:`~panoptic_perception.backends.rcnn_weights`); any other checkpoint is taken as it is."""
        if checkpoint.origin == "Detectron2" or (checkpoint.backend is None and is_detectron2_rcnn(checkpoint.state_dict)):
            return from_detectron2(checkpoint.state_dict, path)
        if checkpoint.backend is None and is_torchvision_mask_rcnn(checkpoint.state_dict):
            return from_torchvision(checkpoint.state_dict, path)
        return super().adapt_checkpoint(checkpoint, path)

    def build_network(self, config: FusionPanopticConfig) -> FusionPanopticNetwork:
        return FusionPanopticNetwork(config)

    def optimize_network(self, network: FusionPanopticNetwork) -> FusionPanopticNetwork:
        fast = copy.deepcopy(network)
        folded = fast.backbone.body.fold_batchnorm_()
        self.log.info("fusion_panoptic fast path: folded %d BatchNorms into the ResNet's convolutions", folded)
        return fast

    def forward(self, batch: torch.Tensor) -> DenseOutputs | tuple:
        dense = self.network.dense(normalize(batch))
        # An exported graph returns tensors only: without a semantic head the (None) logits are left out.
        return dense if self.config.semantic_head else tuple(dense[1:])

    def finish(self, outputs: Sequence, batch: torch.Tensor):
        heads = self.network.roi_heads
        heads.nms_thresh, heads.detections_per_img = self.thresholds.iou, self.thresholds.max_detections
        dense = DenseOutputs(*outputs) if self.config.semantic_head else DenseOutputs(None, *outputs)
        shape = tuple(batch.shape[-2:])
        return dense.semantic_logits, self.network.detect(dense, [shape] * len(batch), shape)

    def postprocess(self, outputs, geometries: Sequence[Geometry]) -> list[PerceptionResult]:
        semantic_logits, detections = outputs
        t = self.thresholds
        if semantic_logits is None:  # instances only: whole masks by score on an all-void image
            method = "kirillov"
            semantic_maps = [np.zeros(geometry.source_size[::-1], np.uint8) for geometry in geometries]
        else:
            method = self.config.fusion
            semantic_maps = class_maps(semantic_logits, geometries, self.label_map)
        fusion = FusionConfig(method=method, min_area=self.config.min_area, score_threshold=t.score, mask_threshold=t.mask)
        results = []
        for semantic, detection, geometry in zip(semantic_maps, detections, geometries):
            instances = self._instances(detection, geometry, t.score, t.mask)
            fused = fuse(semantic, instances, self.label_map, fusion)
            if fused.dropped:
                self.dropped_instances += fused.dropped
                if self.dropped_instances == fused.dropped:  # the first time: then only counted
                    self.log.warning("fusion_panoptic: %d instances of a class beyond the panoptic format's 999 "
                                     "(label divisor 1000) dropped, the smallest first; dropped_instances counts them",
                                     fused.dropped)
            if semantic_logits is None:
                semantic = None
            elif method == "paper":
                semantic = fused.semantic  # the baseline refines nothing
            results.append(PerceptionResult(geometry.source_size, self.name, detections=fused.detections,
                                            semantic=semantic, panoptic=fused.panoptic, segments=fused.segments))
        return results

    def extra_benchmarks(self) -> dict[str, float]:
        """The fusion alone at 1280x720 on a synthetic street scene with about 20 instances (§IV; the paper
        reports 3 ms on a GPU)."""
        return {f"fusion_{method}_1280x720_ms": benchmark_fusion((1280, 720), method=method) for method in ("paper", "kirillov")}

    def _instances(self, detection: dict, geometry: Geometry, score_threshold: float, mask_threshold: float) -> InstanceSegmentation:
        """Detections of a Cityscapes class at or above the score threshold with their masks pasted at the
        input resolution, each computed and kept only inside its box
        (:func:`~panoptic_perception.nn.roi_heads.paste_masks_in_boxes`): memory grows with the boxes' area,
        not with the detections times the image's. Predictor rows map to Cityscapes label ids by
        ``detector_classes``; rows without one (COCO's other classes) are dropped."""
        class_ids = cityscapes_ids_of_rows(self.config.detector_classes)[detection["labels"].cpu().numpy()]
        keep = (detection["scores"].cpu() >= score_threshold) & torch.from_numpy(class_ids > 0)
        boxes = torch.from_numpy(geometry.boxes_to_source(detection["boxes"].cpu()[keep].numpy()))
        width, height = geometry.source_size
        pasted = paste_masks_in_boxes(detection["masks"].cpu()[keep].float(), boxes, (height, width))
        return InstanceSegmentation(
            [(probabilities > mask_threshold).numpy() for _, probabilities in pasted],
            detection["scores"].cpu()[keep].numpy(), class_ids[keep.numpy()],
            windows=np.array([window for window, _ in pasted], np.int64).reshape(-1, 4), image_size=(height, width),
        )
