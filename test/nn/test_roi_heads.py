"""Mask R-CNN's RoI heads, losses and mask pasting against torchvision 0.28 (test-only reference, running our
NMS and RoIAlign), on random features, proposals and hand-made targets.

The heads are compared in float64 (no two scores tie, so the order of detections is defined); pasting is
compared in float32 to 2e-6 (the interpolation sums its terms in another order than torchvision's
per-box ``F.interpolate``; the integer box corners, which decide where every value lands, are exact).
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from oracles import torchvision_or_skip

from panoptic_perception.nn.roi_heads import (
    FastRCNNPredictor,
    MaskRCNNHeads,
    MaskRCNNPredictor,
    RoIHeads,
    TwoMLPHead,
    fastrcnn_loss,
    maskrcnn_loss,
    paste_masks_in_boxes,
    paste_masks_in_image,
    project_masks_on_boxes,
)

CHANNELS, HIDDEN, MASK_LAYERS, NUM_CLASSES = 8, 32, (8, 8), 4
IMAGE_SIZES = [(150, 220), (128, 192)]
GRIDS = [(40, 56), (20, 28), (10, 14), (5, 7)]


def random_boxes(count: int, generator: torch.Generator, height: float, width: float, dtype=torch.float32):
    corner = torch.rand(count, 2, generator=generator) * torch.tensor([width, height]) * 0.8
    size = torch.rand(count, 2, generator=generator) ** 2 * torch.tensor([width, height]) * 0.5 + 0.5
    boxes = torch.cat((corner, corner + size), dim=1)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(max=width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(max=height)
    return boxes.to(dtype)


def test_paste_masks_equals_torchvision():
    torchvision_or_skip()
    from torchvision.models.detection.roi_heads import paste_masks_in_image as reference

    generator = torch.Generator().manual_seed(0)
    height, width = 90, 130
    boxes = random_boxes(60, generator, height, width)
    special = torch.tensor([
        [0.0, 0.0, float(width), float(height)],  # the whole image: enlarged beyond it on every side
        [0.0, 0.0, 0.3, 0.4],  # below a pixel, at the corner
        [width - 1.2, height - 0.7, float(width), float(height)],  # at the far corner
        [10.0, 20.0, 38.0, 48.0],  # 28 x 28: the padded mask resized to 31 x 31
        [10.5, 20.5, 11.0, 80.0],  # a thin column
    ])
    boxes = torch.cat((boxes, special))
    masks = torch.rand(len(boxes), 1, 28, 28, generator=generator)
    actual = paste_masks_in_image(masks, boxes, (height, width))
    expected = reference(masks, boxes, (height, width))
    assert actual.shape == expected.shape == (len(boxes), 1, height, width)
    torch.testing.assert_close(actual, expected, rtol=0, atol=2e-6)
    assert torch.equal(actual == 0, expected == 0)  # the same pixels covered
    assert (actual > 0).sum(dim=(1, 2, 3)).min() > 0


def test_paste_masks_in_boxes_keeps_only_the_boxes_and_each_window_holds_all_of_its_mask():
    generator = torch.Generator().manual_seed(1)
    height, width = 90, 130
    boxes = torch.cat((random_boxes(30, generator, height, width),
                       torch.tensor([[-30.0, -20, -10, -5], [125.0, 85, 140, 99], [0.0, 0.0, float(width), float(height)]])))
    masks = torch.rand(len(boxes), 1, 28, 28, generator=generator)
    pasted = paste_masks_in_boxes(masks, boxes, (height, width))
    whole = paste_masks_in_image(masks, boxes, (height, width))
    for (x, y, w, h), values in pasted:
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and values.shape == (h, w)
    for image, ((x, y, w, h), values) in zip(whole[:, 0], pasted):
        assert torch.equal(image[y : y + h, x : x + w], values)
        image[y : y + h, x : x + w] = 0
        assert not image.any(), "nothing outside the window"
    # Independently, torchvision's way: the padded mask resized to the enlarged box's whole pixels, cropped.
    for mask, box, ((x, y, w, h), values) in zip(masks[:, 0], boxes.tolist(), pasted):
        centre_x, centre_y, scale = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 30 / 28
        x0, x1 = int(centre_x - (box[2] - box[0]) / 2 * scale), int(centre_x + (box[2] - box[0]) / 2 * scale)
        y0, y1 = int(centre_y - (box[3] - box[1]) / 2 * scale), int(centre_y + (box[3] - box[1]) / 2 * scale)
        if w and h:
            resized = torch.nn.functional.interpolate(torch.nn.functional.pad(mask, (1,) * 4)[None, None],
                                                      size=(y1 - y0 + 1, x1 - x0 + 1), mode="bilinear",
                                                      align_corners=False)[0, 0]
            torch.testing.assert_close(values, resized[y - y0 : y - y0 + h, x - x0 : x - x0 + w], rtol=0, atol=2e-6)
    assert pasted[30][0][2:] == (0, 0) and pasted[31][0] == (124, 84, 6, 6) and pasted[32][0] == (0, 0, width, height)


def test_paste_masks_geometry_by_hand():
    """A 2x2 mask of ones in the box (10, 20)-(14, 24): padded to 4x4 (a zero ring), the box enlarged by
    4 / 2 about its centre (12, 22) to (8, 18)-(16, 26), i.e. 9x9 whole pixels; resizing 4 → 9 samples
    source ``4/9 (d + 0.5) - 0.5`` (clamped at 0) of the profile (0, 1, 1, 0): (0, 1/6, 11/18, 1, 1, 1,
    11/18, 1/6, 0) per axis, and the pasted mask is the outer product."""
    mask = torch.ones(1, 1, 2, 2)
    pasted = paste_masks_in_image(mask, torch.tensor([[10.0, 20.0, 14.0, 24.0]]), (40, 40))[0, 0]
    profile = torch.tensor([0, 1 / 6, 11 / 18, 1, 1, 1, 11 / 18, 1 / 6, 0])
    expected = torch.zeros(40, 40)
    expected[18:27, 8:17] = profile[:, None] * profile[None, :]
    torch.testing.assert_close(pasted, expected, rtol=0, atol=1e-6)
    beyond = torch.tensor([[50.0, 5, 60, 9], [-30.0, -20, -10, -5]])
    outside = paste_masks_in_image(mask.repeat(2, 1, 1, 1), beyond, (40, 40))
    assert not outside.any()  # boxes beyond the image paste nothing (torchvision's slicing fails there)
    assert paste_masks_in_image(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (5, 6)).shape == (0, 1, 5, 6)
    with pytest.raises(ValueError, match="masks"):
        paste_masks_in_image(torch.zeros(2, 1, 28, 14), torch.zeros(2, 4), (5, 6))


def test_losses_equal_torchvision_functions():
    torchvision_or_skip()
    from torchvision.models.detection import roi_heads as reference

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(12, NUM_CLASSES, generator=generator)
    deltas = torch.randn(12, 4 * NUM_CLASSES, generator=generator)
    labels = torch.tensor([0, 1, 0, 3, 2, 0, 0, 1, 1, 0, 3, 0])
    targets = torch.randn(12, 4, generator=generator)
    actual = fastrcnn_loss(logits, deltas, labels, targets)
    expected = reference.fastrcnn_loss(logits, deltas, [labels[:5], labels[5:]], [targets[:5], targets[5:]])
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=0)
    # By hand: the box loss sums the 5 positives' deltas of their class over all 12 samples.
    positive = labels > 0
    picked = deltas.view(12, NUM_CLASSES, 4)[positive, labels[positive]]
    by_hand = torch.nn.functional.smooth_l1_loss(picked, targets[positive], beta=1 / 9, reduction="sum") / 12
    torch.testing.assert_close(actual[1], by_hand)

    gt_masks = [torch.zeros(2, 60, 80, dtype=torch.uint8), torch.zeros(1, 50, 50, dtype=torch.uint8)]
    gt_masks[0][0, 10:40, 5:30] = 1
    gt_masks[0][1, 30:55, 40:78] = 1
    gt_masks[1][0, 5:45, 20:30] = 1
    gt_labels = [torch.tensor([2, 3]), torch.tensor([1])]
    proposals = [torch.tensor([[4.0, 8.0, 33.0, 41.0], [38.5, 28.0, 79.0, 57.2], [0.0, 0.0, 20.0, 20.0]]),
                 torch.tensor([[18.0, 3.0, 32.0, 47.0]])]
    matched = [torch.tensor([0, 1, 0]), torch.tensor([0])]
    mask_logits = torch.randn(4, NUM_CLASSES, 28, 28, generator=generator)
    torch.testing.assert_close(
        maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, matched),
        reference.maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, matched), rtol=1e-6, atol=0,
    )
    projected = project_masks_on_boxes(gt_masks[0], proposals[0], matched[0], 28)
    # By hand, proposal 2 = (0, 0)-(20, 20) over mask 0 (rows 10..39, columns 5..29): one sample per bin
    # at ((i + 0.5) * 20 / 28), pixel centres at integers: rows < 13 and columns < 6 read zeros only,
    # rows >= 14 and columns >= 7 ones only.
    assert projected.shape == (3, 28, 28)
    assert not projected[2, :13].any() and not projected[2, :, :6].any()
    torch.testing.assert_close(projected[2, 14:, 7:], torch.ones(14, 21), rtol=0, atol=1e-6)
    torch.testing.assert_close(projected, reference.project_masks_on_boxes(gt_masks[0], proposals[0], matched[0], 28))
    no_logits = torch.zeros(0, NUM_CLASSES, 28, 28, requires_grad=True)
    empty = maskrcnn_loss(no_logits, [proposals[0][:0]], gt_masks[:1], gt_labels[:1], [matched[0][:0]])
    assert empty.item() == 0 and empty.requires_grad  # no positives: 0, still connected to the graph


def test_head_modules_keys_equal_torchvision():
    tv = torchvision_or_skip()
    from torchvision.models.detection import faster_rcnn, mask_rcnn

    with torch.device("meta"):
        reference = tv.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).roi_heads
        ours = RoIHeads(91)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert list(ours.state_dict()) == list(reference.state_dict())
    assert ours.box_roi_pool.output_size == (7, 7) and ours.mask_roi_pool.output_size == (14, 14)
    assert ours.box_roi_pool.sampling_ratio == ours.mask_roi_pool.sampling_ratio == 2
    # The parts alone compute what torchvision's do.
    torch.manual_seed(0)
    pairs = [
        (TwoMLPHead(CHANNELS * 49, HIDDEN), faster_rcnn.TwoMLPHead(CHANNELS * 49, HIDDEN), (3, CHANNELS, 7, 7)),
        (FastRCNNPredictor(HIDDEN, NUM_CLASSES), faster_rcnn.FastRCNNPredictor(HIDDEN, NUM_CLASSES), (3, HIDDEN)),
        (MaskRCNNHeads(CHANNELS, MASK_LAYERS), mask_rcnn.MaskRCNNHeads(CHANNELS, MASK_LAYERS, 1),
         (3, CHANNELS, 14, 14)),
        (MaskRCNNPredictor(8, 8, NUM_CLASSES), mask_rcnn.MaskRCNNPredictor(8, 8, NUM_CLASSES), (3, 8, 14, 14)),
    ]
    for module, reference_module, shape in pairs:
        reference_module.load_state_dict(module.state_dict(), strict=True)
        x = torch.randn(shape)
        torch.testing.assert_close(module(x), reference_module(x), rtol=0, atol=0)
    assert pairs[3][0](torch.randn(3, 8, 14, 14)).shape == (3, NUM_CLASSES, 28, 28)


def heads_pair(**settings):
    """Our RoI heads and torchvision's with the same random weights, plus features and proposals, in float64."""
    torchvision_or_skip()
    from torchvision.models.detection import faster_rcnn, mask_rcnn
    from torchvision.models.detection.roi_heads import RoIHeads as Reference
    from torchvision.ops import MultiScaleRoIAlign

    torch.manual_seed(0)
    ours = RoIHeads(NUM_CLASSES, CHANNELS, representation_size=HIDDEN, mask_layers=MASK_LAYERS, **settings).double()
    thresholds = {"score_thresh": 0.05, "nms_thresh": 0.5, "detections_per_img": 100, **settings}
    reference = Reference(
        MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), faster_rcnn.TwoMLPHead(CHANNELS * 49, HIDDEN),
        faster_rcnn.FastRCNNPredictor(HIDDEN, NUM_CLASSES), 0.5, 0.5, 512, 0.25, None,
        thresholds["score_thresh"], thresholds["nms_thresh"], thresholds["detections_per_img"],
        mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 14, 2),
        mask_head=mask_rcnn.MaskRCNNHeads(CHANNELS, MASK_LAYERS, 1),
        mask_predictor=mask_rcnn.MaskRCNNPredictor(MASK_LAYERS[-1], MASK_LAYERS[-1], NUM_CLASSES),
    ).double()
    reference.load_state_dict(ours.state_dict(), strict=True)
    generator = torch.Generator().manual_seed(2)
    features = OrderedDict((str(i), torch.randn(2, CHANNELS, h, w, generator=generator, dtype=torch.float64))
                           for i, (h, w) in enumerate(GRIDS))
    proposals = [random_boxes(300, generator, h, w, torch.float64) for h, w in IMAGE_SIZES]
    return ours, reference, features, proposals


def test_detections_equal_torchvision():
    ours, reference, features, proposals = heads_pair(score_thresh=0.2, detections_per_img=60)
    ours.eval(), reference.eval()
    with torch.no_grad():
        detections, losses = ours(features, proposals, IMAGE_SIZES)
        expected, _ = reference(features, proposals, IMAGE_SIZES)
    assert losses == {}
    for actual, wanted, (height, width) in zip(detections, expected, IMAGE_SIZES):
        assert 20 < len(actual["boxes"]) <= 60 and len(actual["labels"].unique()) > 1
        assert actual["scores"].min() > 0.2 and (actual["labels"] > 0).all()
        assert (actual["boxes"][:, 0::2] <= width).all() and (actual["boxes"][:, 1::2] <= height).all()
        for name in ("boxes", "labels", "scores", "masks"):
            torch.testing.assert_close(actual[name], wanted[name], rtol=1e-12, atol=0, msg=name)
        assert actual["masks"].shape == (len(actual["boxes"]), 1, 28, 28)


def test_training_losses_equal_torchvision():
    ours, reference, features, proposals = heads_pair()
    ours.train(), reference.train()
    masks = torch.zeros(3, *IMAGE_SIZES[0], dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 12.0, 70.0, 90.0], [100.0, 30.0, 180.0, 70.0], [60.0, 60.0, 120.0, 140.0]],
                         dtype=torch.float64)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.long().tolist()):
        mask[y0 + 5 : y1, x0 : x1 - 10] = 1
    targets = [
        {"boxes": boxes, "labels": torch.tensor([1, 3, 2]), "masks": masks},
        {"boxes": torch.zeros(0, 4, dtype=torch.float64), "labels": torch.zeros(0, dtype=torch.long),
         "masks": torch.zeros(0, *IMAGE_SIZES[1], dtype=torch.uint8)},
    ]
    torch.manual_seed(3)
    detections, losses = ours(features, proposals, IMAGE_SIZES, targets)
    torch.manual_seed(3)
    _, expected = reference(features, proposals, IMAGE_SIZES, targets)
    assert detections == [] and sorted(losses) == sorted(expected) == ["loss_box_reg", "loss_classifier", "loss_mask"]
    for name in losses:
        assert losses[name] > 0
        torch.testing.assert_close(losses[name], expected[name], rtol=1e-12, atol=0, msg=name)
    sum(losses.values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ours.parameters())
    with pytest.raises(ValueError, match="targets"):
        ours(features, proposals, IMAGE_SIZES)


def test_invalid_configuration_raises():
    with pytest.raises(ValueError, match="num_classes"):
        RoIHeads(1)
    with pytest.raises(ValueError, match="mask layers"):
        RoIHeads(3, mask_layers=())
