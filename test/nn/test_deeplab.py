"""DeepLabV3+ head: the ASPP against torchvision's, the decoder's layers, extra inputs, BN folding."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from oracles import torchvision_or_skip
from torch import nn

from panoptic_perception.nn.deeplab import ASPP, DeepLabV3PlusHead, ExtraInputs, join
from panoptic_perception.nn.layers import SEQUENTIAL_NAMES, group_norm
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS, reparameterize
from support import randomize_norms_


def torchvision_aspp_name(name: str) -> str:
    """Our ASPP parameter name → torchvision's ``segmentation.deeplabv3.ASPP`` name."""
    for pattern, replacement in ((r"^branches\.(\d)\.conv", r"convs.\1.0"), (r"^branches\.(\d)\.bn", r"convs.\1.1"),
                                 (r"^pooling\.project\.conv", "convs.4.1"), (r"^pooling\.project\.bn", "convs.4.2"),
                                 (r"^project\.conv", "project.0"), (r"^project\.bn", "project.1")):
        name, count = re.subn(pattern, replacement, name)
        if count:
            return name
    raise AssertionError(f"unmapped ASPP parameter {name}")


def test_aspp_equals_torchvisions_with_copied_weights():
    torchvision_or_skip()
    from torchvision.models.segmentation.deeplabv3 import ASPP as Reference

    torch.manual_seed(0)
    reference = randomize_norms_(Reference(24, (6, 12, 18), out_channels=16))
    ours = ASPP(24, 16, (6, 12, 18)).eval()
    reference_state = reference.state_dict()
    ours.load_state_dict({name: reference_state[torchvision_aspp_name(name)] for name in ours.state_dict()},
                         strict=True)
    assert len(ours.state_dict()) == len(reference_state)
    x = torch.randn(2, 24, 21, 27)  # larger than the biggest rate's reach: every branch matters
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_aspp_has_the_papers_branches():
    aspp = ASPP(32, 8, (6, 12, 18), projection_extra_channels=5)
    convs = [branch.conv for branch in aspp.branches]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [c.dilation for c in convs] == [(1, 1), (6, 6), (12, 12), (18, 18)]
    assert aspp.pooling.project.conv.kernel_size == (1, 1)
    assert aspp.branch_channels == 40 and aspp.project.conv.in_channels == 45, "five branches plus the extra input"
    assert isinstance(aspp.dropout, nn.Dropout) and aspp.dropout.p == 0.1


def test_aspp_options_drop_the_image_pooling_and_change_the_norm_and_branch_width():
    aspp = ASPP(16, 8, (2, 4), branch_channels=6, image_pooling=False, dropout=0.0, norm=group_norm(2),
                names=SEQUENTIAL_NAMES).eval()
    assert aspp.pooling is None and aspp.branch_channels == 3 * 6 and aspp.project[0].in_channels == 18
    assert all(isinstance(branch[1], nn.GroupNorm) and branch[0].out_channels == 6 for branch in aspp.branches)
    assert "branches.1.0.weight" in aspp.state_dict() and aspp.branches[1][0].dilation == (2, 2)
    x = torch.randn(2, 16, 7, 9)
    with torch.no_grad():
        expected = aspp.project(torch.cat([branch(x) for branch in aspp.branches], 1))
        torch.testing.assert_close(aspp(x), expected)


def test_image_pooling_branch_is_the_projected_global_average_everywhere():
    torch.manual_seed(1)
    aspp = randomize_norms_(ASPP(6, 4))
    x = torch.randn(2, 6, 5, 7)
    with torch.no_grad():
        pooled = aspp.pooling(x)
        project = aspp.pooling.project
        expected = F.relu(project.bn(project.conv(x.mean((2, 3), keepdim=True))))
    assert pooled.shape == (2, 4, 5, 7)
    torch.testing.assert_close(pooled, expected.expand(-1, -1, 5, 7))


def test_head_predicts_at_the_image_resolution_from_the_papers_layers():
    head = DeepLabV3PlusHead(64, 24, 19, channels=16, reduced_channels=6).eval()
    assert head.low_level.conv.kernel_size == (1, 1) and head.low_level.conv.out_channels == 6
    assert head.conv1.conv.in_channels == 16 + 6 and head.conv1.conv.kernel_size == (3, 3)
    assert head.conv2.conv.kernel_size == (3, 3) and head.classifier.kernel_size == (1, 1)
    high, low = torch.randn(2, 64, 4, 6), torch.randn(2, 24, 16, 24)
    with torch.no_grad():
        logits = head(high, low, (64, 96))
        # the same stages by hand: the logits are the stride-4 classifier output upsampled x4
        x = head.conv2(head.conv1(torch.cat([F.interpolate(head.aspp(high), size=(16, 24), mode="bilinear"),
                                             head.low_level(low)], 1)))
        expected = F.interpolate(head.classifier(x), size=(64, 96), mode="bilinear")
    assert logits.shape == (2, 19, 64, 96)
    torch.testing.assert_close(logits, expected)


def test_extra_inputs_widen_each_layer_and_come_after_its_own_input():
    extra = ExtraInputs(aspp=3, aspp_projection=4, low_level=5, decoder_conv1=6, decoder_conv2=7, classifier=8)
    head = DeepLabV3PlusHead(10, 12, 19, channels=16, reduced_channels=6, extra=extra).eval()
    assert head.aspp.branches[0].conv.in_channels == 13 and head.aspp.pooling.project.conv.in_channels == 13
    assert head.aspp.project.conv.in_channels == 5 * 16 + 4
    assert head.low_level.conv.in_channels == 17
    assert head.conv1.conv.in_channels == 16 + 6 + 6
    assert head.conv2.conv.in_channels == 23 and head.classifier.in_channels == 24
    # Own channels first: with the classifier's own weights zeroed, only the extra map matters.
    with torch.no_grad():
        head.classifier.weight[:, :16] = 0
        own, other = torch.randn(1, 16, 5, 5), torch.randn(1, 8, 5, 5)
        logits = head.classify(own, (5, 5), other)
        expected = F.conv2d(other, head.classifier.weight[:, 16:], head.classifier.bias)
    torch.testing.assert_close(logits, expected)
    with pytest.raises(ValueError, match="extra inputs"):
        head(torch.randn(1, 10, 2, 2), torch.randn(1, 12, 8, 8), (32, 32))


def test_join_refuses_maps_of_another_size():
    own = torch.randn(1, 2, 4, 4)
    assert join(own, None) is own
    assert join(own, torch.randn(1, 3, 4, 4)).shape == (1, 5, 4, 4)
    with pytest.raises(ValueError, match=r"\(1, 3, 5, 4\)"):
        join(own, torch.randn(1, 3, 5, 4))
    with pytest.raises(ValueError, match="non-negative"):
        ExtraInputs(aspp=-1)


def test_reparameterizing_folds_every_batchnorm_and_keeps_the_head_outputs():
    torch.manual_seed(2)
    head = randomize_norms_(DeepLabV3PlusHead(32, 12, 19, channels=16, reduced_channels=6))
    folded, changes = reparameterize(head)
    assert changes == {FOLDED_BATCHNORMS: 9} and 9 == sum(isinstance(m, nn.BatchNorm2d) for m in head.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    high, low = torch.randn(1, 32, 4, 5), torch.randn(1, 12, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(folded(high, low, (64, 80)), head(high, low, (64, 80)), rtol=1e-4, atol=1e-4)
