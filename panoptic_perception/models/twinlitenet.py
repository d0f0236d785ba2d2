"""TwinLiteNet (paper 001): drivable area and lane lines from one ESPNet-C encoder and two decoders.

Che et al., *TwinLiteNet: An Efficient and Lightweight Model for Driveable Area and Lane Segmentation
in Self-Driving Cars*. The network is the released one (``TwinLiteNet(p=2, q=3)``, 439,633
parameters); module attribute names follow the released checkpoint so that the official ``best.pth``
and this project's checkpoints share one key layout.

§III-A Model architecture
    ESPNet-C encoder (:class:`ESPNetCEncoder`) → Dual Attention Module (:class:`PositionAttention` and
    :class:`ChannelAttention`, each followed by a 3x3 :func:`cbr`, summed, then a 1x1 :func:`cbr`)
    → two identical decoders of :func:`upsampler_block` (ConvTranspose → BN → PReLU), one per task.
    Each decoder returns 2-channel logits (background, positive) at the input resolution.
§III-C Re-parameterisation
    :func:`~panoptic_perception.nn.reparameterize.reparameterize` folds every BatchNorm that directly
    follows a convolution (CBR blocks and all decoder blocks) into it. The BatchNorm of an ESP block
    follows a *sum* of differently dilated convolutions and cannot be folded without duplicating them, so
    it stays an affine map. (The paper's 439,339 parameters after re-parameterisation fold only the
    encoder's CBRs; folding the decoders too gives 439,287.) It also drops the position-attention branch
    when its learned scale γ makes it numerically invisible (:meth:`ESPNetCEncoder.reparameterize_`, see
    :meth:`PositionAttention.is_negligible`). In the official weights γ = -4.35e-20, and the branch costs
    about a third of the CPU time.

Choice where the paper is silent: the input size is any multiple of 8 (the encoder downsamples by 8 and
the decoders upsample by 8).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from ..nn.layers import ConvNormAct
from ..nn.reparameterize import Changes

BN_EPS = 1e-3  # every BatchNorm of the released model
batch_norm = functools.partial(nn.BatchNorm2d, eps=BN_EPS)
DROPPED_POSITION_ATTENTION = "negligible position attentions dropped"


def cbr(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> ConvNormAct:
    """ESPNet's ``CBR``: convolution (no bias) → BatchNorm → PReLU; padding keeps the size for stride 1."""
    return ConvNormAct(in_channels, out_channels, kernel_size, stride, norm=batch_norm, act=nn.PReLU)


class BR(nn.Module):
    """BatchNorm → PReLU, applied by an ESP block after its residual sum."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = batch_norm(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> ConvNormAct:
    """A bias-free convolution, optionally dilated (ESPNet's ``C`` and ``CDilated``; the child ``conv``)."""
    return ConvNormAct(in_channels, out_channels, kernel_size, stride, dilation, norm=None, act=None)


class EfficientSpatialPyramid(nn.Module):
    """The ESP module of ESPNet: reduce, then a spatial pyramid of dilated 3x3 convolutions.

    The reduced map (``n = out // 5`` channels) goes through dilations 1, 2, 4, 8, 16; the outputs of
    dilations 2..16 are summed hierarchically (``d2, d2+d4, d2+d4+d8, ...``) to avoid gridding
    artefacts, and concatenated with the dilation-1 branch (``n1 = out - 4n`` channels).
    """

    def __init__(self, in_channels: int, out_channels: int, reduce_kernel: int, reduce_stride: int) -> None:
        super().__init__()
        n = out_channels // 5
        n1 = out_channels - 4 * n
        self.c1 = conv(in_channels, n, reduce_kernel, reduce_stride)
        self.d1 = conv(n, n1, 3, dilation=1)
        self.d2 = conv(n, n, 3, dilation=2)
        self.d4 = conv(n, n, 3, dilation=4)
        self.d8 = conv(n, n, 3, dilation=8)
        self.d16 = conv(n, n, 3, dilation=16)

    def pyramid(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.c1(x)
        add1 = self.d2(reduced)
        add2 = add1 + self.d4(reduced)
        add3 = add2 + self.d8(reduced)
        add4 = add3 + self.d16(reduced)
        return torch.cat([self.d1(reduced), add1, add2, add3, add4], 1)


class DownSampler(EfficientSpatialPyramid):
    """The strided ESP block: a 3x3 stride-2 reduction, the pyramid, BN → PReLU; no residual."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, reduce_kernel=3, reduce_stride=2)
        self.bn = batch_norm(out_channels)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.pyramid(x)))


class ESPBlock(EfficientSpatialPyramid):
    """The residual ESP block: a 1x1 reduction, the pyramid, the input added back, BN → PReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, reduce_kernel=1, reduce_stride=1)
        self.bn = BR(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x + self.pyramid(x))


class InputProjection(nn.Module):
    """ESPNet-C's image pyramid: the RGB input average-pooled ``times`` times by 2."""

    def __init__(self, times: int) -> None:
        super().__init__()
        self.pool = nn.ModuleList(nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for pool in self.pool:
            x = pool(x)
        return x


class PositionAttention(nn.Module):
    """PAM of the Dual Attention Network: every position attends to every other (energy ``QᵀK``).

    ``result = γ · (V · softmax(QᵀK)ᵀ) + x``. Query and key reduce 32 channels to 4.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query_conv = nn.Conv2d(channels, channels // 8, 1)
        self.key_conv = nn.Conv2d(channels, channels // 8, 1)
        self.value_conv = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        query = self.query_conv(x).flatten(2).transpose(1, 2)  # (B, N, C')
        key = self.key_conv(x).flatten(2)  # (B, C', N)
        attention = torch.softmax(torch.bmm(query, key), dim=-1)  # (B, N, N)
        value = self.value_conv(x).flatten(2)  # (B, C, N)
        out = torch.bmm(value, attention.transpose(1, 2)).view(b, c, h, w)
        return self.gamma * out + x

    @torch.no_grad()
    def is_negligible(self, min_residual: float = 1e-3) -> bool:
        """Whether ``γ · out`` is below float32 resolution of the residual ``x`` for every input.

        Attention rows are convex weights, so ``max|out| ≤ max|V| ≤ ‖W_v‖∞ · max|x| + ‖b_v‖∞``
        (``‖·‖∞`` the largest absolute row sum). The branch is then invisible next to ``x`` when
        ``|γ| · (‖W_v‖∞ + ‖b_v‖∞ / m) < 2⁻²⁴`` for every input whose largest activation ``m`` is at
        least ``min_residual``: adding it changes no float32 value of that size.
        """
        weight_norm = self.value_conv.weight.flatten(1).abs().sum(1).max()
        bias_norm = self.value_conv.bias.abs().max() if self.value_conv.bias is not None else 0.0
        bound = self.gamma.abs().item() * (weight_norm + bias_norm / min_residual)
        return bool(bound < torch.finfo(torch.float32).eps / 2)


class ChannelAttention(nn.Module):
    """CAM of the Dual Attention Network: channels attend to channels (energy ``X·Xᵀ``), no convolutions.

    ``attention = softmax(rowmax(E) - E)``; ``result = γ · (attention · X) + x``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.flatten(2)  # (B, C, N)
        energy = torch.bmm(flat, flat.transpose(1, 2))  # (B, C, C)
        energy = energy.amax(dim=-1, keepdim=True) - energy
        out = torch.bmm(torch.softmax(energy, dim=-1), flat).view(b, c, h, w)
        return self.gamma * out + x


class ESPNetCEncoder(nn.Module):
    """ESPNet-C with TwinLiteNet's Dual Attention Module: image → 32 x H/8 x W/8 feature map ``B``."""

    def __init__(self, esp_blocks_level2: int = 2, esp_blocks_level3: int = 3) -> None:
        super().__init__()
        self.level1 = cbr(3, 16, 3, 2)
        self.sample1 = InputProjection(1)
        self.sample2 = InputProjection(2)
        self.b1 = cbr(16 + 3, 19, 3)
        self.level2_0 = DownSampler(16 + 3, 64)
        self.level2 = nn.ModuleList(ESPBlock(64) for _ in range(esp_blocks_level2))
        self.b2 = cbr(128 + 3, 131, 3)
        self.level3_0 = DownSampler(128 + 3, 128)
        self.level3 = nn.ModuleList(ESPBlock(128) for _ in range(esp_blocks_level3))
        self.b3 = cbr(256, 32, 3)
        # Dual Attention Module
        self.sa: nn.Module = PositionAttention(32)
        self.sc = ChannelAttention()
        self.conv_sa = cbr(32, 32, 3)
        self.conv_sc = cbr(32, 32, 3)
        self.classifier = cbr(32, 32, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        level1 = self.b1(torch.cat([self.level1(image), self.sample1(image)], 1))
        level2_0 = self.level2_0(level1)
        level2 = level2_0
        for block in self.level2:
            level2 = block(level2)
        level3_0 = self.level3_0(self.b2(torch.cat([level2, level2_0, self.sample2(image)], 1)))
        level3 = level3_0
        for block in self.level3:
            level3 = block(level3)
        features = self.b3(torch.cat([level3_0, level3], 1))
        return self.classifier(self.conv_sa(self.sa(features)) + self.conv_sc(self.sc(features)))

    def reparameterize_(self) -> Changes:
        """Drops the position attention, in place, where it is negligible (:meth:`PositionAttention.is_negligible`)."""
        if not (isinstance(self.sa, PositionAttention) and self.sa.is_negligible()):
            return Changes()
        changes = Changes({f"{DROPPED_POSITION_ATTENTION} (gamma={self.sa.gamma.item():.3g})": 1})
        self.sa = nn.Identity()
        return changes


def upsampler_block(in_channels: int, out_channels: int) -> ConvNormAct:
    """The decoder block (the official ``UPx2``): 2x2 stride-2 ConvTranspose → BatchNorm → PReLU, with the
    released children ``deconv``, ``bn``, ``act``. (N, in, H, W) → (N, out, 2H, 2W)."""
    return ConvNormAct(in_channels, out_channels, 2, 2, norm=batch_norm, act=nn.PReLU, transposed=True,
                       names=("deconv", "bn", "act"))


class TwinLiteNet(nn.Module):
    """One encoder, two decoders. ``forward(image)`` → ``(drivable_logits, lane_logits)``, each (N, 2, H, W).

    ``image`` is RGB in [0, 1] (no mean/std), H and W multiples of 8.
    """

    def __init__(self, esp_blocks_level2: int = 2, esp_blocks_level3: int = 3) -> None:
        super().__init__()
        self.encoder = ESPNetCEncoder(esp_blocks_level2, esp_blocks_level3)
        # drivable-area decoder
        self.up_1_1 = upsampler_block(32, 16)
        self.up_2_1 = upsampler_block(16, 8)
        self.classifier_1 = upsampler_block(8, 2)
        # lane-line decoder
        self.up_1_2 = upsampler_block(32, 16)
        self.up_2_2 = upsampler_block(16, 8)
        self.classifier_2 = upsampler_block(8, 2)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(image)
        drivable = self.classifier_1(self.up_2_1(self.up_1_1(features)))
        lane = self.classifier_2(self.up_2_2(self.up_1_2(features)))
        return drivable, lane


@dataclass(frozen=True)
class TwinLiteNetConfig:
    """Architecture and pre-processing of a TwinLiteNet checkpoint."""

    esp_blocks_level2: int = 2
    esp_blocks_level3: int = 3
    input_width: int = 640
    input_height: int = 360
