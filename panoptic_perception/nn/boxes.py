"""Axis-aligned box operations shared by the detection backends, their losses and the evaluation code.

Boxes are ``(..., 4)`` floating tensors, either ``xyxy`` (corners ``x1, y1, x2, y2``) or ``xywh``
(centre ``cx, cy``, width, height). Everything is plain torch, so it runs wherever the network does.
"""

from __future__ import annotations

import math

import numpy as np
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
    # Per axis rather than on (N, M, 2) views: contiguous (N, M) operations, twice as fast, same values.
    ax1, ay1, ax2, ay2 = a[:, None].unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    inter_w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp_(min=0)
    inter_h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp_(min=0)
    inter = inter_w * inter_h
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union.clamp_(min=torch.finfo(union.dtype).tiny)


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


#: Pre-NMS cap on candidates, by score: the YOLO family's ``max_nms`` (YOLOv5/v7 and YOLOP keep the best
#: 30,000). It only binds for inputs larger than the released 640x384, whose three heads give 15,120 rows.
DEFAULT_MAX_CANDIDATES = 30_000

#: Boxes compared per step of :func:`nms`; the most a step looks ahead after a run of suppressed boxes;
#: and the largest (kept x window) IoU matrix it grows to (larger ones fall out of the CPU caches: twice
#: the time per element at 300 x 256 than at 300 x 128, measured). See :func:`nms` for the cost they bound.
NMS_BLOCK_SIZE = 128
NMS_MAX_WINDOW = 1024
NMS_MAX_WINDOW_ELEMENTS = 1 << 15


@torch.no_grad()
def nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    iou_threshold: float,
    max_detections: int | None = None,
    max_candidates: int | None = DEFAULT_MAX_CANDIDATES,
) -> torch.Tensor:
    """Greedy non-maximum suppression of ``(N, 4)`` xyxy boxes; the kept indices (int64), best first.

    The result is exactly greedy NMS: boxes are visited by descending score, equal scores lower index
    first (a stable sort); a box is kept unless its IoU with a box kept before it is **greater than**
    ``iou_threshold`` (IoU in the boxes' dtype; a NaN IoU suppresses nothing). Only the
    ``max_candidates`` best boxes take part (``None``: all), and the search stops as soon as
    ``max_detections`` boxes are kept (``None``: no limit), which gives the same indices as truncating
    the full result.

    Cost, whatever the scores: the sorted boxes are taken a window at a time. A window is compared with
    every box kept so far in one (K, W) IoU matrix; the boxes that survive that are resolved among
    themselves by :func:`greedy_keep` on their (S, S) suppression matrix. A window holds
    :data:`NMS_BLOCK_SIZE` boxes and doubles, up to :data:`NMS_MAX_WINDOW`, after a window in which every
    box was suppressed (while the (K, W) matrix stays within :data:`NMS_MAX_WINDOW_ELEMENTS`), so that
    long runs of duplicates cost few steps. Work is O(N·(K + W)) element operations in at most N / 128
    vectorised steps, plus :func:`greedy_keep`'s sweep over the survivors: keep ``max_detections`` in
    the hundreds (YOLO: 300, Mask R-CNN: 100), as K, the boxes kept, is what the work grows with.

    Raises:
        ValueError: boxes not floating-point ``(N, 4)``, ``scores`` not ``(N,)``, or a negative limit.
    """
    return _greedy_nms(boxes, scores, None, iou_threshold, max_detections, max_candidates)


@torch.no_grad()
def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    iou_threshold: float,
    max_detections: int | None = None,
    max_candidates: int | None = DEFAULT_MAX_CANDIDATES,
) -> torch.Tensor:
    """Per-class :func:`nms` in one pass: boxes of different classes never suppress each other.

    ``classes`` (N,) are integer class ids (or any grouping, such as FPN levels). A pair of boxes only
    suppresses within a class: the IoU test is masked by class equality (exact in any dtype, unlike
    the usual trick of shifting each class's boxes apart, which costs float32 precision). The kept
    indices follow :func:`nms`'s order, caps and early stop: descending score, ties by lower index.

    Raises:
        ValueError: as :func:`nms`, and ``classes`` not ``(N,)``.
    """
    if classes.shape != scores.shape:
        raise ValueError(f"classes {tuple(classes.shape)} do not match scores {tuple(scores.shape)}")
    return _greedy_nms(boxes, scores, classes, iou_threshold, max_detections, max_candidates)


def _greedy_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor | None,
    iou_threshold: float,
    max_detections: int | None,
    max_candidates: int | None,
) -> torch.Tensor:
    if boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
        raise ValueError(f"boxes must be floating-point (N, 4), got {boxes.dtype} {tuple(boxes.shape)}")
    if scores.shape != (boxes.shape[0],):
        raise ValueError(f"{boxes.shape[0]} boxes but scores of shape {tuple(scores.shape)}")
    for name, value in (("max_detections", max_detections), ("max_candidates", max_candidates)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be non-negative or None, got {value}")
    order = torch.sort(scores, descending=True, stable=True).indices
    if max_candidates is not None:
        order = order[:max_candidates]
    limit = order.numel() if max_detections is None else min(max_detections, order.numel())
    ranked = boxes[order]
    ranked_classes = classes[order] if classes is not None else None

    def suppression(a: tuple[torch.Tensor, torch.Tensor | None], b: tuple[torch.Tensor, torch.Tensor | None]):
        """(len(a), len(b)) bool for (boxes, classes) pairs: would box ``a[i]`` suppress box ``b[j]``."""
        suppresses = box_iou(a[0], b[0]) > iou_threshold
        if ranked_classes is not None:
            suppresses &= a[1][:, None] == b[1][None, :]
        return suppresses

    def take(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return ranked[positions], None if ranked_classes is None else ranked_classes[positions]

    kept = order.new_empty(0)  # positions in `order`
    kept_boxes = take(kept)
    start, window = 0, NMS_BLOCK_SIZE
    while start < order.numel() and kept.numel() < limit:
        end = min(start + window, order.numel())
        survivors = torch.arange(start, end, device=boxes.device)
        if kept.numel():
            survivors = survivors[~suppression(kept_boxes, take(survivors)).any(dim=0)]
        if survivors.numel():
            candidates = take(survivors)
            new = greedy_keep(suppression(candidates, candidates))[: limit - kept.numel()]
            kept = torch.cat((kept, survivors[new]))
            kept_boxes = tuple(None if k is None else torch.cat((k, c[new])) for k, c in zip(kept_boxes, candidates))
            window = NMS_BLOCK_SIZE
        else:
            room = NMS_MAX_WINDOW_ELEMENTS // max(1, kept.numel())
            window = max(NMS_BLOCK_SIZE, min(2 * window, NMS_MAX_WINDOW, room))
        start = end
    return order[kept]


def greedy_keep(suppresses: torch.Tensor) -> torch.Tensor:
    """The positions greedy NMS keeps among M boxes in greedy order, from their (M, M) bool matrix.

    ``suppresses[i, j]``: box ``i`` would suppress box ``j`` if kept; only ``i < j`` counts. Greedy NMS
    keeps ``j`` exactly when no kept ``i < j`` suppresses it, which is inherently sequential (a chain of
    boxes each overlapping the next alternates kept / suppressed all along). So, as GPU NMS kernels do
    (torchvision's among them), the matrix is packed into one bitmask per row and swept once: a box is
    kept unless its bit is set in the union of the kept rows. The sweep costs well under a microsecond
    per box, against the microseconds every tensor operation costs. Returns int64 positions, ascending.
    """
    rows = np.packbits(suppresses.triu(1).cpu().numpy(), axis=1, bitorder="little")
    suppressed, kept = 0, []
    for i, row in enumerate(rows):
        if not suppressed >> i & 1:
            kept.append(i)
            suppressed |= int.from_bytes(row.tobytes(), "little")
    return torch.tensor(kept, dtype=torch.long, device=suppresses.device)
