"""The ``yolopv2`` backend: traffic objects, drivable area and lane lines from YOLOPv2 (paper 000,
:mod:`panoptic_perception.models.yolopv2`), or from the official TorchScript ``yolopv2.pt`` run as it is.

Both give the official export interface ``[pred, anchor_grid], seg, ll``, so one post-processing serves
both: the official decode and score filter (:func:`detection_candidates`), class-aware NMS
(:func:`select_detections`), drivable area = argmax of ``seg`` and lane lines = ``ll`` above the mask
threshold, each interpolated to the input image first. Pre-processing as released: letterbox to 640x384
(stride 32, pad 114), BGR→RGB, /255.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from ..core.labels import CITYSCAPES, LabelClass, LabelMap
from ..core.postprocess import binary_masks, probability_masks
from ..core.preprocess import Geometry, ResizeMode
from ..core.types import Capability, Detections, PerceptionResult
from ..errors import ConfigurationError
from ..models.yolopv2 import YOLOPv2, YOLOPv2Config
from ..nn.boxes import DEFAULT_MAX_CANDIDATES, batched_nms, xywh_to_xyxy
from .base import Backend
from .registry import register_backend


class DetectionCandidates(NamedTuple):
    """Boxes of one image that pass the official score filter, in the official row order."""

    boxes: torch.Tensor  # (K, 4) xyxy, network-input pixels
    scores: torch.Tensor  # (K,) best class probability · objectness
    classes: torch.Tensor  # (K,) int64 class slot


def detection_candidates(
    pred: Sequence[torch.Tensor], anchor_grid: Sequence[torch.Tensor], input_height: int, image: int,
    score_threshold: float,
) -> DetectionCandidates:
    """The official decode and score filter of one image's raw heads.

    Each head (N, 3 · (5 + C), ny, nx) holds, per anchor and cell, box logits, objectness and class
    logits. Decoded: a sigmoid, ``xy = (2σ − 0.5 + cell) · stride``, ``wh = (2σ)² · anchor`` (box centre
    and size in network-input pixels); score = the best class probability · objectness. A row is kept
    when objectness and score are above ``score_threshold`` (a negative one keeps every row). Rows keep
    the official order (level, anchor, cell row, cell column), which NMS's tie-breaking depends on.
    Scores are computed channel-planar, in the heads' own layout, and only the kept rows' boxes are
    decoded: the official values without transposing every row (post-processing time is bounded by the
    network's output size).
    """
    boxes, scores, classes = [], [], []
    for head, grid in zip(pred, anchor_grid):
        _, _, ny, nx = head.shape
        p = head[image].float().view(3, -1, ny * nx).sigmoid()  # (anchors, 5 + C, cells)
        objectness = p[:, 4]
        score, best = (p[:, 5:] * objectness[:, None]).max(1)
        anchor, cell = ((objectness > score_threshold) & (score > score_threshold)).nonzero(as_tuple=True)
        box = p[anchor, :4, cell]
        cells = torch.stack([cell % nx, cell // nx], 1).to(box.dtype)
        xy = (box[:, :2] * 2 - 0.5 + cells) * (input_height / ny)
        wh = (box[:, 2:] * 2) ** 2 * grid.view(3, 2).to(box.dtype)[anchor]
        boxes.append(xywh_to_xyxy(torch.cat([xy, wh], 1)))
        scores.append(score[anchor, cell])
        classes.append(best[anchor, cell])
    return DetectionCandidates(torch.cat(boxes), torch.cat(scores), torch.cat(classes))


def select_detections(
    candidates: DetectionCandidates, iou_threshold: float, max_detections: int, max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> tuple[torch.Tensor, int]:
    """The official NMS of one image → ((D, 6) ``x1, y1, x2, y2, score, class``, boxes that entered NMS).

    The ``max_candidates`` best candidates by score into class-aware NMS, which stops at
    ``max_detections`` kept boxes (:func:`~panoptic_perception.nn.boxes.batched_nms`).
    """
    boxes, scores, classes = candidates
    kept = batched_nms(boxes, scores, classes, iou_threshold, max_detections, max_candidates)
    detections = torch.cat([boxes[kept], scores[kept, None], classes[kept, None].to(boxes.dtype)], 1)
    return detections, min(scores.shape[0], max_candidates)


@register_backend("yolopv2")
class YOLOPv2Backend(Backend):
    """Traffic objects, drivable area and lane lines with YOLOPv2.

    ``weights``: the official TorchScript ``yolopv2.pt`` (recognised by its format and run as it is), or
    a checkpoint of :class:`YOLOPv2`. Pre-processing as released: letterbox to 640x384 (stride 32, pad
    114), BGR→RGB, /255; any input size is letterboxed and mapped back exactly. Post-processing as
    released: decode, objectness/score filter, class-aware NMS (score, IoU and maximum from the
    thresholds; 0.3, 0.45, 300 by default), drivable = argmax of the scores, lanes = probability > 0.5,
    both interpolated to the input size first. ``fast=True`` runs the re-parameterised network
    (BatchNorms folded, RepConvs merged, implicit terms folded: :meth:`Backend.optimize_network`).
    """

    capabilities = frozenset({Capability.DETECTION, Capability.DRIVABLE_AREA, Capability.LANE_LINES})
    config_type = YOLOPv2Config
    input_multiple = 32
    bundled_weights = "yolopv2_synthetic.pth"
    real_weights = "the official yolopv2.pt TorchScript file"
    resize_mode = ResizeMode.LETTERBOX
    pad_value = 114
    accepts_torchscript = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        ids = config.class_ids or tuple(range(len(config.class_names)))
        if len(ids) != len(config.class_names):
            raise ConfigurationError("class_ids and class_names must have the same length")
        colors = [c.color for c in CITYSCAPES.classes if c.is_thing]
        self.label_map = LabelMap("yolopv2", tuple(
            LabelClass(i, name, colors[k % len(colors)], is_thing=True) for k, (i, name) in enumerate(zip(ids, config.class_names))
        ))

    @classmethod
    def build_network(cls, config: YOLOPv2Config) -> YOLOPv2:
        network = YOLOPv2(config.num_classes, config.width, config.depth, config.elan_groups)
        network.export = True  # the backend consumes the official interface
        return network

    def postprocess(self, outputs, geometries: Sequence[Geometry]) -> list[PerceptionResult]:
        (pred, anchor_grid), seg, ll = outputs
        height = geometries[0].network_size[1]
        t = self.thresholds
        drivable = binary_masks(seg.float(), geometries, t.mask)
        lanes = probability_masks(ll.float(), geometries, t.mask)
        results = []
        for i, (geometry, drivable_mask, lane_mask) in enumerate(zip(geometries, drivable, lanes)):
            kept, entered_nms = select_detections(detection_candidates(pred, anchor_grid, height, i, t.score), t.iou, t.max_detections)
            kept = kept.cpu()
            results.append(PerceptionResult(
                geometry.source_size, self.name, drivable_mask=drivable_mask, lane_mask=lane_mask,
                detections=self._detections(kept, entered_nms, geometry),
            ))
        return results

    def _detections(self, kept: torch.Tensor, candidates: int, geometry: Geometry) -> Detections:
        slots = kept[:, 5].long().tolist()
        ids, names = [], []
        for slot in slots:  # slots past the configured classes keep their slot number
            known = slot < len(self.label_map)
            ids.append(self.label_map.classes[slot].id if known else slot)
            names.append(self.label_map.classes[slot].name if known else f"class_{slot}")
        return Detections(
            geometry.boxes_to_source(kept[:, :4].numpy()),
            kept[:, 4].numpy().astype(np.float32),
            np.asarray(ids, dtype=np.int64),
            names,
            candidates,
        )
