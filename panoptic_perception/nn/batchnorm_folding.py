"""Folding an inference-mode BatchNorm into the convolution before it.

This is the "re-parameterisation" of TwinLiteNet §III-C (and of RepVGG-style networks): at inference a
BatchNorm is a per-channel affine map ``y = s * x + t`` with ``s = γ / sqrt(var + eps)`` and
``t = β - mean * s``, so a convolution followed by it equals one convolution with weights scaled by
``s`` along the output channels and a bias ``s * b + t``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def batchnorm_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel ``(scale, shift)`` an eval-mode BatchNorm applies."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    std = torch.sqrt(bn.running_var + bn.eps)
    weight = bn.weight if bn.weight is not None else torch.ones_like(std)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = weight / std
    return scale, bias - bn.running_mean * scale


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> nn.Conv2d | nn.ConvTranspose2d:
    """A copy of ``conv`` (a Conv2d or ConvTranspose2d) that also applies the eval-mode ``bn`` after it."""
    scale, shift = batchnorm_affine(bn)
    out_channels = conv.out_channels
    if scale.numel() != out_channels:
        raise ValueError(f"BatchNorm has {scale.numel()} channels, convolution outputs {out_channels}")
    fused = copy.deepcopy(conv)
    weight = conv.weight
    if isinstance(conv, nn.ConvTranspose2d):
        # ConvTranspose2d weights are (in, out / groups, kh, kw): output channels live in dim 1 per group.
        groups = conv.groups
        w = weight.view(groups, weight.shape[0] // groups, weight.shape[1], *weight.shape[2:])
        w = w * scale.view(groups, 1, -1, 1, 1)
        fused.weight = nn.Parameter(w.reshape(weight.shape))
    else:
        fused.weight = nn.Parameter(weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
    fused.bias = nn.Parameter(bias * scale + shift)
    return fused
