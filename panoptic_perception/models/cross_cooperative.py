"""Cross cooperative learning (paper 003): two DeepLabV3+ networks with different backbones that
exchange feature maps, trained together, their outputs ensembled.

Ikedo, Hotta, *Fusion of Different Features by Cross Cooperative Learning for Semantic Segmentation*
(VISAPP 2022).

§3.2 Details of network (:class:`CrossCooperativeNetwork`)
    Two DeepLabV3+ (Chen et al., ECCV 2018; :mod:`panoptic_perception.nn.deeplab`) at output stride 16
    (``output_stride``, see below):
    the *top* network on an aligned Xception-65 (:mod:`panoptic_perception.nn.xception`, timm's
    ``xception65`` names under ``top_backbone.``), the *bottom* network on a ResNet-101
    (:mod:`panoptic_perception.nn.resnet`, torchvision's names under ``bottom_backbone.``, layer4
    dilated: ``replace_stride_with_dilation=(False, False, True)``; low-level features = layer1).
    Each network predicts the classes; the loss is ``CE(top) + CE(bottom)`` (Eq. 1, see
    :mod:`panoptic_perception.training.recipes.cross_cooperative`).
§3.2-3.3 Cross cooperative connections (Fig. 2-4)
    At every layer of the ASPP and of the decoder each network also receives the other network's
    feature map of the same stage; in addition Connection 1 feeds both backbones' outputs to each ASPP
    and Connection 2 both ASPP outputs to each decoder. The exact graph (``own`` first, then what the
    other network sends; ``+`` is concatenation along channels, then the layer; channels at full size,
    ``C`` = 256 head channels, ``R`` = 48 reduced low-level channels):

    =========================  ============================================  =====================  ===========
    layer of network *n*       input                                         group                  channels
    =========================  ============================================  =====================  ===========
    ASPP branches (all five)   ``high_n`` + ``high_o``                       ``connection1``        2048 + 2048
    ASPP projection (1x1)      ``branches_n`` + ``branches_o`` (5C each)     ``layer_connections``  1280 + 1280
    low-level reduction (1x1)  ``low_n`` + ``low_o``                         ``layer_connections``  256 + 256
    decoder conv 1 (3x3)       ``up(aspp_n)``, ``reduced_n``                 (own)                  256 + 48
                               + ``up(aspp_o)``                              ``connection2``        + 256
                               + ``reduced_o``                               ``layer_connections``  + 48
    decoder conv 2 (3x3)       ``d1_n`` + ``d1_o``                           ``layer_connections``  256 + 256
    classifier (1x1)           ``d2_n`` + ``d2_o``                           ``layer_connections``  256 + 256
    =========================  ============================================  =====================  ===========

    ``high`` is the backbone output (stride 16), ``low`` the low-level features (stride 4), ``up`` the
    bilinear upsampling of the ASPP output to stride 4. Each group is switched separately
    (:data:`CONNECTION_MODES`): ``cross`` sends both ways (the paper); ``one_way`` only from the top
    to the bottom network (the earlier cooperative learning, §3.2 and §4.3: "we send the feature maps
    in top network to only bottom network"; the top network is then a plain DeepLabV3+); ``none``
    sends nothing. All three ``none`` is two independent networks ("w/o all path", Table 1); the
    ablation of §4.5 (Table 5) switches ``connection1`` and ``connection2``.
Fig. 5 Ensemble
    The two networks' outputs added after a softmax. The backend publishes the argmax of the top
    network's, the bottom network's or the ensemble's scores (``output``). Default ``ensemble``: the
    paper reports the cross network's top and bottom outputs separately (Table 1: 81.5 and 81.3 mIoU)
    and uses the ensemble as the baseline of independent networks, so it names no single published
    output; the ensemble uses both outputs, which the cross network computes anyway (each depends on
    the other network), and needs no choice between them.

Choices where the paper is silent (all in :class:`CrossCooperativeConfig`):

- **Fusion** is concatenation followed by the layer itself (its input width grows); no extra fusion
  layers. The paper says only that feature maps are "sent" to the other network; concatenation keeps
  both maps intact and lets each layer learn how to mix them. The "layers" of the
  ASPP are its projection (the five branches read the ASPP input, which is Connection 1); the "layers"
  of the decoder are its four convolutions, classifier included. The image-pooling branch reads the
  ASPP input like the others, so with Connection 1 it pools both backbones' outputs.
- **Input normalisation** per backbone, as their ImageNet weights expect: RGB in [-1, 1] for the
  Xception (TensorFlow / timm), ImageNet mean / std for the ResNet (torchvision). The network takes
  RGB in [0, 1] and normalises inside (constants, not in the state dict).
- DeepLabV3+ details (plain 3x3 convolutions in the ASPP and decoder, dropout 0.1 after the ASPP
  projection, bilinear upsampling) are those of :mod:`panoptic_perception.nn.deeplab`. The outputs
  are logits at the input resolution; the ensemble adds their softmax there, then the backend
  interpolates the scores to the source image and takes the argmax.
- ``output_stride`` 16 (the paper's, §4.2) or 8: DeepLabV3+'s denser setting (§4.1 of Chen et al.:
  Xception's exit flow and ResNet's layer3 dilated too, ASPP rates doubled to 12 / 24 / 36), which that
  paper uses at evaluation with weights trained at 16. The state dict is the same at both strides. The
  bundled small pair, trained at 16 only, loses at 8 (measured: mIoU 0.789 -> 0.783 on 50 held-out
  synthetic scenes; 0.762 -> 0.751 with the stage-6 weights), so the default is 16; for full-size
  weights it is worth measuring.
- Default input 2048x1024: the paper trains on 768x768 crops of full-resolution Cityscapes images,
  so it infers at full resolution. ``top_width`` / ``bottom_width`` narrow the backbones and
  ``head_channels`` / ``reduced_channels`` the heads for CPU variants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import nn

from ..core.labels import CITYSCAPES
from ..core.preprocess import IMAGENET_MEAN, IMAGENET_STD
from ..nn.deeplab import ASPP_RATES_OS16, DeepLabV3PlusHead, ExtraInputs
from ..nn.layers import upsample
from ..nn.resnet import resnet101
from ..nn.xception import xception65

#: The switch of each group of connections: nothing sent, top → bottom only, both ways.
CONNECTION_MODES = ("none", "one_way", "cross")
OUTPUTS = ("ensemble", "top", "bottom")
TOP, BOTTOM = 0, 1
#: timm / TensorFlow Xception weights expect RGB in [-1, 1].
XCEPTION_MEAN = XCEPTION_STD = (0.5, 0.5, 0.5)


def receives(mode: str, network: int) -> bool:
    """Whether ``network`` (:data:`TOP` or :data:`BOTTOM`) gets the other network's maps under ``mode``."""
    return mode == "cross" or (mode == "one_way" and network == BOTTOM)


@dataclass
class CrossCooperativeConfig:
    """Architecture and output options of a cross cooperative checkpoint.

    ``top_width`` / ``bottom_width``: channel multipliers of the Xception-65 and the ResNet-101 (1.0:
    the paper's; ``64 * bottom_width`` must be whole). ``head_channels`` (ASPP and decoder, 256) and
    ``reduced_channels`` (low-level reduction, 48): DeepLabV3+'s. ``layer_connections`` (every ASPP and
    decoder layer), ``connection1`` (backbone outputs into the ASPPs), ``connection2`` (ASPP outputs into
    the decoders): each ``none``, ``one_way`` (top → bottom) or ``cross``. ``output``: ``ensemble``,
    ``top`` or ``bottom``, what the backend publishes. ``output_stride``: 16 or 8 (see the module docstring).
    """

    input_width: int = 2048
    input_height: int = 1024
    top_width: float = 1.0
    bottom_width: float = 1.0
    head_channels: int = 256
    reduced_channels: int = 48
    layer_connections: str = "cross"
    connection1: str = "cross"
    connection2: str = "cross"
    output: str = "ensemble"
    output_stride: int = 16

    def __post_init__(self) -> None:
        if self.output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {self.output_stride}")
        for name in ("layer_connections", "connection1", "connection2"):
            if getattr(self, name) not in CONNECTION_MODES:
                raise ValueError(f"{name} must be one of {', '.join(CONNECTION_MODES)}, got {getattr(self, name)!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {self.output!r}")
        if self.head_channels < 1 or self.reduced_channels < 1:
            raise ValueError("head_channels and reduced_channels must be positive")


class CooperativeLogits(NamedTuple):
    """Class logits of both networks, each (N, num_classes, H, W) at the input resolution."""

    top: torch.Tensor
    bottom: torch.Tensor


class CrossCooperativeNetwork(nn.Module):
    """The two DeepLabV3+ networks and their connections (see the module docstring for the graph).

    ``forward(images)``: (N, 3, H, W) float RGB in [0, 1] → :class:`CooperativeLogits`. Any H and W work
    (both backbones round every stride up alike, so the exchanged maps always have equal sizes); the
    backend uses multiples of 16, the output stride.
    Parameters: ``top_backbone.*`` (timm ``xception65`` names), ``bottom_backbone.*`` (torchvision
    ``resnet101`` names), ``top_head.*`` and ``bottom_head.*`` (:class:`DeepLabV3PlusHead`).
    """

    def __init__(self, config: CrossCooperativeConfig, num_classes: int = len(CITYSCAPES)) -> None:
        super().__init__()
        self.config = config
        stride = config.output_stride
        self.top_backbone = xception65(width=config.top_width, output_stride=stride)
        self.bottom_backbone = resnet101(width=config.bottom_width,
                                         replace_stride_with_dilation=(False, stride == 8, True))
        rates = tuple(rate * 16 // stride for rate in ASPP_RATES_OS16)
        high = (self.top_backbone.stage_channels["out"], self.bottom_backbone.stage_channels["layer4"])
        low = (self.top_backbone.stage_channels["low_level"], self.bottom_backbone.stage_channels["layer1"])
        c, r = config.head_channels, config.reduced_channels
        heads = []
        for n in (TOP, BOTTOM):
            o = 1 - n
            layers, backbones, aspps = (receives(mode, n) for mode in
                                        (config.layer_connections, config.connection1, config.connection2))
            extra = ExtraInputs(
                aspp=high[o] if backbones else 0,
                aspp_projection=c * (len(ASPP_RATES_OS16) + 2) if layers else 0,  # the five branches
                low_level=low[o] if layers else 0,
                decoder_conv1=(c if aspps else 0) + (r if layers else 0),
                decoder_conv2=c if layers else 0,
                classifier=c if layers else 0,
            )
            heads.append(DeepLabV3PlusHead(high[n], low[n], num_classes, channels=c, reduced_channels=r, rates=rates,
                                           extra=extra))
        self.top_head, self.bottom_head = heads
        for name, values in (("top_mean", XCEPTION_MEAN), ("top_std", XCEPTION_STD),
                             ("bottom_mean", IMAGENET_MEAN), ("bottom_std", IMAGENET_STD)):
            self.register_buffer(name, torch.tensor(values).view(1, 3, 1, 1), persistent=False)

    @staticmethod
    def _sent(maps: Sequence[torch.Tensor], network: int, mode: str) -> torch.Tensor | None:
        """The other network's map if ``mode`` sends it to ``network``."""
        return maps[1 - network] if receives(mode, network) else None

    def forward(self, images: torch.Tensor) -> CooperativeLogits:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected an image batch of shape (N, 3, H, W), got {tuple(images.shape)}")
        size = images.shape[-2:]
        config, sent = self.config, self._sent
        top = self.top_backbone.forward_features((images - self.top_mean) / self.top_std)
        bottom = self.bottom_backbone.forward_features((images - self.bottom_mean) / self.bottom_std,
                                                       ("layer1", "layer4"))
        high, low = (top["out"], bottom["layer4"]), (top["low_level"], bottom["layer1"])
        heads = (self.top_head, self.bottom_head)
        layers = config.layer_connections

        branches = [head.aspp_branches(high[n], sent(high, n, config.connection1)) for n, head in enumerate(heads)]
        aspp = [head.aspp_output(branches[n], sent(branches, n, layers)) for n, head in enumerate(heads)]
        reduced = [head.reduce_low_level(low[n], sent(low, n, layers)) for n, head in enumerate(heads)]
        decoded = []
        for n, head in enumerate(heads):
            extra = [upsample(aspp[1 - n], reduced[n].shape[2:])] if receives(config.connection2, n) else []
            extra += [reduced[1 - n]] if receives(layers, n) else []
            decoded.append(head.decoder_conv1(aspp[n], reduced[n], torch.cat(extra, 1) if extra else None))
        decoded = [head.decoder_conv2(decoded[n], sent(decoded, n, layers)) for n, head in enumerate(heads)]
        logits = [head.classify(decoded[n], size, sent(decoded, n, layers)) for n, head in enumerate(heads)]
        return CooperativeLogits(*logits)


def ensemble_scores(logits: CooperativeLogits) -> torch.Tensor:
    """Fig. 5: the sum of both networks' softmax probabilities, (N, C, H, W) in [0, 2]."""
    return logits.top.softmax(1) + logits.bottom.softmax(1)
