"""The RoI heads of Mask R-CNN on an FPN (box classification/regression and masks), torchvision 0.28's way.

He et al., *Mask R-CNN* (ICCV 2017), §3 and Fig. 4 (right, the FPN head): RoIAlign pools 7x7 features per
proposal for the box branch (two 1024-d fully connected layers, then class scores and per-class box
deltas) and 14x14 for the mask branch (four 3x3 256-channel convolutions with ReLU, a 2x2 stride-2
transposed convolution with ReLU and a 1x1 convolution: a 28x28 mask logit per class). Proposals are pooled
from the FPN level of their size (Lin et al., FPN, Eq. 1) by
:class:`~panoptic_perception.nn.roi_align.MultiScaleRoIAlign` over ``"0"``..``"3"`` with 2 samples per bin
per axis.

Everything follows torchvision's ``models/detection/roi_heads.py``, ``faster_rcnn.py`` and ``mask_rcnn.py``
(read for the rules, not copied), so the parameters load from ``maskrcnn_resnet50_fpn`` under
``roi_heads.`` (``box_head.fc6``, ``box_head.fc7``, ``box_predictor.cls_score``, ``box_predictor.bbox_pred``,
``mask_head.{0..3}.0``, ``mask_predictor.conv5_mask``, ``mask_predictor.mask_fcn_logits``) and the outputs
are the same:

* inference (:meth:`RoIHeads.postprocess_detections`): class probabilities by softmax; per-class boxes
  decoded with weights (10, 10, 5, 5) and clipped to the image; background dropped; every (proposal,
  class) pair with probability ``> 0.05`` and both sides ``>= 1e-2`` px is a candidate; NMS at 0.5 per
  class, keeping at most 100 per image (this package's exact greedy NMS, stopping at the 100th
  detection). Masks: the sigmoid of the predicted
  class's 28x28 logits.
* training: ground-truth boxes are added to the proposals; each proposal takes the class of the
  ground-truth box it overlaps with IoU ``>= 0.5`` (else background); 512 proposals are sampled per image
  with at most 25% positives (the RPN's sampler, so the random stream is torchvision's); the loss is
  :func:`fastrcnn_loss` (cross-entropy over the sampled proposals plus smooth-L1, beta 1/9, over the
  positives' deltas of their class, summed and divided by the number sampled) and :func:`maskrcnn_loss`
  (binary cross-entropy of the positives' class mask against the ground-truth mask resampled onto the
  proposal by :func:`project_masks_on_boxes`).
* :func:`paste_masks_in_image` puts 28x28 mask probabilities into the image as torchvision does, one
  pixel of zero padding around the mask with the box enlarged to match, box corners truncated to
  integers, and bilinear (``align_corners=False``) resizing to the box's whole-pixel size; here as two
  matrix products with the interpolation weights, computed only over the part of the image each box
  covers (:func:`paste_masks_in_boxes`). One product per box sums in another order than the former
  batched product over whole images: values differ by 1-2 float32 steps at most, so a probability that
  close to the mask threshold may fall on its other side (2 pixels in 400 random scenes with probabilities
  near 0.5 in a review; none on real frames).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .boxes import batched_nms, box_iou
from .roi_align import MultiScaleRoIAlign, roi_align
from .rpn import BalancedPositiveNegativeSampler, BoxCoder, Matcher, clip_boxes, large_enough

#: Pyramid levels the RoI heads pool from (P2..P5; P6 serves the RPN only).
ROI_FEATURE_NAMES = ("0", "1", "2", "3")


class TwoMLPHead(nn.Module):
    """The box head: flatten, then two fully connected layers with ReLU (``fc6``, ``fc7``).

    ``(K, C, 7, 7)`` pooled features → ``(K, representation_size)``; PyTorch's default Linear init.
    """

    def __init__(self, in_channels: int, representation_size: int = 1024) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(start_dim=1)))))


class FastRCNNPredictor(nn.Module):
    """Class logits ``cls_score`` ``(K, num_classes)`` and per-class box deltas ``bbox_pred``
    ``(K, 4 * num_classes)`` (class ``c`` in columns ``4c .. 4c + 3``) from ``(K, in_channels)``."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


class MaskRCNNHeads(nn.Sequential):
    """The mask head's 3x3 convolutions with ReLU; keys ``{i}.0.{weight,bias}`` as torchvision's version 2.

    ``(K, in_channels, 14, 14)`` → ``(K, layers[-1], 14, 14)``. Kaiming-normal (fan-out) weights, zero biases.
    """

    def __init__(self, in_channels: int, layers: Sequence[int] = (256, 256, 256, 256)) -> None:
        blocks, channels = [], in_channels
        for out_channels in layers:
            blocks.append(nn.Sequential(nn.Conv2d(channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)))
            channels = out_channels
        super().__init__(*blocks)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)


class MaskRCNNPredictor(nn.Sequential):
    """``conv5_mask`` (2x2 stride-2 transposed convolution) + ReLU + ``mask_fcn_logits`` (1x1):
    ``(K, in_channels, 14, 14)`` → ``(K, num_classes, 28, 28)`` logits. Kaiming-normal (fan-out) weights;
    biases keep PyTorch's default init, as in torchvision."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int) -> None:
        super().__init__(OrderedDict([
            ("conv5_mask", nn.ConvTranspose2d(in_channels, dim_reduced, 2, stride=2)),
            ("relu", nn.ReLU(inplace=True)),
            ("mask_fcn_logits", nn.Conv2d(dim_reduced, num_classes, 1)),
        ]))
        for name, parameter in self.named_parameters():
            if name.endswith("weight"):
                nn.init.kaiming_normal_(parameter, mode="fan_out", nonlinearity="relu")


def fastrcnn_loss(
    class_logits: torch.Tensor, box_regression: torch.Tensor, labels: torch.Tensor, regression_targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fast R-CNN's classification and box losses over K sampled proposals.

    Args:
        class_logits: ``(K, C)``.
        box_regression: ``(K, 4C)`` per-class deltas.
        labels: ``(K,)`` int64 classes, 0 = background.
        regression_targets: ``(K, 4)`` deltas to each proposal's matched ground-truth box.

    Returns:
        Cross-entropy (mean over K) and smooth-L1 (beta 1/9) of the positives' deltas of their class,
        summed and divided by K.
    """
    classification_loss = F.cross_entropy(class_logits, labels)
    positive = torch.nonzero(labels > 0).flatten()
    deltas = box_regression.reshape(len(labels), -1, 4)[positive, labels[positive]]
    box_loss = F.smooth_l1_loss(deltas, regression_targets[positive], beta=1 / 9, reduction="sum")
    return classification_loss, box_loss / labels.numel()


def project_masks_on_boxes(
    gt_masks: torch.Tensor, boxes: torch.Tensor, matched_idxs: torch.Tensor, resolution: int
) -> torch.Tensor:
    """Ground-truth masks resampled onto proposals: the mask-loss targets.

    Args:
        gt_masks: ``(G, H, W)`` masks of one image (any numeric dtype; 0/1).
        boxes: ``(K, 4)`` xyxy proposals in the masks' pixels.
        matched_idxs: ``(K,)`` index of each proposal's ground-truth mask.
        resolution: M of the ``M x M`` targets (28).

    Returns:
        ``(K, M, M)`` in ``boxes``' dtype: RoIAlign (``aligned=False``, adaptive sampling, scale 1) of
        mask ``matched_idxs[k]`` over box ``k``; fractional at mask borders.
    """
    rois = torch.cat((matched_idxs.to(boxes)[:, None], boxes), dim=1)
    return roi_align(gt_masks[:, None].to(rois), rois, (resolution, resolution), 1.0)[:, 0]


def maskrcnn_loss(
    mask_logits: torch.Tensor,
    proposals: Sequence[torch.Tensor],
    gt_masks: Sequence[torch.Tensor],
    gt_labels: Sequence[torch.Tensor],
    matched_idxs: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Mask R-CNN's mask loss (§3): per-pixel binary cross-entropy, averaged, of each positive proposal's
    ``M x M`` logits of its ground-truth class against :func:`project_masks_on_boxes`' target.

    Args:
        mask_logits: ``(K, C, M, M)`` for the positive proposals of all images, image by image.
        proposals: per image ``(K_i, 4)`` positive proposals.
        gt_masks: per image ``(G_i, H_i, W_i)`` masks; ``gt_labels``: per image ``(G_i,)`` int64 classes.
        matched_idxs: per image ``(K_i,)`` matched ground-truth index of each proposal.

    Returns:
        A scalar; ``0 * mask_logits.sum()`` (connected to the graph) when there are no positives.
    """
    labels = torch.cat([image_labels[idxs] for image_labels, idxs in zip(gt_labels, matched_idxs)])
    targets = torch.cat([
        project_masks_on_boxes(masks, boxes, idxs, mask_logits.shape[-1])
        for masks, boxes, idxs in zip(gt_masks, proposals, matched_idxs)
    ])
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    selected = mask_logits[torch.arange(len(labels), device=labels.device), labels]
    return F.binary_cross_entropy_with_logits(selected, targets)


def _resize_weights(
    start: torch.Tensor, end: torch.Tensor, pixels: torch.Tensor, length: int, dtype: torch.dtype
) -> torch.Tensor:
    """``(..., length)`` weights that resize a ``length``-long signal bilinearly (``align_corners=False``,
    as ``F.interpolate``'s CPU kernel) onto the whole pixels ``start .. end`` of an axis (``end - start +
    1`` pixels, at least 1), evaluated at ``pixels``; zero outside that span. ``start``, ``end`` and
    ``pixels`` broadcast together."""
    size = (end - start + 1).clamp(min=1)
    local = pixels - start
    inside = (local >= 0) & (pixels <= end)
    scale = torch.tensor(float(length), dtype=dtype, device=start.device) / size.to(dtype)
    source = (scale * (local.to(dtype) + 0.5) - 0.5).clamp(min=0)
    first = source.floor().long().clamp(max=length - 1)
    fraction = (source - first).clamp(0, 1)
    second = first + (first < length - 1).long()
    weights = torch.zeros(*local.shape, length, dtype=dtype, device=start.device)
    weights.scatter_add_(-1, first[..., None], (1 - fraction)[..., None])
    weights.scatter_add_(-1, second[..., None], fraction[..., None])
    return weights * inside[..., None]


def paste_masks_in_boxes(
    masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], padding: int = 1
) -> list[tuple[tuple[int, int, int, int], torch.Tensor]]:
    """Mask probabilities resized onto their boxes (torchvision's ``paste_masks_in_image``), each only
    over the part of the image its box covers.

    Each ``M x M`` mask is padded by ``padding`` zero pixels on every side and its box enlarged about its
    centre by ``(M + 2 padding) / M`` so that the mask keeps its place; the enlarged corners are truncated
    to integers (towards zero) ``x0, y0, x1, y1``; the padded mask is resized bilinearly
    (``align_corners=False``) to ``(y1 - y0 + 1) x (x1 - x0 + 1)`` pixels (at least 1x1) with its top-left
    pixel at ``(x0, y0)``, and the part inside the image is kept. A box entirely outside the image gives
    an empty window (torchvision's slicing fails there).

    Args:
        masks: ``(K, 1, M, M)`` float probabilities.
        boxes: ``(K, 4)`` xyxy boxes in image pixels.
        image_size: ``(h, w)`` of the image.
        padding: zero pixels around each mask (1).

    Returns:
        Per mask its window ``(x, y, w, h)`` in the image (w or h 0 when empty, as ``cv2.boundingRect``
        gives it) and the ``(h, w)`` probabilities there, in ``masks``' dtype; the mask is zero outside.

    Raises:
        ValueError: on masks that are not ``(K, 1, M, M)`` or boxes that are not ``(K, 4)``.
    """
    if masks.dim() != 4 or masks.shape[1] != 1 or masks.shape[2] != masks.shape[3] or boxes.shape != (len(masks), 4):
        raise ValueError(
            f"expected masks (K, 1, M, M) and boxes (K, 4), got {tuple(masks.shape)}, {tuple(boxes.shape)}"
        )
    height, width = image_size
    resolution = masks.shape[-1]
    padded = F.pad(masks[:, 0], (padding,) * 4)
    scale = (resolution + 2 * padding) / resolution
    # Enlarged boxes in the boxes' dtype, in torchvision's order of operations (whole pixels come from it).
    half_w = (boxes[:, 2] - boxes[:, 0]) * 0.5 * scale
    half_h = (boxes[:, 3] - boxes[:, 1]) * 0.5 * scale
    centre_x = (boxes[:, 2] + boxes[:, 0]) * 0.5
    centre_y = (boxes[:, 3] + boxes[:, 1]) * 0.5
    x0, x1 = (centre_x - half_w).long(), (centre_x + half_w).long()
    y0, y1 = (centre_y - half_h).long(), (centre_y + half_h).long()
    # The whole pixels of each enlarged box inside the image, as one list per axis for all boxes.
    left, top = x0.clamp(min=0), y0.clamp(min=0)
    wide, tall = (x1.clamp(max=width - 1) - left + 1).clamp(min=0), (y1.clamp(max=height - 1) - top + 1).clamp(min=0)
    length = padded.shape[-1]

    def weights(first: torch.Tensor, last: torch.Tensor, start: torch.Tensor, count: torch.Tensor) -> list[torch.Tensor]:
        owner = torch.repeat_interleave(torch.arange(len(count), device=count.device), count)
        pixels = start[owner] + torch.arange(len(owner), device=count.device) - (count.cumsum(0) - count)[owner]
        return list(_resize_weights(first[owner], last[owner], pixels, length, masks.dtype).split(count.tolist()))

    columns, rows = weights(x0, x1, left, wide), weights(y0, y1, top, tall)
    # Along x first, then y, as the interpolation kernel does.
    return [
        ((int(l), int(t), int(w), int(h)), r @ (p @ c.T))
        for l, t, w, h, r, p, c in zip(left, top, wide, tall, rows, padded, columns)
    ]


def paste_masks_in_image(
    masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int], padding: int = 1
) -> torch.Tensor:
    """:func:`paste_masks_in_boxes` pasted into whole images: ``(K, 1, h, w)`` in ``masks``' dtype, zero
    outside the boxes (torchvision's ``paste_masks_in_image``). Raises ValueError as that function does."""
    windows = paste_masks_in_boxes(masks, boxes, image_size, padding)
    pasted = masks.new_zeros((len(masks), 1, *image_size))
    for image, ((x, y, w, h), values) in zip(pasted, windows):
        image[0, y : y + h, x : x + w] = values
    return pasted


class RoIHeads(nn.Module):
    """Box and mask heads of Mask R-CNN with their inference post-processing and training losses.

    Args:
        num_classes: classes including the background (index 0), e.g. 91 for torchvision's COCO.
        in_channels: channels of the pyramid levels (256).
        representation_size: width of ``fc6``/``fc7`` (1024).
        mask_layers: channels of the mask head's convolutions ((256,) * 4); the predictor's transposed
            convolution keeps ``mask_layers[-1]`` channels.
        featmap_names: pyramid levels to pool from (``"0"``..``"3"``).
        box_pool_size, mask_pool_size, sampling_ratio: RoIAlign grids (7, 14) and samples per bin (2).
        aligned: RoIAlign's pixel-centre model (False, torchvision's; True with ``sampling_ratio=0`` is
            Detectron2's "ROIAlignV2").
        fg_iou_thresh, bg_iou_thresh: proposal IoU for a positive (``>=``, 0.5) and a negative (``<``, 0.5).
        batch_size_per_image, positive_fraction: proposals sampled per image in training (512, 0.25).
        bbox_reg_weights: box-coder weights (10, 10, 5, 5).
        score_thresh: least class probability of a detection (``>``, 0.05).
        nms_thresh: per-class NMS IoU (0.5).
        detections_per_img: most detections per image (100).
        min_size: least detection side in pixels (1e-2).

    Raises:
        ValueError: ``num_classes < 2`` or an empty ``mask_layers``.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        *,
        representation_size: int = 1024,
        mask_layers: Sequence[int] = (256, 256, 256, 256),
        featmap_names: Sequence[str] = ROI_FEATURE_NAMES,
        box_pool_size: int = 7,
        mask_pool_size: int = 14,
        sampling_ratio: int = 2,
        aligned: bool = False,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        min_size: float = 1e-2,
    ) -> None:
        super().__init__()
        if num_classes < 2 or not mask_layers:
            raise ValueError(f"need num_classes >= 2 (background included) and mask layers, got {num_classes}, "
                             f"{tuple(mask_layers)}")
        self.num_classes = num_classes
        self.box_roi_pool = MultiScaleRoIAlign(featmap_names, box_pool_size, sampling_ratio, aligned=aligned)
        self.box_head = TwoMLPHead(in_channels * box_pool_size**2, representation_size)
        self.box_predictor = FastRCNNPredictor(representation_size, num_classes)
        self.mask_roi_pool = MultiScaleRoIAlign(featmap_names, mask_pool_size, sampling_ratio, aligned=aligned)
        self.mask_head = MaskRCNNHeads(in_channels, mask_layers)
        self.mask_predictor = MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.min_size = min_size

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        proposals: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """Detections (evaluation) or losses (training).

        Args:
            features: pyramid levels ``(N, C, H_l, W_l)`` by name.
            proposals: per image ``(P_i, 4)`` xyxy proposals (the RPN's).
            image_sizes: each image's ``(h, w)`` (boxes are clipped to it; it also fixes the pooling scales).
            targets: in training, per image ``boxes`` ``(G_i, 4)`` float xyxy, ``labels`` ``(G_i,)`` int64
                and ``masks`` ``(G_i, H_i, W_i)`` (0/1, in the image's pixels).

        Returns:
            ``(detections, losses)``. Evaluation: per image ``boxes`` ``(D, 4)``, ``labels`` ``(D,)`` int64,
            ``scores`` ``(D,)`` and ``masks`` ``(D, 1, 28, 28)`` probabilities (not pasted), best first;
            losses ``{}``. Training: ``[]`` and ``loss_classifier``, ``loss_box_reg``, ``loss_mask``.

        Raises:
            ValueError: training without targets.
        """
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets in training mode")
            return [], self._losses(features, proposals, image_sizes, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_sizes))
        class_logits, box_regression = self.box_predictor(box_features)
        detections = self.postprocess_detections(class_logits, box_regression, proposals, image_sizes)
        boxes = [d["boxes"] for d in detections]
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_sizes)))
        labels = torch.cat([d["labels"] for d in detections])
        masks = mask_logits[torch.arange(len(labels), device=labels.device), labels][:, None].sigmoid()
        for detection, image_masks in zip(detections, masks.split([len(b) for b in boxes])):
            detection["masks"] = image_masks
        return detections, {}

    def postprocess_detections(
        self,
        class_logits: torch.Tensor,
        box_regression: torch.Tensor,
        proposals: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """Per image ``boxes``, ``scores``, ``labels`` from ``(P, C)`` logits and ``(P, 4C)`` deltas of the
        concatenated proposals (see the module docstring for the rules)."""
        boxes = self.box_coder.decode(box_regression, torch.cat(list(proposals)))  # (P, C, 4)
        scores = F.softmax(class_logits, dim=-1)
        num_classes = scores.shape[-1]
        counts = [len(p) for p in proposals]
        detections = []
        for image_boxes, image_scores, image_size in zip(boxes.split(counts), scores.split(counts), image_sizes):
            labels = torch.arange(num_classes, device=scores.device).expand_as(image_scores)
            # Every (proposal, class) pair but the background is a candidate, proposal-major.
            image_boxes = clip_boxes(image_boxes, image_size)[:, 1:].reshape(-1, 4)
            image_scores = image_scores[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            keep = (image_scores > self.score_thresh) & large_enough(image_boxes, self.min_size)
            image_boxes, image_scores, labels = image_boxes[keep], image_scores[keep], labels[keep]
            kept = batched_nms(image_boxes, image_scores, labels, self.nms_thresh,
                               max_detections=self.detections_per_img, max_candidates=None)
            detections.append({"boxes": image_boxes[kept], "labels": labels[kept], "scores": image_scores[kept]})
        return detections

    def select_training_samples(
        self, proposals: Sequence[torch.Tensor], targets: Sequence[Mapping[str, torch.Tensor]]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """Ground-truth boxes added to the proposals, matched and sampled.

        Returns per image the sampled proposals ``(S_i, 4)`` (in index order), their matched ground-truth
        indices ``(S_i,)`` (0 for background) and labels ``(S_i,)`` (0 = background), and the ``(sum S_i,
        4)`` regression targets.
        """
        proposals = [torch.cat((p, t["boxes"].to(p.dtype))) for p, t in zip(proposals, targets)]
        all_matched, all_labels = [], []
        for image_proposals, target in zip(proposals, targets):
            gt_boxes, gt_labels = target["boxes"], target["labels"]
            if gt_boxes.numel() == 0:  # an image without objects: all background
                matched = torch.zeros(len(image_proposals), dtype=torch.long, device=image_proposals.device)
                labels = torch.zeros_like(matched)
            else:
                matches = self.matcher(box_iou(gt_boxes.to(image_proposals.dtype), image_proposals))
                matched = matches.clamp(min=0)
                labels = gt_labels[matched].to(torch.long)
                labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
                labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
            all_matched.append(matched)
            all_labels.append(labels)
        positive_masks, negative_masks = self.sampler(all_labels)
        sampled_proposals, sampled_matched, sampled_labels, matched_boxes = [], [], [], []
        for image_proposals, matched, labels, positive, negative, target in zip(
            proposals, all_matched, all_labels, positive_masks, negative_masks, targets
        ):
            sampled = torch.nonzero(positive | negative).flatten()
            sampled_proposals.append(image_proposals[sampled])
            sampled_matched.append(matched[sampled])
            sampled_labels.append(labels[sampled])
            gt_boxes = target["boxes"].to(image_proposals.dtype)
            if gt_boxes.numel() == 0:
                gt_boxes = image_proposals.new_zeros((1, 4))
            matched_boxes.append(gt_boxes[matched[sampled]])
        regression_targets = self.box_coder.encode(torch.cat(matched_boxes), torch.cat(sampled_proposals))
        return sampled_proposals, sampled_matched, sampled_labels, regression_targets

    def _losses(
        self,
        features: Mapping[str, torch.Tensor],
        proposals: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Mapping[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        proposals, matched, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_sizes))
        class_logits, box_regression = self.box_predictor(box_features)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, torch.cat(labels),
                                                      regression_targets)
        # The mask branch trains on the sampled positives only.
        positives = [torch.nonzero(image_labels > 0).flatten() for image_labels in labels]
        mask_proposals = [p[i] for p, i in zip(proposals, positives)]
        mask_matched = [m[i] for m, i in zip(matched, positives)]
        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals, image_sizes)))
        loss_mask = maskrcnn_loss(mask_logits, mask_proposals, [t["masks"] for t in targets],
                                  [t["labels"] for t in targets], mask_matched)
        return {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}
