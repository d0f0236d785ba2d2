from __future__ import annotations


import pytest
import torch
from oracles import timm_or_skip, torchvision_or_skip
from torch import nn

from panoptic_perception.nn import count_parameters
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS, reparameterize
from panoptic_perception.nn.resnet import FrozenBatchNorm2d, ResNet, resnet50, resnet101
from support import randomize_norms_

PARAMETERS = {"resnet50": 25_557_032, "resnet101": 44_549_160}  # torchvision's model cards, with fc
OURS = {"resnet50": resnet50, "resnet101": resnet101}


def stage_outputs(reference: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """layer1..layer4 outputs of a torchvision/timm ResNet, captured with forward hooks."""
    outputs = {}
    hooks = [getattr(reference, name).register_forward_hook(lambda m, i, o, name=name: outputs.update({name: o}))
             for name in ("layer1", "layer2", "layer3", "layer4")]
    with torch.no_grad():
        logits = reference(x)
    for hook in hooks:
        hook.remove()
    return {**outputs, "logits": logits}


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    """Equal up to ``tolerance`` relative to the largest magnitude (random deep networks reach ~1e2)."""
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())


def shapes(state_dict) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state_dict.items()}


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_state_dict_and_parameter_count_match_torchvision(name):
    tv = torchvision_or_skip()
    with torch.device("meta"):  # layouts only: no memory, no initialisation cost
        ours, reference = OURS[name](num_classes=1000), getattr(tv.models, name)()
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert shapes(ours.state_dict()) == shapes(reference.state_dict())
    assert count_parameters(ours) == count_parameters(reference) == PARAMETERS[name]


def test_state_dict_matches_timm_resnet101():
    timm = timm_or_skip()
    with torch.device("meta"):
        ours, reference = resnet101(num_classes=1000), timm.create_model("resnet101", pretrained=False)
    assert shapes(ours.state_dict()) == shapes(reference.state_dict())
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)


def test_resnet50_outputs_equal_torchvision_with_copied_weights():
    tv = torchvision_or_skip()
    torch.manual_seed(0)
    reference = randomize_norms_(tv.models.resnet50())
    with torch.device("meta"):
        ours = resnet50(num_classes=1000)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(1, 3, 70, 90)
    expected = stage_outputs(reference, x)
    with torch.no_grad():
        features, logits = ours.forward_features(x), ours(x)
    assert list(features) == ["layer1", "layer2", "layer3", "layer4"]
    for name, value in features.items():
        assert_close_scaled(value, expected[name])
    assert_close_scaled(logits, expected["logits"])


@pytest.mark.parametrize("dilation", [(False, False, True), (False, True, True)])
def test_dilated_resnet_equals_torchvision_with_the_same_flags(dilation):
    tv = torchvision_or_skip()
    torch.manual_seed(1)
    # Two blocks in layer3/layer4 so that the first block's previous dilation and the next one's differ.
    reference = tv.models.resnet.ResNet(tv.models.resnet.Bottleneck, [1, 1, 2, 2],
                                        replace_stride_with_dilation=list(dilation), num_classes=10)
    randomize_norms_(reference)
    with torch.device("meta"):
        ours = ResNet((1, 1, 2, 2), replace_stride_with_dilation=dilation, num_classes=10)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(1, 3, 40, 56)
    expected = stage_outputs(reference, x)
    with torch.no_grad():
        features = ours.forward_features(x)
    for name, value in features.items():
        assert_close_scaled(value, expected[name])
    assert features["layer4"].shape[-2:] == (-(-40 // ours.output_stride), -(-56 // ours.output_stride))  # ceil


def test_frozen_batchnorm_equals_torchvision_and_ignores_num_batches_tracked():
    torchvision_or_skip()
    from torchvision.ops.misc import FrozenBatchNorm2d as Reference

    source = randomize_norms_(nn.BatchNorm2d(6))  # a state dict with num_batches_tracked
    ours, reference = FrozenBatchNorm2d(6), Reference(6)
    assert ours.eps == reference.eps == 1e-5
    ours.load_state_dict(source.state_dict(), strict=True)
    reference.load_state_dict(source.state_dict(), strict=True)
    assert list(ours.parameters()) == [] and sorted(ours.state_dict()) == sorted(reference.state_dict())
    x = torch.randn(2, 6, 5, 7)
    ours.train()  # frozen: training mode must not use batch statistics
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours(x), source(x), rtol=1e-5, atol=1e-5)


def test_narrow_variant_channels_strides_and_classifier():
    model = ResNet((1, 1, 1, 1), width=0.25, num_classes=5)
    assert model.conv1.out_channels == 16
    assert model.stage_channels == {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
    assert model.fc.in_features == 512
    x = torch.randn(2, 3, 64, 96)
    features = model.forward_features(x)
    for name, value in features.items():
        stride = model.stage_strides[name]
        assert value.shape == (2, model.stage_channels[name], 64 // stride, 96 // stride)
    assert model(x).shape == (2, 5)


@pytest.mark.parametrize(
    "dilation, stride, layer3_rates, layer4_rates",
    [
        ((False, False, False), 32, [1] * 6, [1] * 3),
        ((False, False, True), 16, [1] * 6, [1, 2, 2]),
        ((False, True, True), 8, [1, 2, 2, 2, 2, 2], [2, 4, 4]),
    ],
)
def test_dilation_gives_output_strides_32_16_8(dilation, stride, layer3_rates, layer4_rates):
    model = resnet50(width=0.25, replace_stride_with_dilation=dilation)
    assert model.output_stride == stride
    # torchvision's semantics: a dilated stage's first block keeps the previous dilation.
    assert [block.conv2.dilation[0] for block in model.layer3] == layer3_rates
    assert [block.conv2.dilation[0] for block in model.layer4] == layer4_rates
    assert [block.conv2.padding[0] for block in model.layer4] == layer4_rates
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 96))
    assert {name: value.shape[-2:] for name, value in features.items()} == {
        name: (64 // s, 96 // s) for name, s in zip(features, (4, 8, min(16, stride), stride))
    }
    assert features["layer4"].shape[1] == 512


@pytest.mark.parametrize("norm_layer", [nn.BatchNorm2d, FrozenBatchNorm2d])
def test_folding_batchnorm_keeps_outputs_and_names(norm_layer):
    torch.manual_seed(2)
    model = resnet50(width=0.25, norm_layer=norm_layer, replace_stride_with_dilation=(False, True, True))
    randomize_norms_(model)
    folded, changes = reparameterize(model)
    assert changes == {FOLDED_BATCHNORMS: 1 + 3 * 16 + 4}  # stem, three per block, four projections
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        expected, actual = model(x), folded(x)
    for name in expected:
        assert_close_scaled(actual[name], expected[name], 1e-4)
    keys, folded_keys = set(model.state_dict()), set(folded.state_dict())
    assert not any(".bn" in key or key.startswith("bn1") or "downsample.1" in key for key in folded_keys)
    assert {key for key in keys if key.endswith(".weight") and "conv" in key} <= folded_keys
    assert "layer1.0.conv1.bias" in folded_keys and "layer1.0.downsample.0.bias" in folded_keys


def test_forward_features_stops_at_the_deepest_requested_stage():
    model = resnet50(width=0.25).eval()
    calls = []
    model.layer4.register_forward_hook(lambda *args: calls.append("layer4"))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        subset = model.forward_features(x, ("layer3", "layer1"))
        assert list(subset) == ["layer1", "layer3"] and calls == []
        torch.testing.assert_close(subset["layer3"], model(x)["layer3"])
    assert calls == ["layer4"]


@pytest.mark.parametrize("trainable_layers", range(6))
def test_trainable_layers_freeze_like_torchvision(trainable_layers):
    tv = torchvision_or_skip()
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

    with torch.device("meta"):
        ours = resnet50()
        reference = tv.models.resnet50(norm_layer=nn.BatchNorm2d)
        _resnet_fpn_extractor(reference, trainable_layers)
    ours.set_trainable_layers(trainable_layers)
    expected = {name for name, p in reference.named_parameters() if p.requires_grad and not name.startswith("fc.")}
    assert {name for name, p in ours.named_parameters() if p.requires_grad} == expected
    assert (len(expected) == 0) == (trainable_layers == 0)


def test_bad_arguments_and_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="four positive"):
        ResNet((3, 4, 6))
    with pytest.raises(ValueError, match="64 \\* width"):
        ResNet((1, 1, 1, 1), width=0.3)
    with pytest.raises(ValueError, match="three flags"):
        ResNet((1, 1, 1, 1), replace_stride_with_dilation=(False, True))
    model = ResNet((1, 1, 1, 1), width=0.125)
    with pytest.raises(ValueError, match=r"\(1, 1, 32, 32\)"):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="layer5"):
        model.forward_features(torch.zeros(1, 3, 32, 32), ("layer5",))
    with pytest.raises(ValueError, match="0..5"):
        model.set_trainable_layers(6)


def test_stride_in_1x1_moves_the_stride_of_downsampling_blocks_to_their_first_convolution():
    """MSRA's layout (Detectron2's STRIDE_IN_1X1): same parameters, the stride on conv1 instead of conv2."""
    torch.manual_seed(0)
    v15, msra = resnet50(width=0.25), resnet50(width=0.25, stride_in_1x1=True)
    msra.load_state_dict(v15.state_dict())
    for name in ("layer2", "layer3", "layer4"):
        first, second = getattr(msra, name)[0], getattr(msra, name)[1]
        assert (first.conv1.stride, first.conv2.stride, first.downsample[0].stride) == ((2, 2), (1, 1), (2, 2))
        assert (second.conv1.stride, second.conv2.stride) == ((1, 1), (1, 1))
        assert getattr(v15, name)[0].conv1.stride == (1, 1) and getattr(v15, name)[0].conv2.stride == (2, 2)
    assert msra.layer1[0].conv1.stride == msra.layer1[0].conv2.stride == (1, 1)  # layer1 does not downsample
    block = msra.eval().layer2[0]
    x = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        out = torch.relu(block.bn1(torch.nn.functional.conv2d(x, block.conv1.weight, stride=2)))
        out = torch.relu(block.bn2(torch.nn.functional.conv2d(out, block.conv2.weight, padding=1)))
        expected = torch.relu(block.bn3(block.conv3(out)) + block.downsample(x))
        torch.testing.assert_close(block(x), expected)
        images = torch.randn(1, 3, 64, 96)
        shapes = [tuple(v.shape) for v in msra(images).values()]
        assert shapes == [tuple(v.shape) for v in v15(images).values()] == [(1, 64, 16, 24), (1, 128, 8, 12),
                                                                            (1, 256, 4, 6), (1, 512, 2, 3)]
        assert not torch.allclose(msra(images)["layer4"], v15(images)["layer4"])
