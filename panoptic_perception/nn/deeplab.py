"""DeepLabV3+ head: atrous spatial pyramid pooling (ASPP) and the decoder, with optional extra inputs
at every layer (for networks that exchange feature maps, e.g. cross cooperative learning).

Chen et al., *Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation*
(ECCV 2018), §3.1-3.2 and Fig. 2, with DeepLabV3's ASPP (Chen et al., *Rethinking Atrous Convolution
for Semantic Image Segmentation*, 2017, §3.3):

ASPP (:class:`ASPP`)
    On the backbone's output (output stride 16): a 1x1 convolution, three 3x3 convolutions with
    dilation 6, 12 and 18, and image pooling (global average → 1x1 convolution → broadcast back to
    the map's size), each with BN and ReLU and 256 channels; concatenated (1280 channels) and
    projected by a 1x1 convolution + BN + ReLU to 256 channels.
Decoder (:class:`DeepLabV3PlusHead`)
    The backbone's low-level features (stride 4) reduced by a 1x1 convolution + BN + ReLU to 48
    channels; the ASPP output bilinearly upsampled x4 to their size and concatenated with them; two 3x3
    convolutions + BN + ReLU of 256 channels; a 1x1 classifier; the logits bilinearly upsampled to the
    input image (x4).

Extra inputs (:class:`ExtraInputs`): each of the six layers (the ASPP input, read by all five
branches; the ASPP projection; the low-level reduction; the two 3x3 decoder convolutions; the
classifier) may receive further channels, concatenated *after* its own input (``torch.cat([own,
extra], 1)``), before the layer. A plain DeepLabV3+ has none; :meth:`DeepLabV3PlusHead.forward` runs
it. Networks that exchange features call the stages one by one (:meth:`DeepLabV3PlusHead.aspp`,
``.low_level``, ``.decode``, ...), passing the extra maps.

Choices where the papers leave room:

- ASPP and decoder use plain 3x3 convolutions, as DeepLabV3's ASPP, torchvision's DeepLab heads and the
  common PyTorch re-implementations; the DeepLabV3+ paper makes them depthwise separable for Xception
  (§3.2, "atrous separable convolution"), which is not used here.
- Dropout 0.1 after the ASPP projection in training (the TensorFlow release's ``keep_prob=0.9``); none
  in the decoder.
- Bilinear upsampling with ``align_corners=False`` (the TensorFlow release aligns corners).
- BatchNorm ``eps`` 1e-5, momentum 0.1 (PyTorch's defaults); convolutions Kaiming-normal (fan-out,
  ReLU), BN weight 1 and bias 0, the classifier PyTorch's default initialisation.
- The image-pooling branch has BN, so training needs more than one image per batch (as DeepLabV3).

:class:`ASPP` also builds the fusion network's atrous spatial pyramid (paper 002: no image pooling,
GroupNorm, branches of their own width, no dropout), by its options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .layers import CONV_BN_ACT, ConvNormAct, LayerFactory, relu, upsample

ASPP_RATES_OS16 = (6, 12, 18)


def join(own: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
    """A layer's input: its own map, followed along channels by the ``extra`` map if there is one.

    Raises:
        ValueError: when the two maps differ in batch or spatial size.
    """
    if extra is None:
        return own
    if extra.shape[0] != own.shape[0] or extra.shape[2:] != own.shape[2:]:
        raise ValueError(f"extra input {tuple(extra.shape)} does not match the layer's own input {tuple(own.shape)}")
    return torch.cat([own, extra], 1)


class ImagePooling(nn.Module):
    """ASPP's image-level features: global average pooling → 1x1 conv + norm + ReLU → the value at every
    pixel. (N, C, h, w) → (N, out_channels, h, w). ``norm``, ``act`` and ``names`` as :class:`ConvNormAct`'s."""

    def __init__(self, in_channels: int, out_channels: int, norm: LayerFactory = nn.BatchNorm2d,
                 act: LayerFactory = relu, names: Sequence[str] = CONV_BN_ACT) -> None:
        super().__init__()
        self.project = ConvNormAct(in_channels, out_channels, 1, norm=norm, act=act, names=names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Upsampling a 1x1 map bilinearly is a broadcast.
        return self.project(x.mean((2, 3), keepdim=True)).expand(-1, -1, *x.shape[2:])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (see the module docstring), with the options of the papers that use it.

    Args:
        in_channels: channels of the ASPP input (the backbone's, plus any extra input).
        out_channels: channels of the output (256 in DeepLab).
        rates: dilations of the 3x3 branches ((6, 12, 18) at output stride 16).
        branch_channels: channels of every branch (default: ``out_channels``, as DeepLab).
        image_pooling: whether the image-pooling branch is there (DeepLab); without it, the 1x1 and the
            3x3 branches only (the fusion network's "atrous spatial pyramid").
        projection_extra_channels: extra channels the projection receives after the concatenated
            branches.
        dropout: dropout probability after the projection (training only; 0: none).
        norm: the norm of every branch and of the projection (BatchNorm; e.g. :func:`group_norm`).
        act: their activation (a ReLU; :func:`relu_inplace` where memory matters).
        names: the child names of every :class:`ConvNormAct` (``conv``, ``bn``, ``act``; e.g.
            :data:`SEQUENTIAL_NAMES` for ``nn.Sequential`` checkpoints).

    ``forward(x)``: (N, in_channels, h, w) → (N, out_channels, h, w) (a head with projection extra
    channels runs :meth:`branch_maps` and :meth:`project_maps` instead).
    """

    def __init__(self, in_channels: int, out_channels: int = 256, rates: Sequence[int] = ASPP_RATES_OS16, *,
                 branch_channels: int | None = None, image_pooling: bool = True, projection_extra_channels: int = 0,
                 dropout: float = 0.1, norm: LayerFactory = nn.BatchNorm2d, act: LayerFactory = relu,
                 names: Sequence[str] = CONV_BN_ACT) -> None:
        super().__init__()
        width = branch_channels or out_channels
        self.branches = nn.ModuleList(
            [ConvNormAct(in_channels, width, 1, norm=norm, act=act, names=names)]
            + [ConvNormAct(in_channels, width, 3, dilation=rate, norm=norm, act=act, names=names) for rate in rates]
        )
        self.pooling = ImagePooling(in_channels, width, norm, act, names) if image_pooling else None
        self.branch_channels = width * (len(self.branches) + image_pooling)
        self.project = ConvNormAct(self.branch_channels + projection_extra_channels, out_channels, 1, norm=norm,
                                   act=act, names=names)
        self.dropout = nn.Dropout(dropout)

    def branch_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, h, w) → the branches concatenated, (N, branch_channels, h, w)."""
        pooled = [self.pooling(x)] if self.pooling is not None else []
        return torch.cat([branch(x) for branch in self.branches] + pooled, 1)

    def project_maps(self, maps: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Branch maps (and the extra input) → (N, out_channels, h, w)."""
        return self.dropout(self.project(join(maps, extra)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_maps(self.branch_maps(x))


@dataclass(frozen=True)
class ExtraInputs:
    """Channels each layer of a :class:`DeepLabV3PlusHead` receives besides its own input (0: none),
    concatenated after it: ``aspp`` (the ASPP input, read by every branch), ``aspp_projection``,
    ``low_level`` (the 1x1 reduction of the low-level features), ``decoder_conv1`` (after the upsampled
    ASPP output and the reduced low-level features), ``decoder_conv2`` and ``classifier``."""

    aspp: int = 0
    aspp_projection: int = 0
    low_level: int = 0
    decoder_conv1: int = 0
    decoder_conv2: int = 0
    classifier: int = 0

    def __post_init__(self) -> None:
        negative = [name for name, value in vars(self).items() if value < 0]
        if negative:
            raise ValueError(f"extra input channels must be non-negative: {', '.join(negative)}")


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+'s ASPP and decoder on a backbone's high- and low-level features.

    Args:
        in_channels: channels of the backbone output (stride 16).
        low_level_channels: channels of the backbone's low-level features (stride 4).
        num_classes: classes predicted.
        channels: ASPP and decoder width (256 in the paper).
        reduced_channels: low-level features after the 1x1 reduction (48 in the paper).
        rates: the ASPP's dilations.
        extra: channels each layer receives from outside (:class:`ExtraInputs`).
        dropout: after the ASPP projection.

    ``forward(features, low_level, image_size)``: ``features`` (N, in_channels, h16, w16) at stride 16
    and ``low_level`` (N, low_level_channels, h4, w4) at stride 4 → (N, num_classes, *image_size)
    logits; a head built with extra inputs raises ValueError there (run its stages instead).

    Stages, each taking an optional ``extra`` map of the size of its own input, concatenated after it:
    :meth:`aspp_branches` → (N, 5 * channels, h16, w16); :meth:`aspp_output` → (N, channels, h16, w16);
    :meth:`reduce_low_level` → (N, reduced_channels, h4, w4); :meth:`decoder_conv1`,
    :meth:`decoder_conv2` → (N, channels, h4, w4); :meth:`classify` → (N, num_classes, *image_size).
    """

    def __init__(self, in_channels: int, low_level_channels: int, num_classes: int, *, channels: int = 256,
                 reduced_channels: int = 48, rates: Sequence[int] = ASPP_RATES_OS16, extra: ExtraInputs = ExtraInputs(),
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.extra = extra
        self.aspp = ASPP(in_channels + extra.aspp, channels, rates, projection_extra_channels=extra.aspp_projection,
                         dropout=dropout)
        self.low_level = ConvNormAct(low_level_channels + extra.low_level, reduced_channels, 1)
        self.conv1 = ConvNormAct(channels + reduced_channels + extra.decoder_conv1, channels, 3)
        self.conv2 = ConvNormAct(channels + extra.decoder_conv2, channels, 3)
        self.classifier = nn.Conv2d(channels + extra.classifier, num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.classifier:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # -- the stages, for networks that insert extra inputs ------------------------------------------
    def aspp_branches(self, features: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """The five ASPP branches on the backbone output (and the extra map), concatenated."""
        return self.aspp.branch_maps(join(features, extra))

    def aspp_output(self, branches: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """The ASPP projection of the branch maps (and the extra map)."""
        return self.aspp.project_maps(branches, extra)

    def reduce_low_level(self, low_level: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """The 1x1 reduction of the low-level features (and the extra map)."""
        return self.low_level(join(low_level, extra))

    def decoder_conv1(self, aspp: torch.Tensor, reduced: torch.Tensor,
                      extra: torch.Tensor | None = None) -> torch.Tensor:
        """The ASPP output upsampled to the low-level size, the reduced low-level features, the extra input."""
        return self.conv1(join(torch.cat([upsample(aspp, reduced.shape[2:]), reduced], 1), extra))

    def decoder_conv2(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """The second 3x3 decoder convolution."""
        return self.conv2(join(x, extra))

    def classify(self, x: torch.Tensor, image_size: Sequence[int], extra: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits upsampled to ``image_size`` (x4 from the low-level resolution)."""
        return upsample(self.classifier(join(x, extra)), image_size)

    def forward(self, features: torch.Tensor, low_level: torch.Tensor, image_size: Sequence[int]) -> torch.Tensor:
        if any(vars(self.extra).values()):
            raise ValueError(f"this head expects extra inputs ({self.extra}); run its stages with them")
        aspp = self.aspp_output(self.aspp_branches(features))
        x = self.decoder_conv2(self.decoder_conv1(aspp, self.reduce_low_level(low_level)))
        return self.classify(x, image_size)
