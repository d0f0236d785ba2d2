"""Small layers several networks share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .batchnorm_folding import fold_batchnorm


def init_backbone_(module: nn.Module) -> None:
    """In place: He (fan-out, ReLU) normal weights for every ``nn.Conv2d`` of ``module``, and BatchNorm
    scale 1 and shift 0, the initialisation torchvision's ResNet and timm's Xception use."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ConvBNReLU(nn.Module):
    """Convolution (no bias) → BatchNorm → ReLU; padding ``dilation * (k - 1) / 2`` keeps the size.

    Input (N, in_channels, H, W) → (N, out_channels, H, W). :meth:`fold_batchnorm_` folds the BatchNorm
    into the convolution for inference (eval statistics).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                              dilation=dilation, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))

    def fold_batchnorm_(self) -> int:
        """Folds the BatchNorm in place; returns 1, or 0 when it was already folded."""
        if isinstance(self.bn, nn.Identity):
            return 0
        self.conv, self.bn = fold_batchnorm(self.conv, self.bn), nn.Identity()
        return 1
