"""Post-processing shared by all backends: network-resolution logits → masks at the input resolution.

Logits are cropped of letterbox padding and bilinearly interpolated to the input image size *before*
the argmax, so mask edges are as sharp as the input allows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .preprocess import Geometry


def _to_source(maps: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """(C, h, w) network-resolution maps → (C, H, W) at the source resolution."""
    maps = geometry.crop_content(maps)
    width, height = geometry.source_size
    if maps.shape[-2:] == (height, width):
        return maps
    return F.interpolate(maps[None], size=(height, width), mode="bilinear", align_corners=False)[0]


def binary_masks(logits: torch.Tensor, geometries: Sequence[Geometry]) -> list[np.ndarray]:
    """(N, 2, h, w) background/positive logits → per image an (H, W) uint8 0/1 mask.

    Interpolation is linear, so the argmax of the interpolated pair equals the sign of the interpolated
    difference ``positive - background``: one channel is interpolated instead of two. A tie goes to
    background, as with argmax.
    """
    difference = logits[:, 1:2] - logits[:, 0:1]
    return [(_to_source(d, g)[0] > 0).to(torch.uint8).cpu().numpy() for d, g in zip(difference, geometries)]

