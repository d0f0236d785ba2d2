"""Aligned Xception-65: timm's layout and outputs, output strides, the low-level tap, BN folding."""

from __future__ import annotations


import pytest
import torch
from oracles import timm_or_skip
from torch import nn

from panoptic_perception.nn import count_parameters
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS, reparameterize
from panoptic_perception.nn.xception import AlignedXception, XceptionBlock, xception65
from support import randomize_norms_

#: timm's xception65 with its 1000-class head (reference-oracles.md: 794 state-dict entries).
XCEPTION65_PARAMETERS = 39_916_312


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())


def test_state_dict_and_parameter_count_match_timm_xception65():
    timm = timm_or_skip()
    with torch.device("meta"):
        ours, reference = xception65(num_classes=1000), timm.create_model("xception65", pretrained=False)
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert count_parameters(ours) == count_parameters(reference) == XCEPTION65_PARAMETERS
    assert all(m.eps == 1e-3 for m in ours.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize("output_stride", [16, 32])
def test_outputs_equal_timm_with_copied_weights(output_stride):
    timm = timm_or_skip()
    torch.manual_seed(0)
    reference = randomize_norms_(timm.create_model("xception65", pretrained=False, output_stride=output_stride))
    with torch.device("meta"):
        ours = xception65(num_classes=1000, output_stride=output_stride)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)
    ours.eval()
    taps = {}
    # timm's act3 after conv2 is in place: clone the separable convolution's output when it is made.
    reference.blocks[1].stack.conv2.register_forward_hook(lambda m, i, o: taps.update(low_level=o.clone()))
    x = torch.randn(1, 3, 45, 61)  # odd sizes: every stride rounds up alike
    with torch.no_grad():
        expected = reference.forward_features(x)
        expected_logits = reference.forward_head(expected)
        features, logits = ours.forward_features(x), ours(x)
    assert features["out"].shape[-2:] == (-(-45 // output_stride), -(-61 // output_stride))
    assert features["low_level"].shape == (1, 256, 12, 16)
    assert_close_scaled(features["out"], expected)
    assert_close_scaled(features["low_level"], taps["low_level"])
    assert_close_scaled(logits, expected_logits)
    assert (features["low_level"] < 0).any(), "the tap is taken before the ReLU (TensorFlow's decoder end point)"


def test_output_stride_16_dilates_the_exit_flow_as_deeplab():
    with torch.device("meta"):
        model = xception65(output_stride=16)
    strides = [block.stack["conv3"].conv_dw.stride[0] for block in model.blocks]
    dilations = [block.stack["conv1"].conv_dw.dilation[0] for block in model.blocks]
    assert strides == [2, 2, 2] + [1] * 16 + [1, 1], "the exit flow's stride becomes a dilation"
    assert dilations == [1] * 20 + [2], "the block that stops striding keeps rate 1, the next one gets 2"
    assert model.stage_strides == {"low_level": 4, "out": 16}
    assert model.blocks[20].shortcut is None and not model.blocks[20].residual
    assert model.blocks[20].stack["conv1"].act and not model.blocks[19].stack["conv1"].act


def test_width_scales_every_channel_and_the_stages():
    model = xception65(width=0.125, output_stride=16)
    assert model.stage_channels == {"low_level": 32, "out": 256}
    assert model.stem[0].conv.out_channels == 4 and model.blocks[3].stack["conv1"].conv_pw.out_channels == 91
    features = model.eval().forward_features(torch.randn(2, 3, 64, 96))
    assert features["low_level"].shape == (2, 32, 16, 24) and features["out"].shape == (2, 256, 4, 6)


def test_reparameterizing_folds_every_batchnorm_and_keeps_the_outputs():
    torch.manual_seed(0)
    model = randomize_norms_(AlignedXception(2, width=0.125, output_stride=16))
    folded, changes = reparameterize(model)
    batchnorms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert changes == {FOLDED_BATCHNORMS: batchnorms} and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        expected, actual = model.forward_features(x), folded.forward_features(x)
    for name in expected:
        assert_close_scaled(actual[name], expected[name], 1e-4)


def test_bad_arguments_and_inputs_are_refused():
    with pytest.raises(ValueError, match="output_stride"):
        AlignedXception(output_stride=4)
    with pytest.raises(ValueError, match="three separable"):
        XceptionBlock(8, (8, 8))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        AlignedXception(1, width=0.125).forward_features(torch.randn(1, 4, 32, 32))
