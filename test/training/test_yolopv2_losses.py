"""YOLOPv2's losses on hand-computed values, target assignment on hand-worked boxes, and the full loss."""

import math

import pytest
import torch

from panoptic_perception.nn.boxes import complete_iou, xywh_to_xyxy
from panoptic_perception.training.yolopv2_losses import (
    YOLOPv2Loss,
    YOLOPv2LossWeights,
    assign_targets,
    decode_matched,
    focal_bce_with_logits,
    lane_hybrid_loss,
)

# YOLOv7's anchors (w, h) in input pixels, for strides 8, 16, 32.
ANCHORS = torch.tensor(
    [[[12, 16], [19, 36], [40, 28]], [[36, 75], [76, 55], [72, 146]], [[142, 110], [192, 243], [459, 401]]],
    dtype=torch.float64,
)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_focal_bce_hand_computed():
    logits = torch.tensor([2.0, -1.0], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    p1, p2 = sigmoid(2.0), sigmoid(-1.0)
    positive = -math.log(p1) * 0.25 * (1 - p1) ** 1.5  # p_t = p, α_t = α
    negative = -math.log(1 - p2) * 0.75 * p2**1.5  # p_t = 1 - p, α_t = 1 - α
    expected = (positive + negative) / 2
    assert focal_bce_with_logits(logits, target, gamma=1.5, alpha=0.25).item() == pytest.approx(expected, rel=1e-12)


def test_focal_bce_soft_target_hand_computed():
    p, t = sigmoid(0.3), 0.6
    bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    p_t = t * p + (1 - t) * (1 - p)
    alpha_t = t * 0.25 + (1 - t) * 0.75
    expected = bce * alpha_t * (1 - p_t) ** 1.5
    value = focal_bce_with_logits(torch.tensor([0.3], dtype=torch.float64), torch.tensor([t], dtype=torch.float64))
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_focal_bce_without_focusing_is_weighted_bce():
    torch.manual_seed(0)
    logits, target = torch.randn(20), (torch.rand(20) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert torch.allclose(focal_bce_with_logits(logits, target, gamma=0.0, alpha=0.5), 0.5 * bce)


def test_lane_hybrid_loss_hand_computed():
    p = [[0.8, 0.3], [0.6, 0.1]]
    logits = torch.tensor([[[[logit(v) for v in row] for row in p]]], dtype=torch.float64)  # (1, 1, 2, 2)
    target = torch.tensor([[[1, 0], [1, 0]]])
    # lane: TP = .8 + .6, FN = .2 + .4, FP = .3 + .1; background (1 - p): TP = .7 + .9, FN = .3 + .1, FP = .2 + .4
    dice = 2 - 1.4 / (1.4 + 0.5 * 0.6 + 0.5 * 0.4) - 1.6 / (1.6 + 0.5 * 0.4 + 0.5 * 0.6)
    # true-class probabilities .8, .7, .6, .9
    focal = -(0.2**2 * math.log(0.8) + 0.3**2 * math.log(0.7) + 0.4**2 * math.log(0.6) + 0.1**2 * math.log(0.9)) / 4
    assert lane_hybrid_loss(logits, target).item() == pytest.approx(dice + focal, abs=1e-6)
    assert lane_hybrid_loss(logits, target, focal_weight=2.0).item() == pytest.approx(dice + 2 * focal, abs=1e-6)
    assert lane_hybrid_loss(logits, target, eps=0.0).item() == pytest.approx(dice + focal, rel=1e-12)


def test_lane_hybrid_loss_of_a_perfect_prediction_is_near_zero_even_without_lanes():
    target = torch.tensor([[[1, 0], [0, 0]]])
    logits = (target[:, None].double() * 2 - 1) * 30
    assert lane_hybrid_loss(logits, target).item() < 1e-6
    empty = torch.zeros(1, 2, 2, dtype=torch.long)
    # lane class absent and predicted absent: its Dice ratio is 0/0, counted as 0 (cost 1), not NaN
    no_lane = torch.full((1, 1, 2, 2), -30.0, dtype=torch.float64)
    assert lane_hybrid_loss(no_lane, empty).item() == pytest.approx(1.0, abs=1e-6)


def test_drivable_term_is_cross_entropy_hand_computed():
    logits = torch.tensor([[[[1.0, 0.5]], [[3.0, -0.5]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    target = torch.tensor([[[1, 0]]])
    first = -math.log(math.exp(3) / (math.exp(1) + math.exp(3)))
    second = -math.log(math.exp(0.5) / (math.exp(0.5) + math.exp(-0.5)))
    loss = YOLOPv2Loss(1, ANCHORS)
    detection = [torch.zeros(1, 3, 1, 1, 6, dtype=torch.float64)] * 3
    lane_logits = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    out = loss(detection, logits, lane_logits, torch.zeros(0, 6), target, target)
    assert out["drivable"].item() == pytest.approx((first + second) / 2, rel=1e-12)


def matches(level) -> set[tuple[int, int, int]]:
    return set(zip(level.anchor.tolist(), level.grid_y.tolist(), level.grid_x.tolist()))


def test_assignment_of_a_box_to_anchors_and_cells_hand_worked():
    # centre (12.3, 20.7) px at stride 8 → (1.5375, 2.5875) cells: cell x=1, y=2; fractions .54 and .59 are
    # past the middle, so the right (x=2) and lower (y=3) neighbours, not the left/upper ones.
    # 60 x 10 px against anchors 12x16 (width ratio 5: no), 19x36 (3.16, 3.6: yes), 40x28 (1.5, 2.8: yes).
    targets = torch.tensor([[1, 2, 12.3, 20.7, 60, 10]], dtype=torch.float64)
    level = assign_targets(targets, ANCHORS[0], 8, (10, 10))
    expected_cells = {(2, 1), (2, 2), (3, 1)}  # (y, x)
    assert matches(level) == {(a, y, x) for a in (1, 2) for y, x in expected_cells}
    assert level.image.tolist() == [1] * 6 and level.cls.tolist() == [2] * 6
    for row in range(6):
        x, y, a = level.grid_x[row].item(), level.grid_y[row].item(), level.anchor[row].item()
        assert level.box[row].tolist() == pytest.approx([1.5375 - x, 2.5875 - y, 7.5, 1.25])
        assert level.anchor_wh[row].tolist() == pytest.approx((ANCHORS[0, a] / 8).tolist())


@pytest.mark.parametrize(
    ("centre", "cells"),
    [
        ((9.0, 44.2), {(5, 1), (5, 0), (6, 1)}),  # (1.125, 5.525): left (x .125) and lower (y .525)
        ((30.0, 35.0), {(4, 3), (4, 4), (3, 3)}),  # (3.75, 4.375): right and upper
        ((2.0, 3.0), {(0, 0)}),  # (.25, .375): nearer the left/upper borders, but those are the image's
        ((79.0, 79.0), {(9, 9)}),  # (9.875, 9.875): nearer the right/lower borders, the image's again
        ((20.0, 44.0), {(5, 2)}),  # (2.5, 5.5): exactly in the middle, no neighbour is nearer
    ],
)
def test_assignment_neighbour_cells_hand_worked(centre, cells):
    targets = torch.tensor([[0, 0, *centre, 16, 16]], dtype=torch.float64)  # 16x16 fits all three anchors
    level = assign_targets(targets, ANCHORS[0], 8, (10, 10))
    assert matches(level) == {(a, y, x) for a in range(3) for y, x in cells}


def test_box_fitting_no_anchor_gets_no_match():
    targets = torch.tensor([[0, 0, 40, 40, 200, 4]], dtype=torch.float64)  # ratios ≥ 5 to every anchor
    level = assign_targets(targets, ANCHORS[0], 8, (10, 10))
    assert level.image.numel() == level.box.shape[0] == 0
    loose = assign_targets(targets, ANCHORS[0], 8, (10, 10), anchor_ratio=100.0)
    assert set(loose.anchor.tolist()) == {0, 1, 2}


def test_decode_matched_hand_computed():
    anchor_wh = torch.tensor([[1.5, 2.0]])
    assert decode_matched(torch.zeros(1, 4), anchor_wh).tolist() == [[0.5, 0.5, 1.5, 2.0]]  # 2·½ - ½; (2·½)² a
    raw = torch.tensor([[logit(0.9), logit(0.2), logit(0.75), logit(0.25)]], dtype=torch.float64)
    assert decode_matched(raw, anchor_wh.double()).tolist()[0] == pytest.approx([1.3, -0.1, 1.5**2 * 1.5, 0.5**2 * 2.0])


IMAGE = 64
TARGETS = torch.tensor(
    [
        [0, 1, 20, 24, 16, 20],
        [1, 2, 40, 30, 30, 25],
        [1, 0, 45, 50, 10, 12],
        [0, 0, 44, 40, 40, 60],
        [1, 1, 12, 52, 60, 56],  # only this one fits a stride-32 anchor
    ],
    dtype=torch.float64,
)
STRIDES = (8, 16, 32)


def segmentation_targets() -> tuple[torch.Tensor, torch.Tensor]:
    drivable = torch.zeros(2, IMAGE, IMAGE, dtype=torch.long)
    drivable[:, IMAGE // 2 :] = 1
    lane = torch.zeros(2, IMAGE, IMAGE, dtype=torch.long)
    lane[:, :, 30:33] = 1
    return drivable, lane


def random_outputs(num_classes: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    detection = [
        torch.randn(2, 3, IMAGE // s, IMAGE // s, 5 + num_classes, generator=generator, dtype=torch.float64)
        for s in STRIDES
    ]
    drivable = torch.randn(2, 2, IMAGE, IMAGE, generator=generator, dtype=torch.float64)
    lane = torch.randn(2, 1, IMAGE, IMAGE, generator=generator, dtype=torch.float64)
    return detection, drivable, lane


def matching_outputs(num_classes: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Raw outputs that decode to exactly the target boxes at every assigned cell, confident elsewhere."""
    detection = []
    for level, stride in enumerate(STRIDES):
        grid = IMAGE // stride
        raw = torch.full((2, 3, grid, grid, 5 + num_classes), -12.0, dtype=torch.float64)
        matched = assign_targets(TARGETS, ANCHORS[level], stride, (grid, grid))
        index = (matched.image, matched.anchor, matched.grid_y, matched.grid_x)
        assert len(set(zip(*(i.tolist() for i in index)))) == matched.image.numel()  # no two share a prediction
        raw[index + (slice(0, 2),)] = torch.logit((matched.box[:, :2] + 0.5) / 2)
        raw[index + (slice(2, 4),)] = torch.logit(torch.sqrt(matched.box[:, 2:] / matched.anchor_wh) / 2)
        raw[index + (4,)] = 12.0
        raw[matched.image, matched.anchor, matched.grid_y, matched.grid_x, 5 + matched.cls] = 12.0
        detection.append(raw)
    drivable, lane = segmentation_targets()
    drivable_logits = torch.stack((1 - drivable, drivable), 1).double() * 24 - 12
    lane_logits = lane[:, None].double() * 24 - 12
    return detection, drivable_logits, lane_logits


def test_full_loss_is_finite_and_differentiable_to_every_input():
    loss = YOLOPv2Loss(3, ANCHORS)
    detection, drivable_logits, lane_logits = random_outputs(3)
    for tensor in (*detection, drivable_logits, lane_logits):
        tensor.requires_grad_(True)
    out = loss(detection, drivable_logits, lane_logits, TARGETS, *segmentation_targets())
    assert set(out) == {"loss", "box", "obj", "cls", "drivable", "lane"}
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    components = ("box", "obj", "cls", "drivable", "lane")
    assert all(out[name].item() > 0 and not out[name].requires_grad for name in components)
    parts = sum(out[name] for name in components)
    assert out["loss"].item() == pytest.approx(parts.item(), rel=1e-12)
    out["loss"].backward()
    for tensor in (*detection, drivable_logits, lane_logits):
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
    for raw in detection:  # objectness is trained at every cell
        assert (raw.grad[..., 4] != 0).all()


def test_matching_prediction_costs_less_than_a_random_one():
    loss = YOLOPv2Loss(3, ANCHORS)
    drivable, lane = segmentation_targets()
    matched = loss(*matching_outputs(3), TARGETS, drivable, lane)
    random = loss(*random_outputs(3), TARGETS, drivable, lane)
    assert matched["box"].item() < 1e-6  # the decode inverts the encoding: CIoU 1 (up to eps) at every match
    for name in ("loss", "box", "obj", "cls", "drivable", "lane"):
        assert matched[name] < random[name], name
    assert matched["loss"].item() < 1e-3


def test_objectness_target_is_the_detached_ciou_of_the_matched_prediction():
    generator = torch.Generator().manual_seed(1)
    raw = torch.randn(2, 3, 2, 2, 6, generator=generator, dtype=torch.float64)
    # at stride 32 the first two targets both reach image 0, anchor 0, cell (y 0, x 1): the better CIoU counts
    targets = torch.tensor([[0, 0, 30, 30, 60, 50], [0, 0, 34, 28, 70, 60], [1, 0, 40, 20, 100, 90]]).double()
    loss = YOLOPv2Loss(1, ANCHORS[2:], strides=(32,), weights=YOLOPv2LossWeights(box=1.0, obj=1.0))
    drivable, lane = segmentation_targets()
    out = loss([raw], drivable.double()[:, None].repeat(1, 2, 1, 1), lane.double()[:, None], targets, drivable, lane)

    matched = assign_targets(targets, ANCHORS[2], 32, (2, 2))
    assert matched.image.numel() > 0
    rows = raw[matched.image, matched.anchor, matched.grid_y, matched.grid_x]
    ciou = complete_iou(xywh_to_xyxy(decode_matched(rows, matched.anchor_wh)), xywh_to_xyxy(matched.box))
    objectness = torch.zeros(2, 3, 2, 2, dtype=torch.float64)
    cells = list(zip(matched.image.tolist(), matched.anchor.tolist(), matched.grid_y.tolist(), matched.grid_x.tolist()))
    assert len(set(cells)) < len(cells)
    for cell, value in zip(cells, ciou.tolist()):
        objectness[cell] = max(objectness[cell].item(), value)
    assert out["box"].item() == pytest.approx((1 - ciou).mean().item(), rel=1e-12)
    assert out["obj"].item() == pytest.approx(0.4 * focal_bce_with_logits(raw[..., 4], objectness).item(), rel=1e-12)
    assert out["cls"].item() == 0.0  # one class: objectness is the class score, as in YOLOv5/YOLOP


def test_loss_without_boxes_has_only_objectness_and_segmentation_terms():
    loss = YOLOPv2Loss(3, ANCHORS)
    detection, drivable_logits, lane_logits = random_outputs(3, seed=2)
    detection = [d.requires_grad_(True) for d in detection]
    out = loss(detection, drivable_logits, lane_logits, torch.zeros(0, 6), *segmentation_targets())
    assert out["box"].item() == out["cls"].item() == 0.0
    assert out["obj"].item() > 0 and out["drivable"].item() > 0 and out["lane"].item() > 0
    out["loss"].backward()
    for raw in detection:
        assert raw.grad[..., 4].abs().sum() > 0
        assert (raw.grad[..., :4] == 0).all() and (raw.grad[..., 5:] == 0).all()


def test_loss_weights_scale_their_terms():
    detection, drivable_logits, lane_logits = random_outputs(3, seed=3)
    targets = (TARGETS, *segmentation_targets())
    base = YOLOPv2Loss(3, ANCHORS)(detection, drivable_logits, lane_logits, *targets)
    doubled = YOLOPv2LossWeights(box=0.1, obj=2.0, cls=1.0, drivable=2.0, lane=2.0)
    scaled = YOLOPv2Loss(3, ANCHORS, weights=doubled)(detection, drivable_logits, lane_logits, *targets)
    for name in ("loss", "box", "obj", "cls", "drivable", "lane"):
        assert scaled[name].item() == pytest.approx(2 * base[name].item(), rel=1e-12), name


def test_anchor_and_stride_shapes_are_checked():
    with pytest.raises(ValueError, match="anchors"):
        YOLOPv2Loss(1, ANCHORS[:2])
    with pytest.raises(ValueError, match="balance"):
        YOLOPv2Loss(1, ANCHORS[:1], strides=(4,))
