"""Mask R-CNN checkpoints of other frameworks, converted for the ``fusion_panoptic`` backend.

The backend's network keeps torchvision's ``maskrcnn_resnet50_fpn`` parameter names (``backbone.body.*``,
``backbone.fpn.*``, ``rpn.head.*``, ``roi_heads.*``) and adds ``semantic_head.*``. What loads, and the
decisions taken:

**A torchvision Mask R-CNN state dict** (:func:`from_torchvision`; recognised by its keys: a ResNet-FPN
Mask R-CNN with ``roi_heads.box_head.fc6`` and no ``semantic_head``), e.g. the COCO weights
``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth`` or ``maskrcnn_resnet50_fpn(...).state_dict()``:

- Its predictor keeps its rows (``detector_classes``): with COCO's 91 rows the detector runs as trained,
  its softmax over all COCO classes (cutting the rows down to ours would renormalise the scores over
  fewer classes, so a dog's box could become a confident person), and post-processing keeps the
  detections of the COCO classes with a Cityscapes counterpart (:data:`COCO_TO_CITYSCAPES`: person,
  bicycle, car, motorcycle, bus, train, truck) and drops the rest. Cityscapes' **rider has no COCO
  class**: riders are detected as person. A checkpoint with this package's 9 rows (background and the
  Cityscapes things in :data:`THING_IDS` order) maps one to one; other class counts are refused.
- **The semantic head is absent** (``semantic_head: false`` in the config): the network is the Mask R-CNN
  alone, so no semantic map can come from a random head. The backend then publishes detections and
  instance masks (a panoptic image of the detected things, everything else void) and no semantic
  map, says so in a warning, and the node opens no ``~/semantic`` topic. Training from the converted
  checkpoint (``init_weights``, after ``panoptic-perception convert-weights``) adds the head.
- BatchNorm eps: torchvision builds its COCO_V1 model with frozen BatchNorm of eps 0 (``overwrite_eps(model,
  0.0)``) and any model without weights with ``nn.BatchNorm2d`` (eps 1e-5, whose state dict carries
  ``num_batches_tracked``). So a 91-class checkpoint without ``num_batches_tracked`` gets
  ``batch_norm_eps: 0.0`` and every other one 1e-5; ``--options batch_norm_eps=...`` overrides the guess.
- Pre-processing is torchvision's (RGB in [0, 1], ImageNet mean and std), the backend's own; the network
  input is the backend's fixed size (``input_width`` x ``input_height``, default 1024x512), not
  torchvision's resize of the shorter side to 800.
"""

from __future__ import annotations

import logging
import re
from typing import Mapping

import numpy as np
import torch

from ..core.labels import CITYSCAPES
from .weights import Checkpoint, WeightsError

log = logging.getLogger("panoptic_perception.rcnn_weights")

#: The Cityscapes thing classes, in label-map order: the rows after the background of the
#: ``cityscapes`` predictor layout (this package's own checkpoints).
THING_IDS = tuple(c.id for c in CITYSCAPES.classes if c.is_thing)
#: COCO's 80 object categories by their dataset ids (1..90 with ten ids unused).
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
#: The Cityscapes label id of the COCO categories that have one: person, bicycle, car, motorcycle, bus,
#: train, truck. Cityscapes' rider (25) has no COCO category.
COCO_TO_CITYSCAPES = {1: 24, 2: 33, 3: 26, 4: 32, 6: 28, 7: 31, 8: 27}

#: Predictor layouts (the ``detector_classes`` option), each the class of every row after the background:
#: ``cityscapes``: Cityscapes label ids; ``coco91``: torchvision's COCO rows, row = COCO category id (rows
#: of unused ids included); ``coco80``: Detectron2's contiguous COCO rows.
DETECTOR_CLASSES = {
    "cityscapes": THING_IDS,
    "coco91": tuple(range(1, 91)),
    "coco80": COCO_CATEGORY_IDS,
}


def _check_layout(classes: str) -> tuple[int, ...]:
    if classes not in DETECTOR_CLASSES:
        raise ValueError(f"detector_classes must be one of {', '.join(DETECTOR_CLASSES)}, got {classes!r}")
    return DETECTOR_CLASSES[classes]


def num_predictor_rows(classes: str) -> int:
    """Rows of the box predictor (background included) in the layout ``classes``; ValueError if unknown."""
    return 1 + len(_check_layout(classes))


def cityscapes_ids_of_rows(classes: str) -> np.ndarray:
    """(rows,) int64: the Cityscapes label id each predictor row of layout ``classes`` stands for; 0 for the
    background and for COCO categories without a Cityscapes class (their detections are dropped)."""
    rows = _check_layout(classes)
    ids = rows if classes == "cityscapes" else [COCO_TO_CITYSCAPES.get(c, 0) for c in rows]
    return np.array([0, *ids], np.int64)


def seed_rows(classes: str) -> tuple[int, ...]:
    """For initialising this package's ``cityscapes`` predictor from one of layout ``classes``: the row of
    ``classes`` whose weights seed each ``cityscapes`` row, background first (see
    :func:`~panoptic_perception.nn.mask_rcnn.adapt_predictor_classes`). Rider takes person's rows."""
    rows = _check_layout(classes)
    if classes == "cityscapes":
        return tuple(range(1 + len(rows)))
    coco_of = {cityscapes: coco for coco, cityscapes in COCO_TO_CITYSCAPES.items()}
    coco_of[CITYSCAPES.id_of("rider")] = coco_of[CITYSCAPES.id_of("person")]
    return (0, *(1 + rows.index(coco_of[thing]) for thing in THING_IDS))


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for m in map(pattern.match, state) if m})


def _architecture(state: Mapping[str, torch.Tensor], source: str) -> dict[str, int | float]:
    """The size options of a Mask R-CNN state dict in this package's names, read from its shapes."""
    shapes = {
        "stem": "backbone.body.conv1.weight", "fpn": "backbone.fpn.inner_blocks.0.0.weight",
        "box": "roi_heads.box_head.fc6.weight", "mask": "roi_heads.mask_head.0.0.weight",
    }
    absent = [key for key in shapes.values() if key not in state]
    if absent:
        raise WeightsError(f"{source} is not a ResNet-FPN Mask R-CNN: it lacks {', '.join(absent)}")
    blocks = _count_blocks(state, "backbone.body.layer3.")
    depth = {6: 50, 23: 101}.get(blocks)
    if depth is None:
        raise WeightsError(f"{source}: a ResNet with {blocks} blocks in its third stage; ResNet-50 has 6, -101 has 23")
    return {
        "depth": depth,
        "width": state[shapes["stem"]].shape[0] / 64,
        "fpn_channels": state[shapes["fpn"]].shape[0],
        "representation_size": state[shapes["box"]].shape[0],
        "mask_channels": state[shapes["mask"]].shape[0],
    }


def is_torchvision_mask_rcnn(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` is a torchvision (v1) Mask R-CNN state dict: box head ``fc6``, a mask predictor,
    no semantic head."""
    return ("roi_heads.box_head.fc6.weight" in state and "roi_heads.mask_predictor.mask_fcn_logits.weight" in state
            and not any(k.startswith("semantic_head.") for k in state))


def from_torchvision(state: Mapping[str, torch.Tensor], source: str) -> Checkpoint:
    """A torchvision Mask R-CNN state dict (:func:`is_torchvision_mask_rcnn`) as a fusion_panoptic checkpoint
    without semantic head: the same tensors, and the config (``FusionPanopticConfig`` options) its shapes
    and origin imply (see the module docstring).

    Raises:
        WeightsError: on a class count other than COCO's 91 or this package's 9, or a backbone that is not
            a ResNet-50/101-FPN.
    """
    rows = state["roi_heads.box_predictor.cls_score.weight"].shape[0]
    layouts = {num_predictor_rows(name): name for name in ("coco91", "cityscapes")}
    if rows not in layouts:
        raise WeightsError(
            f"{source} is a torchvision Mask R-CNN with {rows} classes; fusion_panoptic takes COCO's 91 (torchvision's "
            f"COCO weights) or its own 9 (background, then {', '.join(CITYSCAPES.name_of(i) for i in THING_IDS)}): "
            f"cut other class sets down with panoptic_perception.nn.mask_rcnn.adapt_predictor_classes first")
    classes = layouts[rows]
    counters = any(k.endswith("num_batches_tracked") for k in state)
    eps = 0.0 if classes == "coco91" and not counters else 1e-5
    config = {**_architecture(state, source), "detector_classes": classes, "semantic_head": False,
              "norm": "frozen_batch_norm", "batch_norm_eps": eps}
    log.info("%s: torchvision Mask R-CNN, %d classes (detector_classes=%s), frozen BatchNorm eps %g (%s)", source, rows,
             classes, eps, "trained with nn.BatchNorm2d: num_batches_tracked present" if counters else
             "torchvision's COCO_V1 weights use 0" if eps == 0 else "torchvision's default")
    return Checkpoint(dict(state), None, config, {"converted_from": f"torchvision Mask R-CNN ({rows} classes)"})
