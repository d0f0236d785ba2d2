"""Region Proposal Network of Faster R-CNN on an FPN, with torchvision 0.28's layout and semantics.

Ren et al., *Faster R-CNN* (NeurIPS 2015), §3.1, on a feature pyramid as in Lin et al., *Feature Pyramid
Networks for Object Detection* (CVPR 2017), §4.1: one shared head (a 3x3 convolution with ReLU, then 1x1
convolutions for objectness and box deltas) slides over every pyramid level; each level has anchors of one
size (32, 64, 128, 256, 512 pixels on P2..P6) and three aspect ratios (0.5, 1, 2).

The rules are those of torchvision's ``models/detection/rpn.py``, ``anchor_utils.py`` and ``_utils.py``
(read, not copied), so the parameters load from torchvision's ``maskrcnn_resnet50_fpn`` under ``rpn.``
(``head.conv.0.0.{weight,bias}``, ``head.cls_logits.*``, ``head.bbox_pred.*``) and the proposals are the same:

* anchors: per level, zero-centred cell anchors ``round((-w, -h, w, h) / 2)`` with ``h = size * sqrt(r)``,
  ``w = size / sqrt(r)`` (aspect ratio ``r = h / w``; ``round_anchors=False`` keeps the fractions, as
  Detectron2 does), ordered ratio-major then size; shifted to every
  location ``(x * stride_w, y * stride_h)``, locations row-major, ``stride = batch size // grid size``
  (integer division of the padded batch tensor's size). All levels concatenated, finest first; the
  head's outputs are flattened in the same (level, y, x, anchor) order.
* box coding (:class:`BoxCoder`): centre offsets relative to the reference size, log size ratios, each
  times a weight ((1, 1, 1, 1) here, (10, 10, 5, 5) in the box head); decoded size logs are clamped at
  ``log(1000 / 16)``.
* proposals: per level the ``pre_nms_top_n`` best objectness logits (``torch.topk``), decoded, clipped to
  the image (``0 <= x <= w``, ``0 <= y <= h``), boxes with a side ``< 1e-3`` removed, ``sigmoid >=
  score_thresh`` kept, then NMS at 0.7 per level, keeping at most ``post_nms_top_n`` per image. The NMS is
  this package's exact greedy :func:`~panoptic_perception.nn.boxes.batched_nms` with its early stop at
  ``post_nms_top_n`` (the same indices as torchvision's full NMS then truncated; levels are kept apart by
  masking, so the IoUs are those of torchvision's per-level float32 NMS).
* training (§3.1.2): anchors matched to ground truth by IoU (:class:`Matcher`: ``>= 0.7`` positive,
  ``< 0.3`` negative, in between ignored; every ground-truth box also claims the anchors of its highest
  IoU), 256 anchors sampled per image with at most half positives
  (:class:`BalancedPositiveNegativeSampler`); objectness loss: binary cross-entropy with logits, mean over
  the sampled anchors; box loss: smooth-L1 (beta 1/9) summed over the sampled positives and divided by the
  number of sampled anchors. The sampler draws ``torch.randperm`` exactly as torchvision's does (positives
  then negatives, image by image), so with the same seed both sample the same anchors.

:class:`Matcher`, :class:`BalancedPositiveNegativeSampler` and :class:`BoxCoder` are also used by the RoI
heads (:mod:`panoptic_perception.nn.roi_heads`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .boxes import batched_nms, box_iou

#: Anchor sizes in input pixels per pyramid level (P2..P6) and their aspect ratios (height / width).
DEFAULT_ANCHOR_SIZES: tuple[tuple[float, ...], ...] = ((32,), (64,), (128,), (256,), (512,))
DEFAULT_ASPECT_RATIOS: tuple[tuple[float, ...], ...] = ((0.5, 1.0, 2.0),) * 5

#: Largest decoded log size ratio: a box grows at most 1000 / 16 times its reference per step.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


class AnchorGenerator(nn.Module):
    """Anchors of every pyramid level (no parameters, no state).

    Args:
        sizes: per level, the anchor sizes (square-root areas) in input pixels.
        aspect_ratios: per level, the height / width ratios.
        round_anchors: round the cell anchors' corners to whole pixels (torchvision) or not (Detectron2).

    Raises:
        ValueError: when ``sizes`` and ``aspect_ratios`` differ in length or a level has none.
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]] = DEFAULT_ANCHOR_SIZES,
        aspect_ratios: Sequence[Sequence[float]] = DEFAULT_ASPECT_RATIOS,
        round_anchors: bool = True,
    ) -> None:
        super().__init__()
        self.round_anchors = round_anchors
        self.sizes = tuple(tuple(level) for level in sizes)
        self.aspect_ratios = tuple(tuple(level) for level in aspect_ratios)
        if len(self.sizes) != len(self.aspect_ratios) or not all(self.sizes) or not all(self.aspect_ratios):
            raise ValueError(f"need sizes and aspect ratios for every level, got {sizes} and {aspect_ratios}")

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per feature-map location, per level (3 for the default)."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def cell_anchors(self, level: int) -> torch.Tensor:
        """Zero-centred anchors ``(A, 4)`` xyxy of one level, float32, rounded to whole pixels unless
        ``round_anchors`` is false."""
        sizes = torch.as_tensor(self.sizes[level], dtype=torch.float32)
        ratios = torch.as_tensor(self.aspect_ratios[level], dtype=torch.float32)
        height_factor = torch.sqrt(ratios)
        width_factor = 1 / height_factor
        widths = (width_factor[:, None] * sizes[None, :]).reshape(-1)
        heights = (height_factor[:, None] * sizes[None, :]).reshape(-1)
        anchors = torch.stack((-widths, -heights, widths, heights), dim=1) / 2
        return anchors.round() if self.round_anchors else anchors

    def forward(
        self,
        grid_sizes: Sequence[tuple[int, int]],
        batch_shape: tuple[int, int],
        dtype: torch.dtype,
        device: torch.device,
    ) -> list[torch.Tensor]:
        """Anchors per level, ``(H_l * W_l * A_l, 4)`` xyxy in input pixels, ordered (y, x, anchor).

        Args:
            grid_sizes: ``(H_l, W_l)`` of every level's feature map, finest first.
            batch_shape: ``(H, W)`` of the (padded) image batch; a level's stride is ``H // H_l``, ``W // W_l``.
            dtype, device: of the result (the features').

        Raises:
            ValueError: when the number of levels differs from the configured one.
        """
        if len(grid_sizes) != len(self.sizes):
            raise ValueError(f"{len(grid_sizes)} feature maps but anchors for {len(self.sizes)} levels")
        anchors = []
        for level, (grid_h, grid_w) in enumerate(grid_sizes):
            stride_h, stride_w = batch_shape[0] // grid_h, batch_shape[1] // grid_w
            shifts_x = torch.arange(grid_w, dtype=dtype, device=device) * stride_w
            shifts_y = torch.arange(grid_h, dtype=dtype, device=device) * stride_h
            y, x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shifts = torch.stack((x, y, x, y), dim=-1).reshape(-1, 1, 4)
            cell = self.cell_anchors(level).to(dtype=dtype, device=device)
            anchors.append((shifts + cell[None]).reshape(-1, 4))
        return anchors


class BoxCoder:
    """Faster R-CNN box deltas ``(dx, dy, dw, dh)`` relative to reference boxes (Ren et al., Eq. 2).

    ``dx = wx * (x_box - x_ref) / w_ref``, ``dy = wy * (y_box - y_ref) / h_ref``, ``dw = ww * log(w_box /
    w_ref)``, ``dh = wh * log(h_box / h_ref)`` with box centres ``x = x1 + w / 2``. Decoding inverts this,
    clamping ``dw / ww`` and ``dh / wh`` at ``bbox_xform_clip`` first.

    Args:
        weights: ``(wx, wy, ww, wh)``: (1, 1, 1, 1) for the RPN, (10, 10, 5, 5) for the box head.
        bbox_xform_clip: the clamp of decoded log size ratios.
    """

    def __init__(self, weights: tuple[float, float, float, float], bbox_xform_clip: float = BBOX_XFORM_CLIP) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Deltas ``(N, 4)`` that move ``reference`` ``(N, 4)`` xyxy onto ``boxes`` ``(N, 4)`` xyxy."""
        weights = torch.as_tensor(self.weights, dtype=boxes.dtype, device=boxes.device)
        ref_w = reference[:, 2] - reference[:, 0]
        ref_h = reference[:, 3] - reference[:, 1]
        ref_x = reference[:, 0] + 0.5 * ref_w
        ref_y = reference[:, 1] + 0.5 * ref_h
        box_w = boxes[:, 2] - boxes[:, 0]
        box_h = boxes[:, 3] - boxes[:, 1]
        box_x = boxes[:, 0] + 0.5 * box_w
        box_y = boxes[:, 1] + 0.5 * box_h
        dx = weights[0] * (box_x - ref_x) / ref_w
        dy = weights[1] * (box_y - ref_y) / ref_h
        dw = weights[2] * torch.log(box_w / ref_w)
        dh = weights[3] * torch.log(box_h / ref_h)
        return torch.stack((dx, dy, dw, dh), dim=1)

    def decode(self, deltas: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Boxes ``(N, C, 4)`` xyxy from deltas ``(N, 4 * C)`` (C sets per reference box, e.g. one per
        class) and ``reference`` ``(N, 4)`` xyxy; in ``deltas``' dtype.

        Raises:
            ValueError: when the shapes do not match.
        """
        if deltas.dim() != 2 or deltas.shape[1] % 4 or reference.shape != (deltas.shape[0], 4):
            raise ValueError(f"expected deltas (N, 4C) and reference (N, 4), got {tuple(deltas.shape)}, "
                             f"{tuple(reference.shape)}")
        reference = reference.to(deltas.dtype)
        ref_w = reference[:, 2] - reference[:, 0]
        ref_h = reference[:, 3] - reference[:, 1]
        ref_x = reference[:, 0] + 0.5 * ref_w
        ref_y = reference[:, 1] + 0.5 * ref_h
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.bbox_xform_clip)
        centre_x = dx * ref_w[:, None] + ref_x[:, None]
        centre_y = dy * ref_h[:, None] + ref_y[:, None]
        half_w = 0.5 * (torch.exp(dw) * ref_w[:, None])
        half_h = 0.5 * (torch.exp(dh) * ref_h[:, None])
        return torch.stack((centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h), dim=2)


class Matcher:
    """Assigns each prediction (anchor, proposal) the ground-truth box it overlaps best, by quality (IoU).

    For a ``(G, N)`` quality matrix, prediction ``n`` gets ``argmax_g quality[g, n]`` when that maximum is
    ``>= high_threshold``, :attr:`BETWEEN_THRESHOLDS` (-2) when it is in ``[low_threshold,
    high_threshold)`` and :attr:`BELOW_LOW_THRESHOLD` (-1) below. With ``allow_low_quality_matches``
    (the RPN's rule, Ren et al. §3.1.2), each ground-truth box's best predictions (all ties of its highest
    quality, even 0) are given back their argmax match whatever their quality.

    Raises:
        ValueError: ``low_threshold > high_threshold``; on call, an empty quality matrix.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False) -> None:
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} > high_threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, quality: torch.Tensor) -> torch.Tensor:
        """``(N,)`` int64: the matched ground-truth index of every prediction, or -1 / -2."""
        if quality.numel() == 0:
            raise ValueError(f"cannot match with an empty quality matrix {tuple(quality.shape)} (G boxes x N "
                             "predictions)")
        best_quality, best_match = quality.max(dim=0)
        matches = best_match.clone()
        matches[best_quality < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        between = (best_quality >= self.low_threshold) & (best_quality < self.high_threshold)
        matches[between] = self.BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            best_of_each_box = quality.max(dim=1).values
            predictions = torch.nonzero(quality == best_of_each_box[:, None])[:, 1]
            matches[predictions] = best_match[predictions]
        return matches


class BalancedPositiveNegativeSampler:
    """Samples a fixed number of predictions per image with a bounded share of positives.

    Per image: ``min(#positives, int(batch_size_per_image * positive_fraction))`` positives (labels
    ``>= 1``) and up to ``batch_size_per_image`` minus that many negatives (label 0), each set drawn
    uniformly by ``torch.randperm`` (positives first, then negatives, image by image: the same random
    stream as torchvision's sampler). Labels ``< 0`` are ignored.

    Raises:
        ValueError: ``batch_size_per_image < 1`` or ``positive_fraction`` outside [0, 1].
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        if batch_size_per_image < 1 or not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"need batch_size_per_image >= 1 and positive_fraction in [0, 1], got "
                             f"{batch_size_per_image}, {positive_fraction}")
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, labels: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image ``(N_i,)`` labels → bool masks of the sampled positives and of the sampled negatives."""
        positive_masks, negative_masks = [], []
        for labels_in_image in labels:
            positive = torch.nonzero(labels_in_image >= 1).flatten()
            negative = torch.nonzero(labels_in_image == 0).flatten()
            num_positive = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            num_negative = min(negative.numel(), self.batch_size_per_image - num_positive)
            chosen_positive = positive[torch.randperm(positive.numel(), device=positive.device)[:num_positive]]
            chosen_negative = negative[torch.randperm(negative.numel(), device=negative.device)[:num_negative]]
            positive_mask = torch.zeros_like(labels_in_image, dtype=torch.bool)
            negative_mask = torch.zeros_like(labels_in_image, dtype=torch.bool)
            positive_mask[chosen_positive] = True
            negative_mask[chosen_negative] = True
            positive_masks.append(positive_mask)
            negative_masks.append(negative_mask)
        return positive_masks, negative_masks


def clip_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """``(..., 4)`` xyxy boxes clamped to ``0 <= x <= w``, ``0 <= y <= h`` for ``image_size = (h, w)``."""
    height, width = image_size
    x = boxes[..., 0::2].clamp(min=0, max=width)
    y = boxes[..., 1::2].clamp(min=0, max=height)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def large_enough(boxes: torch.Tensor, min_size: float) -> torch.Tensor:
    """Bool mask of the ``(..., 4)`` xyxy boxes whose width and height are both ``>= min_size``."""
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


class RPNHead(nn.Module):
    """The RPN's sliding head: 3x3 convolution + ReLU, then 1x1 objectness and box-delta convolutions.

    Keys as torchvision's ``RPNHead`` (version 2): ``conv.0.0.{weight,bias}``, ``cls_logits.*``,
    ``bbox_pred.*``; weights initialised N(0, 0.01), biases 0.

    Args:
        in_channels: channels of every pyramid level (256).
        num_anchors: anchors per location (3).
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        # Nested Sequentials give torchvision's key names (its Conv2dNormActivation is a Sequential).
        self.conv = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, in_channels, 3, padding=1), nn.ReLU(inplace=True))
        )
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level ``(N, C, H, W)`` → objectness logits ``(N, A, H, W)`` and deltas ``(N, 4A, H, W)``
        (channel ``4a + k`` is coordinate ``k`` of anchor ``a``)."""
        objectness, deltas = [], []
        for feature in features:
            hidden = self.conv(feature)
            objectness.append(self.cls_logits(hidden))
            deltas.append(self.bbox_pred(hidden))
        return objectness, deltas


class RegionProposalNetwork(nn.Module):
    """The FPN RPN: proposals per image and, in training, the objectness and box-regression losses.

    Args:
        in_channels: channels of the pyramid levels (256).
        anchor_sizes, aspect_ratios, round_anchors: see :class:`AnchorGenerator`.
        pre_nms_top_n_train, pre_nms_top_n_test: best anchors kept per level before NMS (2000, 1000).
        post_nms_top_n_train, post_nms_top_n_test: proposals kept per image after NMS (2000, 1000).
        nms_thresh: IoU above which a proposal is suppressed by a better one of the same level (0.7).
        fg_iou_thresh, bg_iou_thresh: anchor IoU for positives (``>=``, 0.7) and negatives (``<``, 0.3).
        batch_size_per_image, positive_fraction: anchors sampled per image for the losses (256, 0.5).
        score_thresh: least objectness probability of a proposal (``>=``, 0.0).
        min_size: least proposal side in pixels (1e-3).

    Modules ``anchor_generator`` (no parameters) and ``head`` (:class:`RPNHead`), so the state dict is
    torchvision's: ``head.conv.0.0.weight``, ...
    """

    def __init__(
        self,
        in_channels: int = 256,
        *,
        anchor_sizes: Sequence[Sequence[float]] = DEFAULT_ANCHOR_SIZES,
        aspect_ratios: Sequence[Sequence[float]] = DEFAULT_ASPECT_RATIOS,
        round_anchors: bool = True,
        pre_nms_top_n_train: int = 2000,
        pre_nms_top_n_test: int = 1000,
        post_nms_top_n_train: int = 2000,
        post_nms_top_n_test: int = 1000,
        nms_thresh: float = 0.7,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        score_thresh: float = 0.0,
        min_size: float = 1e-3,
    ) -> None:
        super().__init__()
        self.anchor_generator = AnchorGenerator(anchor_sizes, aspect_ratios, round_anchors)
        anchors_per_location = set(self.anchor_generator.num_anchors_per_location())
        if len(anchors_per_location) != 1:
            raise ValueError(f"a shared head needs the same number of anchors on every level, got "
                             f"{anchors_per_location}")
        self.head = RPNHead(in_channels, anchors_per_location.pop())
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.pre_nms_top_n = {"train": pre_nms_top_n_train, "test": pre_nms_top_n_test}
        self.post_nms_top_n = {"train": post_nms_top_n_train, "test": post_nms_top_n_test}
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh
        self.min_size = min_size

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        batch_shape: tuple[int, int],
        targets: Sequence[Mapping[str, torch.Tensor]] | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Proposals for every image, and the losses in training mode.

        Args:
            features: all pyramid levels (``"0"``..``"3"``, ``"pool"``), ``(N, C, H_l, W_l)``, finest first.
            image_sizes: each image's ``(h, w)`` inside the padded batch (boxes are clipped to it).
            batch_shape: ``(H, W)`` of the padded image batch (it fixes the anchor strides).
            targets: in training, per image ``{"boxes": (G_i, 4) float xyxy}`` (input pixels; G_i may be 0).

        Returns:
            ``(proposals, losses)``: per image ``(P_i, 4)`` xyxy proposals, detached, best first
            (``P_i <= post_nms_top_n``); ``{"loss_objectness", "loss_rpn_box_reg"}`` scalars in training,
            else ``{}``.

        Raises:
            ValueError: training without targets, or ``image_sizes`` not one per image.
        """
        objectness_maps, delta_maps = self.head(list(features.values()))
        objectness, deltas, anchors, anchors_per_level = self._flatten(objectness_maps, delta_maps, batch_shape)
        proposals = self.filter_proposals(objectness.detach(), deltas.detach(), anchors, anchors_per_level, image_sizes)
        if not self.training:
            return proposals, {}
        if targets is None:
            raise ValueError("the RPN needs targets in training mode")
        losses = self.loss(objectness, deltas, anchors, [t["boxes"] for t in targets])
        return proposals, losses

    def proposals_from_head(
        self,
        objectness_maps: Sequence[torch.Tensor],
        delta_maps: Sequence[torch.Tensor],
        image_sizes: Sequence[tuple[int, int]],
        batch_shape: tuple[int, int],
    ) -> list[torch.Tensor]:
        """The proposals of :meth:`forward` in evaluation, from the head's outputs computed elsewhere (e.g.
        by an exported graph): per level objectness ``(N, A, H_l, W_l)`` and deltas ``(N, 4A, H_l, W_l)``.

        Raises:
            ValueError: ``image_sizes`` not one per image.
        """
        objectness, deltas, anchors, anchors_per_level = self._flatten(objectness_maps, delta_maps, batch_shape)
        return self.filter_proposals(objectness, deltas, anchors, anchors_per_level, image_sizes)

    def _flatten(
        self, objectness_maps: Sequence[torch.Tensor], delta_maps: Sequence[torch.Tensor], batch_shape: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """(N, sum H*W*A) logits, (N, sum H*W*A, 4) deltas and (sum H*W*A, 4) anchors, all in the anchors'
        (level, y, x, anchor) order, and the anchors per level."""
        num_images = objectness_maps[0].shape[0]
        anchors_per_level = self.anchor_generator(
            [tuple(o.shape[-2:]) for o in objectness_maps], batch_shape, objectness_maps[0].dtype,
            objectness_maps[0].device,
        )
        objectness = torch.cat([o.permute(0, 2, 3, 1).reshape(num_images, -1) for o in objectness_maps], dim=1)
        deltas = torch.cat(
            [d.view(num_images, -1, 4, *d.shape[-2:]).permute(0, 3, 4, 1, 2).reshape(num_images, -1, 4)
             for d in delta_maps],
            dim=1,
        )
        return objectness, deltas, torch.cat(anchors_per_level), [len(a) for a in anchors_per_level]

    def filter_proposals(
        self,
        objectness: torch.Tensor,
        deltas: torch.Tensor,
        anchors: torch.Tensor,
        anchors_per_level: Sequence[int],
        image_sizes: Sequence[tuple[int, int]],
    ) -> list[torch.Tensor]:
        """Top-N per level, decode, clip, drop small and low-scoring boxes, per-level NMS (see module doc).

        ``objectness`` ``(N, A_total)`` logits, ``deltas`` ``(N, A_total, 4)``, ``anchors`` ``(A_total, 4)``.
        Returns per image ``(P_i, 4)`` proposals by descending objectness.

        Raises:
            ValueError: ``image_sizes`` not one per image.
        """
        if len(image_sizes) != objectness.shape[0]:
            raise ValueError(f"{len(image_sizes)} image sizes for a batch of {objectness.shape[0]}")
        mode = "train" if self.training else "test"
        top_indices, top_levels, offset = [], [], 0
        for level, scores in enumerate(objectness.split(list(anchors_per_level), dim=1)):
            k = min(self.pre_nms_top_n[mode], scores.shape[1])
            top_indices.append(scores.topk(k, dim=1).indices + offset)
            top_levels.append(torch.full((k,), level, dtype=torch.long, device=objectness.device))
            offset += scores.shape[1]
        top = torch.cat(top_indices, dim=1)
        levels = torch.cat(top_levels)
        scores = torch.sigmoid(torch.gather(objectness, 1, top))
        proposals = []
        for image, image_size in enumerate(image_sizes):
            boxes = self.box_coder.decode(deltas[image, top[image]], anchors[top[image]])[:, 0]
            boxes = clip_boxes(boxes, image_size)
            keep = large_enough(boxes, self.min_size) & (scores[image] >= self.score_thresh)
            boxes, image_scores, image_levels = boxes[keep], scores[image][keep], levels[keep]
            kept = batched_nms(boxes, image_scores, image_levels, self.nms_thresh,
                               max_detections=self.post_nms_top_n[mode], max_candidates=None)
            proposals.append(boxes[kept])
        return proposals

    def loss(
        self, objectness: torch.Tensor, deltas: torch.Tensor, anchors: torch.Tensor, gt_boxes: Sequence[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The RPN losses (see module doc) from ``(N, A_total)`` logits, ``(N, A_total, 4)`` deltas, the
        ``(A_total, 4)`` anchors and per image ``(G_i, 4)`` ground-truth boxes."""
        labels, matched_boxes = [], []
        for boxes in gt_boxes:
            if boxes.numel() == 0:  # an image without objects: every anchor is a negative
                labels.append(anchors.new_zeros(len(anchors)))
                matched_boxes.append(torch.zeros_like(anchors))
                continue
            boxes = boxes.to(anchors)
            matches = self.matcher(box_iou(boxes, anchors))
            image_labels = (matches >= 0).to(anchors.dtype)
            image_labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(image_labels)
            matched_boxes.append(boxes[matches.clamp(min=0)])
        positive_masks, negative_masks = self.sampler(labels)
        positive = torch.nonzero(torch.cat(positive_masks)).flatten()
        negative = torch.nonzero(torch.cat(negative_masks)).flatten()
        sampled = torch.cat((positive, negative))
        # Flat indices run over (image, anchor); regression targets are needed for the positives only.
        targets = self.box_coder.encode(torch.cat(matched_boxes)[positive], anchors[positive % len(anchors)])
        box_loss = F.smooth_l1_loss(deltas.reshape(-1, 4)[positive], targets, beta=1 / 9, reduction="sum")
        objectness_loss = F.binary_cross_entropy_with_logits(objectness.flatten()[sampled], torch.cat(labels)[sampled])
        return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss / sampled.numel()}
