"""The RPN's parts against torchvision 0.28 (test-only reference, running our NMS) and against hand values.

The whole RPN is compared in float64 with 32 feature channels: torchvision's batched NMS re-sorts its kept
boxes with an unstable sort, so tied scores may come in either order, and ties are common in float32
(probabilities near 0.5) and wherever all hidden units of a location are dead (the scores are then the
biases; 32 channels make that improbable). test_mask_rcnn compares float32 proposals as sets.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from oracles import torchvision_or_skip

from panoptic_perception.nn.rpn import (
    AnchorGenerator,
    BalancedPositiveNegativeSampler,
    BoxCoder,
    Matcher,
    RegionProposalNetwork,
    RPNHead,
)

GRIDS = [(40, 56), (20, 28), (10, 14), (5, 7), (3, 4)]  # a 160 x 224 batch
BATCH_SHAPE = (160, 224)
IMAGE_SIZES = [(150, 220), (128, 192)]
CHANNELS = 32


def random_boxes(count: int, generator: torch.Generator, extent: float = 200.0) -> torch.Tensor:
    corner = torch.rand(count, 2, generator=generator) * extent
    return torch.cat((corner, corner + torch.rand(count, 2, generator=generator) * extent / 2 + 1), dim=1)


def test_cell_anchors_by_hand():
    """Size 32: ratio 0.5 → w = 32 * sqrt(2) = 45.25, h = 22.63 → half-sizes 22.6, 11.3 rounded to 23, 11."""
    generator = AnchorGenerator()
    assert generator.num_anchors_per_location() == [3] * 5
    assert generator.cell_anchors(0).tolist() == [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]]
    assert generator.cell_anchors(4).tolist() == [
        [-362, -181, 362, 181], [-256, -256, 256, 256], [-181, -362, 181, 362]
    ]
    one_level = AnchorGenerator(((4,),), ((1.0,),))
    (grid,) = one_level([(2, 3)], (8, 12), torch.float32, torch.device("cpu"))  # stride 4: (y, x) row-major
    centres = [(4 * x, 4 * y) for y in range(2) for x in range(3)]
    assert grid.tolist() == [[cx - 2, cy - 2, cx + 2, cy + 2] for cx, cy in centres]
    with pytest.raises(ValueError, match="levels"):
        one_level(GRIDS, BATCH_SHAPE, torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match="every level"):
        AnchorGenerator(((32,),), ((1.0,), (2.0,)))


@pytest.mark.parametrize(
    "batch_shape, grids", [(BATCH_SHAPE, GRIDS), ((100, 130), [(25, 33), (13, 17), (7, 9), (4, 5), (2, 3)])]
)
def test_anchors_equal_torchvision(batch_shape, grids):
    torchvision_or_skip()
    from torchvision.models.detection.anchor_utils import AnchorGenerator as Reference
    from torchvision.models.detection.image_list import ImageList

    sizes, ratios = ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5
    features = [torch.zeros(2, 1, h, w) for h, w in grids]
    expected = Reference(sizes, ratios)(ImageList(torch.zeros(2, 3, *batch_shape), [batch_shape] * 2), features)
    actual = AnchorGenerator(sizes, ratios)(grids, batch_shape, torch.float32, torch.device("cpu"))
    assert torch.equal(torch.cat(actual), expected[0]) and torch.equal(expected[0], expected[1])
    assert [len(a) for a in actual] == [3 * h * w for h, w in grids]


def test_box_coder_equals_torchvision_and_inverts():
    torchvision_or_skip()
    from torchvision.models.detection._utils import BoxCoder as Reference

    generator = torch.Generator().manual_seed(0)
    boxes, reference = random_boxes(50, generator), random_boxes(50, generator)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        ours, theirs = BoxCoder(weights), Reference(weights)
        deltas = ours.encode(boxes, reference)
        torch.testing.assert_close(deltas, theirs.encode_single(boxes, reference), rtol=0, atol=0)
        torch.testing.assert_close(ours.decode(deltas, reference)[:, 0], boxes, rtol=1e-5, atol=1e-4)
        many = torch.randn(50, 4 * 3, generator=generator) * 3  # 3 sets per box, some beyond the clip
        decoded = ours.decode(many, reference)
        assert decoded.shape == (50, 3, 4)
        torch.testing.assert_close(decoded, theirs.decode(many, [reference]), rtol=0, atol=0)
    extreme = torch.tensor([[0.0, 0.0, 100.0, -100.0]])
    huge = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(extreme, torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
    width, height = (huge[0, 0, 2:] - huge[0, 0, :2]).tolist()
    assert width == pytest.approx(16 * 1000 / 16) and height == pytest.approx(16 * math.exp(-100), abs=1e-30)
    with pytest.raises(ValueError, match="deltas"):
        BoxCoder((1.0, 1.0, 1.0, 1.0)).decode(torch.zeros(3, 5), torch.zeros(3, 4))


@pytest.mark.parametrize("low_quality", [False, True])
def test_matcher_equals_torchvision(low_quality):
    torchvision_or_skip()
    from torchvision.models.detection._utils import Matcher as Reference

    generator = torch.Generator().manual_seed(1)
    quality = (torch.rand(6, 300, generator=generator) * 10).floor() / 10  # many ties
    quality[4, 17] = quality[4].max() + 0.05  # a box's unique best
    actual = Matcher(0.7, 0.3, low_quality)(quality.clone())
    assert torch.equal(actual, Reference(0.7, 0.3, low_quality)(quality.clone()))
    assert {-1, -2} <= set(actual.tolist()) and (actual >= 0).any()
    # A box overlapping nothing ties at 0 with every prediction: with low-quality matches all of them get
    # their best box back, even at IoU 0 (torchvision's rule, kept).
    quality[2] = 0.0
    actual = Matcher(0.7, 0.3, low_quality)(quality.clone())
    assert torch.equal(actual, Reference(0.7, 0.3, low_quality)(quality.clone()))
    assert (actual >= 0).all() == low_quality
    # By hand: IoU 0.8 positive, 0.5 between, 0.1 below; with low-quality matches the 0.1 of box 1 (its best) is kept.
    small = torch.tensor([[0.8, 0.5, 0.0], [0.0, 0.0, 0.1]])
    assert Matcher(0.7, 0.3, low_quality)(small).tolist() == ([0, -2, 1] if low_quality else [0, -2, -1])
    with pytest.raises(ValueError, match="empty"):
        Matcher(0.7, 0.3)(torch.zeros(0, 5))
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)


def test_sampler_draws_the_same_samples_as_torchvision():
    torchvision_or_skip()
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler as Reference

    generator = torch.Generator().manual_seed(2)
    labels = [torch.randint(-1, 3, (400,), generator=generator), torch.zeros(50, dtype=torch.long),
              torch.full((30,), 2)]
    torch.manual_seed(7)
    positive, negative = BalancedPositiveNegativeSampler(64, 0.25)(labels)
    torch.manual_seed(7)
    expected_positive, expected_negative = Reference(64, 0.25)(labels)
    for ours, theirs in zip(positive + negative, expected_positive + expected_negative):
        assert torch.equal(ours, theirs.bool())
    assert [int(p.sum()) for p in positive] == [16, 0, 16]  # at most 64 * 0.25 positives
    assert [int(n.sum()) for n in negative] == [48, 50, 0]  # the rest negatives, as far as there are
    assert not (positive[0] & (labels[0] < 1)).any() and not (negative[0] & (labels[0] != 0)).any()
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(64, 1.5)


def test_rpn_head_keys_and_shapes_equal_torchvision():
    torchvision_or_skip()
    from torchvision.models.detection.rpn import RPNHead as Reference

    ours, theirs = RPNHead(16, 3), Reference(16, 3)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == ["conv.0.0.weight", "conv.0.0.bias", "cls_logits.weight", "cls_logits.bias",
                                       "bbox_pred.weight", "bbox_pred.bias"]
    assert float(ours.cls_logits.weight.detach().std()) == pytest.approx(0.01, rel=0.3)
    assert not ours.bbox_pred.bias.any()
    theirs.load_state_dict(ours.state_dict())
    features = [torch.randn(2, 16, 9, 11), torch.randn(2, 16, 5, 6)]
    for actual, expected in zip(ours(features), theirs(features)):
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, rtol=0, atol=0)


def rpn_pair(**settings):
    """Our RPN and torchvision's with the same head weights (biases randomised so scores differ; 32
    channels, so that no location has all hidden units dead: those would tie at the biases' scores)."""
    torchvision_or_skip()
    from torchvision.models.detection.anchor_utils import AnchorGenerator as ReferenceAnchors
    from torchvision.models.detection.rpn import RegionProposalNetwork as Reference
    from torchvision.models.detection.rpn import RPNHead as ReferenceHead

    torch.manual_seed(0)
    ours = RegionProposalNetwork(CHANNELS, **settings).double()
    with torch.no_grad():
        for module in ours.head.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0, 0.1)
                module.bias.normal_(0, 0.2)
    defaults = {"pre_nms_top_n_train": 2000, "pre_nms_top_n_test": 1000, "post_nms_top_n_train": 2000,
                "post_nms_top_n_test": 1000, **settings}
    theirs = Reference(
        ReferenceAnchors(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5),
        ReferenceHead(CHANNELS, 3),
        fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
        pre_nms_top_n={"training": defaults["pre_nms_top_n_train"], "testing": defaults["pre_nms_top_n_test"]},
        post_nms_top_n={"training": defaults["post_nms_top_n_train"], "testing": defaults["post_nms_top_n_test"]},
        nms_thresh=0.7,
    ).double()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(3)
    features = OrderedDict((name, torch.randn(2, CHANNELS, h, w, generator=generator, dtype=torch.float64))
                           for name, (h, w) in zip(["0", "1", "2", "3", "pool"], GRIDS))
    return ours, theirs, features


@pytest.mark.parametrize("post_nms_top_n", [1000, 300])
def test_proposals_equal_torchvision(post_nms_top_n):
    ours, theirs, features = rpn_pair(post_nms_top_n_test=post_nms_top_n)
    from torchvision.models.detection.image_list import ImageList

    ours.eval(), theirs.eval()
    with torch.no_grad():
        proposals, losses = ours(features, IMAGE_SIZES, BATCH_SHAPE)
        expected, _ = theirs(ImageList(torch.zeros(2, 3, *BATCH_SHAPE), IMAGE_SIZES), features)
    assert losses == {}
    for actual, wanted, (height, width) in zip(proposals, expected, IMAGE_SIZES):
        assert 100 < len(actual) <= post_nms_top_n
        torch.testing.assert_close(actual, wanted, rtol=0, atol=0)
        assert (actual[:, 0::2] <= width).all() and (actual[:, 1::2] <= height).all() and (actual >= 0).all()


def test_training_losses_equal_torchvision():
    ours, theirs, features = rpn_pair()
    from torchvision.models.detection.image_list import ImageList

    ours.train(), theirs.train()
    generator = torch.Generator().manual_seed(4)
    targets = [{"boxes": random_boxes(4, generator, 100.0).double()}, {"boxes": torch.zeros(0, 4, dtype=torch.float64)}]
    torch.manual_seed(5)
    proposals, losses = ours(features, IMAGE_SIZES, BATCH_SHAPE, targets)
    torch.manual_seed(5)
    expected_proposals, expected = theirs(ImageList(torch.zeros(2, 3, *BATCH_SHAPE), IMAGE_SIZES), features, targets)
    assert sorted(losses) == sorted(expected) == ["loss_objectness", "loss_rpn_box_reg"]
    for name in losses:  # torchvision's objectness labels are float32 whatever the dtype: its loss too
        assert losses[name] > 0 and losses[name].dtype == torch.float64
        torch.testing.assert_close(losses[name], expected[name].double(), rtol=1e-6 if "objectness" in name else 1e-12,
                                   atol=0)
    for actual, wanted in zip(proposals, expected_proposals):  # training keeps up to 2000 per image
        torch.testing.assert_close(actual, wanted, rtol=0, atol=0)
    sum(losses.values()).backward()
    assert ours.head.conv[0][0].weight.grad.abs().sum() > 0 and ours.head.bbox_pred.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="targets"):
        ours(features, IMAGE_SIZES, BATCH_SHAPE)
    with pytest.raises(ValueError, match="image sizes"):
        ours(features, IMAGE_SIZES[:1], BATCH_SHAPE, targets)


def test_unrounded_anchors_are_detectron2s_cell_anchors():
    """Detectron2's DefaultAnchorGenerator: w = sqrt(size^2 / r), h = r * w, corners +-(w/2, h/2), no rounding."""
    generator = AnchorGenerator(round_anchors=False)
    for level, size in enumerate((32, 64, 128, 256, 512)):
        expected = []
        for ratio in (0.5, 1.0, 2.0):
            w = math.sqrt(size**2 / ratio)
            h = ratio * w
            expected.append([-w / 2, -h / 2, w / 2, h / 2])
        torch.testing.assert_close(generator.cell_anchors(level), torch.tensor(expected), rtol=1e-6, atol=0)
    assert AnchorGenerator().cell_anchors(0).tolist() == [[-23.0, -11.0, 23.0, 11.0], [-16.0, -16.0, 16.0, 16.0],
                                                          [-11.0, -23.0, 11.0, 23.0]]
    assert generator.cell_anchors(0)[0, 0].item() == pytest.approx(-22.627417)
