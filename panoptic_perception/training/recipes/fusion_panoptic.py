"""Training the fusion-panoptic network (paper 002, §III-C).

The paper trains end to end with one loss ``L = L_box + L_cls + L_mask + L_segm``: Mask R-CNN's RPN
objectness and box losses, the box head's classification and box losses and the mask loss, plus the
semantic head's cross-entropy (void and padding ignored), all with weight 1. SGD with momentum 0.9 and a
"poly" learning rate from 5e-3 over 32k iterations at batch 2; horizontal flips and image scales 0.8-1.0;
BatchNorm statistics frozen (only their affine terms learn), GroupNorm only in the semantic head;
initialised from COCO Mask R-CNN weights.

Choices where the paper is silent or this machine differs (``recipe`` options, :class:`FusionTrainOptions`):

- the semantic logits are bilinearly upsampled from 1/4 to the input before the cross-entropy;
- an image is fitted into the network input (aspect kept) at a random scale in ``scale`` and padded at
  the bottom / right (Mask R-CNN sees only the image part; padding is ignored by the semantic loss);
- instance targets come from the panoptic ground truth (every thing segment except crowd regions);
- where no pretrained weights exist (the bundled variant, trained from scratch on synthetic scenes) the
  model config chooses trainable BatchNorm (``norm: batch_norm``); ``init_weights`` loads what the backend's
  ``weights`` loads (its own checkpoints, a torchvision / COCO Mask R-CNN, a checkpoint converted by
  ``panoptic-perception convert-weights``), or an ImageNet ResNet, by name and shape; a COCO predictor's
  rows are mapped to the Cityscapes things
  (:func:`~panoptic_perception.nn.mask_rcnn.adapt_predictor_classes` with
  :func:`~panoptic_perception.backends.rcnn_weights.seed_rows`: rider from person).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...backends.base import build_config
from ...backends.fusion_panoptic import FusionPanopticBackend
from ...backends.rcnn_weights import seed_rows
from ...backends.weights import read_checkpoint
from ...core.labels import CITYSCAPES
from ...core.preprocess import IMAGENET_MEAN, IMAGENET_MEAN_BGR, IMAGENET_STD
from ...models.fusion_panoptic import THING_IDS, FusionPanopticConfig, FusionPanopticNetwork
from ...nn.mask_rcnn import adapt_predictor_classes
from ..data import IGNORE_INDEX, Example, class_index_table, instance_targets, scale_flip_crop
from ..engine import TrainConfig
from ..losses import class_weight_vector, semantic_cross_entropy
from .common import image_tensor, load_matching, validate_with_backend

log = logging.getLogger("panoptic_perception.training")
#: Model options that change what a converted checkpoint's layers compute (not their shapes).
ARCHITECTURE_CONVENTIONS = ("stride_in_1x1", "roi_aligned", "roi_sampling_ratio", "round_anchors", "batch_norm_eps")


@dataclass
class FusionTrainOptions:
    """Recipe options: loss weight of the semantic cross-entropy, the fraction of its hardest pixels
    averaged (1.0: all, the paper's loss; see :func:`~panoptic_perception.training.losses.semantic_cross_entropy`)
    and its class weights by Cityscapes class name (e.g. ``{pole: 4.0}``; others 1, the paper's loss), scale
    range, flips, and the smallest instance (pixels, after augmentation) used as a Mask R-CNN target."""

    semantic_loss_weight: float = 1.0
    semantic_hard_pixel_fraction: float = 1.0
    semantic_class_weights: dict[str, float] = field(default_factory=dict)
    scale: tuple[float, float] = (0.8, 1.0)
    flip: bool = True
    min_instance_pixels: int = 16

    def __post_init__(self) -> None:
        self.scale = tuple(self.scale)
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")


class FusionPanopticRecipe:
    backend = "fusion_panoptic"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.model_options = build_config(FusionPanopticConfig, dict(config.model))
        if not self.model_options.semantic_head or self.model_options.detector_classes != "cityscapes":
            raise ValueError("fusion_panoptic trains its semantic head and the Cityscapes things: the model options "
                             "semantic_head and detector_classes must keep their defaults (true, cityscapes)")
        self.options = build_config(FusionTrainOptions, dict(config.recipe))
        self.size = (self.model_options.input_width, self.model_options.input_height)
        self.class_index = class_index_table(CITYSCAPES)
        self.class_weights = class_weight_vector(CITYSCAPES, self.options.semantic_class_weights)

    def build_model(self) -> nn.Module:
        return FusionPanopticNetwork(self.model_options)

    def model_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.model_options)

    def initialize(self, model: nn.Module, path: str) -> dict[str, Any]:
        """A checkpoint the backend loads (converted as the backend converts it: a torchvision Mask R-CNN, a
        converted one; COCO predictor rows mapped by :func:`~panoptic_perception.backends.rcnn_weights.seed_rows`),
        or an ImageNet ResNet (torchvision / timm names, loaded into ``backbone.body``): tensors load by name
        and shape."""
        checkpoint = FusionPanopticBackend.adapt_checkpoint(read_checkpoint(path), path)
        options = dataclasses.asdict(self.model_options)
        differing = {k: v for k, v in checkpoint.config.items() if k in ARCHITECTURE_CONVENTIONS and options[k] != v}
        if differing:  # e.g. Detectron2's weights in a model built with torchvision's conventions
            log.warning("init_weights %s were converted with %s, which the model options do not set: the network "
                        "computes otherwise than they were trained for (set them under model:)", path,
                        ", ".join(f"{k}={v!r}" for k, v in differing.items()))
        state = checkpoint.state_dict
        classes = checkpoint.config.get("detector_classes", "cityscapes")
        if classes != "cityscapes":
            state = adapt_predictor_classes(state, seed_rows(classes))

        def rename(name: str) -> str | None:
            if name.startswith(("backbone.", "rpn.", "roi_heads.", "semantic_head.")):
                return name
            return None if name.startswith("fc.") else f"backbone.body.{name}"

        return load_matching(model, state, rename)

    def example(self, sample, rng: np.random.Generator) -> dict:
        example = scale_flip_crop(Example.from_sample(sample), self.size, rng, self.options.scale, self.options.flip, IMAGENET_MEAN_BGR)
        if example.semantic is None or example.panoptic is None:
            raise ValueError(f"{sample.name}: fusion_panoptic trains on semantic and panoptic ground truth")
        valid = example.valid
        rows, cols = np.flatnonzero(valid.any(1)), np.flatnonzero(valid.any(0))
        semantic = self.class_index[example.semantic]
        semantic[~valid] = IGNORE_INDEX
        instances = instance_targets(example.panoptic, THING_IDS, self.options.min_instance_pixels)
        return {
            "image": image_tensor(example.image, IMAGENET_MEAN, IMAGENET_STD),
            "image_size": (int(rows[-1]) + 1, int(cols[-1]) + 1),  # the image part, top-left aligned
            "semantic": torch.from_numpy(semantic.astype(np.int64)),
            "target": {"boxes": torch.from_numpy(instances.boxes), "labels": torch.from_numpy(instances.labels),
                       "masks": torch.from_numpy(instances.masks)},
        }

    def collate(self, examples: list[dict]) -> dict:
        return {
            "images": torch.stack([e["image"] for e in examples]),
            "image_sizes": [e["image_size"] for e in examples],
            "semantic": torch.stack([e["semantic"] for e in examples]),
            "targets": [e["target"] for e in examples],
        }

    def losses(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        losses, semantic_logits = model(batch["images"], batch["image_sizes"], batch["targets"])
        logits = F.interpolate(semantic_logits, size=batch["images"].shape[-2:], mode="bilinear", align_corners=False)
        losses["loss_semantic"] = semantic_cross_entropy(logits, batch["semantic"], IGNORE_INDEX,
                                                         self.options.semantic_hard_pixel_fraction, self.class_weights)
        losses["loss"] = sum(v for k, v in losses.items() if k != "loss_semantic") + \
            self.options.semantic_loss_weight * losses["loss_semantic"]
        return losses

    def validate(self, model: nn.Module, samples) -> dict[str, float]:
        summary = validate_with_backend(self.backend, model, self.model_config(), samples)
        metrics = {
            "pq": summary["panoptic"]["all"]["pq"], "sq": summary["panoptic"]["all"]["sq"],
            "rq": summary["panoptic"]["all"]["rq"], "pq_things": summary["panoptic"]["things"]["pq"],
            "pq_stuff": summary["panoptic"]["stuff"]["pq"], "miou": summary["semantic"]["miou"],
        }
        if "detection" in summary:
            metrics.update(ap=summary["detection"]["AP"], ap50=summary["detection"]["AP50"])
        return {k: float(v) for k, v in metrics.items()}

    def score(self, metrics: dict[str, float]) -> float:
        return metrics["pq"] + metrics["miou"]
