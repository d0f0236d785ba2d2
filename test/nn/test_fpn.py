from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from oracles import torchvision_or_skip

from panoptic_perception.nn.fpn import BackboneWithFPN, FeaturePyramidNetwork, LastLevelMaxPool, resnet_fpn_backbone
from panoptic_perception.nn.reparameterize import reparameterize
from panoptic_perception.nn.resnet import FrozenBatchNorm2d, resnet50


def randomized_(state_dict: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Non-trivial frozen-BatchNorm statistics and FPN biases (torchvision initialises them to 1 / 0)."""
    generator = torch.Generator().manual_seed(seed)
    ranges = {"running_var": (0.5, 1.5), "running_mean": (-0.2, 0.2), "bias": (-0.2, 0.2), "weight": (0.5, 1.5)}
    for key, value in state_dict.items():
        low, high = ranges.get(key.rsplit(".", 1)[-1], (None, None))
        if value.dim() == 1 and low is not None:  # 1-D weights are norm scales; conv weights stay
            value.copy_(torch.rand(value.shape, generator=generator) * (high - low) + low)
    return state_dict


def test_state_dict_equals_torchvision_maskrcnn_backbone():
    tv = torchvision_or_skip()
    with torch.device("meta"):
        reference = tv.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).backbone
        ours = resnet_fpn_backbone("resnet50")
    # Without weights torchvision builds nn.BatchNorm2d (num_batches_tracked); with them, FrozenBatchNorm2d.
    expected = {k: tuple(v.shape) for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert list(ours.state_dict()) == list(expected)
    assert sum(k.startswith("fpn.") for k in expected) == 16
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)  # num_batches_tracked ignored
    assert ours.out_channels == reference.out_channels == 256


def test_outputs_and_frozen_parameters_equal_torchvision_resnet_fpn_backbone():
    torchvision_or_skip()
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone as reference_builder

    torch.manual_seed(0)
    reference = reference_builder(backbone_name="resnet50", weights=None)  # FrozenBatchNorm2d, 3 trainable
    reference.load_state_dict(randomized_(reference.state_dict()))
    with torch.device("meta"):
        ours = resnet_fpn_backbone("resnet50")
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == {
        n: p.requires_grad for n, p in reference.named_parameters()
    }
    x = torch.randn(1, 3, 72, 100)  # odd level sizes: 18x25, 9x13, 5x7, 3x4, pool 2x2
    with torch.no_grad():
        expected, actual = reference.eval()(x), ours.eval()(x)
    assert list(actual) == list(expected) == ["0", "1", "2", "3", "pool"]
    for key in expected:
        scale = expected[key].abs().max().item()
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-5 * scale)
    assert [tuple(v.shape[-2:]) for v in actual.values()] == [(18, 25), (9, 13), (5, 7), (3, 4), (2, 2)]


def test_top_down_pathway_by_hand():
    """With identity laterals and a centre-tap 3x3, P_i = C_i + nearest-upsampled P_(i+1) and pool = P[::2, ::2]."""
    fpn = FeaturePyramidNetwork([1, 1, 1], out_channels=1, extra_blocks=LastLevelMaxPool())
    with torch.no_grad():
        for block in fpn.inner_blocks:
            block[0].weight.fill_(1.0)
        for block in fpn.layer_blocks:
            block[0].weight.zero_()
            block[0].weight[0, 0, 1, 1] = 1.0
    c = [torch.randn(1, 1, 9, 11), torch.randn(1, 1, 5, 6), torch.randn(1, 1, 3, 3)]
    with torch.no_grad():
        out = fpn(OrderedDict(zip("abc", c)))
    p3 = c[2]
    p2 = c[1] + p3[..., [0, 0, 1, 1, 2], :][..., [0, 0, 1, 1, 2, 2]]  # nearest: floor(i * 3 / 5), floor(j * 3 / 6)
    p1 = c[0] + p2[..., [int(i * 5 / 9) for i in range(9)], :][..., [int(j * 6 / 11) for j in range(11)]]
    assert list(out) == ["a", "b", "c", "pool"]
    for actual, expected in zip(out.values(), (p1, p2, p3, p3[..., ::2, ::2])):
        torch.testing.assert_close(actual, expected)


def test_narrow_backbone_channels_and_strides():
    backbone = resnet_fpn_backbone("resnet50", width=0.25, trainable_layers=5)
    assert backbone.fpn.in_channels_list == (64, 128, 256, 512)
    assert all(p.requires_grad for p in backbone.parameters())
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 64, 96))
    strides = {"0": 4, "1": 8, "2": 16, "3": 32, "pool": 64}
    expected = {k: (2, 256, 64 // s, -(-96 // s)) for k, s in strides.items()}  # ceil for the odd 96 / 64
    assert {k: tuple(v.shape) for k, v in out.items()} == expected


def test_folded_body_gives_the_same_pyramid():
    torch.manual_seed(3)
    backbone = resnet_fpn_backbone("resnet50", width=0.25, norm_layer=FrozenBatchNorm2d)
    backbone.load_state_dict(randomized_(backbone.state_dict(), seed=3))
    folded = reparameterize(backbone).network
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        expected, actual = backbone(x), folded(x)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-4 * expected[key].abs().max().item())


def test_bad_arguments_and_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="num_classes"):
        BackboneWithFPN(resnet50(width=0.125, num_classes=10))
    with pytest.raises(ValueError, match="resnet18"):
        resnet_fpn_backbone("resnet18")
    fpn = FeaturePyramidNetwork([4, 8], out_channels=2)
    with pytest.raises(ValueError, match=r"\(1, 5, 4, 4\)"):
        fpn({"a": torch.zeros(1, 4, 8, 8), "b": torch.zeros(1, 5, 4, 4)})
    with pytest.raises(ValueError, match="positive"):
        FeaturePyramidNetwork([], out_channels=2)
    with pytest.raises(ValueError, match="C = \\(4, 8\\)"):
        fpn({"a": torch.zeros(1, 4, 8, 8)})
