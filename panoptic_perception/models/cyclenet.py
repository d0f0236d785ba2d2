"""CycleNet (paper 004): semantic segmentation with a dilated ResNet, CycleASPP and ADC.

Qu, He, Ke, Gao, Lu, *Learning More Accurate Features for Semantic Segmentation in CycleNet*.

§4.1 Network structure (:class:`CycleNetNetwork`)
    ResNet-101 pre-trained on ImageNet, without its last pooling and fully-connected layers, with the
    last two stages dilated (rates 2 and 4): output stride 8. :func:`panoptic_perception.nn.resnet.resnet101`
    with ``replace_stride_with_dilation=(False, True, True)``; its parameter names are torchvision's, so an
    ImageNet state dict (``fc.`` dropped) loads into ``backbone``.
§3.1 CycleASPP (:class:`CycleASPP`)
    A DenseASPP cascade of atrous layers with increasing rates. Part I (Eq. 2): layer ``j`` takes the
    concatenation of the input and every earlier layer's output. Part II (Eq. 3), ``feedback`` = K times:
    the layers are updated in order, each from the concatenation of the latest outputs of all the *other*
    layers (later layers from the previous pass, earlier ones from this pass; the input is not part of it,
    as Eq. 3 lists only ``Y_1 .. Y_J``). The module's output is the latest output of every layer
    concatenated with the input, as DenseASPP concatenates (newest first: ``[Y_J, ..., Y_1, X]``; Eq. 2
    and 3 list their operands in this descending order too). K = 0 is DenseASPP.
§3.2 ADC (:class:`AlignmentDeformableConv`, Eq. 4-5, Fig. 2)
    The CycleASPP features are bilinearly upsampled to the stride-4 low-level features (the output of
    ResNet "block1", §4.2), the two are concatenated, convolutions predict the offsets and modulation
    scalars (sigmoid) of a 3x3 modulated deformable convolution (DCNv2,
    :class:`~panoptic_perception.nn.deform_conv.ModulatedDeformConv2d`) that aligns the high-level
    features; the aligned features are concatenated with the low-level ones and conventional
    convolutions (``f`` of Eq. 5) give the context features, from which a 1x1 convolution predicts the 19
    Cityscapes classes at stride 4.
§4.1 Auxiliary supervision (:class:`FCNHead`)
    "As [22, 23]" (PSANet, SPNet: the PSPNet code base): an FCN head on stage 3 (``layer3``) whose
    cross-entropy is added with weight 0.4 in training. It runs only in training mode and is dropped from
    the fast inference network.

Choices where the paper is silent (all in :class:`CycleNetConfig`):

- **Rates** (3, 6, 12, 18, 24, 30) and one feedback pass: the paper's final Cityscapes model (§4.2,
  Table 3); on ADE20K it uses (3, 6, 12, 18, 24) "because of the small input size".
- **Layer widths, read from Table 1's GFLOPs.** A Part I layer is DenseASPP's: a 1x1 bottleneck
  convolution then the 3x3 atrous convolution to ``aspp_growth`` channels. A Part II layer is a single
  3x3 atrous convolution from the ``(J - 1) * aspp_growth`` channels of the other layers. Table 1's
  differences fit this at a 64x64 feature map (a 512x512 input) counting one FLOP per multiply-add: one
  Part II pass costs ``J (J - 1) * 9 g^2 * 4096`` = 12.1 G for J = 5 and 18.1 G for J = 6 with
  ``g = 128`` (CycleASPP minus DenseASPP at the same rates in Table 1: 12.4 and 18.5 G), and a sixth
  Part I layer ``((2048 + 5 g) n + 9 g n) * 4096`` = 16.1 G with a bottleneck ``n = 1024`` (DenseASPP
  with and without rate 30: 16.4 G). Hence ``aspp_growth`` 128 and
  ``aspp_bottleneck`` 1024 at full size. Part II layers have their own weights (their input differs in
  width from Part I's), shared by all K passes (a recurrence; with the default K = 1 it makes no
  difference).
- Every convolution of the heads is followed by BatchNorm and ReLU (post-activation, unlike DenseASPP's
  BN-ReLU-Conv: each BatchNorm then directly follows a convolution and folds into it for inference);
  DenseASPP's channel dropout (0.1) follows every atrous layer.
- The CycleASPP output (2048 + 6 * 128 channels) is projected by a 1x1 convolution to ``high_channels``
  (256) before the upsampling, and the 256-channel low-level features by a 1x1 convolution to
  ``low_channels`` (48), as DeepLabV3+ does with its encoder output and low-level features.
- Offsets and modulation come from a 3x3 Conv-BN-ReLU (``high_channels``) and a 3x3 convolution to
  ``3 * G * 9`` channels: the first ``2 * G * 9`` are the offsets in torchvision's layout (channel
  ``g * 18 + 2k`` is Δy, ``g * 18 + 2k + 1`` Δx of kernel position ``k`` of group ``g``, in pixels of
  the stride-4 map; see :mod:`panoptic_perception.nn.deform_conv`), the last ``G * 9`` the modulation
  logits. That convolution starts at zero (DCNv2's initialisation): zero offsets and modulation 0.5, a
  plain convolution at start. ``G`` (``deformable_groups``) is 1, as in DCNv2's reference layer.
- The deformable convolution keeps ``high_channels`` channels and is followed by BatchNorm and ReLU;
  ``f`` of Eq. 5 is two 3x3 Conv-BN-ReLU with ``decoder_channels`` (256), DeepLabV3+'s decoder.
- The auxiliary head is PSPNet's: 3x3 Conv-BN-ReLU to ``aux_channels`` (256), channel dropout 0.1,
  1x1 convolution to the classes.
- Upsampling is bilinear with ``align_corners=False``; the stride-4 logits are interpolated to the input
  image before the argmax (and to the label size in training).
- Default input 1024x512 (Cityscapes at half resolution; ``input_size`` (2048, 1024) evaluates at full
  resolution, as the paper does). ``width`` narrows the ResNet for CPU variants (which set the head
  widths, all absolute, too); ``depth`` 50 gives a ResNet-50 backbone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..core.labels import CITYSCAPES
from ..nn.deform_conv import ModulatedDeformConv2d
from ..nn.layers import ConvNormAct, upsample
from ..nn.reparameterize import Changes, fold_batchnorm_pairs_
from ..nn.resnet import resnet50, resnet101

RESNETS = {50: resnet50, 101: resnet101}
DROPPED_AUXILIARY_HEAD = "auxiliary heads dropped"


def _concat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors), 1)


class AtrousLayer(nn.Module):
    """One atrous layer of DenseASPP / CycleASPP: an optional 1x1 Conv-BN-ReLU bottleneck to
    ``bottleneck_channels``, a 3x3 Conv-BN-ReLU with dilation ``rate`` to ``out_channels``, channel dropout.
    Input (N, in_channels, H, W) → (N, out_channels, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, rate: int, bottleneck_channels: int | None,
                 dropout: float) -> None:
        super().__init__()
        self.reduce = ConvNormAct(in_channels, bottleneck_channels, 1) if bottleneck_channels else None
        self.atrous = ConvNormAct(bottleneck_channels or in_channels, out_channels, 3, dilation=rate)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduce is not None:
            x = self.reduce(x)
        return self.dropout(self.atrous(x))


class CycleASPP(nn.Module):
    """CycleASPP (§3.1, Eq. 2-3): DenseASPP's forward cascade (Part I) followed by ``feedback`` passes of
    backward connections (Part II); see the module docstring.

    Args:
        in_channels: channels of the input features (2048 for ResNet-101).
        rates: dilation rate of each layer, in cascade order (J layers).
        bottleneck_channels: width of the 1x1 bottleneck of each Part I layer.
        growth_channels: output channels of every layer (``g``).
        feedback: K, the number of Part II passes; 0 is DenseASPP.
        dropout: channel-dropout probability after every layer (training only).

    ``forward(x)``: (N, in_channels, H, W) → (N, in_channels + J * g, H, W), the concatenation
    ``[Y_J, ..., Y_1, x]`` of every layer's latest output and the input.

    Raises:
        ValueError: on no rates, a non-positive rate or width, a negative ``feedback``, or feedback with a
            single layer (Part II needs other layers); in forward, on an input that is not
            (N, in_channels, H, W).
    """

    def __init__(self, in_channels: int, rates: Sequence[int] = (3, 6, 12, 18, 24, 30),
                 bottleneck_channels: int = 1024, growth_channels: int = 128, feedback: int = 1,
                 dropout: float = 0.1) -> None:
        super().__init__()
        rates = tuple(int(r) for r in rates)
        if not rates or min(rates) < 1:
            raise ValueError(f"rates must be one or more positive dilation rates, got {rates}")
        if min(in_channels, bottleneck_channels, growth_channels) < 1:
            raise ValueError("in_channels, bottleneck_channels and growth_channels must be positive")
        if feedback < 0 or (feedback > 0 and len(rates) < 2):
            raise ValueError(f"feedback must be >= 0, and 0 with a single rate; got {feedback} with rates {rates}")
        self.in_channels, self.rates, self.feedback = in_channels, rates, feedback
        self.out_channels = in_channels + len(rates) * growth_channels
        self.forward_layers = nn.ModuleList(
            AtrousLayer(in_channels + j * growth_channels, growth_channels, rate, bottleneck_channels, dropout)
            for j, rate in enumerate(rates)
        )
        others = (len(rates) - 1) * growth_channels
        self.feedback_layers = nn.ModuleList(
            AtrousLayer(others, growth_channels, rate, None, dropout) for rate in (rates if feedback else ())
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"CycleASPP expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        outputs: list[torch.Tensor] = []  # Y_1 .. Y_J
        for layer in self.forward_layers:  # Part I, Eq. 2: [Y_{j-1}, ..., Y_1, X]
            outputs.append(layer(_concat(outputs[::-1] + [x])))
        for _ in range(self.feedback):  # Part II, Eq. 3: [Y_J, ..., Y_{j+1}, Y_{j-1}, ..., Y_1], latest of each
            for j, layer in enumerate(self.feedback_layers):
                outputs[j] = layer(_concat((outputs[:j] + outputs[j + 1 :])[::-1]))
        return torch.cat(outputs[::-1] + [x], 1)


class AlignmentDeformableConv(nn.Module):
    """ADC (§3.2, Eq. 4-5, Fig. 2): align the upsampled high-level features with a modulated deformable
    convolution whose offsets and modulation come from both feature maps, then fuse with the low-level
    features by conventional convolutions.

    Args:
        high_channels: channels of the high-level (CycleASPP, projected) features.
        low_channels: channels of the low-level (stride 4, projected) features.
        out_channels: channels of the context features ``Y_context`` (Eq. 5).
        deformable_groups: offset groups of the deformable convolution (``G``).

    ``forward(high, low)``: ``high`` (N, high_channels, h, w) at any coarser size, ``low`` (N,
    low_channels, H, W) → ``Y_context`` (N, out_channels, H, W). :meth:`align` gives the aligned
    high-level features alone.

    Raises:
        ValueError: (in forward) when the inputs do not have the declared channels or batch size.
    """

    kernel_size = 3

    def __init__(self, high_channels: int, low_channels: int, out_channels: int, deformable_groups: int = 1) -> None:
        super().__init__()
        positions = self.kernel_size**2
        self.high_channels, self.low_channels = high_channels, low_channels
        self.offset_channels = 2 * deformable_groups * positions
        self.offset_predictor = nn.Sequential(
            ConvNormAct(high_channels + low_channels, high_channels, 3),
            nn.Conv2d(high_channels, 3 * deformable_groups * positions, 3, padding=1),
        )
        nn.init.zeros_(self.offset_predictor[1].weight)  # DCNv2: start as a plain convolution
        nn.init.zeros_(self.offset_predictor[1].bias)
        self.deform = ModulatedDeformConv2d(high_channels, high_channels, self.kernel_size, padding=1,
                                            offset_groups=deformable_groups, bias=False)
        self.deform_bn = nn.BatchNorm2d(high_channels)
        self.relu = nn.ReLU(inplace=True)
        self.fuse = nn.Sequential(ConvNormAct(low_channels + high_channels, out_channels, 3),
                                  ConvNormAct(out_channels, out_channels, 3))

    def _check(self, high: torch.Tensor, low: torch.Tensor) -> None:
        if (high.dim() != 4 or low.dim() != 4 or high.shape[1] != self.high_channels
                or low.shape[1] != self.low_channels or high.shape[0] != low.shape[0]):
            raise ValueError(
                f"ADC expects high (N, {self.high_channels}, h, w) and low (N, {self.low_channels}, H, W), "
                f"got {tuple(high.shape)} and {tuple(low.shape)}"
            )

    def align(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """The aligned high-level features X̃_high (N, high_channels, H, W) at the size of ``low``."""
        self._check(high, low)
        high = upsample(high, low.shape[-2:])
        prediction = self.offset_predictor(torch.cat([low, high], 1))
        offset = prediction[:, : self.offset_channels]
        mask = torch.sigmoid(prediction[:, self.offset_channels :])
        return self.relu(self.deform_bn(self.deform(high, offset, mask)))

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([low, self.align(high, low)], 1))

    def reparameterize_(self) -> Changes:
        """Folds the deformable convolution's BatchNorm into it, in place (the Conv-BN-ReLU blocks fold themselves)."""
        return fold_batchnorm_pairs_(self, (("deform", "deform_bn"),))


class FCNHead(nn.Sequential):
    """The auxiliary FCN head (PSPNet's): 3x3 Conv-BN-ReLU to ``channels``, channel dropout, 1x1
    convolution to ``num_classes``. (N, in_channels, H, W) → (N, num_classes, H, W) logits."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__(ConvNormAct(in_channels, channels, 3), nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))


@dataclass
class CycleNetConfig:
    """Architecture of a CycleNet checkpoint (see the module docstring for each choice).

    ``depth`` 101 (the paper) or 50 and ``width`` (1.0: the paper; 0.125 for the bundled CPU variant) of the
    dilated ResNet; ``rates`` and ``feedback`` (K) of CycleASPP, whose layers have a 1x1 bottleneck of
    ``aspp_bottleneck`` channels and output ``aspp_growth`` channels each, with channel dropout
    ``aspp_dropout``; ``high_channels`` and ``low_channels``: the projections of the CycleASPP output and
    of the stride-4 features that enter ADC; ``decoder_channels``: ADC's fusion convolutions;
    ``deformable_groups``: offset groups of ADC's deformable convolution; ``aux_channels``: the auxiliary
    FCN head (training only). ``input_width`` x ``input_height``: the network input, multiples of 8.
    """

    input_width: int = 1024
    input_height: int = 512
    depth: int = 101
    width: float = 1.0
    rates: tuple[int, ...] = (3, 6, 12, 18, 24, 30)
    feedback: int = 1
    aspp_bottleneck: int = 1024
    aspp_growth: int = 128
    aspp_dropout: float = 0.1
    high_channels: int = 256
    low_channels: int = 48
    decoder_channels: int = 256
    deformable_groups: int = 1
    aux_channels: int = 256

    def __post_init__(self) -> None:
        self.rates = tuple(int(r) for r in self.rates)
        if self.depth not in RESNETS:
            raise ValueError(f"depth must be one of {', '.join(map(str, RESNETS))}, got {self.depth}")
        if not 0.0 <= self.aspp_dropout < 1.0:
            raise ValueError(f"aspp_dropout must be in [0, 1), got {self.aspp_dropout}")
        widths = ("aspp_bottleneck", "aspp_growth", "high_channels", "low_channels", "decoder_channels",
                  "deformable_groups", "aux_channels")
        bad = [name for name in widths if getattr(self, name) < 1]
        if bad:
            raise ValueError(f"{', '.join(bad)} must be positive")
        if self.high_channels % self.deformable_groups:
            raise ValueError(f"high_channels {self.high_channels} must be divisible by deformable_groups {self.deformable_groups}")


class CycleNetNetwork(nn.Module):
    """Dilated ResNet (``backbone``) → CycleASPP (``aspp``) → 1x1 projection (``high_project``); stride-4
    features → 1x1 projection (``low_project``); ADC (``adc``) → 1x1 ``classifier``; ``aux_head`` on
    ``layer3`` in training.

    ``forward(images)``: ``images`` (N, 3, H, W) ImageNet-normalised, H and W multiples of 8. Evaluation:
    (N, num_classes, H/4, W/4) class logits (channel i: ``CITYSCAPES.classes[i]``). Training: ``(logits,
    aux_logits)``, the latter (N, num_classes, H/8, W/8) from the auxiliary head.

    Raises:
        ValueError: on an input that is not (N, 3, H, W).
        RuntimeError: in training mode after :meth:`reparameterize_` removed the auxiliary head.
    """

    def __init__(self, config: CycleNetConfig, num_classes: int = len(CITYSCAPES)) -> None:
        super().__init__()
        c = config
        self.backbone = RESNETS[c.depth](width=c.width, replace_stride_with_dilation=(False, True, True))
        stages = self.backbone.stage_channels
        self.aspp = CycleASPP(stages["layer4"], c.rates, c.aspp_bottleneck, c.aspp_growth, c.feedback, c.aspp_dropout)
        self.high_project = ConvNormAct(self.aspp.out_channels, c.high_channels, 1)
        self.low_project = ConvNormAct(stages["layer1"], c.low_channels, 1)
        self.adc = AlignmentDeformableConv(c.high_channels, c.low_channels, c.decoder_channels, c.deformable_groups)
        self.classifier = nn.Conv2d(c.decoder_channels, num_classes, 1)
        self.aux_head: FCNHead | None = FCNHead(stages["layer3"], c.aux_channels, num_classes)

    def forward(self, images: torch.Tensor):
        stages = ("layer1", "layer3", "layer4") if self.training else ("layer1", "layer4")
        features = self.backbone.forward_features(images, stages)
        high = self.high_project(self.aspp(features["layer4"]))
        logits = self.classifier(self.adc(high, self.low_project(features["layer1"])))
        if not self.training:
            return logits
        if self.aux_head is None:
            raise RuntimeError("this CycleNet network was optimised for inference (no auxiliary head); train the plain network")
        return logits, self.aux_head(features["layer3"])

    def reparameterize_(self) -> Changes:
        """For inference, in place: drops the auxiliary head (training only; its keys leave the state dict).
        :func:`~panoptic_perception.nn.reparameterize.reparameterize` then folds every BatchNorm that follows
        a convolution (the ResNet's and the heads'); the outputs in eval mode are unchanged."""
        if self.aux_head is None:
            return Changes()
        self.aux_head = None
        return Changes({DROPPED_AUXILIARY_HEAD: 1})
