"""Fusion panoptic (paper 002): one ResNet-FPN for Mask R-CNN instances and an atrous semantic head,
fused by the paper's heuristic into semantic, instance and panoptic output.

Costea, Petrovai, Nedevschi, *Fusion Scheme for Semantic and Instance-level Segmentation*.

§III-A ResNet-FPN
    ResNet-50 or -101 with frozen BatchNorm and a 4-level FPN (P2-P5, 256 channels, plus P6 by max
    pooling for the RPN): :mod:`panoptic_perception.nn.resnet`, :mod:`panoptic_perception.nn.fpn`.
    Mask R-CNN (RPN, box head, mask head) on top: :mod:`panoptic_perception.nn.mask_rcnn`, whose
    parameter names are torchvision's ``maskrcnn_resnet50_fpn``.
§III-B Semantic segmentation head (:class:`SemanticHead`)
    At 1/32 and 1/16 an Atrous Spatial Pyramid (:func:`atrous_spatial_pyramid`: one 1x1 and three 3x3
    convolutions with dilation 6, 12, 18, each followed by GroupNorm and ReLU, concatenated, then 128
    1x1 filters); at 1/8 and 1/4 two 3x3 convolutions with GroupNorm and ReLU (:class:`ConvStack`);
    every level gives 128 feature maps. The refinement pyramid (:class:`RefinementPyramid`) adds, from
    the coarsest level down, each level to its coarser neighbour upsampled x2; the four refined maps
    are upsampled to 1/4, concatenated (512 maps) and a 1x1 convolution predicts the classes.
§IV Output fusion
    Post-processing, in the backend (:mod:`panoptic_perception.backends.fusion_panoptic`).

Choices where the paper is silent (module-level decisions, all configurable in
:class:`FusionPanopticConfig`):

- ASP branch width: each of the four branches has 128 channels (the paper gives only the 128 1x1
  filters after the concatenation); the 1x1 projection after the concatenation is also followed by
  GroupNorm and ReLU, like every other convolution of the head.
- GroupNorm uses 32 groups (Wu & He's default), i.e. 4 channels per group at 128 channels.
- Upsampling in the refinement pyramid and to 1/4 is bilinear (``align_corners=False``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import nn

from ..core.labels import CITYSCAPES
from ..nn.deeplab import ASPP
from ..nn.layers import SEQUENTIAL_NAMES, ConvNormAct, group_norm, relu_inplace, upsample
from ..nn.mask_rcnn import MaskRCNN
from ..nn.resnet import FrozenBatchNorm2d
from ..nn.roi_heads import ROI_FEATURE_NAMES

#: The Cityscapes thing classes, in label-map order: the rows after the background of the
#: ``cityscapes`` predictor layout (this package's own checkpoints).
THING_IDS = tuple(c.id for c in CITYSCAPES.classes if c.is_thing)
#: COCO's 80 object categories by their dataset ids (1..90 with ten ids unused).
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
#: Predictor layouts (the ``detector_classes`` option), each the class of every row after the background:
#: ``cityscapes``: Cityscapes label ids; ``coco91``: torchvision's COCO rows, row = COCO category id (rows
#: of unused ids included); ``coco80``: Detectron2's contiguous COCO rows.
DETECTOR_CLASSES = {
    "cityscapes": THING_IDS,
    "coco91": tuple(range(1, 91)),
    "coco80": COCO_CATEGORY_IDS,
}


def detector_class_ids(classes: str) -> tuple[int, ...]:
    """The class of each predictor row after the background in the layout ``classes`` (a key of
    :data:`DETECTOR_CLASSES`); ValueError if unknown."""
    if classes not in DETECTOR_CLASSES:
        raise ValueError(f"detector_classes must be one of {', '.join(DETECTOR_CLASSES)}, got {classes!r}")
    return DETECTOR_CLASSES[classes]


def num_predictor_rows(classes: str) -> int:
    """Rows of the box predictor (background included) in the layout ``classes``; ValueError if unknown."""
    return 1 + len(detector_class_ids(classes))


NORMS = {"frozen_batch_norm": FrozenBatchNorm2d, "batch_norm": nn.BatchNorm2d}


def conv_gn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
                 groups: int = 32) -> ConvNormAct:
    """Convolution (no bias: GroupNorm follows) → GroupNorm → ReLU; padding keeps the size. Children
    ``0``, ``1``, ``2``, as the ``nn.Sequential`` the checkpoints were saved from."""
    return ConvNormAct(in_channels, out_channels, kernel_size, dilation=dilation, norm=group_norm(groups),
                       act=relu_inplace, names=SEQUENTIAL_NAMES)


def atrous_spatial_pyramid(in_channels: int, out_channels: int = 128, rates: Sequence[int] = (6, 12, 18),
                           branch_channels: int = 128, groups: int = 32) -> ASPP:
    """The ASP of §III-B (DeepLab's ASPP without image pooling): a 1x1 branch and 3x3 branches at the
    given dilation ``rates``, each Conv → GN → ReLU, concatenated, then a 1x1 Conv → GN → ReLU to
    ``out_channels``; no dropout. Input (N, in_channels, h, w) → (N, out_channels, h, w)."""
    return ASPP(in_channels, out_channels, rates, branch_channels=branch_channels, image_pooling=False, dropout=0.0,
                norm=group_norm(groups), act=relu_inplace, names=SEQUENTIAL_NAMES)


class ConvStack(nn.Module):
    """Two 3x3 Conv → GN → ReLU (Kirillov et al.'s semantic FPN branch), for the 1/8 and 1/4 levels."""

    def __init__(self, in_channels: int, out_channels: int = 128, groups: int = 32) -> None:
        super().__init__()
        self.convs = nn.Sequential(conv_gn_relu(in_channels, out_channels, groups=groups),
                                   conv_gn_relu(out_channels, out_channels, groups=groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x)


class RefinementPyramid(nn.Module):
    """The RP of §III-B: ``r_k = h_k + up(r_{k+1})`` from the coarsest level down (each level learns the
    residue with respect to the coarser ones), then every ``r_k`` upsampled to the finest level and
    concatenated. Inputs finest first, each (N, C, h_k, w_k); output (N, C · levels, h_0, w_0)."""

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        refined = [levels[-1]]
        for level in reversed(levels[:-1]):
            refined.append(level + upsample(refined[-1], level.shape[-2:]))
        finest = refined[-1]
        return torch.cat([upsample(r, finest.shape[-2:]) if r is not finest else r for r in reversed(refined)], 1)


class SemanticHead(nn.Module):
    """§III-B: per FPN level P2..P5 (strides 4, 8, 16, 32) a branch to ``channels`` maps (ConvStack at
    1/4 and 1/8, an atrous spatial pyramid at 1/16 and 1/32), the refinement pyramid, and a 1x1 classifier.

    Input: the four FPN maps (N, in_channels, H/s, W/s), finest first. Output: (N, num_classes, H/4, W/4)
    class logits (interpolated to the image by the caller).
    """

    def __init__(self, in_channels: int = 256, num_classes: int = 19, channels: int = 128,
                 rates: Sequence[int] = (6, 12, 18), groups: int = 32) -> None:
        super().__init__()
        self.branches = nn.ModuleList([
            ConvStack(in_channels, channels, groups),
            ConvStack(in_channels, channels, groups),
            atrous_spatial_pyramid(in_channels, channels, rates, channels, groups),
            atrous_spatial_pyramid(in_channels, channels, rates, channels, groups),
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
    :data:`DETECTOR_CLASSES`): ``cityscapes`` (background and
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
