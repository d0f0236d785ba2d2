"""The ``cyclenet`` backend: semantic segmentation (Cityscapes label ids) and the drivable area with
CycleNet (paper 004, :mod:`panoptic_perception.models.cyclenet`).

Pre-processing: resize to the network size (multiples of 8), RGB, ImageNet mean / std. Post-processing:
the stride-4 logits bilinearly to the input image, argmax → Cityscapes label ids. The drivable area is the
set of pixels labelled road (Cityscapes label id 7) in the semantic output, the definition the synthetic
ground truth uses; the mask threshold does not apply to it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..core.labels import CITYSCAPES
from ..core.postprocess import class_maps
from ..core.preprocess import Geometry, ResizeMode, normalize
from ..core.types import Capability, PerceptionResult
from ..models.cyclenet import CycleNetConfig, CycleNetNetwork
from .base import Backend
from .registry import register_backend


@register_backend("cyclenet")
class CycleNetBackend(Backend):
    """Semantic segmentation (Cityscapes label ids) and the drivable area (the road class).

    Pre-processing: resize to the network size (multiples of 8), RGB, ImageNet mean / std. Post-processing
    per image: class logits bilinearly to the input size, argmax → Cityscapes label ids; drivable area =
    pixels labelled road. ``fast=True`` folds every BatchNorm into the convolution before it (ResNet and
    heads) and drops the training-only auxiliary head.
    """

    bundled_weights = "cyclenet_synthetic.pth"
    thresholds_used = ()  # class maps by argmax: no score, NMS or mask threshold
    capabilities = frozenset({Capability.SEMANTIC, Capability.DRIVABLE_AREA})
    config_type = CycleNetConfig
    label_map = CITYSCAPES
    resize_mode = ResizeMode.RESIZE
    input_multiple = 8  # output stride 8, no stride beyond it

    @classmethod
    def build_network(cls, config: CycleNetConfig) -> CycleNetNetwork:
        return CycleNetNetwork(config)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network(normalize(batch))

    def postprocess(self, outputs: torch.Tensor, geometries: Sequence[Geometry]) -> list[PerceptionResult]:
        road = self.label_map.id_of("road")
        return [
            PerceptionResult(geometry.source_size, self.name, semantic=semantic,
                             drivable_mask=(semantic == road).astype(np.uint8))
            for semantic, geometry in zip(class_maps(outputs, geometries, self.label_map), geometries)
        ]
