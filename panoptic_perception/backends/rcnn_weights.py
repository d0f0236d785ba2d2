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

**A Detectron2 R-CNN checkpoint** (:func:`from_detectron2`): its model zoo's ``.pkl`` (read without
unpickling code: :func:`~panoptic_perception.backends.weights.read_checkpoint`) or a ``torch.save``d
``{"model": state_dict}`` with its names, of a Mask R-CNN (or the R-CNN part of a Panoptic FPN, whose
``sem_seg_head`` is dropped) with a ResNet-50/101-FPN (``backbone.bottom_up.stem``, ``res2``..``res5``,
``backbone.fpn_lateral2``..``5`` / ``fpn_output2``..``5``), the standard RPN head
(``proposal_generator.rpn_head.conv`` / ``objectness_logits`` / ``anchor_deltas``), box head ``fc1`` /
``fc2`` and mask head ``mask_fcn1``..``4`` / ``deconv`` / ``predictor``. Every tensor is renamed to this
package's layout, and what differs from torchvision is converted or set as an option:

- **Classes**: Detectron2's ``box_predictor.cls_score`` has the background *last*; its rows are moved so
  that it comes first. Its ``bbox_pred`` (and the mask ``predictor``) have no background rows: zero rows
  are put first (the background's boxes and masks are never used). Class-agnostic box regression or masks
  (one set for all classes) are repeated for every class. 81 rows are COCO's 80 categories in Detectron2's
  contiguous order (``detector_classes: coco80``), 9 its Cityscapes things (the order of :data:`THING_IDS`).
- **Input**: Detectron2 normalises 0-255 pixels as ``(x - PIXEL_MEAN) / PIXEL_STD`` in its ``INPUT.FORMAT``
  (default BGR, mean 103.53, 116.28, 123.675, std 1: every R-CNN of its model zoo on MSRA's ResNets). That
  mean is ImageNet's times 255, so the backend's own input (RGB in [0, 1], ImageNet mean and std) maps onto
  it by a per-channel scale alone, folded into the first convolution: its input channels reversed and
  scaled by ``255 * std / PIXEL_STD``. Exact, zero padding included (0 means the mean in both). A checkpoint
  that holds ``pixel_mean`` / ``pixel_std`` (older Detectron2 versions saved them) is folded with those,
  the channel order read from the mean (ImageNet's in BGR or RGB order); other means are refused, since
  no scale alone maps them. Checkpoints without them are taken to use the defaults: a model trained with
  another ``PIXEL_STD`` or ``INPUT.FORMAT`` (e.g. on torchvision's RGB ResNets) and saved without them is
  converted wrongly, and nothing in the file tells.
- **Architecture options** set in the config: ``stride_in_1x1: true`` (Detectron2's default
  ``RESNETS.STRIDE_IN_1X1``, MSRA's layout; a model trained with it false needs ``--options
  stride_in_1x1=false``, which the file cannot tell either), ``roi_aligned: true`` and
  ``roi_sampling_ratio: 0`` (its ``ROIAlignV2`` poolers), ``round_anchors: false`` (its anchors keep
  fractional corners), frozen BatchNorm with eps 1e-5 (a ``BN``/``SyncBN`` model's statistics are used
  frozen, as at inference).
- What stays different (not reproduced): masks are pasted into the image as torchvision does (a 1-pixel
  padded mask resized to the box) where Detectron2 samples the mask with ``grid_sample``, a sub-pixel
  difference at mask borders; boxes narrower than 1e-2 pixel are dropped from the detections (Detectron2
  keeps them) and proposals narrower than 1e-3 (Detectron2: 0); the FPN level rule adds 1e-6 after the
  log where Detectron2 adds 1e-8 inside it (boxes within a relative 1e-6 of a level boundary); the RPN's
  coarsest level (P6) has stride 64 only when the network input's sides are multiples of 64 (torchvision's
  rule, ``batch size // grid size``; Detectron2's is always 64); and the input is the backend's fixed size,
  not Detectron2's shorter side 800.
- Refused with a one-line reason: Faster R-CNN (no mask head), other class counts, ResNeXt (grouped
  convolutions) and any key outside the layout above (cascade heads, normalised FPN or heads, deformable
  convolutions, ...).
"""

from __future__ import annotations

import logging
import re
from typing import Mapping

import numpy as np
import torch

from ..core.labels import CITYSCAPES
from ..core.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..models.fusion_panoptic import THING_IDS, detector_class_ids, num_predictor_rows
from .weights import Checkpoint, WeightsError, _listing

log = logging.getLogger("panoptic_perception.rcnn_weights")

#: The Cityscapes label id of the COCO categories that have one: person, bicycle, car, motorcycle, bus,
#: train, truck. Cityscapes' rider (25) has no COCO category.
COCO_TO_CITYSCAPES = {1: 24, 2: 33, 3: 26, 4: 32, 6: 28, 7: 31, 8: 27}

def cityscapes_ids_of_rows(classes: str) -> np.ndarray:
    """(rows,) int64: the Cityscapes label id each predictor row of layout ``classes`` stands for; 0 for the
    background and for COCO categories without a Cityscapes class (their detections are dropped)."""
    rows = detector_class_ids(classes)
    ids = rows if classes == "cityscapes" else [COCO_TO_CITYSCAPES.get(c, 0) for c in rows]
    return np.array([0, *ids], np.int64)


def seed_rows(classes: str) -> tuple[int, ...]:
    """For initialising this package's ``cityscapes`` predictor from one of layout ``classes``: the row of
    ``classes`` whose weights seed each ``cityscapes`` row, background first (see
    :func:`~panoptic_perception.nn.mask_rcnn.adapt_predictor_classes`). Rider takes person's rows."""
    rows = detector_class_ids(classes)
    if classes == "cityscapes":
        return tuple(range(1 + len(rows)))
    coco_of = {cityscapes: coco for coco, cityscapes in COCO_TO_CITYSCAPES.items()}
    coco_of[CITYSCAPES.id_of("rider")] = coco_of[CITYSCAPES.id_of("person")]
    return (0, *(1 + rows.index(coco_of[thing]) for thing in THING_IDS))


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for m in map(pattern.match, state) if m})


#: The tensors a conversion reads (in this package's names) and their shapes, None where any size goes:
#: the first convolution takes the 3 input channels, the rest is read for its class rows or sizes.
_READ_SHAPES = {
    "backbone.body.conv1.weight": (None, 3, None, None),
    "backbone.body.layer1.0.conv2.weight": (None,) * 4,
    "backbone.fpn.inner_blocks.0.0.weight": (None,) * 4,
    "roi_heads.box_head.fc6.weight": (None,) * 2,
    "roi_heads.mask_head.0.0.weight": (None,) * 4,
    "roi_heads.box_predictor.cls_score.weight": (None,) * 2,
    "roi_heads.box_predictor.cls_score.bias": (None,),
    "roi_heads.box_predictor.bbox_pred.weight": (None,) * 2,
    "roi_heads.box_predictor.bbox_pred.bias": (None,),
    "roi_heads.mask_predictor.mask_fcn_logits.weight": (None,) * 4,
    "roi_heads.mask_predictor.mask_fcn_logits.bias": (None,),
}


def _check_read_tensors(state: Mapping[str, torch.Tensor], source: str, kind: str,
                        names: Mapping[str, str] | None = None) -> None:
    """Check that ``state`` (this package's names) holds the tensors of :data:`_READ_SHAPES` in their shapes;
    ``names`` gives the file's own name of each (default: the same), which the error names.

    Raises:
        WeightsError: naming the keys that are missing, or the first tensor with another shape.
    """
    names = names or {}
    absent = [names.get(key, key) for key in _READ_SHAPES if key not in state]
    if absent:
        raise WeightsError(f"{source} is not a complete {kind} ResNet-FPN Mask R-CNN: it lacks {_listing(absent)}")
    for key, shape in _READ_SHAPES.items():
        actual = tuple(state[key].shape)
        if len(actual) != len(shape) or any(size is not None and size != n for size, n in zip(shape, actual)):
            expected = ", ".join("_" if size is None else str(size) for size in shape) + ("," if len(shape) == 1 else "")
            raise WeightsError(f"{source}: {names.get(key, key)} has shape {actual}, where a {kind} ResNet-FPN Mask R-CNN "
                               f"has ({expected})")


def _architecture(state: Mapping[str, torch.Tensor], source: str) -> dict[str, int | float]:
    """The size options of a Mask R-CNN state dict in this package's names (checked by
    :func:`_check_read_tensors`), read from its shapes.

    Raises:
        WeightsError: for a backbone other than a ResNet-50/101.
    """
    shapes = {
        "stem": "backbone.body.conv1.weight", "fpn": "backbone.fpn.inner_blocks.0.0.weight",
        "box": "roi_heads.box_head.fc6.weight", "mask": "roi_heads.mask_head.0.0.weight",
    }
    blocks = _count_blocks(state, "backbone.body.layer3.")
    depth = {6: 50, 23: 101}.get(blocks)
    if depth is None:
        raise WeightsError(f"{source}: a ResNet with {blocks} blocks in its third stage; ResNet-50 has 6, -101 has 23")
    grouped = state["backbone.body.layer1.0.conv2.weight"]
    if grouped.shape[1] != grouped.shape[0]:
        raise WeightsError(f"{source}: a ResNeXt (grouped 3x3 convolutions); only ResNet-50/101 backbones load")
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
        WeightsError: on a class count other than COCO's 91 or this package's 9, a backbone that is not
            a ResNet-50/101-FPN, or a missing or misshaped tensor among those read (naming it).
    """
    _check_read_tensors(state, source, "torchvision")
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


# -- Detectron2 ----------------------------------------------------------------------------------------
#: Detectron2's default input normalisation (``MODEL.PIXEL_MEAN`` in BGR, ``PIXEL_STD``), for 0-255 pixels.
DETECTRON2_PIXEL_MEAN = (103.530, 116.280, 123.675)
DETECTRON2_PIXEL_STD = (1.0, 1.0, 1.0)
#: Detectron2 options of its R-CNNs, as ``FusionPanopticConfig`` options (module docstring).
DETECTRON2_OPTIONS = {"stride_in_1x1": True, "roi_aligned": True, "roi_sampling_ratio": 0, "round_anchors": False,
                      "norm": "frozen_batch_norm", "batch_norm_eps": 1e-5}
_STEM = re.compile(r"backbone\.bottom_up\.stem\.conv1\.(weight|norm\.\w+)")
_BLOCK = re.compile(r"backbone\.bottom_up\.res([2-5])\.(\d+)\.(conv[123]|shortcut)\.(weight|norm\.\w+)")
_FPN = re.compile(r"backbone\.fpn_(lateral|output)([2-5])\.(weight|bias)")
_MASK_CONV = re.compile(r"roi_heads\.mask_head\.mask_fcn([1-4])\.(weight|bias)")
_RENAMED = {
    f"{d2}.{part}": f"{ours}.{part}"
    for d2, ours in (
        ("proposal_generator.rpn_head.conv", "rpn.head.conv.0.0"),
        ("proposal_generator.rpn_head.objectness_logits", "rpn.head.cls_logits"),
        ("proposal_generator.rpn_head.anchor_deltas", "rpn.head.bbox_pred"),
        ("roi_heads.box_head.fc1", "roi_heads.box_head.fc6"),
        ("roi_heads.box_head.fc2", "roi_heads.box_head.fc7"),
        ("roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.cls_score"),
        ("roi_heads.box_predictor.bbox_pred", "roi_heads.box_predictor.bbox_pred"),
        ("roi_heads.mask_head.deconv", "roi_heads.mask_predictor.conv5_mask"),
        ("roi_heads.mask_head.predictor", "roi_heads.mask_predictor.mask_fcn_logits"),
    )
    for part in ("weight", "bias")
}
#: Detectron2 keys that are read otherwise (the input normalisation) or not used (Panoptic FPN's
#: semantic head, another architecture than the paper's).
_NOT_RENAMED = ("pixel_mean", "pixel_std", "sem_seg_head.")


def detectron2_name(name: str) -> str | None:
    """This package's name of a Detectron2 Mask R-CNN (ResNet-FPN) tensor; None for a name outside that layout.

    ``backbone.bottom_up.res3.0.conv1.norm.running_var`` → ``backbone.body.layer2.0.bn1.running_var``,
    ``...res2.0.shortcut.weight`` → ``...layer1.0.downsample.0.weight``, ``backbone.fpn_lateral2.weight`` →
    ``backbone.fpn.inner_blocks.0.0.weight``, ``roi_heads.mask_head.mask_fcn1.bias`` →
    ``roi_heads.mask_head.0.0.bias``, and the fixed names of the RPN and RoI heads.
    """
    if match := _STEM.fullmatch(name):
        part = match[1]
        return "backbone.body." + ("conv1.weight" if part == "weight" else "bn1." + part[len("norm."):])
    if match := _BLOCK.fullmatch(name):
        block = f"backbone.body.layer{int(match[1]) - 1}.{match[2]}."
        layer, part = match[3], match[4]
        if layer == "shortcut":
            return block + ("downsample.0.weight" if part == "weight" else "downsample.1." + part[len("norm."):])
        return block + (f"{layer}.weight" if part == "weight" else f"bn{layer[-1]}.{part[len('norm.'):]}")
    if match := _FPN.fullmatch(name):
        blocks = "inner_blocks" if match[1] == "lateral" else "layer_blocks"
        return f"backbone.fpn.{blocks}.{int(match[2]) - 2}.0.{match[3]}"
    if match := _MASK_CONV.fullmatch(name):
        return f"roi_heads.mask_head.{int(match[1]) - 1}.0.{match[2]}"
    return _RENAMED.get(name)


def is_detectron2_rcnn(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state`` has Detectron2's names for a ResNet backbone (``backbone.bottom_up.stem``)."""
    return "backbone.bottom_up.stem.conv1.weight" in state


def _input_scale(state: Mapping[str, torch.Tensor], source: str) -> tuple[list[int], torch.Tensor]:
    """For each RGB channel of the backend's input, the Detectron2 input channel it is and the factor
    ``255 * std / PIXEL_STD`` that maps the backend's normalised value onto Detectron2's (module docstring)."""
    mean = state.get("pixel_mean", torch.tensor(DETECTRON2_PIXEL_MEAN)).double().flatten()
    std = state.get("pixel_std", torch.tensor(DETECTRON2_PIXEL_STD)).double().flatten()
    imagenet = 255 * torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    if mean.shape == (3,) and torch.allclose(mean, imagenet.flip(0), rtol=0, atol=1e-3):
        channel_of = [2, 1, 0]  # BGR
    elif mean.shape == (3,) and torch.allclose(mean, imagenet, rtol=0, atol=1e-3):
        channel_of = [0, 1, 2]
    else:
        raise WeightsError(f"{source}: Detectron2 pixel_mean {mean.tolist()} is not ImageNet's (x 255, BGR or RGB), "
                           f"which the backend normalises with: the input cannot be converted exactly")
    if std.shape != (3,) or not (std > 0).all():
        raise WeightsError(f"{source}: Detectron2 pixel_std {std.tolist()} is not three positive values")
    scale = 255 * torch.tensor(IMAGENET_STD, dtype=torch.float64) / std[channel_of]
    return channel_of, scale


def _predictor_rows(tensor: torch.Tensor, rows_per_class: int, classes: int, name: str, source: str) -> torch.Tensor:
    """A Detectron2 class-specific predictor (``classes`` foreground classes, no background; or one
    class-agnostic set) as this package's: the background's rows (zeros) first."""
    if tensor.shape[0] == rows_per_class:  # class-agnostic: the same rows for every class
        return tensor.repeat(1 + classes, *(1,) * (tensor.dim() - 1))
    if tensor.shape[0] != rows_per_class * classes:
        raise WeightsError(f"{source}: {name} has {tensor.shape[0]} rows; {classes} classes need {rows_per_class * classes} "
                           f"(or {rows_per_class}, class-agnostic)")
    return torch.cat((tensor.new_zeros((rows_per_class, *tensor.shape[1:])), tensor))


#: The Detectron2 name of each tensor of :data:`_READ_SHAPES`.
_DETECTRON2_READ = {detectron2_name(name): name for name in (
    "backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.res2.0.conv2.weight", "backbone.fpn_lateral2.weight",
    "roi_heads.box_head.fc1.weight", "roi_heads.mask_head.mask_fcn1.weight",
    *(f"roi_heads.box_predictor.{layer}.{part}" for layer in ("cls_score", "bbox_pred") for part in ("weight", "bias")),
    "roi_heads.mask_head.predictor.weight", "roi_heads.mask_head.predictor.bias",
)}


def from_detectron2(state: Mapping[str, torch.Tensor], source: str) -> Checkpoint:
    """A Detectron2 Mask R-CNN state dict (its names: :func:`is_detectron2_rcnn`) as a fusion_panoptic
    checkpoint without semantic head: tensors renamed (:func:`detectron2_name`), the predictors' rows and
    the first convolution converted, Detectron2's options in the config (module docstring).

    Raises:
        WeightsError: not a ResNet-FPN Mask R-CNN in Detectron2's standard layout (names the keys outside
            it), a missing or misshaped tensor among those converted (naming it), a class count other than
            COCO's 80 or the 8 Cityscapes things, or a ``pixel_mean`` that is not ImageNet's.
    """
    if not is_detectron2_rcnn(state):
        raise WeightsError(f"{source} is a Detectron2 checkpoint without a ResNet R-CNN (no "
                           f"backbone.bottom_up.stem.conv1.weight): fusion_panoptic converts Detectron2's Mask R-CNN "
                           f"R50/R101-FPN checkpoints")
    if "roi_heads.mask_head.predictor.weight" not in state:
        raise WeightsError(f"{source} is a Detectron2 R-CNN without a mask head (a Faster R-CNN?): fusion_panoptic "
                           f"needs a Mask R-CNN")
    unknown = sorted(k for k in state if detectron2_name(k) is None and not k.startswith(_NOT_RENAMED))
    if unknown:
        raise WeightsError(f"{source}: {len(unknown)} Detectron2 keys outside the standard Mask R-CNN ResNet-FPN layout "
                           f"(cascade heads, normalised FPN or heads, deformable convolutions are not supported): "
                           f"{_listing(unknown)}")
    converted = {detectron2_name(k): v for k, v in state.items() if detectron2_name(k) is not None}
    _check_read_tensors(converted, source, "Detectron2", _DETECTRON2_READ)
    classes = converted["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1
    layouts = {num_predictor_rows(name) - 1: name for name in ("coco80", "cityscapes")}
    if classes not in layouts:
        raise WeightsError(f"{source} is a Detectron2 Mask R-CNN with {classes} classes; fusion_panoptic takes COCO's 80 "
                           f"or the {len(THING_IDS)} Cityscapes things "
                           f"({', '.join(CITYSCAPES.name_of(i) for i in THING_IDS)}, in that order)")
    channel_of, scale = _input_scale(state, source)
    stem = converted["backbone.body.conv1.weight"]
    converted["backbone.body.conv1.weight"] = (stem.double()[:, channel_of] * scale.view(1, 3, 1, 1)).to(stem.dtype)
    for key, rows in (("cls_score", 1), ("bbox_pred", 4)):
        for part in ("weight", "bias"):
            name = f"roi_heads.box_predictor.{key}.{part}"
            tensor = converted[name]
            if key == "cls_score":  # background last → first
                converted[name] = torch.cat((tensor[-1:], tensor[:-1]))
            else:
                converted[name] = _predictor_rows(tensor, rows, classes, name, source)
    for part in ("weight", "bias"):
        name = f"roi_heads.mask_predictor.mask_fcn_logits.{part}"
        converted[name] = _predictor_rows(converted[name], 1, classes, name, source)
    dropped = sorted(k for k in state if k.startswith("sem_seg_head."))
    if dropped:
        log.info("%s: Panoptic FPN's semantic head (%d tensors) is not used: fusion_panoptic's is another architecture",
                 source, len(dropped))
    config = {**_architecture(converted, source), "detector_classes": layouts[classes], "semantic_head": False,
              **DETECTRON2_OPTIONS}
    order = "BGR" if channel_of == [2, 1, 0] else "RGB"
    log.info("%s: Detectron2 Mask R-CNN, %d classes (detector_classes=%s), input %s 0-255 with pixel_std %s folded "
             "into the first convolution", source, classes, layouts[classes], order,
             "from the file" if "pixel_std" in state else "1 (Detectron2's default)")
    return Checkpoint(converted, None, config, {"converted_from": f"Detectron2 Mask R-CNN ({classes} classes)"})
