"""Training TwinLiteNet (paper 001, §III-B losses, §III-C "Training mechanism").

The paper: 640x360 inputs (BDD100K frames resized from 1280x720), Adam, a learning rate "decreasing over
epochs", 100 epochs at batch 32, ``Loss_total = Loss_focal + Loss_tversky`` for each of the two heads
(:class:`~panoptic_perception.training.losses.TwinLiteNetLoss`). The optimiser, schedule, batch and
epochs are options of the shared :class:`~panoptic_perception.training.engine.TrainConfig`: the
official schedule is ``optimizer: {name: adam}`` (weight decay added to the gradient, as
``torch.optim.Adam`` does) with ``schedule: {name: poly, power: 1.5, per: epoch}``, i.e.
``lr * (1 - epoch / epochs) ** 1.5`` and no warm-up. This recipe gives the rest.

Choices where the paper is silent (``recipe`` options, :class:`TwinLiteNetTrainOptions`):

- targets: the drivable-area and lane-line masks of the ground truth, 0/1 int64 (N, H, W) at the
  network input size; a sample without both masks is an error;
- augmentation: the image is resized to the network input size (bilinear, the masks by nearest
  neighbour; nothing changes for scenes rendered at that size) and mirrored with probability 1/2 if
  ``flip``. The input is RGB in [0, 1] without mean/std, the backend's own pre-processing;
- the loss constants (``loss``: :class:`~panoptic_perception.training.losses.TwinLiteNetLossWeights`
  fields) default to focal γ = 2 and Tversky α = 0.7, β = 0.3 (see ``training/losses.py``);
- ``init_weights`` loads a TwinLiteNet checkpoint (this project's or the official ``best.pth``) by name
  and shape;
- validation resizes every sample and its masks to the network input size, as the official evaluation
  does, takes the argmax of each head and reports the official metric form of
  :class:`~panoptic_perception.evaluation.segmentation.DrivingSegmentationMetrics` in batches of
  ``batch_size`` (that form depends on the batch), plus the ``global_`` form and ``images``;
  ``best.pth`` is chosen by ``drivable_miou + lane_iou``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ...backends.base import build_config
from ...backends.twinlitenet import TwinLiteNetBackend
from ...backends.weights import read_checkpoint
from ...evaluation.segmentation import DrivingSegmentationMetrics
from ...models.twinlitenet import TwinLiteNet, TwinLiteNetConfig
from ..data import Example, hflip, resize
from ..engine import TrainConfig
from ..losses import TwinLiteNetLoss, TwinLiteNetLossWeights
from .common import image_tensor, load_matching


@dataclass
class TwinLiteNetTrainOptions:
    """Recipe options: whether to ``flip``, and the loss constants (``TwinLiteNetLossWeights`` fields)."""

    flip: bool = True
    loss: dict[str, float] = field(default_factory=dict)


class TwinLiteNetRecipe:
    backend = "twinlitenet"

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.model_options = build_config(TwinLiteNetConfig, dict(config.model))
        self.options = build_config(TwinLiteNetTrainOptions, dict(config.recipe))
        self.criterion = TwinLiteNetLoss(build_config(TwinLiteNetLossWeights, dict(self.options.loss)))
        self.size = (self.model_options.input_width, self.model_options.input_height)
        multiple = TwinLiteNetBackend.input_multiple
        if self.size[0] % multiple or self.size[1] % multiple:
            raise ValueError(f"input size must be multiples of {multiple}, got {self.size[0]}x{self.size[1]}")

    def build_model(self) -> nn.Module:
        return TwinLiteNet(self.model_options.esp_blocks_level2, self.model_options.esp_blocks_level3)

    def model_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.model_options)

    def initialize(self, model: nn.Module, path: str) -> dict[str, Any]:
        return load_matching(model, read_checkpoint(path).state_dict)

    def _at_input_size(self, sample) -> Example:
        example = Example.from_sample(sample)
        if example.drivable is None or example.lane is None:
            raise ValueError(f"{sample.name}: twinlitenet trains on drivable-area and lane-line masks, "
                             "which this sample lacks")
        return resize(example, self.size)

    def example(self, sample, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``image`` (3, H, W) float32 RGB in [0, 1], ``drivable`` and ``lane`` (H, W) int64 0/1 at the
        network input size, mirrored with probability 1/2 if ``flip``."""
        example = self._at_input_size(sample)
        if self.options.flip and rng.random() < 0.5:
            example = hflip(example)
        return {
            "image": image_tensor(example.image),
            "drivable": torch.from_numpy(example.drivable.astype(np.int64)),
            "lane": torch.from_numpy(example.lane.astype(np.int64)),
        }

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return {name: torch.stack([e[name] for e in examples]) for name in ("image", "drivable", "lane")}

    def losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``loss = loss_drivable + loss_lane``, each focal + Tversky of one head (eq. 3)."""
        drivable, lane = model(batch["image"])
        losses = self.criterion((drivable.float(), lane.float()), batch["drivable"], batch["lane"])
        return {"loss": losses["loss"], "loss_drivable": losses["drivable"], "loss_lane": losses["lane"]}

    def validate(self, model: nn.Module, samples) -> dict[str, float]:
        """The official metrics (see the module docstring) of the argmax masks at the input size."""
        device = next(model.parameters()).device
        metrics = DrivingSegmentationMetrics()
        for start in range(0, len(samples), self.config.batch_size):
            examples = [self._at_input_size(samples[i])
                        for i in range(start, min(start + self.config.batch_size, len(samples)))]
            images = torch.stack([image_tensor(e.image) for e in examples]).to(device)
            drivable, lane = model(images)
            metrics.update(drivable.argmax(1).cpu().numpy(), np.stack([e.drivable for e in examples]),
                           lane.argmax(1).cpu().numpy(), np.stack([e.lane for e in examples]))
        return metrics.compute()

    def score(self, metrics: dict[str, float]) -> float:
        return metrics["drivable_miou"] + metrics["lane_iou"]
