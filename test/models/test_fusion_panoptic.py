"""The fusion network: the semantic head of §III-B, the parameter layout, the re-parameterisation."""

from __future__ import annotations

import pytest
import torch
from support import FUSION_PANOPTIC_SMALL, assert_reparameterizing_twice_equals_once, randomize_norms_

from panoptic_perception.models.fusion_panoptic import (
    THING_IDS,
    FusionPanopticConfig,
    FusionPanopticNetwork,
    RefinementPyramid,
    SemanticHead,
    atrous_spatial_pyramid,
)
from panoptic_perception.nn import count_parameters
from panoptic_perception.nn.reparameterize import FOLDED_BATCHNORMS

def test_atrous_spatial_pyramid_has_a_1x1_and_three_dilated_branches_with_group_norm():
    asp = atrous_spatial_pyramid(16, 8, rates=(6, 12, 18), branch_channels=8, groups=4)
    convs = [branch[0] for branch in asp.branches]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (3, 3), (3, 3)]
    assert [c.dilation for c in convs] == [(1, 1), (6, 6), (12, 12), (18, 18)]
    assert all(isinstance(branch[1], torch.nn.GroupNorm) and branch[1].num_groups == 4 for branch in asp.branches)
    assert asp.project[0].in_channels == 32 and asp.project[0].out_channels == 8
    assert asp.pooling is None and list(asp.state_dict())[:3] == ["branches.0.0.weight", "branches.0.1.weight",
                                                                  "branches.0.1.bias"], "nn.Sequential's names"
    assert asp(torch.randn(2, 16, 9, 13)).shape == (2, 8, 9, 13), "padding keeps the size at every rate"


def test_refinement_pyramid_adds_coarser_levels_then_concatenates_at_the_finest():
    # Constant maps stay constant under bilinear upsampling, so the refined values are plain sums.
    levels = [torch.full((1, 1, 16 // 2**k, 16 // 2**k), float(10**k)) for k in range(4)]  # 1, 10, 100, 1000
    out = RefinementPyramid()(levels)
    assert out.shape == (1, 4, 16, 16)
    assert [float(out[0, c, 0, 0]) for c in range(4)] == [1111.0, 1110.0, 1100.0, 1000.0]


def test_semantic_head_predicts_classes_at_a_quarter_of_the_input():
    head = SemanticHead(in_channels=16, num_classes=19, channels=8, groups=4)
    features = [torch.randn(2, 16, 64 // s, 96 // s) for s in (4, 8, 16, 32)]
    assert head(features).shape == (2, 19, 16, 24)
    assert head.classifier.in_channels == 4 * 8, "four levels concatenated"
    with pytest.raises(ValueError, match="four FPN levels"):
        head(features[:3])


def test_full_size_network_keeps_torchvisions_mask_rcnn_names_and_counts():
    with torch.device("meta"):
        network = FusionPanopticNetwork(FusionPanopticConfig())
        mask_rcnn = count_parameters(network) - count_parameters(network.semantic_head)
    names = list(network.state_dict())
    assert names[0] == "backbone.body.conv1.weight" and "rpn.head.conv.0.0.weight" in names
    assert "roi_heads.box_head.fc6.weight" in names and "roi_heads.mask_predictor.mask_fcn_logits.weight" in names
    assert network.state_dict()["roi_heads.box_predictor.cls_score.weight"].shape == (1 + len(THING_IDS), 1024)
    # torchvision's maskrcnn_resnet50_fpn with frozen BatchNorm: 44,401,393 parameters for 91 classes; the
    # 9-class predictors are 82 x (1024 + 1) + 4 x 82 x (1024 + 1) + 82 x (256 + 1) fewer.
    assert mask_rcnn == 44_401_393 - 82 * 1025 - 4 * 82 * 1025 - 82 * 257
    assert all(name.startswith(("backbone.", "rpn.", "roi_heads.", "semantic_head.")) for name in names)


@pytest.mark.parametrize("norm", ["frozen_batch_norm", "batch_norm"])
def test_reparameterizing_folds_the_resnets_norms_only_and_twice_equals_once(norm):
    torch.manual_seed(0)
    network = randomize_norms_(FusionPanopticNetwork(FusionPanopticConfig(**{**FUSION_PANOPTIC_SMALL, "norm": norm})))
    changes = assert_reparameterizing_twice_equals_once(network, torch.randn(1, 3, 160, 256),
                                                        run=lambda model, images: model.dense(images))
    assert changes == {FOLDED_BATCHNORMS: 1 + 3 * 16 + 4}, "the ResNet-50's; the semantic head's GroupNorms stay"
