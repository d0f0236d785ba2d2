"""The shared layers: the convolution-norm-activation block (its layouts, its folding) and upsampling."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from support import randomize_norms_
from torch import nn

from panoptic_perception.nn.layers import SEQUENTIAL_NAMES, ConvNormAct, group_norm, relu_inplace, upsample
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS
from panoptic_perception.nn.resnet import FrozenBatchNorm2d


def test_children_take_the_given_names_so_each_checkpoint_layout_loads_as_saved():
    block = ConvNormAct(4, 6, 3, norm=nn.BatchNorm2d, act=nn.PReLU)
    assert [name for name, _ in block.named_children()] == ["conv", "bn", "act"]
    assert {"conv.weight", "bn.running_var", "act.weight"} <= set(block.state_dict())
    sequential = ConvNormAct(4, 6, 3, norm=group_norm(3), act=relu_inplace, names=SEQUENTIAL_NAMES)
    reference = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.GroupNorm(3, 6), nn.ReLU(inplace=True))
    assert list(sequential.state_dict()) == list(reference.state_dict())
    sequential.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(sequential(x), reference(x))
    bare = ConvNormAct(4, 6, 3, norm=None, act=None)
    assert list(bare.state_dict()) == ["conv.weight"], "no norm, no activation, no bias"


@pytest.mark.parametrize("kernel_size, stride, dilation, groups", [(1, 1, 1, 1), (3, 1, 1, 2), (3, 2, 1, 1), (3, 1, 4, 1)])
def test_convolution_keeps_the_size_at_stride_one_and_applies_norm_then_activation(kernel_size, stride, dilation, groups):
    torch.manual_seed(0)
    block = randomize_norms_(ConvNormAct(4, 6, kernel_size, stride, dilation, groups, act=nn.PReLU))
    x = torch.randn(1, 4, 9, 11)
    with torch.no_grad():
        y = block(x)
        expected = block.act(block.bn(F.conv2d(x, block.conv.weight, None, stride, dilation * (kernel_size - 1) // 2,
                                                dilation, groups)))
    assert y.shape == (1, 6, -(-9 // stride), -(-11 // stride))
    torch.testing.assert_close(y, expected)


def test_transposed_block_doubles_the_size():
    block = ConvNormAct(4, 2, 2, 2, transposed=True, names=("deconv", "bn", "act")).eval()
    assert isinstance(block.deconv, nn.ConvTranspose2d) and block.deconv.bias is None
    assert block(torch.randn(1, 4, 5, 7)).shape == (1, 2, 10, 14)


@pytest.mark.parametrize("norm", [functools.partial(nn.BatchNorm2d, eps=1e-3), FrozenBatchNorm2d])
@pytest.mark.parametrize("transposed", [False, True])
def test_reparameterize_folds_a_norm_of_running_statistics_once(norm, transposed):
    torch.manual_seed(1)
    kernel = (2, 2) if transposed else (3, 1)
    block = randomize_norms_(ConvNormAct(4, 6, *kernel, norm=norm, act=nn.PReLU, transposed=transposed))
    x = torch.randn(2, 4, 5, 7)
    with torch.no_grad():
        expected = block(x)
        assert block.reparameterize_() == {FOLDED_BATCHNORMS: 1}
        assert isinstance(block.bn, nn.Identity) and block.conv.bias is not None
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
        assert not block.reparameterize_(), "a folded block has nothing left to fold"


def test_reparameterize_leaves_group_norm_and_blocks_without_norm_alone():
    grouped = ConvNormAct(4, 8, 3, norm=group_norm(32))
    assert grouped[1].num_groups == 8, "one group per channel where there are fewer channels than groups"
    assert not grouped.reparameterize_() and isinstance(grouped[1], nn.GroupNorm)
    assert not ConvNormAct(4, 8, 3, norm=None).reparameterize_()
    assert not ConvNormAct(4, 8, 3, norm=None, act=None).reparameterize_()


def test_bad_names_and_dilated_transposed_convolutions_are_refused():
    with pytest.raises(ValueError, match="three distinct names"):
        ConvNormAct(4, 8, names=("conv", "conv", "act"))
    with pytest.raises(ValueError, match="dilation"):
        ConvNormAct(4, 8, 2, 2, 2, transposed=True)


def test_upsample_is_bilinear_without_aligned_corners_to_the_given_size():
    x = torch.randn(2, 3, 4, 5)
    reference = torch.empty(1, 1, 9, 11)
    torch.testing.assert_close(upsample(x, reference.shape[-2:]),
                               F.interpolate(x, size=(9, 11), mode="bilinear", align_corners=False))
    assert upsample(x, [8, 10]).shape == (2, 3, 8, 10)
