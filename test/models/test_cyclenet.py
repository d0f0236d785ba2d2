"""CycleNet: the network's layout, CycleASPP (§3.1), ADC (§3.2), the auxiliary head and the re-parameterisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from oracles import torchvision_or_skip
from support import assert_reparameterizing_twice_equals_once, randomize_norms_, small_cyclenet
from torch import nn

from panoptic_perception.models.cyclenet import (
    DROPPED_AUXILIARY_HEAD,
    AlignmentDeformableConv,
    CycleASPP,
    CycleNetConfig,
    CycleNetNetwork,
)
from panoptic_perception.nn import count_parameters
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS, reparameterize


# -- network layout ---------------------------------------------------------------------------------------
def test_backbone_names_equal_torchvisions_resnet101_and_full_size_parameter_count():
    tv = torchvision_or_skip()
    with torch.device("meta"):
        network = CycleNetNetwork(CycleNetConfig())
        reference = tv.models.resnet101(replace_stride_with_dilation=[False, True, True])
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in network.backbone.state_dict().items()} == expected
    assert count_parameters(network.backbone) == 44_549_160 - (2048 * 1000 + 1000)  # torchvision's, without fc

    # The documented widths: Part I layers 1x1 (2048 + 128 j -> 1024) + 3x3 (1024 -> 128), Part II 3x3
    # (5 * 128 -> 128), each convolution with a BatchNorm (2 parameters per channel).
    part1 = sum((2048 + 128 * j) * 1024 + 2 * 1024 + 1024 * 9 * 128 + 2 * 128 for j in range(6))
    part2 = 6 * (5 * 128 * 9 * 128 + 2 * 128)
    assert count_parameters(network.aspp) == part1 + part2
    heads = (
        (2048 + 6 * 128) * 256 + 512  # high_project
        + 256 * 48 + 96  # low_project
        + (304 * 9 * 256 + 512) + (256 * 9 * 27 + 27)  # offset / modulation predictor
        + 256 * 256 * 9 + 512  # deformable convolution and its BatchNorm
        + (304 * 9 * 256 + 512) + (256 * 9 * 256 + 512)  # f of Eq. 5
        + 256 * 19 + 19  # classifier
    )
    aux = 1024 * 9 * 256 + 512 + 256 * 19 + 19
    total = count_parameters(network)
    assert total == count_parameters(network.backbone) + part1 + part2 + heads + aux
    print(f"\ncyclenet full size: {total:,} parameters ({total - aux:,} without the auxiliary head)")


def test_output_stride_is_8_with_rates_2_and_4_and_logits_come_at_stride_4():
    network = small_cyclenet()
    backbone = network.backbone
    assert backbone.output_stride == 8 and backbone.stage_strides["layer1"] == 4
    assert backbone.layer3[1].conv2.dilation == (2, 2) and backbone.layer4[1].conv2.dilation == (4, 4)
    features = backbone.forward_features(torch.randn(1, 3, 72, 128))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(18, 32), (9, 16), (9, 16), (9, 16)]
    with torch.no_grad():
        assert network(torch.randn(2, 3, 72, 128)).shape == (2, 19, 18, 32)


# -- CycleASPP ------------------------------------------------------------------------------------------
def dense_aspp(x: torch.Tensor, layers) -> torch.Tensor:
    """DenseASPP written directly: each layer reads [its predecessors' outputs (newest first), input] and
    the result is every output and the input, newest first. ``layers``: (conv1x1, bn, conv3x3, bn) each."""
    features = x
    for reduce, reduce_bn, atrous, atrous_bn in layers:
        y = F.relu(atrous_bn(atrous(F.relu(reduce_bn(reduce(features))))))
        features = torch.cat([y, features], 1)
    return features


def test_cycle_aspp_without_feedback_is_dense_aspp():
    torch.manual_seed(1)
    rates, c_in, growth, bottleneck = (1, 2, 4), 6, 3, 5
    layers = []
    for j, rate in enumerate(rates):
        layers.append((nn.Conv2d(c_in + j * growth, bottleneck, 1, bias=False), nn.BatchNorm2d(bottleneck),
                       nn.Conv2d(bottleneck, growth, 3, padding=rate, dilation=rate, bias=False), nn.BatchNorm2d(growth)))
    for layer in layers:
        randomize_norms_(nn.Sequential(*layer), seed=len(layers))
    aspp = CycleASPP(c_in, rates, bottleneck, growth, feedback=0).eval()
    assert len(aspp.feedback_layers) == 0 and aspp.out_channels == c_in + 3 * growth
    cycle = CycleASPP(c_in, rates, bottleneck, growth, feedback=1).eval()
    with torch.no_grad():
        for model in (aspp, cycle):
            for ours, (reduce, reduce_bn, atrous, atrous_bn) in zip(model.forward_layers, layers):
                ours.reduce.conv.weight.copy_(reduce.weight)
                ours.reduce.bn.load_state_dict(reduce_bn.state_dict())
                ours.atrous.conv.weight.copy_(atrous.weight)
                ours.atrous.bn.load_state_dict(atrous_bn.state_dict())
        x = torch.randn(2, c_in, 11, 13)
        expected = dense_aspp(x, layers)
        assert torch.allclose(aspp(x), expected, atol=1e-5)
        fed_back = cycle(x)
    assert fed_back.shape == expected.shape
    assert torch.equal(fed_back[:, -c_in:], x), "the input is the last part of the output"
    assert not torch.allclose(fed_back[:, : 3 * growth], expected[:, : 3 * growth], atol=1e-3), "Part II changes Y_1..Y_J"


def identity_norms_(module: nn.Module) -> None:
    for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.eps = 0.0  # eval mode, mean 0, variance 1, weight 1, bias 0: exactly the identity


def centre_tap(*weights: float) -> torch.Tensor:
    """(1, len(weights), 3, 3) kernel with ``weights`` at the centre: a 1x1 convolution at any dilation."""
    kernel = torch.zeros(1, len(weights), 3, 3)
    kernel[0, :, 1, 1] = torch.tensor(weights)
    return kernel


@pytest.mark.parametrize("feedback, expected", [
    # Part I: Y1 = x, Y2 = Y1 + x = 2x, Y3 = Y2 + Y1 + x = 4x (1x1 bottlenecks of ones, centre taps 1).
    # Part II, each layer reads [later layers, earlier layers], newest index first, with weights (1, 10):
    #   Y1 = 1 * Y3 + 10 * Y2 = 4 + 20 = 24;  Y2 = 1 * Y3 + 10 * Y1 = 4 + 240 = 244 (Y1 of this pass);
    #   Y3 = 1 * Y2 + 10 * Y1 = 244 + 240 = 484.
    (1, (484, 244, 24, 1)),
    # A second pass starts from the first pass's outputs, with the same (shared) weights:
    #   Y1 = 484 + 10 * 244 = 2924;  Y2 = 484 + 10 * 2924 = 29724;  Y3 = 29724 + 10 * 2924 = 58964.
    (2, (58964, 29724, 2924, 1)),
])
def test_feedback_passes_read_the_latest_output_of_every_other_layer(feedback, expected):
    aspp = CycleASPP(1, rates=(1, 2, 3), bottleneck_channels=1, growth_channels=1, feedback=feedback, dropout=0.0)
    aspp.eval()
    identity_norms_(aspp)
    with torch.no_grad():
        for layer in aspp.forward_layers:
            layer.reduce.conv.weight.fill_(1.0)
            layer.atrous.conv.weight.copy_(centre_tap(1.0))
        for layer in aspp.feedback_layers:
            layer.atrous.conv.weight.copy_(centre_tap(1.0, 10.0))
        x = torch.rand(1, 1, 4, 5) + 0.5
        out = aspp(x)
    assert out.shape == (1, 4, 4, 5)
    for channel, factor in enumerate(expected):  # [Y3, Y2, Y1, x]
        assert torch.allclose(out[:, channel], factor * x[:, 0], rtol=1e-6), (channel, factor)


def test_cycle_aspp_rejects_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="rates"):
        CycleASPP(8, rates=())
    with pytest.raises(ValueError, match="feedback"):
        CycleASPP(8, rates=(3,), feedback=1)
    with pytest.raises(ValueError, match="feedback"):
        CycleASPP(8, rates=(3, 6), feedback=-1)
    with pytest.raises(ValueError, match=r"\(N, 8, H, W\).*\(1, 4, 5, 5\)"):
        CycleASPP(8, rates=(3, 6), bottleneck_channels=4, growth_channels=2)(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="depth"):
        CycleNetConfig(depth=34)
    with pytest.raises(ValueError, match="deformable_groups"):
        CycleNetConfig(high_channels=10, deformable_groups=4)


# -- ADC ---------------------------------------------------------------------------------------------------
def capture_deformable_convolution(adc: AlignmentDeformableConv, high: torch.Tensor, low: torch.Tensor):
    """(input, offset, mask, output) of ADC's deformable convolution in one forward pass."""
    seen = {}
    hook = adc.deform.register_forward_hook(lambda module, inputs, output: seen.update(inputs=inputs, output=output))
    with torch.no_grad():
        context = adc(high, low)
    hook.remove()
    return (*seen["inputs"], seen["output"], context)


def test_adc_shapes_and_zero_initialised_offsets_make_a_plain_convolution():
    torch.manual_seed(2)
    adc = randomize_norms_(AlignmentDeformableConv(high_channels=8, low_channels=4, out_channels=6))
    high, low = torch.randn(2, 8, 5, 7), torch.randn(2, 4, 10, 14)
    x, offset, mask, aligned, context = capture_deformable_convolution(adc, high, low)
    assert context.shape == (2, 6, 10, 14) and adc.align(high, low).shape == (2, 8, 10, 14)
    assert torch.equal(x, F.interpolate(high, size=(10, 14), mode="bilinear", align_corners=False))
    assert offset.shape == (2, 18, 10, 14) and mask.shape == (2, 9, 10, 14)
    # DCNv2's initialisation: zero offsets, modulation sigmoid(0) = 0.5.
    assert torch.equal(offset, torch.zeros_like(offset)) and torch.equal(mask, torch.full_like(mask, 0.5))
    plain = F.conv2d(x, adc.deform.weight, padding=1)
    assert torch.allclose(aligned, 0.5 * plain, atol=1e-5)

    with torch.no_grad():  # unit modulation: the deformable convolution is the plain convolution
        adc.offset_predictor[1].bias[18:] = 40.0
    x, offset, mask, aligned, _ = capture_deformable_convolution(adc, high, low)
    assert torch.equal(mask, torch.ones_like(mask))
    assert torch.allclose(aligned, plain, atol=1e-5)

    with torch.no_grad():  # offsets predicted from the features move the samples
        adc.offset_predictor[1].weight.normal_(0, 0.1)
    _, offset, _, aligned, _ = capture_deformable_convolution(adc, high, low)
    assert offset.abs().max() > 0.1 and not torch.allclose(aligned, plain, atol=1e-3)


def test_adc_rejects_features_of_the_wrong_width():
    adc = AlignmentDeformableConv(8, 4, 6)
    with pytest.raises(ValueError, match=r"high \(N, 8, h, w\).*\(2, 5, 5, 7\)"):
        adc(torch.randn(2, 5, 5, 7), torch.randn(2, 4, 10, 14))


# -- auxiliary head ------------------------------------------------------------------------------------------
def test_auxiliary_head_runs_only_in_training_and_leaves_the_fast_network():
    network = small_cyclenet()
    calls = []
    network.aux_head.register_forward_hook(lambda *args: calls.append(1))
    images = torch.randn(2, 3, 72, 128)
    with torch.no_grad():
        logits = network.eval()(images)
        assert isinstance(logits, torch.Tensor) and calls == []
        logits, aux = network.train()(images)
    assert calls == [1] and logits.shape == (2, 19, 18, 32) and aux.shape == (2, 19, 9, 16)
    fast = reparameterize(network).network
    assert fast.aux_head is None and not any(k.startswith("aux_head.") for k in fast.state_dict())
    with pytest.raises(RuntimeError, match="auxiliary head"):
        fast.train()(images)


def test_reparameterizing_folds_every_batchnorm_drops_the_auxiliary_head_and_twice_equals_once():
    network = small_cyclenet(seed=4)
    aux = sum(isinstance(m, nn.BatchNorm2d) for m in network.aux_head.modules())
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in network.modules()) - aux
    changes = assert_reparameterizing_twice_equals_once(network, torch.rand(2, 3, 72, 128))
    assert changes == {DROPPED_AUXILIARY_HEAD: 1, FOLDED_BATCHNORMS: batchnorms}
