"""Aligned Xception (DeepLabV3+'s modified Xception-65) in timm's ``xception65`` layout.

Chen et al., *Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation*
(ECCV 2018), §3.3 "Modified Aligned Xception", after Chollet's Xception (CVPR 2017): an entry flow
(two stem convolutions and three strided blocks), a middle flow of 16 identical blocks (Xception-65;
Chollet's has 8) and an exit flow of two blocks; every max pooling of Chollet's network replaced by a
depthwise separable convolution with stride 2, and batch normalisation after each 3x3 depthwise
convolution.

Structure (channels at ``width=1``; every block is three separable convolutions):

=========================  ==================  ======  =========================================
part                       channels            stride  notes
=========================  ==================  ======  =========================================
``stem.0``, ``stem.1``     3→32→64             2, 1    3x3 conv + BN + ReLU
``blocks.0``               64→128              2       entry flow block 1
``blocks.1``               128→256             2       entry flow block 2; ``low_level`` tap
``blocks.2``               256→728             2       entry flow block 3
``blocks.3``-``blocks.18``  728→728             1       middle flow, 16 blocks
``blocks.19``              728→728,1024,1024   2       exit flow block 1
``blocks.20``              1024→1536,1536,2048 1       exit flow block 2: no residual
=========================  ==================  ======  =========================================

A separable convolution is a 3x3 depthwise convolution (``conv_dw``) + BN (``bn_dw``) and a 1x1
pointwise convolution (``conv_pw``) + BN (``bn_pw``). Blocks 0-19 apply a ReLU *before* each separable
convolution and add a residual (a 1x1 strided convolution + BN, ``shortcut``, where the shape changes);
block 20 applies a ReLU *after* the depthwise and after the pointwise BN instead, and has no residual.
The stride of a block sits on its third separable convolution.

Choices and their sources:

- **Placement of the ReLUs.** The DeepLabV3+ text says "extra batch normalization and ReLU activation
  are added after each 3x3 depthwise convolution". The official TensorFlow release
  (``research/deeplab/core/xception.py``, ``activation_fn_in_separable_conv=False`` for every block
  but the last) and timm's port of its ImageNet weights add the BN after every depthwise convolution
  but the ReLU only inside the last block; the other blocks keep Chollet's ReLU before each separable
  convolution. This module follows the release, so that its ImageNet weights mean what they were
  trained to mean (timm parity is tested with copied weights).
- **Parameter names** are timm's ``xception65`` (``stem.0.conv``, ``stem.0.bn``,
  ``blocks.N.shortcut.conv``/``.bn``, ``blocks.N.stack.convK.conv_dw``/``bn_dw``/``conv_pw``/``bn_pw``,
  ``head.fc``), so ``timm.create_model("xception65", pretrained=True).state_dict()`` loads with
  ``strict=True`` (``num_classes=1000``; drop ``head.`` for a backbone). BatchNorm ``eps`` is 1e-3, as
  TensorFlow's and timm's. timm's weights expect RGB in [-1, 1] (mean = std = 0.5).
- **Output stride** (8, 16 or 32) as in the release and timm: once the running stride reaches it, a
  block that would stride keeps stride 1 and multiplies the dilation of the *following* blocks by 2
  (the block itself keeps the previous dilation). 16 (DeepLabV3+): ``blocks.19`` has stride 1 and
  ``blocks.20`` dilation 2.
- **Low-level features** for the DeepLabV3+ decoder: the release's decoder end point
  ``entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise``, the output of the second
  separable convolution of ``blocks.1`` (after its BN, before the next ReLU): stride 4, 256 channels.
  (timm's ``forward_intermediates`` taps the same tensor after the ReLU.)
- **Padding** is symmetric, ``dilation * (kernel - 1) // 2``, as timm's default; equal to TensorFlow's
  explicit fixed padding for every (kernel 3, stride, dilation) used here. Spatial sizes are therefore
  ``ceil(size / stride)`` at every stage, as in :mod:`panoptic_perception.nn.resnet`.
- ``width`` multiplies every channel count (``round(c * width)``, at least 1); 1.0 is timm exactly.
  Narrow variants are for weights trained on a CPU.
- Initialisation (timm leaves PyTorch's defaults): Kaiming-normal (fan-out, ReLU) convolutions,
  BatchNorm weight 1 and bias 0, as :mod:`panoptic_perception.nn.resnet`.
- Re-parameterised for inference (:func:`~panoptic_perception.nn.reparameterize.reparameterize`), every
  BN folds into the convolution before it, depthwise ones included.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvNormAct, init_backbone_, relu
from .reparameterize import Changes, fold_batchnorm_pairs_

BN_EPS = 1e-3
#: (in, (out1, out2, out3), stride) of the entry flow, then a middle-flow block, then the exit flow.
ENTRY_FLOW = ((64, (128, 128, 128), 2), (128, (256, 256, 256), 2), (256, (728, 728, 728), 2))
MIDDLE_FLOW_BLOCK = (728, (728, 728, 728), 1)
EXIT_FLOW = ((728, (728, 1024, 1024), 2), (1024, (1536, 1536, 2048), 1))
XCEPTION65_MIDDLE_BLOCKS = 16
#: Index of the block whose second separable convolution gives the decoder's low-level features.
LOW_LEVEL_BLOCK = 1


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, act: bool = True) -> ConvNormAct:
    """Convolution (no bias) → BatchNorm → optional ReLU (timm's ``ConvNormAct`` names: ``conv``, ``bn``).
    Input (N, in_channels, H, W) → (N, out_channels, ceil(H / stride), ceil(W / stride))."""
    return ConvNormAct(in_channels, out_channels, kernel_size, stride, norm=_norm, act=relu if act else None)


class SeparableConv2d(nn.Module):
    """3x3 depthwise convolution (stride, dilation) + BN, then 1x1 pointwise convolution + BN; with
    ``act`` a ReLU after each BN (the last exit-flow block), otherwise none (the block applies ReLUs
    before the separable convolutions). Input (N, in, H, W) → (N, out, ceil(H / stride), ceil(W / stride))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 act: bool = False) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(in_channels, in_channels, 3, stride, padding=dilation, dilation=dilation,
                                 groups=in_channels, bias=False)
        self.bn_dw = _norm(in_channels)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_pw = _norm(out_channels)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_dw(self.conv_dw(x))
        if self.act:
            x = F.relu(x)
        x = self.bn_pw(self.conv_pw(x))
        return F.relu(x) if self.act else x

    def reparameterize_(self) -> Changes:
        """Folds both BatchNorms into their convolutions, in place."""
        return fold_batchnorm_pairs_(self, (("conv_dw", "bn_dw"), ("conv_pw", "bn_pw")))


class XceptionBlock(nn.Module):
    """Three separable convolutions (``stack.conv1..3``; the stride on the third) and a residual.

    ``start_with_relu``: a ReLU before each separable convolution (no ReLU inside them); otherwise the
    separable convolutions carry their own ReLUs. ``residual=False`` drops the residual sum (the last
    exit-flow block). The shortcut is a 1x1 strided convolution + BN where the shape changes, the
    identity otherwise.
    """

    def __init__(self, in_channels: int, out_channels: Sequence[int], stride: int = 1, dilation: int = 1,
                 start_with_relu: bool = True, residual: bool = True) -> None:
        super().__init__()
        if len(out_channels) != 3:
            raise ValueError(f"an Xception block has three separable convolutions, got channels {tuple(out_channels)}")
        self.start_with_relu, self.residual = start_with_relu, residual
        self.shortcut = None
        if residual and (out_channels[-1] != in_channels or stride != 1):
            self.shortcut = conv_bn_act(in_channels, out_channels[-1], 1, stride, act=False)
        channels = (in_channels, *out_channels)
        # A ModuleDict keeps timm's names (stack.conv1 ...) while forward applies the ReLUs itself.
        self.stack = nn.ModuleDict({
            f"conv{i + 1}": SeparableConv2d(channels[i], channels[i + 1], stride if i == 2 else 1, dilation,
                                            act=not start_with_relu)
            for i in range(3)
        })

    def forward_with_tap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(block output, output of the second separable convolution before the next ReLU)."""
        relu = F.relu if self.start_with_relu else (lambda t: t)
        tap = self.stack["conv2"](relu(self.stack["conv1"](relu(x))))
        out = self.stack["conv3"](relu(tap))
        if self.residual:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return out, tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_tap(x)[0]


class ClassifierHead(nn.Module):
    """Global average pooling and a linear classifier (timm's ``head.fc``)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


class AlignedXception(nn.Module):
    """DeepLabV3+'s aligned Xception (see the module docstring).

    Args:
        middle_blocks: blocks of the middle flow (16: Xception-65).
        width: channel multiplier (``round(c * width)``, at least 1); 1.0 is timm's network.
        output_stride: 8, 16 (DeepLabV3+) or 32 (classification, timm's default).
        num_classes: classes of the ImageNet-style head (``head.fc``); ``None`` for a backbone.

    Attributes:
        stage_channels: ``{"low_level": 256 * width, "out": 2048 * width}`` (rounded).
        stage_strides: ``{"low_level": 4, "out": output_stride}``.

    Raises:
        ValueError: on an output stride other than 8, 16, 32, a non-positive width or block count.
    """

    def __init__(self, middle_blocks: int = XCEPTION65_MIDDLE_BLOCKS, *, width: float = 1.0, output_stride: int = 32,
                 num_classes: int | None = None) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if width <= 0 or middle_blocks < 1:
            raise ValueError(f"width and middle_blocks must be positive, got {width} and {middle_blocks}")

        def scaled(channels: int) -> int:
            return max(1, round(channels * width))

        self.stem = nn.Sequential(conv_bn_act(3, scaled(32), 3, 2), conv_bn_act(scaled(32), scaled(64), 3, 1))
        specs = [*ENTRY_FLOW, *[MIDDLE_FLOW_BLOCK] * middle_blocks, *EXIT_FLOW]
        blocks, stride_so_far, dilation = [], 2, 1
        for index, (in_channels, out_channels, stride) in enumerate(specs):
            block_dilation = dilation  # a block that stops striding keeps the previous dilation
            if stride > 1 and stride_so_far * stride > output_stride:
                dilation *= stride
                stride = 1
            stride_so_far *= stride
            last = index == len(specs) - 1
            blocks.append(XceptionBlock(scaled(in_channels), [scaled(c) for c in out_channels], stride, block_dilation,
                                        start_with_relu=not last, residual=not last))
        self.blocks = nn.Sequential(*blocks)
        self.stage_channels = {"low_level": scaled(ENTRY_FLOW[LOW_LEVEL_BLOCK][1][1]),
                               "out": scaled(EXIT_FLOW[-1][1][-1])}
        self.stage_strides = {"low_level": 4, "out": stride_so_far}
        self.num_classes = num_classes
        if num_classes is not None:
            self.head = ClassifierHead(self.stage_channels["out"], num_classes)

        init_backbone_(self)

    @property
    def output_stride(self) -> int:
        return self.stage_strides["out"]

    def forward_features(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """The decoder's low-level features and the last block's output.

        Args:
            x: (N, 3, H, W) float image batch (timm's weights: RGB in [-1, 1]).

        Returns:
            ``{"low_level": (N, stage_channels["low_level"], ceil(H / 4), ceil(W / 4)),
            "out": (N, stage_channels["out"], ceil(H / s), ceil(W / s))}`` with ``s = output_stride``.

        Raises:
            ValueError: on an input that is not (N, 3, H, W).
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        x = self.stem(x)
        low_level = None
        for index, block in enumerate(self.blocks):
            if index == LOW_LEVEL_BLOCK:
                x, low_level = block.forward_with_tap(x)
            else:
                x = block(x)
        return OrderedDict(low_level=low_level, out=x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | OrderedDict[str, torch.Tensor]:
        """With a classifier: (N, num_classes) logits; as a backbone: :meth:`forward_features`."""
        features = self.forward_features(x)
        return features if self.num_classes is None else self.head(features["out"])


def xception65(**kwargs) -> AlignedXception:
    """Aligned Xception-65 (16 middle-flow blocks); keyword arguments as :class:`AlignedXception`
    (default: a backbone, no ``head``, output stride 32)."""
    return AlignedXception(XCEPTION65_MIDDLE_BLOCKS, **kwargs)
