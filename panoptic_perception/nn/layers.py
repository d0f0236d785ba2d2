"""Small layers several networks share: the convolution-norm-activation block, bilinear upsampling and the
backbones' initialisation.

:class:`ConvNormAct` is every "convolution, then a norm, then an activation" of the networks: YOLOv7's
``Conv`` (BatchNorm, SiLU), ESPNet's ``CBR`` (BatchNorm, PReLU) and bare ``C``, TwinLiteNet's decoder
block (a transposed convolution), DeepLab's and CycleNet's Conv-BN-ReLU, the fusion network's Conv-GN-ReLU,
timm's Xception ``ConvNormAct`` and torchvision's ResNet ``downsample``. Each of their checkpoints names the
three parts differently (``conv``/``bn``/``act``, ``deconv``/``bn``/``act``, ``0``/``1``/``2``), so the
block is an ``nn.Sequential`` whose child names are a constructor argument: every layout loads as saved.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .reparameterize import Changes, fold_batchnorm_pairs_

#: A norm or activation layer for a given number of channels, e.g. ``nn.BatchNorm2d``, ``nn.PReLU``,
#: ``functools.partial(nn.BatchNorm2d, eps=1e-3)``, :func:`group_norm` (32) or :func:`relu`.
LayerFactory = Callable[[int], nn.Module]
#: Child names of a :class:`ConvNormAct`: (convolution, norm, activation).
CONV_BN_ACT = ("conv", "bn", "act")
#: The child names of a plain ``nn.Sequential``, as torchvision's ``Conv2dNormActivation`` saves them.
SEQUENTIAL_NAMES = ("0", "1", "2")


def relu(channels: int) -> nn.ReLU:
    """A ReLU (for ``act=``; it has no parameters, so the channel count is not used)."""
    return nn.ReLU()


def relu_inplace(channels: int) -> nn.ReLU:
    """A ReLU that overwrites its input (for ``act=`` where nothing else reads the norm's output)."""
    return nn.ReLU(inplace=True)


def silu(channels: int) -> nn.SiLU:
    """A SiLU (for ``act=``; the channel count is not used)."""
    return nn.SiLU()


def group_norm(groups: int) -> LayerFactory:
    """GroupNorm with ``groups`` groups, or one per channel where there are fewer channels (for ``norm=``)."""
    return lambda channels: nn.GroupNorm(min(groups, channels), channels)


class ConvNormAct(nn.Sequential):
    """Convolution → norm → activation, each part optional but the convolution.

    Args:
        in_channels, out_channels: of the convolution.
        kernel_size, stride, dilation, groups: of the convolution; the padding ``dilation * (k - 1) // 2``
            keeps the size at stride 1 (odd kernels).
        norm: called with ``out_channels`` to build the norm (``nn.BatchNorm2d`` by default); None: none.
        act: called with ``out_channels`` to build the activation (:func:`relu` by default); None: none.
        bias: whether the convolution has a bias (a norm after it makes one redundant).
        transposed: a ``ConvTranspose2d`` (no padding) instead, e.g. kernel 2 stride 2 to double the size.
        names: the children's names, (convolution, norm, activation); those of absent parts are unused.

    Input (N, in_channels, H, W) → (N, out_channels, H', W'): ``ceil(H / stride)`` for odd kernels,
    ``H * stride`` transposed with ``kernel_size == stride``.

    :meth:`reparameterize_` folds a BatchNorm (or any norm of running statistics) into the convolution.

    Raises:
        ValueError: on ``names`` that are not three distinct names, or a dilated transposed convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1, dilation: int = 1,
                 groups: int = 1, *, norm: LayerFactory | None = nn.BatchNorm2d, act: LayerFactory | None = relu,
                 bias: bool = False, transposed: bool = False, names: Sequence[str] = CONV_BN_ACT) -> None:
        if len(names) != 3 or len(set(names)) != 3:
            raise ValueError(f"names must be three distinct names (convolution, norm, activation), got {tuple(names)}")
        if transposed and dilation != 1:
            raise ValueError("a transposed ConvNormAct takes no dilation")
        if transposed:
            conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
        else:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, dilation * (kernel_size - 1) // 2,
                             dilation, groups, bias)
        layers = OrderedDict([(names[0], conv)])
        if norm is not None:
            layers[names[1]] = norm(out_channels)
        if act is not None:
            layers[names[2]] = act(out_channels)
        super().__init__(layers)

    def reparameterize_(self) -> Changes:
        """Folds the norm into the convolution, in place, where it keeps running statistics; see
        :func:`~panoptic_perception.nn.reparameterize.fold_batchnorm_pairs_`."""
        conv_name, *rest = self._modules
        return fold_batchnorm_pairs_(self, [(conv_name, rest[0])] if rest else [])


def upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize of (N, C, h, w) to (N, C, *size) (``align_corners=False``, as DeepLab's and the
    papers' PyTorch releases); e.g. ``upsample(x, reference.shape[-2:])`` to another map's size."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def init_backbone_(module: nn.Module) -> None:
    """In place: He (fan-out, ReLU) normal weights for every ``nn.Conv2d`` of ``module``, and BatchNorm
    scale 1 and shift 0, the initialisation torchvision's ResNet and timm's Xception use."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
