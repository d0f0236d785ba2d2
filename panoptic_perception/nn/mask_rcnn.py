"""Mask R-CNN with a ResNet-FPN backbone, parameter-compatible with torchvision 0.28's ``maskrcnn_resnet50_fpn``.

He et al., *Mask R-CNN* (ICCV 2017) on Lin et al.'s FPN: the backbone
(:class:`~panoptic_perception.nn.fpn.BackboneWithFPN`, P2..P6), the region proposal network
(:class:`~panoptic_perception.nn.rpn.RegionProposalNetwork`) and the box and mask heads
(:class:`~panoptic_perception.nn.roi_heads.RoIHeads`). The fusion scheme of Costea et al. (paper 002, §III)
shares this ResNet-FPN between the Mask R-CNN heads and its semantic heads, so
:meth:`MaskRCNN.forward_with_features` returns the pyramid with the detections (the backbone runs once).

With the defaults (``depth=50``, ``width=1.0``) the state dict is torchvision's ``maskrcnn_resnet50_fpn``
(``backbone.body.*``, ``backbone.fpn.*``, ``rpn.head.*``, ``roi_heads.*``; with the default
FrozenBatchNorm2d there is no ``num_batches_tracked``, which loading ignores), so torchvision/COCO
checkpoints load with ``load_state_dict(strict=True)``; torchvision's COCO_V1 weights were trained with
frozen-BatchNorm ``eps=0.0``: build with ``norm_layer=functools.partial(FrozenBatchNorm2d, eps=0.0)`` for
them. All thresholds are torchvision's defaults. :func:`adapt_predictor_classes` cuts a checkpoint's
class-specific rows down to a new class list.

Differences from torchvision's ``MaskRCNN`` (by design; the backend does the pre-processing):

* no ``GeneralizedRCNNTransform``: the input is one already normalised, already resized, zero-padded
  ``(N, 3, H, W)`` batch with each image's ``(h, w)`` inside it (top-left aligned), as that transform's
  ``ImageList`` holds; :func:`batch_images` pads a list of images like it does. ``H`` and ``W`` must be
  multiples of 32 (torchvision pads to 32; anchor strides are the batch size over the feature size);
* outputs are in the input batch's pixels: boxes are not rescaled, masks are pasted at ``image_sizes``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .fpn import resnet_fpn_backbone
from .resnet import FrozenBatchNorm2d, NormLayer
from .roi_heads import RoIHeads, paste_masks_in_image
from .rpn import DEFAULT_ANCHOR_SIZES, DEFAULT_ASPECT_RATIOS, RegionProposalNetwork

#: The batch's height and width must be multiples of this (the coarsest level, P6, has stride 64 but
#: torchvision pads to 32, and the anchor strides follow from ``batch size // feature size``).
SIZE_DIVISIBLE = 32

#: Keys of the class-specific rows, below the RoI heads' prefix, and the rows per class.
PREDICTOR_CLASS_ROWS = {
    "box_predictor.cls_score.weight": 1,
    "box_predictor.cls_score.bias": 1,
    "box_predictor.bbox_pred.weight": 4,
    "box_predictor.bbox_pred.bias": 4,
    "mask_predictor.mask_fcn_logits.weight": 1,
    "mask_predictor.mask_fcn_logits.bias": 1,
}

Detections = list[dict[str, torch.Tensor]]


def batch_images(
    images: Sequence[torch.Tensor], size_divisible: int = SIZE_DIVISIBLE
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Images ``(3, h_i, w_i)`` (already normalised) zero-padded at the bottom and right into one
    ``(N, 3, H, W)`` batch, ``H``/``W`` the largest sizes rounded up to ``size_divisible``; and their
    ``(h_i, w_i)``. As torchvision's ``GeneralizedRCNNTransform.batch_images``.

    Raises:
        ValueError: on an empty list or images that are not ``(3, h, w)``.
    """
    if not images or any(image.dim() != 3 or image.shape[0] != 3 for image in images):
        raise ValueError(f"expected a non-empty list of (3, h, w) images, got {[tuple(i.shape) for i in images]}")
    sizes = [(int(image.shape[1]), int(image.shape[2])) for image in images]
    height = math.ceil(max(h for h, _ in sizes) / size_divisible) * size_divisible
    width = math.ceil(max(w for _, w in sizes) / size_divisible) * size_divisible
    batch = images[0].new_zeros((len(images), 3, height, width))
    for slot, image in zip(batch, images):
        slot[:, : image.shape[1], : image.shape[2]].copy_(image)
    return batch, sizes


class MaskRCNN(nn.Module):
    """Mask R-CNN (ResNet-50/101-FPN) in torchvision's parameter layout; no pre-processing inside.

    Args:
        num_classes: classes including the background (index 0); 91 for torchvision's COCO checkpoints.
        depth: ResNet depth, 50 or 101.
        width: ResNet width multiplier (1.0 is torchvision; e.g. 0.25 for a narrow CPU variant).
        trainable_layers: trainable ResNet stages counted from layer4 (3: stem and layer1 frozen).
        norm_layer: the ResNet's normalisation (FrozenBatchNorm2d; ``nn.BatchNorm2d`` as torchvision
            builds it without weights).
        fpn_channels: channels of the pyramid (256).
        representation_size: width of the box head's ``fc6``/``fc7`` (1024).
        mask_layers: channels of the mask head's convolutions ((256,) * 4).
        stride_in_1x1: the ResNet's blocks stride in their 1x1 convolution (MSRA's / Detectron2's
            ResNets) instead of the 3x3 (torchvision's).
        roi_sampling_ratio, roi_aligned: the RoI poolers' samples per bin (2; 0: adaptive) and pixel-centre
            model (False; Detectron2's "ROIAlignV2": ``0, True``).
        rpn_*: see :class:`~panoptic_perception.nn.rpn.RegionProposalNetwork` (anchor sizes and aspect
            ratios per level, whether anchors are rounded, pre/post-NMS top-N 2000/2000 in training and 1000/1000 in evaluation, NMS
            0.7, matching 0.7/0.3, 256 anchors per image with half positives, score threshold 0.0).
        box_*: see :class:`~panoptic_perception.nn.roi_heads.RoIHeads` (score threshold 0.05, NMS 0.5, 100
            detections per image, matching 0.5/0.5, 512 proposals per image with 25% positives, box-coder
            weights (10, 10, 5, 5)).

    Raises:
        ValueError: ``depth`` not 50 or 101; the parts raise for their own invalid arguments.
    """

    def __init__(
        self,
        num_classes: int = 91,
        *,
        depth: int = 50,
        width: float = 1.0,
        trainable_layers: int = 3,
        norm_layer: NormLayer = FrozenBatchNorm2d,
        fpn_channels: int = 256,
        representation_size: int = 1024,
        mask_layers: Sequence[int] = (256, 256, 256, 256),
        stride_in_1x1: bool = False,
        roi_sampling_ratio: int = 2,
        roi_aligned: bool = False,
        rpn_anchor_sizes: Sequence[Sequence[float]] = DEFAULT_ANCHOR_SIZES,
        rpn_aspect_ratios: Sequence[Sequence[float]] = DEFAULT_ASPECT_RATIOS,
        rpn_round_anchors: bool = True,
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_nms_thresh: float = 0.7,
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_score_thresh: float = 0.0,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        box_detections_per_img: int = 100,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
    ) -> None:
        super().__init__()
        if depth not in (50, 101):
            raise ValueError(f"depth must be 50 or 101, got {depth}")
        self.num_classes = num_classes
        self.backbone = resnet_fpn_backbone(
            f"resnet{depth}", trainable_layers=trainable_layers, width=width, norm_layer=norm_layer,
            out_channels=fpn_channels, stride_in_1x1=stride_in_1x1,
        )
        self.rpn = RegionProposalNetwork(
            fpn_channels,
            anchor_sizes=rpn_anchor_sizes,
            aspect_ratios=rpn_aspect_ratios,
            round_anchors=rpn_round_anchors,
            pre_nms_top_n_train=rpn_pre_nms_top_n_train,
            pre_nms_top_n_test=rpn_pre_nms_top_n_test,
            post_nms_top_n_train=rpn_post_nms_top_n_train,
            post_nms_top_n_test=rpn_post_nms_top_n_test,
            nms_thresh=rpn_nms_thresh,
            fg_iou_thresh=rpn_fg_iou_thresh,
            bg_iou_thresh=rpn_bg_iou_thresh,
            batch_size_per_image=rpn_batch_size_per_image,
            positive_fraction=rpn_positive_fraction,
            score_thresh=rpn_score_thresh,
        )
        self.roi_heads = RoIHeads(
            num_classes,
            fpn_channels,
            representation_size=representation_size,
            mask_layers=mask_layers,
            sampling_ratio=roi_sampling_ratio,
            aligned=roi_aligned,
            fg_iou_thresh=box_fg_iou_thresh,
            bg_iou_thresh=box_bg_iou_thresh,
            batch_size_per_image=box_batch_size_per_image,
            positive_fraction=box_positive_fraction,
            bbox_reg_weights=bbox_reg_weights,
            score_thresh=box_score_thresh,
            nms_thresh=box_nms_thresh,
            detections_per_img=box_detections_per_img,
        )

    def forward(
        self,
        images: torch.Tensor,
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor] | Detections:
        """Losses in training mode, detections in evaluation mode (see :meth:`forward_with_features`)."""
        return self.forward_with_features(images, image_sizes, targets)[1]

    def forward_with_features(
        self,
        images: torch.Tensor,
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ) -> tuple[OrderedDict[str, torch.Tensor], dict[str, torch.Tensor] | Detections]:
        """The FPN features and the Mask R-CNN outputs of one batch, the backbone run once.

        Args:
            images: ``(N, 3, H, W)`` float, normalised as the weights expect (torchvision: ImageNet mean
                and std on 0-1 RGB), zero-padded; ``H``, ``W`` multiples of 32.
            image_sizes: each image's ``(h, w)`` inside the batch (top-left aligned).
            targets: required in training: per image ``boxes`` ``(G, 4)`` float xyxy with positive width
                and height, ``labels`` ``(G,)`` int64 in ``1 .. num_classes - 1``, ``masks`` ``(G, h, w)``
                0/1 (uint8, bool or float), all in the batch's pixels. ``G`` may be 0.

        Returns:
            ``(features, outputs)``: ``features`` the OrderedDict ``"0"``..``"3"`` (P2..P5, strides 4..32)
            and ``"pool"`` (P6), each ``(N, fpn_channels, H / s, W / s)``. ``outputs`` in training: the
            scalar losses ``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``,
            ``loss_mask``; in evaluation: per image ``boxes`` ``(D, 4)`` float xyxy (pixels, clipped to
            the image), ``labels`` ``(D,)`` int64, ``scores`` ``(D,)``, ``masks`` ``(D, 1, h, w)``
            probabilities pasted into the image; best first, ``D <= box_detections_per_img``.

        Raises:
            ValueError: malformed images, image sizes or targets (message with the shapes).
        """
        self._check_inputs(images, image_sizes, targets)
        image_sizes = [(int(h), int(w)) for h, w in image_sizes]
        features = self.backbone(images)
        proposals, rpn_losses = self.rpn(features, image_sizes, tuple(images.shape[-2:]), targets)
        detections, head_losses = self.roi_heads(features, proposals, image_sizes, targets)
        if self.training:
            return features, {**rpn_losses, **head_losses}
        for detection, image_size in zip(detections, image_sizes):
            detection["masks"] = paste_masks_in_image(detection["masks"], detection["boxes"], image_size)
        return features, detections

    def _check_inputs(
        self,
        images: torch.Tensor,
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, torch.Tensor]] | None,
    ) -> None:
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images must be a float (N, 3, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        batch, _, height, width = images.shape
        if height % SIZE_DIVISIBLE or width % SIZE_DIVISIBLE:
            raise ValueError(f"the batch's height and width must be multiples of {SIZE_DIVISIBLE} (pad with "
                             f"batch_images), got {height}x{width}")
        if len(image_sizes) != batch or any(not (0 < h <= height and 0 < w <= width) for h, w in image_sizes):
            raise ValueError(f"need one (h, w) within {height}x{width} per image, got {list(image_sizes)} for {batch}")
        if not self.training:
            return
        if targets is None or len(targets) != batch:
            raise ValueError(f"training needs one target per image, got {None if targets is None else len(targets)}")
        for index, target in enumerate(targets):
            missing = {"boxes", "labels", "masks"} - set(target)
            if missing:
                raise ValueError(f"target {index} lacks {sorted(missing)}")
            boxes, labels, masks = target["boxes"], target["labels"], target["masks"]
            count = len(boxes)
            if boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
                raise ValueError(f"target {index}: boxes must be float (G, 4), got {boxes.dtype} {tuple(boxes.shape)}")
            if labels.shape != (count,) or labels.dtype != torch.int64:
                raise ValueError(
                    f"target {index}: labels must be int64 ({count},), got {labels.dtype} {tuple(labels.shape)}"
                )
            if masks.dim() != 3 or len(masks) != count:
                raise ValueError(f"target {index}: masks must be ({count}, h, w), got {tuple(masks.shape)}")
            if count and ((labels < 1) | (labels >= self.num_classes)).any():
                raise ValueError(f"target {index}: labels must be in 1..{self.num_classes - 1}, got {labels.tolist()}")
            degenerate = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
            if degenerate.any():
                raise ValueError(f"target {index}: boxes need positive width and height, got "
                                 f"{boxes[degenerate].tolist()}")


def adapt_predictor_classes(
    state_dict: Mapping[str, torch.Tensor], class_indices: Sequence[int], prefix: str = "roi_heads."
) -> dict[str, torch.Tensor]:
    """A checkpoint's class-specific rows cut down to (and reordered as) ``class_indices``.

    New class ``j`` takes the rows of old class ``class_indices[j]`` in ``box_predictor.cls_score``
    (weight and bias), ``box_predictor.bbox_pred`` (the 4 rows ``4c .. 4c + 3``) and
    ``mask_predictor.mask_fcn_logits`` (weight and bias); every other entry is passed through unchanged
    (the same tensors). E.g. torchvision's COCO checkpoint (91 classes, 0 = background, 1 = person, 2 =
    bicycle, 3 = car) for a person/car model: ``adapt_predictor_classes(sd, [0, 1, 3])``, then
    ``MaskRCNN(num_classes=3).load_state_dict(...)``. The background (old 0) must stay first, because
    the heads treat class 0 as background.

    Args:
        state_dict: a :class:`MaskRCNN` (or torchvision ``maskrcnn_resnet50_fpn``) state dict.
        class_indices: old class index of every new class, ``class_indices[0] == 0`` and no other 0; an old
            class may seed several new ones (e.g. COCO's person for Cityscapes' person and rider).
        prefix: the RoI heads' key prefix (``"roi_heads."``).

    Returns:
        A new dict in the same key order.

    Raises:
        ValueError: on a missing predictor key, a class list that does not start with (or repeats) 0, or an
            index outside the checkpoint's classes.
    """
    indices = [int(i) for i in class_indices]
    missing = [prefix + key for key in PREDICTOR_CLASS_ROWS if prefix + key not in state_dict]
    if missing:
        raise ValueError(f"state dict lacks the predictor keys {missing}")
    old_classes = state_dict[prefix + "box_predictor.cls_score.weight"].shape[0]
    valid = all(0 <= i < old_classes for i in indices) and indices.count(0) == 1
    if not indices or indices[0] != 0 or not valid:
        raise ValueError(f"class_indices must start with 0 (background), use 0 only there, and stay below {old_classes}, "
                         f"got {indices}")
    adapted = dict(state_dict)
    for key, rows in PREDICTOR_CLASS_ROWS.items():
        tensor = state_dict[prefix + key]
        if tensor.shape[0] != old_classes * rows:
            raise ValueError(f"{prefix + key} has {tensor.shape[0]} rows, expected {old_classes} x {rows}")
        selected = torch.tensor([i * rows + r for i in indices for r in range(rows)], device=tensor.device)
        adapted[prefix + key] = tensor.index_select(0, selected)
    return adapted
