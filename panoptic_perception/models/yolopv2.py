"""YOLOPv2 (paper 000): traffic objects, drivable area and lane lines from one network with three heads.

Han et al., *YOLOPv2: Better, Faster, Stronger for Panoptic Driving Perception*. The official release
is only a TorchScript file (``yolopv2.pt``); its layer list is not public. This module rebuilds the
network from the paper on YOLOv7's base network, with the official file's exact interface (export
mode, below), so that the backend (:mod:`panoptic_perception.backends.yolopv2`) runs either.

§3.2.1 Shared encoder
    YOLOv7's backbone of E-ELAN computational layers (:class:`EELAN`) between down-sampling transition
    blocks (:class:`DownsampleMP`); E-ELAN's computational blocks use **group convolution** (cardinality
    ``elan_groups``, 2 by default) with a channel shuffle between blocks, so that the blocks "learn
    more diverse features" (expand / shuffle / merge cardinality of the YOLOv7 paper, with channel
    multiplier 1; the 1x1 transition merges the groups). Then SPPCSPC (spatial pyramid pooling) and an
    FPN of ELAN-H layers (:class:`ELANH`), as in YOLOv7.
§3.2.2 Task heads
    Detection: a PAN bottom-up path on the FPN, RepConv layers and YOLOv7's implicit anchor-based head
    (:class:`ImplicitDetect`): 3 scales (strides 8/16/32), 3 anchors each, (x, y, w, h, objectness, 80
    class scores) per anchor — 80 slots as released, one effective class ("vehicle").
    Drivable area: connected *before* the FPN, to the backbone's stride-16 stage, and brought back to
    the input resolution with four nearest-neighbour up-samplings (:class:`DrivableAreaHead`).
    Lane lines: connected to the end of the FPN (stride 8), with transposed convolutions
    (:class:`LaneLineHead`); its output is a probability (sigmoid) in export mode.
Choices where the paper is silent (documented, not official): the drivable head's input is the
backbone's stride-16 stage output and its decoder is Conv/Upsample pairs; the lane head's decoder is
Conv/ConvTranspose pairs; head widths are set so that the full network has the paper's 38.9 M
parameters. ``width`` and ``depth`` multipliers give smaller variants (channels rounded to multiples
of 8; computational blocks per E-ELAN layer ``max(2, round(4 * depth))``, even).

Export mode (``network.export = True``) returns exactly the official TorchScript interface
``[pred, anchor_grid], seg, ll``: ``pred`` the three raw head tensors (N, 255, H/s, W/s), ``anchor_grid``
three (1, 3, 1, 1, 2) tensors of pixel anchors, ``seg`` (N, 2, H, W) drivable-area scores, ``ll``
(N, 1, H, W) lane probability. The backend always runs the network in export mode, so an eager model
and a TorchScript file share one post-processing path.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.batchnorm_folding import batchnorm_affine, fold_batchnorm
from ..nn.layers import ConvNormAct, silu
from ..nn.reparameterize import Changes

BN_EPS = 1e-3  # YOLOv7's BatchNorm settings
BN_MOMENTUM = 0.03
STRIDES = (8, 16, 32)
#: Anchor (width, height) in input pixels per stride, as released.
ANCHORS = ((12, 16, 19, 36, 40, 28), (36, 75, 76, 55, 72, 146), (142, 110, 192, 243, 459, 401))


def scaled(channels: int, width: float) -> int:
    """Channels of a width variant: ``channels * width`` rounded up to a multiple of 8 (at least 8)."""
    return max(8, int(math.ceil(channels * width / 8) * 8))


#: YOLOv7's BatchNorm.
batch_norm = functools.partial(nn.BatchNorm2d, eps=BN_EPS, momentum=BN_MOMENTUM)
MERGED_REPCONVS = "RepConvs merged"
FOLDED_IMPLICIT = "implicit-knowledge heads folded"


def conv_bn_silu(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1) -> ConvNormAct:
    """Convolution (no bias) → BatchNorm → SiLU, YOLOv7's basic block ``Conv`` (``conv``, ``bn``, ``act``)."""
    return ConvNormAct(in_channels, out_channels, kernel_size, stride, groups=groups, norm=batch_norm, act=silu)


def upconv_bn_silu(in_channels: int, out_channels: int) -> ConvNormAct:
    """Transposed 2x2 stride-2 convolution → BatchNorm → SiLU (the lane head's "deconvolution")."""
    return ConvNormAct(in_channels, out_channels, 2, 2, norm=batch_norm, act=silu, transposed=True)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups so the next grouped convolution mixes them."""
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class EELAN(nn.Module):
    """Extended efficient layer aggregation (E-ELAN) computational layer of the backbone.

    Two 1x1 branches; a chain of ``blocks`` 3x3 computational blocks (group convolution with
    ``groups`` cardinality, channels shuffled between blocks) on the second; the outputs of every
    second block and both branches are concatenated and merged by a 1x1 transition.
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int, blocks: int = 4, groups: int = 2) -> None:
        super().__init__()
        if blocks < 2 or blocks % 2:
            raise ValueError(f"E-ELAN needs an even number of computational blocks, got {blocks}")
        if hidden % groups:
            groups = 1  # a narrow variant may not split into groups
        self.groups = groups
        self.cv1 = conv_bn_silu(in_channels, hidden, 1)
        self.cv2 = conv_bn_silu(in_channels, hidden, 1)
        self.blocks = nn.ModuleList(conv_bn_silu(hidden, hidden, 3, groups=groups) for _ in range(blocks))
        self.transition = conv_bn_silu(hidden * (blocks // 2 + 2), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.cv1(x), self.cv2(x)
        outputs, y = [], second
        for block in self.blocks:
            y = channel_shuffle(block(y), self.groups)
            outputs.append(y)
        return self.transition(torch.cat([*outputs[::-1][::2], second, first], 1))


class ELANH(nn.Module):
    """The ELAN layer of YOLOv7's neck: like E-ELAN, but every block's output is aggregated."""

    def __init__(self, in_channels: int, branch: int, hidden: int, out_channels: int, blocks: int = 4) -> None:
        super().__init__()
        self.cv1 = conv_bn_silu(in_channels, branch, 1)
        self.cv2 = conv_bn_silu(in_channels, branch, 1)
        self.blocks = nn.ModuleList(conv_bn_silu(branch if i == 0 else hidden, hidden, 3) for i in range(blocks))
        self.transition = conv_bn_silu(2 * branch + blocks * hidden, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = self.cv1(x), self.cv2(x)
        outputs, y = [], second
        for block in self.blocks:
            y = block(y)
            outputs.append(y)
        return self.transition(torch.cat([*outputs[::-1], second, first], 1))


class DownsampleMP(nn.Module):
    """YOLOv7's transition down-sampling: a max-pool branch and a strided-convolution branch, concatenated."""

    def __init__(self, in_channels: int, branch: int) -> None:
        super().__init__()
        self.pool_conv = conv_bn_silu(in_channels, branch, 1)
        self.reduce = conv_bn_silu(in_channels, branch, 1)
        self.strided = conv_bn_silu(branch, branch, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.strided(self.reduce(x)), self.pool_conv(F.max_pool2d(x, 2, 2))], 1)


class SPPCSPC(nn.Module):
    """Spatial pyramid pooling (max-pools 5, 9, 13) in a cross-stage-partial layout (YOLOv7)."""

    def __init__(self, in_channels: int, out_channels: int, pools: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        hidden = out_channels
        self.cv1 = conv_bn_silu(in_channels, hidden, 1)
        self.cv2 = conv_bn_silu(in_channels, hidden, 1)
        self.cv3 = conv_bn_silu(hidden, hidden, 3)
        self.cv4 = conv_bn_silu(hidden, hidden, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in pools)
        self.cv5 = conv_bn_silu(hidden * (len(pools) + 1), hidden, 1)
        self.cv6 = conv_bn_silu(hidden, hidden, 3)
        self.cv7 = conv_bn_silu(2 * hidden, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        pooled = self.cv6(self.cv5(torch.cat([x1, *(pool(x1) for pool in self.pools)], 1)))
        return self.cv7(torch.cat([pooled, self.cv2(x)], 1))


class RepConv(nn.Module):
    """Re-parameterisable 3x3 block: 3x3 conv+BN plus 1x1 conv+BN (plus identity BN when shapes allow),
    summed, SiLU. :meth:`reparameterize_` merges the branches into one 3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.dense = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False), batch_norm(out_channels))
        self.pointwise = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
                                       batch_norm(out_channels))
        self.identity = batch_norm(out_channels) if in_channels == out_channels else None
        self.fused: nn.Conv2d | None = None
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        y = self.dense(x) + self.pointwise(x)
        if self.identity is not None:
            y = y + self.identity(x)
        return self.act(y)

    @torch.no_grad()
    def reparameterize_(self) -> Changes:
        """Merges the branches into ``fused``, in place (once)."""
        if self.fused is not None:
            return Changes()
        dense = fold_batchnorm(self.dense[0], self.dense[1])
        pointwise = fold_batchnorm(self.pointwise[0], self.pointwise[1])
        weight = dense.weight + F.pad(pointwise.weight, [1, 1, 1, 1])
        bias = dense.bias + pointwise.bias
        if self.identity is not None:
            scale, shift = batchnorm_affine(self.identity)
            eye = torch.zeros_like(weight)
            eye[torch.arange(weight.shape[0]), torch.arange(weight.shape[0]), 1, 1] = 1.0
            weight = weight + eye * scale.view(-1, 1, 1, 1)
            bias = bias + shift
        self.fused = nn.Conv2d(weight.shape[1], weight.shape[0], 3, 1, 1, bias=True)
        self.fused.weight.copy_(weight)
        self.fused.bias.copy_(bias)
        self.dense = self.pointwise = self.identity = None
        return Changes({MERGED_REPCONVS: 1})


class ImplicitDetect(nn.Module):
    """YOLOv7's implicit detection head: per level ``(x + implicit_add) → 1x1 conv → * implicit_mul``.

    Raw outputs (N, anchors * (5 + classes), H, W); decoding happens in post-processing.
    """

    def __init__(self, in_channels: tuple[int, ...], num_classes: int, anchors_per_level: int = 3) -> None:
        super().__init__()
        self.num_outputs = anchors_per_level * (5 + num_classes)
        self.convs = nn.ModuleList(nn.Conv2d(c, self.num_outputs, 1) for c in in_channels)
        self.implicit_add = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in in_channels)
        self.implicit_mul = nn.ParameterList(nn.Parameter(torch.ones(1, self.num_outputs, 1, 1)) for _ in in_channels)
        self.folded = False

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.folded:
            return [conv(x) for conv, x in zip(self.convs, features)]
        return [conv(x + add) * mul for conv, x, add, mul in zip(self.convs, features, self.implicit_add, self.implicit_mul)]

    @torch.no_grad()
    def reparameterize_(self) -> Changes:
        """Folds the implicit terms into the convolutions, in place (once): ``W(x + a) m = (W m) x + (W a + b) m``."""
        if self.folded:
            return Changes()
        for conv, add, mul in zip(self.convs, self.implicit_add, self.implicit_mul):
            weight = conv.weight[:, :, 0, 0]
            conv.bias.copy_((conv.bias + weight @ add.flatten()) * mul.flatten())
            conv.weight.mul_(mul.view(-1, 1, 1, 1))
        self.folded = True
        return Changes({FOLDED_IMPLICIT: 1})


class DrivableAreaHead(nn.Module):
    """Drivable-area decoder from the stride-16 backbone stage: four nearest up-samplings to full size."""

    def __init__(self, in_channels: int, width: float) -> None:
        super().__init__()
        # The widest layer runs at stride 16, where parameters cost the fewest operations.
        c = [scaled(v, width) for v in (384, 128, 64, 32, 16)]
        self.reduce = conv_bn_silu(in_channels, c[0], 3)
        self.stages = nn.ModuleList([
            nn.Sequential(conv_bn_silu(c[0], c[1], 3), conv_bn_silu(c[1], c[1], 3)),  # stride 8
            nn.Sequential(conv_bn_silu(c[1], c[2], 3), conv_bn_silu(c[2], c[2], 3)),  # stride 4
            nn.Sequential(conv_bn_silu(c[2], c[3], 3)),  # stride 2
            nn.Sequential(conv_bn_silu(c[3], c[4], 3)),  # stride 1
        ])
        self.classifier = nn.Conv2d(c[4], 2, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        for stage in self.stages:
            x = stage(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return self.classifier(x)


class LaneLineHead(nn.Module):
    """Lane-line decoder from the end of the FPN (stride 8): transposed convolutions to full size."""

    def __init__(self, in_channels: int, width: float) -> None:
        super().__init__()
        c = [scaled(v, width) for v in (128, 64, 32, 16)]
        self.stages = nn.Sequential(
            conv_bn_silu(in_channels, c[0], 3), upconv_bn_silu(c[0], c[1]),  # stride 4
            conv_bn_silu(c[1], c[1], 3), upconv_bn_silu(c[1], c[2]),  # stride 2
            conv_bn_silu(c[2], c[2], 3), upconv_bn_silu(c[2], c[3]),  # stride 1
            conv_bn_silu(c[3], c[3], 3),
        )
        self.classifier = nn.Conv2d(c[3], 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(x))


class YOLOPv2Output(NamedTuple):
    """Training-mode outputs: raw detections per level (N, 3, H/s, W/s, 5 + C), drivable logits
    (N, 2, H, W), lane logits (N, 1, H, W)."""

    detection: list[torch.Tensor]
    drivable: torch.Tensor
    lane: torch.Tensor


class YOLOPv2(nn.Module):
    """The YOLOPv2 network. Input: RGB in [0, 1], H and W multiples of 32.

    For inference, :func:`~panoptic_perception.nn.reparameterize.reparameterize` folds every BatchNorm of the
    :func:`conv_bn_silu` blocks, merges the :class:`RepConv` branches and folds the implicit terms of
    :class:`ImplicitDetect`.
    """

    def __init__(self, num_classes: int = 80, width: float = 1.0, depth: float = 1.0, elan_groups: int = 2) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.export = False
        c = lambda channels: scaled(channels, width)  # noqa: E731
        blocks = max(2, 2 * round(2 * depth))
        # -- backbone: stem, then four stages of (down-sampling, E-ELAN) --
        self.stem = nn.Sequential(conv_bn_silu(3, c(32), 3), conv_bn_silu(c(32), c(64), 3, 2),
                                  conv_bn_silu(c(64), c(64), 3))
        self.stage2 = nn.Sequential(conv_bn_silu(c(64), c(128), 3, 2), EELAN(c(128), c(64), c(256), blocks, elan_groups))
        self.stage3 = nn.Sequential(DownsampleMP(c(256), c(128)), EELAN(c(256), c(128), c(512), blocks, elan_groups))
        self.stage4 = nn.Sequential(DownsampleMP(c(512), c(256)), EELAN(c(512), c(256), c(1024), blocks, elan_groups))
        self.stage5 = nn.Sequential(DownsampleMP(c(1024), c(512)), EELAN(c(1024), c(256), c(1024), blocks, elan_groups))
        # -- neck: SPPCSPC, FPN (top-down) --
        self.spp = SPPCSPC(c(1024), c(512))
        self.fpn_reduce5 = conv_bn_silu(c(512), c(256), 1)
        self.fpn_lateral4 = conv_bn_silu(c(1024), c(256), 1)
        self.fpn_elan4 = ELANH(c(512), c(256), c(128), c(256), blocks)
        self.fpn_reduce4 = conv_bn_silu(c(256), c(128), 1)
        self.fpn_lateral3 = conv_bn_silu(c(512), c(128), 1)
        self.fpn_elan3 = ELANH(c(256), c(128), c(64), c(128), blocks)
        # -- PAN (bottom-up) and the detection head --
        self.pan_down3 = DownsampleMP(c(128), c(128))
        self.pan_elan4 = ELANH(c(512), c(256), c(128), c(256), blocks)
        self.pan_down4 = DownsampleMP(c(256), c(256))
        self.pan_elan5 = ELANH(c(1024), c(512), c(256), c(512), blocks)
        self.rep3, self.rep4, self.rep5 = RepConv(c(128), c(256)), RepConv(c(256), c(512)), RepConv(c(512), c(1024))
        self.detect = ImplicitDetect((c(256), c(512), c(1024)), num_classes)
        # -- segmentation heads --
        self.drivable_head = DrivableAreaHead(c(1024), width)
        self.lane_head = LaneLineHead(c(128), width)
        self.register_buffer("anchors", torch.tensor(ANCHORS, dtype=torch.float32).view(3, 3, 2), persistent=False)
        self._initialize_detection_biases()

    @torch.no_grad()
    def _initialize_detection_biases(self, image_size: int = 640) -> None:
        """Objectness and class priors (YOLOv5/v7): ~8 objects per 640 image, uniform classes."""
        for conv, stride in zip(self.detect.convs, STRIDES):
            bias = conv.bias.view(3, -1)
            bias[:, 4] += math.log(8 / (image_size / stride) ** 2)
            bias[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))

    def forward(self, image: torch.Tensor):
        p3 = self.stage3(self.stage2(self.stem(image)))  # stride 8
        p4 = self.stage4(p3)  # stride 16
        p5 = self.spp(self.stage5(p4))  # stride 32
        up4 = F.interpolate(self.fpn_reduce5(p5), scale_factor=2.0, mode="nearest")
        f4 = self.fpn_elan4(torch.cat([self.fpn_lateral4(p4), up4], 1))
        up3 = F.interpolate(self.fpn_reduce4(f4), scale_factor=2.0, mode="nearest")
        f3 = self.fpn_elan3(torch.cat([self.fpn_lateral3(p3), up3], 1))  # end of the FPN
        n4 = self.pan_elan4(torch.cat([self.pan_down3(f3), f4], 1))
        n5 = self.pan_elan5(torch.cat([self.pan_down4(n4), p5], 1))
        raw = self.detect([self.rep3(f3), self.rep4(n4), self.rep5(n5)])
        drivable = self.drivable_head(p4)
        lane = self.lane_head(f3)
        if self.export:
            anchor_grid = [self.anchors[i].view(1, 3, 1, 1, 2) for i in range(3)]
            return (raw, anchor_grid), drivable, torch.sigmoid(lane)  # a tuple: tracing refuses nested lists
        n = image.shape[0]
        detection = [
            r.view(n, 3, 5 + self.num_classes, r.shape[2], r.shape[3]).permute(0, 1, 3, 4, 2).contiguous() for r in raw
        ]
        return YOLOPv2Output(detection, drivable, lane)


@dataclass(frozen=True)
class YOLOPv2Config:
    """Architecture, pre-processing and class names of a YOLOPv2 checkpoint."""

    num_classes: int = 80
    width: float = 1.0
    depth: float = 1.0
    elan_groups: int = 2
    input_width: int = 640
    input_height: int = 384
    class_names: tuple[str, ...] = ("vehicle",)
    class_ids: tuple[int, ...] | None = None  # label-map ids of the classes; default 0, 1, ...
