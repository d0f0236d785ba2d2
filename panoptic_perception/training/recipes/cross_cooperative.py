"""Training the cross cooperative network (paper 003, §3.2 Eq. 1 and §4.2).

The paper: both networks trained simultaneously with ``Loss = Loss1 + Loss2`` (Eq. 1), the softmax
cross-entropy of the top (Xception-65) and of the bottom (ResNet-101) network; backbones pretrained
on ImageNet; SGD, batch 6, learning rate 0.035 on Cityscapes (0.007 on PASCAL VOC); random 768x768
crops of the 2048x1024 Cityscapes images (513x513 on PASCAL VOC). The optimiser, learning rate, batch
and schedule are options of the shared :class:`~panoptic_perception.training.engine.TrainConfig`
(``training/configs/cross_cooperative_synthetic.yaml`` shows them); this recipe gives the rest.

Choices where the paper is silent (``recipe`` options, :class:`CrossCooperativeTrainOptions`):

- the schedule is DeepLab's "poly" (power 0.9) per iteration, momentum 0.9 (the configs say so);
- each cross-entropy is averaged over labelled pixels of the crop, both with weight 1; the logits are
  already at the crop's resolution (the network upsamples x4); void pixels, classes outside the 19 and
  padding carry :data:`~panoptic_perception.training.data.IGNORE_INDEX`;
- augmentation: the image is resized to the network input size (what the backend does at inference,
  so objects have the scale they will have there; for Cityscapes at 2048x1024 nothing changes), scaled
  by a factor drawn uniformly from ``scale``, mirrored with probability 1/2 if ``flip``, and a random
  window of ``crop`` is cut out (padded at the bottom / right with the ImageNet mean colour and ignored
  where the image is smaller). The defaults are the paper's: a plain random 768x768 crop, no scaling,
  no flip;
- ``init_weights`` is one file loaded by name and shape: a checkpoint of this backend, or ImageNet
  backbone weights: timm ``xception65`` names (``stem.``, ``blocks.``) go to ``top_backbone``,
  torchvision / timm ``resnet101`` names (``conv1.``, ``bn1.``, ``layer1.`` ...) to
  ``bottom_backbone``, classifier heads (``head.``, ``fc.``) are dropped. The two name sets do not
  overlap, so the paper's initialisation is one file holding both state dicts
  (``torch.save({**xception65_state, **resnet101_state}, path)``);
- validation runs the network through the backend (its pre- and post-processing) three times, with
  ``output`` ``ensemble``, ``top`` and ``bottom``, and reports ``miou`` (the ensemble, which picks
  ``best.pth``), ``miou_top``, ``miou_bottom`` and the ensemble's pixel accuracy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ...backends.base import build_config
from ...backends.weights import read_checkpoint
from ...core.labels import CITYSCAPES
from ...core.preprocess import IMAGENET_MEAN_BGR
from ...models.cross_cooperative import OUTPUTS, CrossCooperativeConfig, CrossCooperativeNetwork
from ..data import IGNORE_INDEX, Example, class_index_table, crop_or_pad, hflip, resize
from ..engine import TrainConfig
from ..losses import class_weight_vector, semantic_cross_entropy
from .common import image_tensor, load_matching, validate_with_backend

NETWORK_PARTS = ("top_backbone.", "bottom_backbone.", "top_head.", "bottom_head.")
XCEPTION_PARTS = ("stem.", "blocks.")
CLASSIFIERS = ("head.", "fc.")


@dataclass
class CrossCooperativeTrainOptions:
    """Recipe options: ``crop`` (width, height) of the training windows, the range of random ``scale``
    factors (relative to the network input size), whether to ``flip``, and the fraction of the hardest
    pixels each network's cross-entropy averages (1.0: all, the paper's Eq. 1; see
    :func:`~panoptic_perception.training.losses.semantic_cross_entropy`) and its class weights by Cityscapes
    class name (e.g. ``{pole: 4.0}``; others 1, the paper's loss)."""

    crop: tuple[int, int] = (768, 768)
    scale: tuple[float, float] = (1.0, 1.0)
    flip: bool = False
    hard_pixel_fraction: float = 1.0
    class_weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.crop = tuple(int(c) for c in self.crop)
        self.scale = tuple(float(s) for s in self.scale)
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise ValueError(f"crop must be (width, height) of positive sizes, got {self.crop}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")


class CrossCooperativeRecipe:
    backend = "cross_cooperative"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.model_options = build_config(CrossCooperativeConfig, dict(config.model))
        self.options = build_config(CrossCooperativeTrainOptions, dict(config.recipe))
        self.size = (self.model_options.input_width, self.model_options.input_height)
        self.class_index = class_index_table(CITYSCAPES)
        self.class_weights = class_weight_vector(CITYSCAPES, self.options.class_weights)

    def build_model(self) -> nn.Module:
        return CrossCooperativeNetwork(self.model_options)

    def model_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.model_options)

    def initialize(self, model: nn.Module, path: str) -> dict[str, Any]:
        """A checkpoint of this backend, or ImageNet Xception-65 (timm) and / or ResNet-101 (torchvision,
        timm) weights, loaded by name and shape (see the module docstring)."""

        def rename(name: str) -> str | None:
            if name.startswith(NETWORK_PARTS):
                return name
            if name.startswith(CLASSIFIERS):
                return None
            return ("top_backbone." if name.startswith(XCEPTION_PARTS) else "bottom_backbone.") + name

        return load_matching(model, read_checkpoint(path).state_dict, rename)

    def example(self, sample, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``image`` (3, h, w) float32 RGB in [0, 1] and ``semantic`` (h, w) int64 class indices (255:
        ignored), ``(w, h) = crop``, augmented as the module docstring says."""
        example = Example.from_sample(sample)
        if example.semantic is None:
            raise ValueError(f"{sample.name}: cross_cooperative trains on semantic ground truth, "
                             "which this sample lacks")
        factor = float(rng.uniform(*self.options.scale))
        width, height = self.size
        example = resize(example, (max(1, round(width * factor)), max(1, round(height * factor))))
        if self.options.flip and rng.random() < 0.5:
            example = hflip(example)
        example = crop_or_pad(example, self.options.crop, rng, IMAGENET_MEAN_BGR)
        semantic = self.class_index[example.semantic]
        semantic[~example.valid] = IGNORE_INDEX
        return {"image": image_tensor(example.image), "semantic": torch.from_numpy(semantic.astype(np.int64))}

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return {name: torch.stack([e[name] for e in examples]) for name in ("image", "semantic")}

    def losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Eq. 1: ``loss = loss_top + loss_bottom``, each the cross-entropy of one network's logits."""
        logits = model(batch["image"])
        labels = batch["semantic"]
        losses = {f"loss_{name}": semantic_cross_entropy(getattr(logits, name), labels, IGNORE_INDEX,
                                                         self.options.hard_pixel_fraction, self.class_weights)
                  for name in ("top", "bottom")}
        losses["loss"] = losses["loss_top"] + losses["loss_bottom"]
        return losses

    def validate(self, model: nn.Module, samples) -> dict[str, float]:
        """``miou`` and ``pixel_accuracy`` of the ensemble, ``miou_top`` and ``miou_bottom``."""
        metrics = {}
        for output in OUTPUTS:
            summary = validate_with_backend(self.backend, model, {**self.model_config(), "output": output}, samples)
            suffix = "" if output == "ensemble" else f"_{output}"
            metrics[f"miou{suffix}"] = float(summary["semantic"]["miou"])
            if output == "ensemble":
                metrics["pixel_accuracy"] = float(summary["semantic"]["pixel_accuracy"])
        return metrics

    def score(self, metrics: dict[str, float]) -> float:
        return metrics["miou"]
