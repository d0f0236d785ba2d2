import pytest
import torch
from torch import nn

from panoptic_perception.nn import fold_batchnorm


def _bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=1e-3)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.2, 3)
        bn.weight.uniform_(-2, 2)
        bn.bias.uniform_(-1, 1)
    return bn.eval()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_folded_convolution_equals_conv_then_batchnorm(bias, groups):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=groups, bias=bias), _bn(6)
    x = torch.randn(2, 4, 9, 11)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(conv, bn)(x), bn(conv(x)), atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_folded_transposed_convolution_equals_deconv_then_batchnorm(groups):
    torch.manual_seed(1)
    deconv, bn = nn.ConvTranspose2d(4, 6, 2, stride=2, groups=groups, bias=False), _bn(6)
    x = torch.randn(2, 4, 5, 7)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(deconv, bn)(x), bn(deconv(x)), atol=1e-5)


def test_channel_mismatch_is_an_error():
    with pytest.raises(ValueError, match="channels"):
        fold_batchnorm(nn.Conv2d(3, 4, 1), _bn(5))


def test_original_modules_are_left_unchanged():
    conv, bn = nn.Conv2d(3, 4, 1, bias=False), _bn(4)
    before = conv.weight.detach().clone()
    fold_batchnorm(conv, bn)
    assert torch.equal(conv.weight, before) and conv.bias is None
