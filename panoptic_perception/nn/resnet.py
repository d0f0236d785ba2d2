"""ResNet with Bottleneck blocks in torchvision's layout, shared by the ResNet-based backends.

He et al., *Deep Residual Learning for Image Recognition* (CVPR 2016), Table 1 (ResNet-50: 3, 4, 6, 3
Bottleneck blocks; ResNet-101: 3, 4, 23, 3), by default in the "v1.5" variant of torchvision: a block that
downsamples puts its stride on the 3x3 convolution (``conv2``) instead of the first 1x1.
``stride_in_1x1=True`` builds the original layout instead (the stride on ``conv1``), that of MSRA's
Caffe ResNets and of the Detectron2 models trained from them (its ``RESNETS.STRIDE_IN_1X1``, default
true).

Parameter and buffer names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer1.0.downsample.0``/``.1``, ``fc``), which timm's ``resnet50``/``resnet101`` share, so their
ImageNet state dicts load with ``load_state_dict(..., strict=True)`` into ``num_classes=1000`` models
(drop the ``fc.`` keys for a backbone, ``num_classes=None``). As the body of
:class:`~panoptic_perception.nn.fpn.BackboneWithFPN` the names are those of torchvision's
``maskrcnn_resnet50_fpn`` under ``backbone.body.``.

Choices and their sources:

- ``width`` scales the 64-channel base of every stage and of the stem (``64 * width`` must be a
  whole number); 1.0 is torchvision exactly. Narrow variants (e.g. 0.25: stage outputs 64, 128, 256,
  512 channels) are for weights trained on a CPU.
- ``replace_stride_with_dilation`` has torchvision's semantics: a flagged stage (layer2, layer3,
  layer4) keeps stride 1 and multiplies the running dilation by 2; its *first* block still uses the
  previous dilation and only the following blocks the new one. ``(False, True, True)`` is output
  stride 8 with rates 2 (layer3) and 4 (layer4), as DeepLab and CycleNet (paper 004) use;
  ``(False, False, True)`` is output stride 16 (DeepLabV3+, paper 003). Multi-grid rates inside a
  stage (DeepLabV3 §3.2) are not implemented.
- ``norm_layer`` is :class:`torch.nn.BatchNorm2d` (default) or :class:`FrozenBatchNorm2d` (fixed
  statistics and affine terms, as torchvision's detection models use), or any callable taking the
  channel count.
- ``num_classes=None`` builds a backbone without average pooling and classifier; ``forward`` then
  returns the stage outputs (see :meth:`ResNet.forward_features`).
- Weight initialisation follows torchvision: Kaiming-normal (fan-out, ReLU) convolutions, BatchNorm
  weight 1 and bias 0.
- Re-parameterised for inference (:func:`~panoptic_perception.nn.reparameterize.reparameterize`), every
  norm folds into the convolution before it: the convolutions keep their names and gain a ``bias``; the
  norms become ``nn.Identity`` (their keys disappear from the state dict).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

from .layers import SEQUENTIAL_NAMES, ConvNormAct, init_backbone_
from .reparameterize import Changes, fold_batchnorm_pairs_

STAGES = ("layer1", "layer2", "layer3", "layer4")
RESNET50_LAYERS = (3, 4, 6, 3)
RESNET101_LAYERS = (3, 4, 23, 3)

NormLayer = Callable[[int], nn.Module]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine terms (torchvision's ``ops.misc.FrozenBatchNorm2d``).

    ``y = (x - running_mean) * weight / sqrt(running_var + eps) + bias`` per channel, in training and in
    evaluation alike. All four tensors are buffers, so an optimiser never sees them. A
    ``num_batches_tracked`` entry in a loaded state dict (written by ``nn.BatchNorm2d``) is ignored.
    torchvision's COCO ``maskrcnn_resnet50_fpn`` weights were trained with ``eps=0.0``; pass that eps
    when loading them.

    Input (N, C, H, W) float, output the same shape and dtype.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # nn.Module.load_state_dict hands every module its own copy of the dict, so popping is safe.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class Bottleneck(nn.Module):
    """1x1 reduce → 3x3 (stride, dilation) → 1x1 expand (x4), each followed by a norm; ReLU after the
    first two and after the residual sum. ``downsample`` (1x1 strided convolution + norm) projects the
    shortcut when the shape changes. ``stride_in_1x1`` moves the stride to the 1x1 reduction."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
        norm_layer: NormLayer = nn.BatchNorm2d,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, planes, 1, stride_1x1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride_3x3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)

    def reparameterize_(self) -> Changes:
        """Folds the three norms into their convolutions, in place (``downsample`` folds itself)."""
        return fold_batchnorm_pairs_(self, (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")))


class ResNet(nn.Module):
    """A Bottleneck ResNet: 7x7 stride-2 stem, 3x3 stride-2 max pool, four stages, optional classifier.

    Args:
        layers: Bottleneck blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        width: multiplier of the 64-channel base (stem and the ``planes`` of every stage); ``64 * width``
            must be a positive whole number. Stage ``i`` outputs ``4 * base * 2**i`` channels.
        replace_stride_with_dilation: for layer2, layer3, layer4, whether to replace the stride 2 by a
            dilation (torchvision's semantics; see the module docstring).
        norm_layer: the normalisation, called with the channel count (``nn.BatchNorm2d``,
            :class:`FrozenBatchNorm2d`, or e.g. ``functools.partial(FrozenBatchNorm2d, eps=0.0)``).
        num_classes: classes of the ImageNet-style head (average pool + ``fc``); ``None`` for a backbone.
        stride_in_1x1: downsampling blocks stride in their first 1x1 convolution, not the 3x3 (MSRA's
            ResNets, Detectron2's default); the parameters are the same either way.

    Attributes:
        stage_channels: ``{"layer1": C2 channels, ..., "layer4": C5 channels}``.
        stage_strides: ``{"layer1": 4, "layer2": 8, ...}``, the output strides of the stages in pixels.

    Raises:
        ValueError: on a ``layers`` that is not four positive counts, a ``width`` with ``64 * width`` not
            a positive integer, or a ``replace_stride_with_dilation`` that is not three flags.
    """

    def __init__(
        self,
        layers: Sequence[int],
        *,
        width: float = 1.0,
        replace_stride_with_dilation: Sequence[bool] = (False, False, False),
        norm_layer: NormLayer = nn.BatchNorm2d,
        num_classes: int | None = None,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        layers = tuple(layers)
        if len(layers) != 4 or any(int(n) != n or n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {layers}")
        base = 64 * width
        if base < 1 or base != int(base):
            raise ValueError(f"64 * width must be a positive integer, got width={width} (64 * width = {base})")
        base = int(base)
        dilate = tuple(bool(flag) for flag in replace_stride_with_dilation)
        if len(dilate) != 3:
            raise ValueError(f"replace_stride_with_dilation must be three flags, got {replace_stride_with_dilation}")

        self.conv1 = nn.Conv2d(3, base, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        self.stage_channels: dict[str, int] = {}
        self.stage_strides: dict[str, int] = {}
        in_channels, stride_so_far, dilation = base, 4, 1
        for index, (name, blocks) in enumerate(zip(STAGES, layers)):
            planes = base * 2**index
            stride = 1 if index == 0 else 2
            first_dilation = dilation
            if index > 0 and dilate[index - 1]:
                dilation *= stride
                stride = 1
            stage = self._make_stage(in_channels, planes, blocks, stride, first_dilation, dilation, norm_layer,
                                     stride_in_1x1)
            self.add_module(name, stage)
            in_channels = planes * Bottleneck.expansion
            stride_so_far *= stride
            self.stage_channels[name] = in_channels
            self.stage_strides[name] = stride_so_far

        self.num_classes = num_classes
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(in_channels, num_classes)

        init_backbone_(self)

    @staticmethod
    def _make_stage(
        in_channels: int,
        planes: int,
        blocks: int,
        stride: int,
        first_dilation: int,
        dilation: int,
        norm_layer: NormLayer,
        stride_in_1x1: bool,
    ) -> nn.Sequential:
        out_channels = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = ConvNormAct(in_channels, out_channels, 1, stride, norm=norm_layer, act=None,
                                     names=SEQUENTIAL_NAMES)
        stage = [Bottleneck(in_channels, planes, stride, first_dilation, downsample, norm_layer, stride_in_1x1)]
        stage += [Bottleneck(out_channels, planes, 1, dilation, None, norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    @property
    def output_stride(self) -> int:
        """Input pixels per pixel of layer4's output: 32, or 16 / 8 with dilated stages."""
        return self.stage_strides["layer4"]

    def forward_features(self, x: torch.Tensor, stages: Sequence[str] = STAGES) -> OrderedDict[str, torch.Tensor]:
        """The outputs of the requested stages, computing no stage past the deepest one requested.

        Args:
            x: (N, 3, H, W) float image batch (normalised as the weights expect, e.g. ImageNet mean/std).
            stages: names among ``"layer1"`` .. ``"layer4"``.

        Returns:
            OrderedDict ``{stage: (N, stage_channels[stage], ceil(H / stride), ceil(W / stride))}`` in
            network order (C2 .. C5 for all four stages), ``stride = stage_strides[stage]``.

        Raises:
            ValueError: on an input that is not (N, 3, H, W), or an unknown or empty list of stages.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image batch of shape (N, 3, H, W), got {tuple(x.shape)}")
        unknown = [name for name in stages if name not in STAGES]
        if unknown or not stages:
            raise ValueError(f"stages must be a non-empty subset of {STAGES}, got {tuple(stages)}")
        last = max(STAGES.index(name) for name in stages)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs: OrderedDict[str, torch.Tensor] = OrderedDict()
        for name in STAGES[: last + 1]:
            x = getattr(self, name)(x)
            if name in stages:
                outputs[name] = x
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor | OrderedDict[str, torch.Tensor]:
        """With a classifier: (N, num_classes) logits. As a backbone (``num_classes=None``): the four
        stage outputs of :meth:`forward_features`. ``x`` is a (N, 3, H, W) float image batch."""
        if self.num_classes is None:
            return self.forward_features(x)
        features = self.forward_features(x, ("layer4",))["layer4"]
        return self.fc(torch.flatten(self.avgpool(features), 1))

    def set_trainable_layers(self, trainable_layers: int) -> None:
        """Freezes all but the last ``trainable_layers`` stages, as torchvision's ``resnet_fpn_backbone``.

        Counting from the top: layer4, layer3, layer2, layer1, then the stem (conv1 and bn1): 0 freezes the
        whole body, 5 trains everything, 3 (torchvision's default for detection) freezes the stem and
        layer1. Sets ``requires_grad`` of the parameters of the frozen parts to False and of the others
        to True; the classifier ``fc``, if any, is left as it is. A frozen ``nn.BatchNorm2d`` still updates
        its running statistics in training mode; use :class:`FrozenBatchNorm2d` to fix them.

        Raises:
            ValueError: when ``trainable_layers`` is not in 0..5.
        """
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
        parts = [("layer4",), ("layer3",), ("layer2",), ("layer1",), ("conv1", "bn1")]
        trainable = {name for part in parts[:trainable_layers] for name in part}
        for name, child in self.named_children():
            if name == "fc":
                continue
            child.requires_grad_(name in trainable)

    def reparameterize_(self) -> Changes:
        """Folds the stem's norm into its convolution, in place (the blocks fold themselves)."""
        return fold_batchnorm_pairs_(self, (("conv1", "bn1"),))


def resnet50(**kwargs) -> ResNet:
    """ResNet-50 (3, 4, 6, 3); keyword arguments as :class:`ResNet` (default: a backbone, no ``fc``)."""
    return ResNet(RESNET50_LAYERS, **kwargs)


def resnet101(**kwargs) -> ResNet:
    """ResNet-101 (3, 4, 23, 3); keyword arguments as :class:`ResNet` (default: a backbone, no ``fc``)."""
    return ResNet(RESNET101_LAYERS, **kwargs)
