"""A small YOLOPv2 overfits one batch of synthetic scenes: proof that losses and target assignment fit the
network (detections at the ground-truth boxes with the right class, masks at IoU > 0.8)."""

from __future__ import annotations

import numpy as np
import torch

from panoptic_perception.backends.yolopv2 import detection_candidates, select_detections
from panoptic_perception.core.preprocess import prepare_batch
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.models.yolopv2 import YOLOPv2
from panoptic_perception.nn.boxes import box_iou, xywh_to_xyxy
from panoptic_perception.training.yolopv2_losses import YOLOPv2Loss

SIZE = (256, 160)  # the same 7 objects of 3 classes as at 320x192 (the smallest 8x12 px), in 2/3 of the pixels
CLASS_INDEX = {26: 0, 27: 1, 24: 2}  # car, truck, person → head slots
MIN_BOX = 8  # pixels; smaller objects are not asked for (a 1-2 cell object at stride 8)
# Evaluated every 10 steps (an evaluation costs about a third of a step): training stops soon after the
# detection and mask claims asserted below all hold, or after MAX_STEPS.
CHECK_EVERY, MAX_STEPS = 10, 400


def batch():
    scenes = [generate_scene(seed, *SIZE) for seed in (11, 12)]
    images, _ = prepare_batch([s.image for s in scenes], SIZE)
    targets = [
        [i, CLASS_INDEX[int(cid)], (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        for i, s in enumerate(scenes)
        for (x1, y1, x2, y2), cid in zip(s.detections.boxes, s.detections.class_ids)
        if min(x2 - x1, y2 - y1) >= MIN_BOX
    ]
    drivable = torch.from_numpy(np.stack([s.drivable_mask for s in scenes])).long()
    lane = torch.from_numpy(np.stack([s.lane_mask for s in scenes])).long()
    return images, torch.tensor(targets, dtype=torch.float32), drivable, lane


def iou(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    return float(((prediction == 1) & (truth == 1)).sum() / ((prediction == 1) | (truth == 1)).sum())


def evaluate(network: YOLOPv2, images, targets, drivable, lane) -> dict:
    network.eval()
    network.export = True
    with torch.no_grad():
        (pred, anchor_grid), seg, ll = network(images)
    network.export = False
    matched, spurious = 0, 0
    for i in range(images.shape[0]):
        kept, _ = select_detections(detection_candidates(pred, anchor_grid, SIZE[1], i, 0.3), 0.45, 300)
        truth = targets[targets[:, 0] == i]
        overlaps = box_iou(xywh_to_xyxy(truth[:, 2:]), kept[:, :4])
        same_class = truth[:, 1:2] == kept[None, :, 5]
        matched += int(((overlaps > 0.5) & same_class).any(1).sum())
        spurious += int((overlaps.max(0).values if len(truth) else torch.zeros(len(kept))).lt(0.1).sum())
    return {
        "matched": matched,
        "spurious": spurious,
        "drivable_iou": iou(seg.argmax(1), drivable),
        "lane_iou": iou((ll[:, 0] > 0.5).long(), lane),
    }


def test_small_yolopv2_overfits_one_batch_of_synthetic_scenes():
    torch.manual_seed(0)
    images, targets, drivable, lane = batch()
    assert len(targets) >= 5 and len(set(targets[:, 1].tolist())) >= 2, "several objects of several classes"
    network = YOLOPv2(num_classes=3, width=0.125, depth=0.33)  # narrow: the claim is about the losses, not capacity
    criterion = YOLOPv2Loss(3, network.anchors)
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    first_loss = None
    for step in range(1, MAX_STEPS + 1):
        network.train()
        out = network(images)
        losses = criterion(out.detection, out.drivable, out.lane, targets, drivable, lane)
        first_loss = first_loss or losses["loss"].item()
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        if step % CHECK_EVERY == 0:
            result = evaluate(network, images, targets, drivable, lane)
            if (result["matched"] == len(targets) and result["spurious"] <= 2 and result["drivable_iou"] > 0.8
                    and result["lane_iou"] > 0.8):
                break
    assert losses["loss"].item() < 0.2 * first_loss
    assert result["matched"] == len(targets), result
    assert result["spurious"] <= 2, result
    assert result["drivable_iou"] > 0.8 and result["lane_iou"] > 0.8, result
