"""Training CycleNet (paper 004, §4.1 "Training settings").

The paper: SGD with momentum 0.9 and weight decay 1e-4, learning rate 1e-2 on Cityscapes (2e-2 on
ADE20K) with the "poly" policy (power 0.9), synchronized BatchNorm, batch 8, 180 epochs, random crops of
796x796; random horizontal flips, crops and scales in [0.75, 2]; auxiliary supervision "as [22, 23]"
(PSANet, SPNet: a cross-entropy on an FCN head over stage 3 with weight 0.4). The optimiser, schedule,
batch, epochs and SyncBatchNorm (``sync_batchnorm: true`` under ``torchrun``) are options of the shared
:class:`~panoptic_perception.training.engine.TrainConfig`; this recipe gives the rest.

Choices where the paper is silent (``recipe`` options, :class:`CycleNetTrainOptions`):

- the loss is ``CE(main) + aux_loss_weight * CE(aux)`` (0.4: PSPNet's and PSANet's weight), each a
  pixel-wise cross-entropy averaged over labelled pixels; void pixels, classes outside the 19 and
  padding carry :data:`~panoptic_perception.training.data.IGNORE_INDEX`. Both logit maps (stride 4 and
  8) are bilinearly upsampled to the label resolution first;
- augmentation in the paper's order: the source image is scaled by a factor drawn uniformly from
  ``scale`` (relative to the source resolution, as for Cityscapes' 2048x1024 images and 796x796 crops),
  mirrored with probability 1/2, then a random window of ``crop`` (width, height; default the network
  input size) is cropped, as the paper trains on 796x796 crops and infers on whole frames; where the
  scaled image is smaller it is padded at the bottom / right with the ImageNet mean colour (zero after
  normalisation) and ignored by the loss. For synthetic scenes rendered at the network input size this
  is exactly the shared :func:`~panoptic_perception.training.data.scale_flip_crop` (same random draws);
- ``init_weights`` loads an ImageNet ResNet (torchvision or timm names) into ``backbone`` or a
  CycleNet checkpoint, by name and shape;
- validation runs the network through the backend itself (its pre- and post-processing) and reports
  the semantic mIoU, pixel accuracy, mean accuracy and the IoU of each class present;
  ``best.pth`` is chosen by mIoU.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...backends.base import build_config
from ...backends.weights import read_checkpoint
from ...core.labels import CITYSCAPES
from ...core.preprocess import IMAGENET_MEAN, IMAGENET_MEAN_BGR, IMAGENET_STD
from ...models.cyclenet import CycleNetConfig, CycleNetNetwork
from ..data import IGNORE_INDEX, Example, class_index_table, crop_or_pad, hflip, resize
from ..engine import TrainConfig
from ..losses import class_weight_vector, semantic_cross_entropy
from .common import image_tensor, load_matching, validate_with_backend

#: Top-level modules of :class:`CycleNetNetwork`; other names in an initialisation file are a ResNet's.
NETWORK_PARTS = ("backbone.", "aspp.", "high_project.", "low_project.", "adc.", "classifier.", "aux_head.")


@dataclass
class CycleNetTrainOptions:
    """Recipe options: the auxiliary loss weight, the fraction of the hardest pixels each cross-entropy
    averages (1.0: all, the paper's loss; see :func:`~panoptic_perception.training.losses.semantic_cross_entropy`)
    and their class weights by Cityscapes class name (e.g. ``{pole: 4.0}``; others 1, the paper's loss), the
    range of random scales (relative to the source image), whether to mirror, and the ``crop`` (width,
    height) of the training windows (``None``: the network input size)."""

    aux_loss_weight: float = 0.4
    hard_pixel_fraction: float = 1.0
    class_weights: dict[str, float] = field(default_factory=dict)
    scale: tuple[float, float] = (0.75, 2.0)
    flip: bool = True
    crop: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.scale = tuple(float(s) for s in self.scale)
        if self.crop is not None:
            self.crop = tuple(int(c) for c in self.crop)
            if len(self.crop) != 2 or min(self.crop) < 1:
                raise ValueError(f"crop must be (width, height) of positive sizes, got {self.crop}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if self.aux_loss_weight < 0:
            raise ValueError(f"aux_loss_weight must be non-negative, got {self.aux_loss_weight}")


class CycleNetRecipe:
    backend = "cyclenet"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.model_options = build_config(CycleNetConfig, dict(config.model))
        self.options = build_config(CycleNetTrainOptions, dict(config.recipe))
        self.size = (self.model_options.input_width, self.model_options.input_height)
        self.class_index = class_index_table(CITYSCAPES)
        self.class_weights = class_weight_vector(CITYSCAPES, self.options.class_weights)

    def build_model(self) -> nn.Module:
        return CycleNetNetwork(self.model_options)

    def model_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.model_options)

    def initialize(self, model: nn.Module, path: str) -> dict[str, Any]:
        """A CycleNet checkpoint, or an ImageNet ResNet state dict (torchvision / timm names, ``fc``
        dropped) loaded into ``backbone``: tensors load by name and shape."""

        def rename(name: str) -> str | None:
            if name.startswith(NETWORK_PARTS):
                return name
            return None if name.startswith("fc.") else f"backbone.{name}"

        return load_matching(model, read_checkpoint(path).state_dict, rename)

    def example(self, sample, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``image`` (3, H, W) float32 normalised and ``semantic`` (H, W) int64 class indices (255:
        ignored) of the size ``crop`` (default the network input size), augmented as the module docstring says."""
        example = Example.from_sample(sample)
        if example.semantic is None:
            raise ValueError(f"{sample.name}: cyclenet trains on semantic ground truth, which this sample lacks")
        factor = float(rng.uniform(*self.options.scale))
        width, height = example.size
        example = resize(example, (max(1, round(width * factor)), max(1, round(height * factor))))
        if self.options.flip and rng.random() < 0.5:
            example = hflip(example)
        example = crop_or_pad(example, self.options.crop or self.size, rng, IMAGENET_MEAN_BGR)
        semantic = self.class_index[example.semantic]
        semantic[~example.valid] = IGNORE_INDEX
        return {
            "image": image_tensor(example.image, IMAGENET_MEAN, IMAGENET_STD),
            "semantic": torch.from_numpy(semantic.astype(np.int64)),
        }

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return {name: torch.stack([e[name] for e in examples]) for name in ("image", "semantic")}

    def losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, aux_logits = model(batch["image"])
        labels = batch["semantic"]

        def cross_entropy(x: torch.Tensor) -> torch.Tensor:
            x = F.interpolate(x, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            return semantic_cross_entropy(x, labels, IGNORE_INDEX, self.options.hard_pixel_fraction,
                                         self.class_weights)

        losses = {"loss_semantic": cross_entropy(logits), "loss_aux": cross_entropy(aux_logits)}
        losses["loss"] = losses["loss_semantic"] + self.options.aux_loss_weight * losses["loss_aux"]
        return losses

    def validate(self, model: nn.Module, samples) -> dict[str, float]:
        """mIoU, pixel and mean accuracy, and ``iou_<class>`` of every class present in truth or prediction."""
        semantic = validate_with_backend(self.backend, model, self.model_config(), samples)["semantic"]
        metrics = {name: float(semantic[name]) for name in ("miou", "pixel_accuracy", "mean_accuracy")}
        for class_id, iou in semantic["per_class_iou"].items():
            if not math.isnan(iou):
                metrics["iou_" + CITYSCAPES.name_of(class_id).replace(" ", "_")] = float(iou)
        return metrics

    def score(self, metrics: dict[str, float]) -> float:
        return metrics["miou"]
