"""Training YOLOPv2 (paper 000, §3.2.3 and §4.2) on YOLOv7's practice.

What the paper says:

- the loss (§3.2.3): detection as in YOLOP, ``L_det = α1 L_class + α2 L_obj + α3 L_box`` with focal loss
  for class and objectness and a CIoU box term; cross-entropy for the drivable area; focal + Dice for lane
  lines. :class:`~panoptic_perception.training.yolopv2_losses.YOLOPv2Loss` implements it (its docstring
  gives the weights the paper leaves open); this recipe sums its terms;
- Mosaic and Mixup augmentation (§3.2.3; Table 5: +1.7 mAP50, +1.5 drivable mIoU, +6.7 lane accuracy on BDD100K);
- training (§4.2): cosine annealing from 0.01 with a 3-epoch warm-up, momentum 0.937, weight decay 0.005
  (YOLOv7's is 0.0005; the paper may mean that), 300 epochs, BDD100K images resized to 640x640 in
  training and 640x384 in testing. The optimiser, schedule, epochs and EMA are options of the shared
  :class:`~panoptic_perception.training.engine.TrainConfig` (``training/configs/yolopv2_synthetic.yaml`` gives
  them).

Choices where the paper is silent, or where this recipe departs from it (``recipe`` options,
:class:`YOLOPv2TrainOptions`):

- **geometry**: an image is letterboxed into the network input exactly as
  :class:`~panoptic_perception.backends.yolopv2.YOLOPv2Backend` does at inference (aspect kept, OpenCV
  bilinear resize, centred, padding 114, RGB / 255: :class:`~panoptic_perception.core.preprocess.Geometry`),
  so with no augmentation a training image is bit for bit the backend's input. Training runs at the
  network input size (640x384 for the full model), not at the paper's square 640x640: the geometry the
  network is used at, and 40 % fewer pixels per step;
- **augmentation** (YOLOv5/v7's ``random_perspective`` restricted to scale and translation, as in
  YOLOv7's p5 settings (YOLOP also rotates by up to 10°), then ``fliplr`` and ``augment_hsv``): the
  letterboxed image is scaled about its centre by a factor drawn from ``scale``, shifted by up to
  ``translate`` of the input size, cropped / padded (114) to the input size, mirrored with probability
  ``flip``, and its colour jittered in HSV (``hsv`` gains; the padding keeps the inference value 114).
  Boxes, the drivable-area and the lane masks follow the image (masks by nearest neighbour; padding is
  background, as YOLOP labels it). Defaults: YOLOP's ±0.25 scale and 0.1 translation, YOLOv7's flip and
  HSV gains;
- **no Mosaic, no Mixup**, unlike the paper: the engine builds each example from one sample
  (:meth:`~panoptic_perception.training.engine.Recipe.example` sees nothing else), and a mosaic needs four.
  A mosaic also cuts each road scene into a quarter with its own horizon and road edges; the paper reports
  that its segmentation heads gain from it all the same, so this is a limit of the interface, not a claim
  that mosaic hurts. There is therefore no mosaic option;
- **targets**: ground-truth boxes are matched to the head's class slots by class *name* (as the evaluator
  matches them): slot ``i`` is ``class_names[i]`` of the model config, whose ``class_ids`` are the label
  ids the backend reports (Cityscapes ids 26, 27, 24 for the synthetic scenes' car, truck, person). A
  model whose only class is ``vehicle`` (the released one) takes car, bus, truck and train, as YOLOP and
  the evaluator merge them. Boxes of other classes are not targets. After augmentation a box is clipped
  to the image and dropped when its shorter side is under ``min_box_size`` network pixels (default 4:
  a box 3 pixels wide or less, or 4 high or less, fits no anchor at ``anchor_ratio`` 4 (the smallest is
  12x16) and is never a positive anyway; YOLOv5 drops boxes under 2 pixels; the evaluation still counts
  every ground-truth box) or when less than ``min_visible`` of it is left inside the image (YOLOv5's
  ``box_candidates`` area ratio, 0.1);
- **optimiser**: the shared engine gives one parameter group (weight decay on every tensor; YOLOv7 spares
  biases and BatchNorm weights) and a plain learning-rate warm-up (YOLOv7 also warms the momentum and
  starts the biases at 0.1). Note that these losses are means over the batch, whereas YOLOv7 multiplies
  its loss by the batch size and accumulates gradients up to 64 images, so YOLOv7's SGD 0.01 acts like a
  far larger learning rate on this loss; Adam (YOLOP's choice, 1e-3) does not depend on the loss scale.
  EMA (``ema_decay``) is the engine's YOLOv5/v7 EMA with the decay warmed up over ~2000 updates;
- **validation** runs the network through the backend (its letterbox and post-processing) on every
  validation sample, with YOLOv7's mAP thresholds (score 0.001, NMS IoU 0.65, at most 300 boxes: ``val_*``
  options), and reports COCO ``ap`` and ``ap50``, YOLOP's ``map50`` and ``recall``, the drivable-area
  ``drivable_miou`` and the lane ``lane_iou`` and ``lane_recall`` (YOLOPv2's lane "accuracy");
- **score** (picks ``best.pth``): ``ap50 + mask_score_weight * (drivable_miou + lane_iou) / 2``, with
  weight 1 by default: the network has three tasks, and a detection-only score leaves ``best.pth`` at the
  first epoch while the detector still scores 0 early in a run (an undefined AP counts as 0);
- ``init_weights`` loads a checkpoint of this network by name and shape (tensors of another shape, e.g.
  the detection convolutions of another class count, are skipped and reported); the official release is a
  TorchScript file, not a state dict of this rebuild, and cannot initialise it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ...backends.base import build_config
from ...backends.weights import read_checkpoint
from ...backends.yolopv2 import YOLOPv2Backend
from ...core.labels import VEHICLE_CLASSES
from ...core.preprocess import Geometry
from ...models.yolopv2 import ANCHORS, STRIDES, YOLOPv2, YOLOPv2Config
from ..data import Example, hflip, resize
from ..engine import TrainConfig
from ..yolopv2_losses import YOLOPv2Loss, YOLOPv2LossWeights
from .common import image_tensor, load_matching, validate_with_backend

PAD_VALUE = YOLOPv2Backend.pad_value


@dataclass
class YOLOPv2TrainOptions:
    """Recipe options (see the module docstring): augmentation, target filtering, loss weights
    (:class:`~panoptic_perception.training.yolopv2_losses.YOLOPv2LossWeights` fields), validation
    thresholds and the score's mask weight."""

    scale: tuple[float, float] = (0.75, 1.25)
    translate: float = 0.1
    flip: float = 0.5
    hsv: tuple[float, float, float] = (0.015, 0.7, 0.4)
    min_box_size: float = 4.0
    min_visible: float = 0.1
    loss: dict[str, float] = field(default_factory=dict)
    val_score_threshold: float = 0.001
    val_iou_threshold: float = 0.65
    val_max_detections: int = 300
    mask_score_weight: float = 1.0

    def __post_init__(self) -> None:
        self.scale = tuple(float(s) for s in self.scale)
        self.hsv = tuple(float(g) for g in self.hsv)
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if len(self.hsv) != 3 or min(self.hsv) < 0:
            raise ValueError(f"hsv must be three non-negative gains (hue, saturation, value), got {self.hsv}")
        if not 0 <= self.translate < 1 or not 0 <= self.flip <= 1 or not 0 <= self.min_visible <= 1:
            raise ValueError("translate must be in [0, 1), flip and min_visible in [0, 1]")
        if self.min_box_size < 0 or self.mask_score_weight < 0:
            raise ValueError("min_box_size and mask_score_weight must be non-negative")


def place(example: Example, size: tuple[int, int], factor: float = 1.0, shift: tuple[int, int] = (0, 0),
          flip: bool = False, pad_value: int = PAD_VALUE, hsv_gains: Sequence[float] | None = None) -> Example:
    """``example`` letterboxed into a ``size`` (width, height) canvas as the backend places an image
    (:meth:`Geometry.letterbox`: aspect kept, centred), its content scaled by ``factor`` about the centre,
    moved by ``shift`` (dx, dy) pixels, cut / padded (``pad_value``; label maps 0, ``valid`` False) to
    ``size``, then mirrored if ``flip``. ``hsv_gains``: YOLOv5's HSV jitter factors (each near 1), applied
    to the image content only. Boxes follow (not clipped here). With the defaults it is the backend's
    letterbox exactly."""
    width, height = size
    geometry = Geometry.letterbox(example.size, size)
    if factor == 1.0:
        content = geometry.content_size
    else:
        fit = min(width / example.size[0], height / example.size[1])
        content = (max(1, round(example.size[0] * fit * factor)), max(1, round(example.size[1] * fit * factor)))
    scaled = resize(example, content)
    if hsv_gains is not None:
        scaled = replace(scaled, image=augment_hsv(scaled.image, hsv_gains))
    left = (width - content[0]) // 2 + int(shift[0])
    top = (height - content[1]) // 2 + int(shift[1])
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + content[0]), min(height, top + content[1])

    def canvas(array: np.ndarray, fill) -> np.ndarray:
        out = np.empty((height, width, *array.shape[2:]), array.dtype)
        out[...] = fill
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = array[y0 - top : y1 - top, x0 - left : x1 - left]
        return out

    maps = {name: canvas(m, False if m.dtype == bool else 0) for name, m in scaled._label_maps().items()}
    boxes = None if scaled.boxes is None else scaled.boxes + np.array([left, top, left, top], np.float32)
    placed = replace(scaled, image=canvas(scaled.image, pad_value), boxes=boxes, **maps)
    return hflip(placed) if flip else placed


def augment_hsv(image: np.ndarray, gains: Sequence[float]) -> np.ndarray:
    """YOLOv5/v7's colour jitter: hue, saturation and value of a BGR uint8 image multiplied by ``gains``
    (hue modulo 180, the others clipped to 255) through lookup tables."""
    hue, saturation, value = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float64)
    tables = (((x * gains[0]) % 180).astype(np.uint8), np.clip(x * gains[1], 0, 255).astype(np.uint8),
              np.clip(x * gains[2], 0, 255).astype(np.uint8))
    merged = cv2.merge([cv2.LUT(channel, table) for channel, table in zip((hue, saturation, value), tables)])
    return cv2.cvtColor(merged, cv2.COLOR_HSV2BGR)


class YOLOPv2Recipe:
    backend = "yolopv2"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        model = dict(config.model)
        for name in ("class_names", "class_ids"):  # YAML lists → the config's tuples
            if model.get(name) is not None:
                model[name] = tuple(model[name])
        self.model_options: YOLOPv2Config = build_config(YOLOPv2Config, model)
        self.options = build_config(YOLOPv2TrainOptions, dict(config.recipe))
        self.loss_weights = build_config(YOLOPv2LossWeights, dict(self.options.loss))
        names = self.model_options.class_names
        if len(names) > self.model_options.num_classes:
            raise ValueError(f"{len(names)} class names for {self.model_options.num_classes} class slots")
        if self.model_options.class_ids is not None and len(self.model_options.class_ids) != len(names):
            raise ValueError("class_ids and class_names must have the same length")
        self.size = (self.model_options.input_width, self.model_options.input_height)
        if self.size[0] % YOLOPv2Backend.input_multiple or self.size[1] % YOLOPv2Backend.input_multiple:
            raise ValueError(f"input size must be multiples of {YOLOPv2Backend.input_multiple}, got {self.size}")
        if tuple(names) == ("vehicle",):
            self.slot_of = {name: 0 for name in VEHICLE_CLASSES}
        else:
            self.slot_of = {name: slot for slot, name in enumerate(names)}
        anchors = torch.tensor(ANCHORS, dtype=torch.float32).view(len(STRIDES), 3, 2)
        self.criterion = YOLOPv2Loss(self.model_options.num_classes, anchors, STRIDES, self.loss_weights)

    def build_model(self) -> nn.Module:
        o = self.model_options
        return YOLOPv2(o.num_classes, o.width, o.depth, o.elan_groups)

    def model_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.model_options)

    def initialize(self, model: nn.Module, path: str) -> dict[str, Any]:
        """A checkpoint of this network: tensors load by name and shape (the detection convolutions of
        another class count are skipped)."""
        return load_matching(model, read_checkpoint(path).state_dict)

    def example(self, sample, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``image`` (3, H, W) float32 RGB in [0, 1]; ``targets`` (K, 5) float32 ``[class slot, cx, cy, w,
        h]`` in network pixels; ``drivable`` and ``lane`` (H, W) int64 0/1; augmented as the module
        docstring says."""
        source = Example.from_sample(sample)
        if source.boxes is None or source.drivable is None or source.lane is None:
            raise ValueError(f"{sample.name}: yolopv2 trains on boxes, drivable-area and lane ground truth, "
                             "which this sample lacks")
        known = np.array([name in self.slot_of for name in source.box_names], bool)
        source = replace(source, semantic=None, panoptic=None, boxes=source.boxes[known],
                         box_classes=np.array([self.slot_of[n] for n in source.box_names if n in self.slot_of],
                                              np.int64).reshape(-1),
                         box_names=[n for n in source.box_names if n in self.slot_of])
        o = self.options
        factor = float(rng.uniform(*o.scale))
        dx, dy = rng.uniform(-o.translate, o.translate, 2) * np.array(self.size)
        flip = bool(rng.random() < o.flip)
        hsv = rng.uniform(-1, 1, 3) * np.array(o.hsv) + 1
        example = place(source, self.size, factor, (round(dx), round(dy)), flip, PAD_VALUE,
                        hsv if any(o.hsv) else None)
        return {
            "image": image_tensor(example.image),
            "targets": torch.from_numpy(self.box_targets(example.boxes, example.box_classes)),
            "drivable": torch.from_numpy(example.drivable.astype(np.int64)),
            "lane": torch.from_numpy(example.lane.astype(np.int64)),
        }

    def box_targets(self, boxes: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(K, 4) xyxy network-pixel boxes → (K', 5) ``[class, cx, cy, w, h]`` of the boxes kept: clipped
        to the image, at least ``min_box_size`` on the shorter side and ``min_visible`` of their area left."""
        width, height = self.size
        clipped = np.clip(boxes, 0, np.array([width, height, width, height], np.float32))
        w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = (np.minimum(w, h) >= self.options.min_box_size) & (w * h >= self.options.min_visible * area) \
            & (w > 0) & (h > 0)
        c = clipped[keep]
        return np.stack([classes[keep].astype(np.float32), (c[:, 0] + c[:, 2]) / 2, (c[:, 1] + c[:, 3]) / 2,
                         c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]], 1).astype(np.float32).reshape(-1, 5)

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """``image`` (N, 3, H, W); ``targets`` (M, 6) ``[image index, class, cx, cy, w, h]`` (what
        :class:`~panoptic_perception.training.yolopv2_losses.YOLOPv2Loss` takes); ``drivable`` and ``lane``
        (N, H, W) int64."""
        targets = [torch.cat([torch.full((len(e["targets"]), 1), float(i)), e["targets"]], 1)
                   for i, e in enumerate(examples)]
        return {
            "image": torch.stack([e["image"] for e in examples]),
            "targets": torch.cat(targets).reshape(-1, 6),
            "drivable": torch.stack([e["drivable"] for e in examples]),
            "lane": torch.stack([e["lane"] for e in examples]),
        }

    def losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``loss`` (the sum minimised) and its weighted terms ``loss_box``, ``loss_obj``, ``loss_cls``,
        ``loss_drivable``, ``loss_lane``."""
        out = model(batch["image"])
        criterion = self.criterion.to(batch["image"].device)
        terms = criterion([d.float() for d in out.detection], out.drivable.float(), out.lane.float(),
                          batch["targets"], batch["drivable"], batch["lane"])
        return {"loss": terms["loss"], **{f"loss_{name}": value for name, value in terms.items() if name != "loss"}}

    def validate(self, model: nn.Module, samples) -> dict[str, float]:
        """Detection ``ap``, ``ap50``, ``map50``, ``recall``; ``drivable_miou``, ``lane_iou``, ``lane_recall``
        (each present when the samples have that ground truth)."""
        network = getattr(model, "module", model)
        export = network.export
        network.export = True  # the backend consumes the official interface
        try:
            summary = validate_with_backend(
                self.backend, network, self.model_config(), samples,
                {"score": self.options.val_score_threshold, "iou": self.options.val_iou_threshold,
                 "max_detections": self.options.val_max_detections},
            )
        finally:
            network.export = export
        metrics = {}
        if "detection" in summary:
            d = summary["detection"]
            metrics.update(ap=d["AP"], ap50=d["AP50"], map50=d["map50"], recall=d["recall"])
        if "driving" in summary:
            d = summary["driving"]
            metrics.update(drivable_miou=d["drivable_miou"], lane_iou=d["lane_iou"], lane_recall=d["lane_recall"])
        return {name: float(value) for name, value in metrics.items()}

    def score(self, metrics: dict[str, float]) -> float:
        def value(name: str) -> float:
            v = metrics.get(name, 0.0)
            return 0.0 if math.isnan(v) else v

        return value("ap50") + self.options.mask_score_weight * (value("drivable_miou") + value("lane_iou")) / 2
