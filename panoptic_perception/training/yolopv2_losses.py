"""YOLOPv2's losses (paper §3.2.3): detection as in YOLOP, cross-entropy for the drivable area, and a
hybrid Dice + focal loss for lane lines.

Detection, eq. (1): ``L_det = α1 L_class + α2 L_obj + α3 L_box``. Class and objectness use focal loss
on top of binary cross-entropy with logits, in the YOLOv5/YOLOP form ``BCE · α_t · (1 - p_t)^γ``;
the box term is ``1 - CIoU`` of each matched prediction; the objectness target is that CIoU (detached,
clamped at 0) for matched predictions and 0 elsewhere, and each level's objectness loss is weighted by
4.0, 1.0, 0.4 for strides 8, 16, 32 (the finest level's mean runs over the most empty cells). The paper
gives no loss weights; the defaults are the YOLOv7/YOLOP-style gains box 0.05, obj 1.0, cls 0.5, with
focal γ = 1.5, α = 0.25. As in YOLOv5 and YOLOP, the class term is only computed with more than one
class: with a single class, objectness already says "object of that class".

Lane lines, eq. (2)-(5), with the two classes lane (probability ``p = σ(logit)``) and background
(``1 - p``) and soft counts over the whole batch:
``L = C - Σ_c TP(c) / (TP(c) + α FN(c) + β FP(c)) - γ/N Σ_c Σ_n g_n(c) (1 - p_n(c))² log p_n(c)``,
α = β = 0.5, γ = 1 by default. The paper prints the focal sum without its minus sign; the loss must be
positive. A tiny ``eps`` in the Dice denominator only guards 0/0 (a class absent from the batch and
predicted absent), which then counts as ratio 0 like any other miss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.boxes import complete_iou, xywh_to_xyxy

OBJECTNESS_BALANCE = {8: 4.0, 16: 1.0, 32: 0.4}
"""Per-stride objectness weight (YOLOv5/YOLOP): a finer level's mean runs over more cells, nearly all
background, so it is weighted up."""


def focal_bce_with_logits(
    logits: torch.Tensor, target: torch.Tensor, gamma: float = 1.5, alpha: float = 0.25
) -> torch.Tensor:
    """Mean focal loss ``BCE · α_t · (1 - p_t)^γ`` of logits against (possibly soft) targets in [0, 1].

    ``p_t = t p + (1 - t)(1 - p)`` and ``α_t = t α + (1 - t)(1 - α)``, linear in the target so that soft
    objectness targets (a CIoU) interpolate between the positive and negative forms.
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = target * p + (1 - target) * (1 - p)
    alpha_t = target * alpha + (1 - target) * (1 - alpha)
    return (bce * alpha_t * (1 - p_t) ** gamma).mean()


def lane_hybrid_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    focal_weight: float = 1.0,
    alpha: float = 0.5,
    beta: float = 0.5,
    eps: float = 1e-7,
) -> torch.Tensor:
    """``L_Dice + focal_weight · L_Focal`` (eq. 2) of (N, 1, H, W) lane logits against (N, H, W) 0/1 labels."""
    logits = logits.squeeze(1)
    lane = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    probs = torch.stack((1 - p, p))  # class 0 background, class 1 lane
    labels = torch.stack((1 - lane, lane))
    dims = tuple(range(1, probs.dim()))
    tp = (probs * labels).sum(dims)
    fn = ((1 - probs) * labels).sum(dims)
    fp = (probs * (1 - labels)).sum(dims)
    dice = probs.shape[0] - (tp / (tp + alpha * fn + beta * fp + eps)).sum()
    log_probs = torch.stack((F.logsigmoid(-logits), F.logsigmoid(logits)))  # stable log(1 - p), log p
    focal = -(labels * (1 - probs) ** 2 * log_probs).sum(0).mean()
    return dice + focal_weight * focal


@dataclass(frozen=True)
class LevelTargets:
    """The predictions one detection level is trained on, one row per (ground truth, anchor, cell) match.

    ``box`` is the ground truth in grid units as ``(x, y, w, h)`` with ``x, y`` relative to the matched
    cell's top-left corner (so in [-0.5, 1.5), the reach of ``2σ - 0.5``); ``anchor_wh`` is the matched
    anchor in grid units.
    """

    image: torch.Tensor  # (K,) long
    anchor: torch.Tensor  # (K,) long, 0..2
    grid_y: torch.Tensor  # (K,) long
    grid_x: torch.Tensor  # (K,) long
    box: torch.Tensor  # (K, 4)
    anchor_wh: torch.Tensor  # (K, 2)
    cls: torch.Tensor  # (K,) long


# Cell offsets (dx, dy): the cell itself, then the left, upper, right and lower neighbours.
_NEIGHBOUR_OFFSETS = ((0, 0), (-1, 0), (0, -1), (1, 0), (0, 1))


def assign_targets(
    targets: torch.Tensor, anchors: torch.Tensor, stride: int, grid_size: tuple[int, int], anchor_ratio: float = 4.0
) -> LevelTargets:
    """YOLOv5/v7 target assignment for one level.

    ``targets`` is (M, 6) ``[image, class, cx, cy, w, h]`` in input pixels, ``anchors`` (A, 2) the level's
    anchor sizes in input pixels, ``grid_size`` the level's ``(ny, nx)``.

    1. Anchors: a ground truth matches each anchor whose width and height ratios to it,
       ``max(r, 1/r)``, are both below ``anchor_ratio``; one that fits no anchor is not trained at this
       level (another level's anchors may fit it).
    2. Cells: each match goes to the cell containing the box centre, and to the horizontal and vertical
       neighbours whose shared border the centre is nearer than half a cell (x fraction < 0.5 → left
       neighbour, > 0.5 → right; likewise up/down), when inside the grid. That is up to 3 cells per
       anchor; since the decoded centre ``2σ(t) - 0.5`` spans (-0.5, 1.5) cells, each of them can still
       reach the true centre. More positives per box speed up training (the YOLOv5 rationale).

    A centre outside the image is assigned to the nearest border cell.
    """
    ny, nx = grid_size
    boxes = targets[:, 2:6] / stride
    anchor_wh = anchors.to(boxes) / stride
    ratio = boxes[None, :, 2:] / anchor_wh[:, None]  # (A, M, 2)
    fits = torch.maximum(ratio, 1 / ratio).amax(dim=-1) < anchor_ratio
    anchor_index, target_index = fits.nonzero(as_tuple=True)

    centre = boxes[target_index, :2]
    cell = centre.floor()
    fraction = centre - cell
    last = torch.tensor([nx - 1, ny - 1], dtype=cell.dtype, device=cell.device)
    before = (fraction < 0.5) & (cell > 0)  # (K, 2): left / upper neighbour exists and is nearer
    after = (fraction > 0.5) & (cell < last)  # right / lower
    chosen = torch.stack((torch.ones_like(before[:, 0]), before[:, 0], before[:, 1], after[:, 0], after[:, 1]))
    which, match = chosen.nonzero(as_tuple=True)
    offsets = torch.tensor(_NEIGHBOUR_OFFSETS, dtype=cell.dtype, device=cell.device)[which]
    cells = torch.minimum((cell[match] + offsets).clamp(min=0), last)

    target_index = target_index[match]
    anchor_index = anchor_index[match]
    rows = targets[target_index]
    return LevelTargets(
        image=rows[:, 0].long(),
        anchor=anchor_index,
        grid_y=cells[:, 1].long(),
        grid_x=cells[:, 0].long(),
        box=torch.cat((centre[match] - cells, boxes[target_index, 2:]), dim=1),
        anchor_wh=anchor_wh[anchor_index],
        cls=rows[:, 1].long(),
    )


def decode_matched(predictions: torch.Tensor, anchor_wh: torch.Tensor) -> torch.Tensor:
    """Raw ``(K, ≥4)`` head outputs as ``(K, 4)`` xywh boxes in grid units, relative to their cell.

    The inference decode: ``xy = 2σ(t_xy) - 0.5``, ``wh = (2σ(t_wh))² · anchor``.
    """
    xy = torch.sigmoid(predictions[:, :2]) * 2 - 0.5
    wh = (torch.sigmoid(predictions[:, 2:4]) * 2) ** 2 * anchor_wh
    return torch.cat((xy, wh), dim=1)


@dataclass(frozen=True)
class YOLOPv2LossWeights:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    drivable: float = 1.0
    lane: float = 1.0
    focal_gamma: float = 1.5
    focal_alpha: float = 0.25
    anchor_ratio: float = 4.0
    lane_focal_weight: float = 1.0


class YOLOPv2Loss(nn.Module):
    """The weighted sum of the detection, drivable-area and lane losses.

    ``anchors`` is (levels, 3, 2) anchor (w, h) in input pixels, one row per stride in ``strides``. The
    returned components are the weighted terms, so they add up to ``"loss"``; detection terms are summed
    over levels (box and class: mean over a level's matches; objectness: mean over its cells, times the
    level's balance weight).
    """

    def __init__(
        self,
        num_classes: int,
        anchors: torch.Tensor,
        strides: tuple[int, ...] = (8, 16, 32),
        weights: YOLOPv2LossWeights = YOLOPv2LossWeights(),
    ) -> None:
        super().__init__()
        if anchors.dim() != 3 or anchors.shape[0] != len(strides) or anchors.shape[2] != 2:
            raise ValueError(f"anchors must be (levels={len(strides)}, anchors, 2), got {tuple(anchors.shape)}")
        unknown = [s for s in strides if s not in OBJECTNESS_BALANCE]
        if unknown:
            raise ValueError(f"no objectness balance for strides {unknown}; known: {sorted(OBJECTNESS_BALANCE)}")
        self.num_classes = num_classes
        self.strides = tuple(strides)
        self.weights = weights
        self.register_buffer("anchors", anchors.detach().clone().float())

    def detection_loss(self, detection: list[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Unweighted ``(box, obj, cls)`` summed over levels."""
        if len(detection) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} detection levels, got {len(detection)}")
        w = self.weights
        zero = detection[0].new_zeros(())
        box_loss, obj_loss, cls_loss = zero, zero, zero
        for level, (prediction, stride) in enumerate(zip(detection, self.strides)):
            grid = prediction.shape[2:4]
            matched = assign_targets(targets.to(prediction), self.anchors[level], stride, grid, w.anchor_ratio)
            objectness_target = prediction.new_zeros(prediction.shape[:4])
            if matched.image.numel():
                rows = prediction[matched.image, matched.anchor, matched.grid_y, matched.grid_x]
                pred_box = decode_matched(rows, matched.anchor_wh)
                ciou = complete_iou(xywh_to_xyxy(pred_box), xywh_to_xyxy(matched.box))
                box_loss = box_loss + (1 - ciou).mean()
                # Several matches can share a prediction (two boxes, one cell and anchor): the best CIoU wins.
                _, num_anchors, ny, nx = objectness_target.shape
                flat = ((matched.image * num_anchors + matched.anchor) * ny + matched.grid_y) * nx + matched.grid_x
                objectness_target.view(-1).scatter_reduce_(0, flat, ciou.detach().clamp(min=0), reduce="amax")
                if self.num_classes > 1:
                    class_target = F.one_hot(matched.cls, self.num_classes).to(rows.dtype)
                    cls_loss = cls_loss + focal_bce_with_logits(rows[:, 5:], class_target, w.focal_gamma, w.focal_alpha)
            objectness = focal_bce_with_logits(prediction[..., 4], objectness_target, w.focal_gamma, w.focal_alpha)
            obj_loss = obj_loss + OBJECTNESS_BALANCE[stride] * objectness
        return box_loss, obj_loss, cls_loss

    def forward(
        self,
        detection: list[torch.Tensor],
        drivable_logits: torch.Tensor,
        lane_logits: torch.Tensor,
        targets: torch.Tensor,
        drivable_target: torch.Tensor,
        lane_target: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``detection[i]`` is (N, 3, ny, nx, 5 + classes) raw outputs, ``targets`` (M, 6)
        ``[image, class, cx, cy, w, h]`` in input pixels; drivable (N, 2, H, W) and lane (N, 1, H, W)
        logits against (N, H, W) 0/1 labels."""
        w = self.weights
        box_loss, obj_loss, cls_loss = self.detection_loss(detection, targets)
        terms = {
            "box": w.box * box_loss,
            "obj": w.obj * obj_loss,
            "cls": w.cls * cls_loss,
            "drivable": w.drivable * F.cross_entropy(drivable_logits, drivable_target),
            "lane": w.lane * lane_hybrid_loss(lane_logits, lane_target, w.lane_focal_weight),
        }
        total = sum(terms.values())
        return {"loss": total, **{name: value.detach() for name, value in terms.items()}}
