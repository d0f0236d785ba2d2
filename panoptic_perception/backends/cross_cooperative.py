"""The ``cross_cooperative`` backend: semantic segmentation (Cityscapes label ids) by the two
cooperating DeepLabV3+ networks of cross cooperative learning (paper 003,
:mod:`panoptic_perception.models.cross_cooperative`).

Pre-processing: resize to the network size (multiples of 16), RGB in [0, 1] (each backbone normalises its
own copy inside the network). Post-processing: the scores of the configured ``output`` (the top or bottom
network's logits, or the ensemble's summed softmax, Fig. 5) bilinearly to the input image, argmax.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..core.labels import CITYSCAPES
from ..core.postprocess import class_maps
from ..core.preprocess import Geometry, ResizeMode
from ..core.types import Capability, PerceptionResult
from ..models.cross_cooperative import (
    CooperativeLogits,
    CrossCooperativeConfig,
    CrossCooperativeNetwork,
    ensemble_scores,
)
from .base import Backend
from .registry import register_backend


@register_backend("cross_cooperative")
class CrossCooperativeBackend(Backend):
    """Semantic segmentation (Cityscapes label ids) by two cooperating DeepLabV3+ networks.

    Pre-processing: resize to the network size (multiples of 16), RGB in [0, 1] (each backbone
    normalises its own copy). Post-processing per image: the ``output`` scores (top or bottom logits, or
    the ensemble's summed softmax) bilinearly to the input size, argmax → Cityscapes label ids.
    ``fast=True`` folds every BatchNorm into the convolution before it, depthwise ones included.
    """

    capabilities = frozenset({Capability.SEMANTIC})
    config_type = CrossCooperativeConfig
    label_map = CITYSCAPES
    resize_mode = ResizeMode.RESIZE
    input_multiple = 16  # output stride 16
    bundled_weights = "cross_cooperative_synthetic.pth"
    thresholds_used = ()  # class maps by argmax: no score, NMS or mask threshold

    @classmethod
    def build_network(cls, config: CrossCooperativeConfig) -> CrossCooperativeNetwork:
        return CrossCooperativeNetwork(config)

    def forward(self, batch: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The network part: for ``output=ensemble`` both networks' logits ``(top, bottom)``, else the chosen
        network's, each (N, num_classes, H, W) float32."""
        logits = self.network(batch)
        if self.config.output == "ensemble":
            return tuple(logits)
        return logits.top if self.config.output == "top" else logits.bottom

    def finish(self, outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """The ensemble's softmax sum (Fig. 5) runs here, in torch, for every runtime: ONNX Runtime's Softmax
        over the channel axis of an NCHW map transposes it and took half of the exported graph's time."""
        if self.config.output == "ensemble":
            return ensemble_scores(CooperativeLogits(*outputs))
        return outputs

    def postprocess(self, outputs: torch.Tensor, geometries: Sequence[Geometry]) -> list[PerceptionResult]:
        return [
            PerceptionResult(geometry.source_size, self.name, semantic=semantic)
            for semantic, geometry in zip(class_maps(outputs, geometries, self.label_map), geometries)
        ]
