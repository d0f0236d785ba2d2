"""cross_cooperative: the backbones' parameter layouts, the documented connection graph, the outputs,
the fast path and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from oracles import timm_or_skip, torchvision_or_skip
from support import randomize_norms_
from torch import nn

import panoptic_perception.backends.cross_cooperative  # noqa: F401  (registers the backend)
from panoptic_perception import create_backend
from panoptic_perception.backends import save_checkpoint
from panoptic_perception.core.labels import CITYSCAPES
from panoptic_perception.core.types import Capability
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.models.cross_cooperative import (
    CrossCooperativeConfig,
    CrossCooperativeNetwork,
    ensemble_scores,
)

#: A narrow variant for functional tests.
SMALL = dict(top_width=0.125, bottom_width=0.125, head_channels=16, reduced_channels=8, input_width=96, input_height=64)
GROUPS = ("layer_connections", "connection1", "connection2")
NONE = dict.fromkeys(GROUPS, "none")


def small_network(seed: int = 0, **options) -> CrossCooperativeNetwork:
    torch.manual_seed(seed)
    return randomize_norms_(CrossCooperativeNetwork(CrossCooperativeConfig(**{**SMALL, **options})), seed)


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


def test_backend_produces_cityscapes_label_ids_at_the_input_resolution():
    torch.manual_seed(0)
    backend = create_backend("cross_cooperative", allow_random_weights=True, fast=False, **SMALL)
    assert backend.capabilities == frozenset({Capability.SEMANTIC}) and backend.label_map is CITYSCAPES
    assert backend.input_size == (96, 64) and backend.config.output == "ensemble"
    result = backend(generate_scene(1, 150, 100).image)
    assert result.semantic.shape == (100, 150) and result.semantic.dtype == np.uint8
    assert set(np.unique(result.semantic).tolist()) <= set(CITYSCAPES.ids.tolist())
    assert result.panoptic is None and result.detections is None and result.drivable_mask is None


@pytest.mark.parametrize("output", ["top", "bottom", "ensemble"])
def test_output_option_selects_a_network_or_the_softmax_ensemble(output):
    network = small_network(seed=3)
    backend = create_backend("cross_cooperative", network=network, fast=False, **SMALL, output=output)
    batch = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        scores, logits = backend.finish(backend.forward(batch), batch), network(batch)
    expected = {"top": logits.top, "bottom": logits.bottom,
                "ensemble": logits.top.softmax(1) + logits.bottom.softmax(1)}[output]
    torch.testing.assert_close(scores, expected)
    if output == "ensemble":
        torch.testing.assert_close(scores.sum(1), torch.full((2, 64, 96), 2.0))
        torch.testing.assert_close(ensemble_scores(logits), expected)


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


def test_fast_path_folds_every_batchnorm_and_the_checkpoint_round_trip_is_exact(tmp_path):
    config = {**SMALL, "connection2": "one_way", "output": "top"}
    network = small_network(seed=5, connection2="one_way")
    path = save_checkpoint(tmp_path / "small.pth", "cross_cooperative", network.state_dict(), config)
    fast = create_backend("cross_cooperative", str(path))
    plain = create_backend("cross_cooperative", str(path), fast=False)
    assert plain.config == CrossCooperativeConfig(**config)
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in plain.network.modules())
    assert batchnorms > 200 and not any(isinstance(m, nn.BatchNorm2d) for m in fast.network.modules())
    depthwise = fast.network.top_backbone.blocks[5].stack["conv1"].conv_dw
    assert depthwise.groups == depthwise.in_channels and depthwise.bias is not None, "depthwise BatchNorms folded"
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        original, unfolded, folded = network(x), plain.network(x), fast.network(x)
    for name in ("top", "bottom"):
        assert torch.equal(getattr(unfolded, name), getattr(original, name)), "the checkpoint restores the network"
        expected = getattr(unfolded, name)
        torch.testing.assert_close(getattr(folded, name), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    image = generate_scene(4, 96, 64).image
    in_memory = create_backend("cross_cooperative", network=network, fast=False, **config)
    assert np.array_equal(plain(image).semantic, in_memory(image).semantic)
    assert (fast(image).semantic == plain(image).semantic).mean() > 0.99
