"""Axis-aligned box operations shared by the detection backends, their losses and the evaluation code.

Boxes are ``(..., 4)`` floating tensors, either ``xyxy`` (corners ``x1, y1, x2, y2``) or ``xywh``
(centre ``cx, cy``, width, height). Everything is plain torch, so it runs wherever the network does.
"""

from __future__ import annotations

import math

import torch


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Centre/size boxes ``(..., 4)`` as corner boxes."""
    centre, half = boxes[..., :2], boxes[..., 2:] / 2
    return torch.cat((centre - half, centre + half), dim=-1)


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """Corner boxes ``(..., 4)`` as centre/size boxes."""
    top_left, bottom_right = boxes[..., :2], boxes[..., 2:]
    return torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), dim=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``(..., 4)`` xyxy boxes; an inverted box (x2 < x1 or y2 < y1) has area 0."""
    size = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return size[..., 0] * size[..., 1]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(N, M)`` of xyxy boxes ``a`` (N, 4) and ``b`` (M, 4).

    A pair whose union is empty (both boxes of zero area) has IoU 0, not NaN: the intersection is never
    larger than the union, so dividing by the union clamped to the dtype's smallest normal number is exact
    whenever the union is not empty and gives 0 when it is.
    """
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    size = (bottom_right - top_left).clamp(min=0)
    inter = size[..., 0] * size[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def complete_iou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Elementwise Complete-IoU of ``(..., 4)`` xyxy boxes (Zheng et al. 2020, "Distance-IoU Loss").

    ``CIoU = IoU - ρ² / c² - α v`` where ρ is the distance between the box centres, c the diagonal of the
    smallest box enclosing both, ``v = 4/π² (atan(w_t / h_t) - atan(w_p / h_p))²`` the aspect-ratio
    disagreement and ``α = v / (1 - IoU + v)`` its trade-off weight. As in the usual YOLO implementations,
    α is a constant with respect to the gradient (computed without autograd), which is the form the
    CIoU paper derives its gradients for. ``eps`` keeps heights, the union and c² away from zero, so
    degenerate boxes give finite values and gradients.
    """
    px1, py1, px2, py2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    pw, ph = px2 - px1, py2 - py1 + eps
    tw, th = tx2 - tx1, ty2 - ty1 + eps
    inter_w = (torch.minimum(px2, tx2) - torch.maximum(px1, tx1)).clamp(min=0)
    inter_h = (torch.minimum(py2, ty2) - torch.maximum(py1, ty1)).clamp(min=0)
    inter = inter_w * inter_h
    iou = inter / (pw * ph + tw * th - inter + eps)
    enclosing_w = torch.maximum(px2, tx2) - torch.minimum(px1, tx1)
    enclosing_h = torch.maximum(py2, ty2) - torch.minimum(py1, ty1)
    diagonal2 = enclosing_w**2 + enclosing_h**2 + eps
    centre_distance2 = ((tx1 + tx2 - px1 - px2) ** 2 + (ty1 + ty2 - py1 - py2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(tw / th) - torch.atan(pw / ph)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - centre_distance2 / diagonal2 - alpha * v


@torch.no_grad()
def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression of ``(N, 4)`` xyxy boxes; the kept indices, best first.

    Boxes are visited by descending score, equal scores lower index first (a stable sort). The best box
    left is kept and every remaining box whose IoU with it is **greater than** ``iou_threshold`` is
    dropped. The Python loop runs once per *kept* box and compares it with all the boxes still left in
    one vectorised step, so memory stays O(N) and sparse scenes finish in a few iterations.
    """
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    order = torch.sort(scores, descending=True, stable=True).indices
    remaining = boxes[order]
    positions = torch.arange(order.numel(), device=boxes.device)  # positions in `order` still left
    kept = []
    while positions.numel():
        best = positions[0]
        kept.append(best)
        overlap = box_iou(remaining[:1], remaining[1:])[0]
        survivors = (overlap <= iou_threshold).nonzero().squeeze(1) + 1
        remaining, positions = remaining.index_select(0, survivors), positions.index_select(0, survivors)
    if not kept:
        return order.new_empty(0)
    return order[torch.stack(kept)]


@torch.no_grad()
def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Per-class :func:`nms` in one pass: boxes of different classes never suppress each other.

    Each box is shifted by ``class * (span + 1)`` along both axes, ``span`` being the largest coordinate
    minus the smallest, so that boxes of different classes end up disjoint (the YOLO trick, written with
    the span rather than the largest coordinate so that negative coordinates are safe too). The kept
    indices follow :func:`nms`'s order: descending score, ties by lower index. The shift costs precision
    in float32 for many classes over large images; pass float64 boxes when that matters.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    span = boxes.max() - boxes.min() + 1
    shifted = boxes + (classes.to(boxes.dtype) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
