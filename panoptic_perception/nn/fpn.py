"""Feature Pyramid Network on a ResNet, in the layout of torchvision's ``maskrcnn_resnet50_fpn`` backbone.

Lin et al., *Feature Pyramid Networks for Object Detection* (CVPR 2017), §3: a 1x1 lateral convolution
per backbone stage (C2..C5), a top-down pathway that upsamples the coarser merged map by nearest
neighbour and adds it to the lateral, and a 3x3 convolution on each merged map giving P2..P5, all with
256 channels. P6 for the RPN (§4.1) is a stride-2 subsampling of P5 (``max_pool2d(P5, 1, 2, 0)``).

Parameter names are torchvision's ``FeaturePyramidNetwork`` (version 2 layout):
``inner_blocks.{i}.0.{weight,bias}`` (laterals) and ``layer_blocks.{i}.0.{weight,bias}`` (3x3 output
convolutions), ``i`` from the finest level; :class:`BackboneWithFPN` has the attributes ``body`` (the
:class:`~panoptic_perception.nn.resnet.ResNet`) and ``fpn``, so its state dict equals
``maskrcnn_resnet50_fpn(...).backbone``'s (FrozenBatchNorm2d body: no ``num_batches_tracked``).

Choices where the paper is open, all torchvision's: the top-down map is upsampled to the lateral's exact
size (``F.interpolate(size=..., mode="nearest")``), which handles odd sizes where a plain factor 2
would not; the convolutions have biases and no normalisation; they are initialised Kaiming-uniform
(``a=1``) with zero biases.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import STAGES, FrozenBatchNorm2d, NormLayer, ResNet, resnet50, resnet101

BACKBONES = {"resnet50": resnet50, "resnet101": resnet101}


class LastLevelMaxPool(nn.Module):
    """The extra coarsest level: ``max_pool2d(P, kernel_size=1, stride=2)``, i.e. every second pixel of
    the last FPN map. (N, C, H, W) → (N, C, ceil(H / 2), ceil(W / 2))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=1, stride=2, padding=0)


class FeaturePyramidNetwork(nn.Module):
    """Lateral 1x1 and output 3x3 convolutions with a nearest-neighbour top-down pathway.

    Args:
        in_channels_list: channels of the input maps, finest first (e.g. 256, 512, 1024, 2048 for C2..C5).
        out_channels: channels of every output map (256 in the paper).
        extra_blocks: :class:`LastLevelMaxPool` to add a coarsest level ``"pool"``, or None.

    Raises:
        ValueError: on an empty ``in_channels_list`` or a non-positive channel count.
    """

    def __init__(
        self, in_channels_list: Sequence[int], out_channels: int = 256, extra_blocks: LastLevelMaxPool | None = None
    ) -> None:
        super().__init__()
        in_channels_list = tuple(in_channels_list)
        if not in_channels_list or min(in_channels_list) < 1 or out_channels < 1:
            raise ValueError(f"need positive channel counts, got {in_channels_list} -> {out_channels}")
        self.in_channels_list = in_channels_list
        self.out_channels = out_channels
        # One-element Sequentials reproduce torchvision's key names (``inner_blocks.0.0.weight``).
        self.inner_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, out_channels, 1)) for channels in in_channels_list
        )
        self.layer_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1)) for _ in in_channels_list
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(module.bias)
        self.extra_blocks = extra_blocks

    def forward(self, features: Mapping[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
        """Args:
            features: (N, in_channels_list[i], H_i, W_i) maps, finest first, in the mapping's order.

        Returns:
            OrderedDict with the same keys, each (N, out_channels, H_i, W_i), then ``"pool"``
            (N, out_channels, ceil(H_last / 2), ceil(W_last / 2)) when ``extra_blocks`` is set.

        Raises:
            ValueError: when the number of maps or their channels do not match ``in_channels_list``.
        """
        names, maps = list(features.keys()), list(features.values())
        shapes = [tuple(x.shape) for x in maps]
        if len(maps) != len(self.in_channels_list) or any(
            x.dim() != 4 or x.shape[1] != channels for x, channels in zip(maps, self.in_channels_list)
        ):
            raise ValueError(f"expected (N, C, H, W) maps with C = {self.in_channels_list}, got {shapes}")
        merged = self.inner_blocks[-1](maps[-1])
        outputs = [self.layer_blocks[-1](merged)]
        for index in range(len(maps) - 2, -1, -1):
            lateral = self.inner_blocks[index](maps[index])
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.layer_blocks[index](merged))
        result = OrderedDict(zip(names, outputs))
        if self.extra_blocks is not None:
            result["pool"] = self.extra_blocks(outputs[-1])
        return result


class BackboneWithFPN(nn.Module):
    """A ResNet body and an FPN on its four stages, as torchvision's ``BackboneWithFPN``.

    Args:
        body: a :class:`ResNet` without classifier (``num_classes=None``).
        out_channels: channels of the pyramid (256).

    Input (N, 3, H, W) float image batch; output OrderedDict ``"0"``..``"3"`` (P2..P5, strides
    ``body.stage_strides``) and ``"pool"`` (P6, twice P5's stride), each (N, out_channels, h, w).

    Raises:
        ValueError: when ``body`` has a classifier (its ``fc`` would change the key layout).
    """

    def __init__(self, body: ResNet, out_channels: int = 256) -> None:
        super().__init__()
        if body.num_classes is not None:
            raise ValueError(f"the body must be a backbone (num_classes=None), got num_classes={body.num_classes}")
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            [body.stage_channels[name] for name in STAGES], out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        stages = self.body.forward_features(x)
        return self.fpn(OrderedDict((str(index), c) for index, c in enumerate(stages.values())))


def resnet_fpn_backbone(
    name: str = "resnet50",
    *,
    trainable_layers: int = 3,
    width: float = 1.0,
    norm_layer: NormLayer = FrozenBatchNorm2d,
    out_channels: int = 256,
    stride_in_1x1: bool = False,
) -> BackboneWithFPN:
    """A ResNet-50/101 + FPN as torchvision's ``resnet_fpn_backbone`` builds it for Mask R-CNN.

    The body uses ``norm_layer`` (FrozenBatchNorm2d by default, as torchvision with pretrained weights)
    and only its last ``trainable_layers`` stages train (see :meth:`ResNet.set_trainable_layers`; 3,
    torchvision's default, freezes the stem and layer1). ``width`` builds a narrow body (FPN channels
    unchanged unless ``out_channels`` is given); ``stride_in_1x1`` as :class:`~panoptic_perception.nn.resnet.ResNet`.

    Raises:
        ValueError: on an unknown ``name`` (``"resnet50"``, ``"resnet101"``) or ``trainable_layers``
            outside 0..5.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {sorted(BACKBONES)}")
    body = BACKBONES[name](width=width, norm_layer=norm_layer, stride_in_1x1=stride_in_1x1)
    body.set_trainable_layers(trainable_layers)
    return BackboneWithFPN(body, out_channels)
