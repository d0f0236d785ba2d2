"""The ``twinlitenet`` backend: drivable area and lane lines from TwinLiteNet (paper 001,
:mod:`panoptic_perception.models.twinlitenet`).

Pre-processing as released: resize to the network size (640x360 by default, multiples of 8), BGR→RGB,
/255, no mean/std. Post-processing: each decoder's logits bilinearly to the input image, then set where the
positive class's probability exceeds the mask threshold (0.5: the official argmax;
:func:`~panoptic_perception.core.postprocess.binary_masks`).
The fast path runs the re-parameterised network (BatchNorms folded, a negligible position attention dropped:
:mod:`panoptic_perception.models.twinlitenet`, §III-C) in channels-last memory format.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..core.labels import DRIVING_MASKS
from ..core.postprocess import binary_masks
from ..core.preprocess import Geometry, ResizeMode
from ..core.types import Capability, PerceptionResult
from ..models.twinlitenet import TwinLiteNet, TwinLiteNetConfig
from .base import Backend
from .registry import register_backend


@register_backend("twinlitenet")
class TwinLiteNetBackend(Backend):
    """Drivable area and lane lines with TwinLiteNet.

    ``fast=True`` (default) runs the re-parameterised network (:meth:`Backend.optimize_network`)
    in channels-last memory format. Input size: ``input_size=(W, H)`` in multiples of 8, default from
    the checkpoint's config, else the official 640x360.
    """

    capabilities = frozenset({Capability.DRIVABLE_AREA, Capability.LANE_LINES})
    label_map = DRIVING_MASKS
    config_type = TwinLiteNetConfig
    bundled_weights = "twinlitenet_synthetic.pth"
    real_weights = "the official TwinLiteNet pretrained/best.pth"
    thresholds_used = ("mask",)  # no detections
    input_multiple = 8
    resize_mode = ResizeMode.RESIZE

    @classmethod
    def build_network(cls, config: TwinLiteNetConfig) -> TwinLiteNet:
        return TwinLiteNet(config.esp_blocks_level2, config.esp_blocks_level3)

    def postprocess(
        self, outputs: tuple[torch.Tensor, torch.Tensor], geometries: Sequence[Geometry]
    ) -> list[PerceptionResult]:
        drivable_logits, lane_logits = outputs
        return [
            PerceptionResult(g.source_size, self.name, drivable_mask=drivable, lane_mask=lane)
            for g, drivable, lane in zip(
                geometries,
                binary_masks(drivable_logits, geometries, self.thresholds.mask),
                binary_masks(lane_logits, geometries, self.thresholds.mask),
            )
        ]
