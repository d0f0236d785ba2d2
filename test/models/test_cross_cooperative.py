"""Cross cooperative learning: the backbones' parameter layouts, the documented connection graph, the
output strides and the re-parameterisation."""

from __future__ import annotations

import pytest
import torch
from oracles import timm_or_skip, torchvision_or_skip
from support import assert_reparameterizing_twice_equals_once
from support import small_cross_cooperative as small_network
from torch import nn

from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.models.cross_cooperative import CrossCooperativeConfig, CrossCooperativeNetwork
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS

GROUPS = ("layer_connections", "connection1", "connection2")
NONE = dict.fromkeys(GROUPS, "none")


def backbone_keys(network: nn.Module, prefix: str) -> dict[str, tuple[int, ...]]:
    return {k[len(prefix):]: tuple(v.shape) for k, v in network.state_dict().items() if k.startswith(prefix)}


def test_full_size_backbones_keep_timm_and_torchvision_layouts():
    timm, tv = timm_or_skip(), torchvision_or_skip()
    with torch.device("meta"):
        network = CrossCooperativeNetwork(CrossCooperativeConfig())
        xception, resnet = timm.create_model("xception65", pretrained=False), tv.models.resnet101()
    assert backbone_keys(network, "top_backbone.") == {
        k: tuple(v.shape) for k, v in xception.state_dict().items() if not k.startswith("head.")}
    assert backbone_keys(network, "bottom_backbone.") == {
        k: tuple(v.shape) for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    parts = ("top_backbone.", "bottom_backbone.", "top_head.", "bottom_head.")
    assert all(k.startswith(parts) for k in network.state_dict())
    assert network.bottom_backbone.output_stride == network.top_backbone.output_stride == 16


def layer_inputs(head) -> tuple[int, ...]:
    """Input channels of the ASPP branches, ASPP projection, low-level reduction, decoder convs, classifier."""
    return (head.aspp.branches[0].conv.in_channels, head.aspp.project.conv.in_channels, head.low_level.conv.in_channels,
            head.conv1.conv.in_channels, head.conv2.conv.in_channels, head.classifier.in_channels)


#: The module docstring's table at full size: own inputs, and what each group adds.
OWN = (2048, 1280, 256, 256 + 48, 256, 256)
ADDED = {"connection1": (2048, 0, 0, 0, 0, 0), "layer_connections": (0, 1280, 256, 48, 256, 256),
         "connection2": (0, 0, 0, 256, 0, 0)}


@pytest.mark.parametrize(("group", "mode"),
                         [("connection1", "none")] + [(g, m) for g in GROUPS for m in ("one_way", "cross")])
def test_full_size_layer_widths_follow_the_documented_table(group, mode):
    with torch.device("meta"):
        network = CrossCooperativeNetwork(CrossCooperativeConfig(**{**NONE, group: mode}))
    with_group = tuple(a + b for a, b in zip(OWN, ADDED[group]))
    assert layer_inputs(network.top_head) == (with_group if mode == "cross" else OWN), "top receives only with cross"
    assert layer_inputs(network.bottom_head) == (OWN if mode == "none" else with_group)
    assert network.top_head.aspp.pooling.project.conv.in_channels == layer_inputs(network.top_head)[0]


def outputs_with_noise(network: CrossCooperativeNetwork, x: torch.Tensor, backbone: str | None):
    """Both networks' logits with noise added to every feature map ``backbone`` (``top_backbone`` or
    ``bottom_backbone``) hands to the heads: a change of that network's input, nothing else."""
    if backbone is None:
        with torch.no_grad():
            return network(x)
    part = getattr(network, backbone)
    features = part.forward_features
    generator = torch.Generator().manual_seed(7)
    part.forward_features = lambda *args: {name: f + torch.randn(f.shape, generator=generator) * f.std()
                                           for name, f in features(*args).items()}
    try:
        with torch.no_grad():
            return network(x)
    finally:
        del part.forward_features  # back to the class's method


CASES = [("all", "none")] + [(group, mode) for group in GROUPS for mode in ("one_way", "cross")] + [("all", "cross")]


@pytest.mark.parametrize(("group", "mode"), CASES)
def test_switches_produce_the_documented_graph(group, mode):
    options = dict.fromkeys(GROUPS, mode) if group == "all" else {**NONE, group: mode}
    network = small_network(**options)
    x = torch.rand(1, 3, 64, 96)
    base = outputs_with_noise(network, x, None)
    top_changed, bottom_changed = (outputs_with_noise(network, x, part) for part in ("top_backbone", "bottom_backbone"))
    assert not torch.allclose(top_changed.top, base.top) and not torch.allclose(bottom_changed.bottom, base.bottom)
    top_reaches_bottom = not torch.equal(top_changed.bottom, base.bottom)
    bottom_reaches_top = not torch.equal(bottom_changed.top, base.top)
    assert top_reaches_bottom == (mode != "none"), "one-way and cross send from the top to the bottom network"
    assert bottom_reaches_top == (mode == "cross"), "only cross sends from the bottom to the top network"


def test_with_cross_connections_each_loss_trains_both_networks():
    network = small_network().train()
    torch.manual_seed(0)
    network(torch.rand(2, 3, 64, 64)).top.square().mean().backward()
    assert network.bottom_backbone.conv1.weight.grad.abs().sum() > 0
    network = small_network(**dict.fromkeys(GROUPS, "one_way")).train()
    network(torch.rand(2, 3, 64, 64)).top.square().mean().backward()
    assert network.bottom_backbone.conv1.weight.grad is None, "one-way: the top loss never reaches the bottom network"


def test_output_stride_8_dilates_both_backbones_and_doubles_the_aspp_rates_on_the_same_weights():
    os16, os8 = small_network(seed=4), small_network(seed=4, output_stride=8)
    assert backbone_keys(os16, "") == backbone_keys(os8, "")  # one checkpoint serves both strides
    os8.load_state_dict(os16.state_dict())
    images = torch.rand(1, 3, 64, 96)
    assert os16.top_backbone.forward_features(images)["out"].shape[-2:] == (4, 6)
    assert os8.top_backbone.forward_features(images)["out"].shape[-2:] == (8, 12)
    assert os8.bottom_backbone.forward_features(images, ("layer4",))["layer4"].shape[-2:] == (8, 12)
    rates = [branch.conv.dilation[0] for branch in os8.top_head.aspp.branches[1:4]]
    assert rates == [12, 24, 36]
    os8.eval()
    with torch.no_grad():
        assert os8(images).top.shape == (1, len(CITYSCAPES), 64, 96)


def test_invalid_options_are_named():
    with pytest.raises(ValueError, match="output_stride must be 8 or 16"):
        CrossCooperativeConfig(output_stride=32)
    with pytest.raises(ValueError, match="output must be one of"):
        CrossCooperativeConfig(output="mean")
    with pytest.raises(ValueError, match="connection2 must be one of"):
        CrossCooperativeConfig(connection2="both")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        small_network()(torch.rand(1, 1, 32, 32))


def test_reparameterizing_folds_every_batchnorm_depthwise_ones_included_and_twice_equals_once():
    network = small_network(seed=5, connection2="one_way")
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in network.modules())
    assert assert_reparameterizing_twice_equals_once(network, torch.rand(1, 3, 64, 96)) == {FOLDED_BATCHNORMS: batchnorms}
