"""Box conversions, IoU, CIoU on hand-computed values; NMS against a brute-force greedy reference."""

import math
import random

import numpy as np
import pytest
import torch

from panoptic_perception.nn.boxes import (
    batched_nms,
    box_area,
    box_iou,
    complete_iou,
    NMS_BLOCK_SIZE,
    NMS_MAX_WINDOW,
    nms,
    greedy_keep,
    xywh_to_xyxy,
    xyxy_to_xywh,
)


def test_conversions_hand_computed_and_round_trip():
    xywh = torch.tensor([[10.0, 20.0, 4.0, 6.0]])
    assert xywh_to_xyxy(xywh).tolist() == [[8.0, 17.0, 12.0, 23.0]]
    assert xyxy_to_xywh(torch.tensor([[8.0, 17.0, 12.0, 23.0]])).tolist() == [[10.0, 20.0, 4.0, 6.0]]
    torch.manual_seed(0)
    boxes = torch.rand(2, 5, 7, 4, dtype=torch.float64) * 100  # any leading shape
    assert xywh_to_xyxy(boxes).shape == boxes.shape
    assert torch.allclose(xyxy_to_xywh(xywh_to_xyxy(boxes)), boxes)
    assert torch.allclose(xywh_to_xyxy(xyxy_to_xywh(boxes)), boxes)


def test_box_area():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0], [3.0, 3.0, 1.0, 1.0]])
    assert box_area(boxes).tolist() == [6.0, 0.0, 0.0]  # the inverted box counts as empty


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([0, 0, 2, 2], [0, 0, 2, 2], 1.0),  # identical
        ([0, 0, 1, 1], [2, 2, 3, 3], 0.0),  # disjoint
        ([0, 0, 1, 1], [1, 0, 2, 1], 0.0),  # touching along an edge
        ([0, 0, 4, 4], [1, 1, 3, 3], 4 / 16),  # nested
        ([0, 0, 2, 2], [1, 0, 3, 2], 2 / 6),  # half of each overlaps: 2 / (4 + 4 - 2)
        ([1, 1, 1, 1], [1, 1, 1, 1], 0.0),  # zero-area, identical
        ([1, 1, 1, 1], [0, 0, 2, 2], 0.0),  # zero-area inside a box
        ([0, 1, 2, 1], [0, 0, 2, 2], 0.0),  # degenerate line
    ],
)
def test_box_iou_hand_computed(a, b, expected):
    a, b = torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32)
    iou = box_iou(a, b)
    assert iou.shape == (1, 1)
    assert iou.item() == pytest.approx(expected)
    assert box_iou(b, a).item() == pytest.approx(expected)


def test_box_iou_is_pairwise():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    expected = torch.tensor([[1.0, 1 / 3, 0.0], [4 / 16, 4 / 16, 0.0]])
    assert torch.allclose(box_iou(a, b), expected)
    assert box_iou(a[:0], b).shape == (0, 3) and box_iou(a, b[:0]).shape == (2, 0)


def test_complete_iou_of_identical_boxes_is_one():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [10.0, 5.0, 40.0, 9.0]], dtype=torch.float64)
    assert torch.allclose(complete_iou(boxes, boxes), torch.ones(2, dtype=torch.float64), atol=1e-6)


def test_complete_iou_hand_computed_offset_pair():
    pred = torch.tensor([0.0, 0.0, 2.0, 2.0], dtype=torch.float64)
    target = torch.tensor([1.0, 1.0, 3.0, 4.0], dtype=torch.float64)
    iou = 1 / 9  # intersection [1,2]x[1,2] = 1, union 4 + 6 - 1 = 9
    rho2_over_c2 = (1.0**2 + 1.5**2) / (3.0**2 + 4.0**2)  # centres (1, 1) and (2, 2.5); enclosing box 3 x 4
    v = 4 / math.pi**2 * (math.atan(2 / 3) - math.atan(2 / 2)) ** 2
    alpha = v / (1 - iou + v)
    expected = iou - rho2_over_c2 - alpha * v
    assert complete_iou(pred, target).item() == pytest.approx(expected, abs=1e-6)
    assert complete_iou(pred, target, eps=0.0).item() == pytest.approx(expected, abs=1e-12)


def test_complete_iou_alpha_is_constant_for_the_gradient():
    pred = torch.tensor([0.0, 0.0, 2.0, 2.0], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1.0, 1.0, 3.0, 4.0], dtype=torch.float64)
    complete_iou(pred, target, eps=0.0).backward()

    def ciou_with_fixed_alpha(p: torch.Tensor) -> torch.Tensor:
        iou = 1 / 9
        v0 = 4 / math.pi**2 * (math.atan(2 / 3) - math.atan(1.0)) ** 2
        alpha = v0 / (1 - iou + v0)  # frozen at the current value
        w, h = p[2] - p[0], p[3] - p[1]
        inter = (torch.minimum(p[2], target[2]) - torch.maximum(p[0], target[0])).clamp(min=0) * (
            torch.minimum(p[3], target[3]) - torch.maximum(p[1], target[1])
        ).clamp(min=0)
        iou_p = inter / (w * h + 6.0 - inter)
        cw = torch.maximum(p[2], target[2]) - torch.minimum(p[0], target[0])
        ch = torch.maximum(p[3], target[3]) - torch.minimum(p[1], target[1])
        rho2 = ((target[0] + target[2] - p[0] - p[2]) ** 2 + (target[1] + target[3] - p[1] - p[3]) ** 2) / 4
        v = 4 / math.pi**2 * (math.atan(2 / 3) - torch.atan(w / h)) ** 2
        return iou_p - rho2 / (cw**2 + ch**2) - alpha * v

    reference = pred.detach().clone().requires_grad_(True)
    ciou_with_fixed_alpha(reference).backward()
    assert torch.allclose(pred.grad, reference.grad, atol=1e-12)


def test_complete_iou_of_degenerate_boxes_is_finite_with_finite_gradient():
    pred = torch.tensor([[1.0, 1.0, 1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    value = complete_iou(pred, target)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(pred.grad).all()


def reference_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_nms(
    boxes: list[list[float]], scores: list[float], threshold: float, classes: list[int] | None = None
) -> list[int]:
    """Greedy NMS straight from its definition, in pure Python."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    for i in order:
        if all(
            (classes is not None and classes[i] != classes[k]) or reference_iou(boxes[i], boxes[k]) <= threshold
            for k in kept
        ):
            kept.append(i)
    return kept


def reference_nms_numpy(boxes: np.ndarray, scores: np.ndarray, threshold: float, classes: np.ndarray) -> list[int]:
    """The same greedy definition for thousands of boxes: one box at a time, compared with every kept
    box of its class at once (IoU written out in numpy, as in :func:`reference_iou`)."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    kept_boxes = np.zeros((0, 4))
    kept_classes = np.zeros(0, dtype=np.int64)
    for i in order:
        b = boxes[i]
        iw = np.maximum(0.0, np.minimum(b[2], kept_boxes[:, 2]) - np.maximum(b[0], kept_boxes[:, 0]))
        ih = np.maximum(0.0, np.minimum(b[3], kept_boxes[:, 3]) - np.maximum(b[1], kept_boxes[:, 1]))
        inter = iw * ih
        area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
        areas = np.maximum(0.0, kept_boxes[:, 2] - kept_boxes[:, 0]) * np.maximum(0.0, kept_boxes[:, 3] - kept_boxes[:, 1])
        union = area_b + areas - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        if not ((iou > threshold) & (kept_classes == classes[i])).any():
            kept.append(i)
            kept_boxes = np.vstack((kept_boxes, b))
            kept_classes = np.append(kept_classes, classes[i])
    return kept


def random_case(seed: int, max_boxes: int = 300) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """0..max_boxes float64 boxes, jittered around a few objects so that many overlap, with score ties and
    classes."""
    rng = random.Random(seed)
    generator = torch.Generator().manual_seed(seed)
    n = rng.randint(0, max_boxes)
    objects = rng.randint(1, max(30, max_boxes // 10))
    object_centres = torch.rand(objects, 2, generator=generator, dtype=torch.float64) * 200
    object_sizes = torch.rand(objects, 2, generator=generator, dtype=torch.float64) * 40 + 1
    which = torch.randint(0, objects, (n,), generator=generator)
    jitter = rng.choice([0.05, 0.2, 0.5])  # relative to the object's size
    noise = 1 + jitter * (torch.rand(n, 4, generator=generator, dtype=torch.float64) * 2 - 1)
    centres = object_centres[which] + object_sizes[which] * (noise[:, :2] - 1)
    sizes = object_sizes[which] * noise[:, 2:]
    boxes = torch.cat((centres - sizes / 2, centres + sizes / 2), dim=1)  # may reach negative coordinates
    scores = torch.rand(n, generator=generator, dtype=torch.float64)
    if n:
        levels = torch.rand(rng.randint(1, 5), generator=generator, dtype=torch.float64)
        tied = torch.rand(n, generator=generator) < 0.4  # many boxes share a handful of scores
        scores[tied] = levels[torch.randint(0, levels.numel(), (int(tied.sum()),), generator=generator)]
    classes = torch.randint(0, rng.randint(1, 4), (n,), generator=generator)
    return boxes, scores, classes


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms_equals_brute_force_reference(threshold):
    for seed in range(200):
        boxes, scores, _ = random_case(seed)
        expected = reference_nms(boxes.tolist(), scores.tolist(), threshold)
        kept = nms(boxes, scores, threshold)
        assert kept.dtype == torch.long
        assert kept.tolist() == expected, f"seed {seed}"


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_batched_nms_equals_per_class_brute_force_reference(threshold):
    for seed in range(200):
        boxes, scores, classes = random_case(seed)
        expected = reference_nms(boxes.tolist(), scores.tolist(), threshold, classes.tolist())
        assert batched_nms(boxes, scores, classes, threshold).tolist() == expected, f"seed {seed}"


@pytest.mark.parametrize("seed", range(12))
def test_nms_on_thousands_of_boxes_equals_the_reference_with_early_stop_and_cap(seed):
    """Thousands of boxes (many blocks, overlaps across block boundaries), ties, several classes; the
    early stop and the pre-NMS cap give exactly the truncated reference."""
    boxes, scores, classes = random_case(1000 + seed, max_boxes=4000)
    threshold = [0.3, 0.5, 0.7][seed % 3]
    expected = reference_nms_numpy(boxes.numpy(), scores.numpy(), threshold, classes.numpy())
    assert batched_nms(boxes, scores, classes, threshold, max_candidates=None).tolist() == expected
    for max_detections in (1, 7, NMS_BLOCK_SIZE + 1, 300):
        kept = batched_nms(boxes, scores, classes, threshold, max_detections, max_candidates=None)
        assert kept.tolist() == expected[:max_detections], f"max_detections {max_detections}"
    ranked = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:1000]  # the best 1000, ties by index
    capped = reference_nms_numpy(boxes[ranked].numpy(), scores[ranked].numpy(), threshold, classes[ranked].numpy())
    assert batched_nms(boxes, scores, classes, threshold, max_candidates=1000).tolist() == [ranked[i] for i in capped]


def test_nms_resolves_a_chain_spanning_blocks():
    """Each box overlaps only its neighbours: greedy keeps every other one, and suppression carries
    across block boundaries."""
    n = 3 * NMS_BLOCK_SIZE + 5
    x = torch.arange(n, dtype=torch.float64) * 3
    boxes = torch.stack((x, torch.zeros(n, dtype=torch.float64), x + 10, torch.full((n,), 10.0, dtype=torch.float64)), 1)
    scores = torch.linspace(1, 0, n, dtype=torch.float64)
    expected = reference_nms_numpy(boxes.numpy(), scores.numpy(), 0.45, np.zeros(n, dtype=np.int64))
    assert expected == list(range(0, n, 2))
    assert nms(boxes, scores, 0.45).tolist() == expected


def test_greedy_keep_hand_made():
    # 0 suppresses 1, 1 would suppress 2 but is gone, 2 suppresses 3; 4 is suppressed only by 1 (gone)
    suppresses = torch.zeros(5, 5, dtype=torch.bool)
    suppresses[0, 1] = suppresses[1, 2] = suppresses[2, 3] = suppresses[1, 4] = True
    suppresses[3, 0] = True  # below the diagonal: a later box never suppresses an earlier one
    assert greedy_keep(suppresses).tolist() == [0, 2, 4]
    assert greedy_keep(torch.zeros(0, 0, dtype=torch.bool)).tolist() == []
    wide = torch.zeros(200, 200, dtype=torch.bool)  # rows of more than 64 bits
    wide[3, 150] = wide[150, 199] = True
    assert greedy_keep(wide).tolist() == [i for i in range(200) if i != 150]


def test_nms_window_grows_over_runs_of_duplicates_and_shrinks_back():
    """A few objects, each with a long run of near-duplicates, then new objects far beyond the largest
    window: the growing window must neither skip nor mis-resolve them."""
    generator = torch.Generator().manual_seed(5)
    n = 3 * NMS_MAX_WINDOW
    centres = torch.tensor([[50.0, 50.0], [300.0, 50.0], [50.0, 300.0]], dtype=torch.float64)
    which = torch.arange(n) % 3
    jitter = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    boxes = torch.cat((centres[which] - 20 + jitter, centres[which] + 20 + jitter), dim=1)
    late = torch.tensor([[500.0, 500.0, 540.0, 540.0], [505.0, 505.0, 545.0, 545.0], [600.0, 100.0, 640.0, 140.0]],
                        dtype=torch.float64)
    boxes = torch.cat((boxes, late))
    scores = torch.linspace(1, 0.1, n + 3, dtype=torch.float64)
    expected = reference_nms_numpy(boxes.numpy(), scores.numpy(), 0.5, np.zeros(n + 3, dtype=np.int64))
    assert expected == [0, 1, 2, n, n + 2]
    assert nms(boxes, scores, 0.5).tolist() == expected
    assert nms(boxes, scores, 0.5, max_detections=4).tolist() == expected[:4]


def test_nms_of_15000_candidates_with_early_stop_equals_the_reference():
    """The scale of an untrained YOLOPv2 at 640x384 (every one of 15,120 anchors a candidate)."""
    generator = torch.Generator().manual_seed(0)
    n = 15_000
    centres = torch.rand(n, 2, generator=generator, dtype=torch.float64) * torch.tensor([640.0, 384.0], dtype=torch.float64)
    sizes = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 60 + 4
    boxes = torch.cat((centres - sizes / 2, centres + sizes / 2), dim=1)
    scores = torch.rand(n, generator=generator, dtype=torch.float64)
    expected = reference_nms_numpy(boxes.numpy(), scores.numpy(), 0.45, np.zeros(n, dtype=np.int64))
    assert len(expected) > 300
    assert nms(boxes, scores, 0.45, max_detections=300).tolist() == expected[:300]


def test_nms_suppresses_only_above_the_threshold():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])  # IoU exactly 1/2
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_ties_keep_the_lower_index():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]])
    scores = torch.tensor([0.5, 0.7, 0.5, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 0]


def test_batched_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.5).tolist() == [0]
    # negative coordinates: shifting by class * (largest coordinate + 1) = class * 1 would leave these overlapping
    negative = torch.tensor([[-10.0, -10.0, 0.0, 0.0], [-10.0, -10.0, 0.0, 0.0]])
    assert batched_nms(negative, scores[:2], torch.tensor([0, 1]), 0.5).tolist() == [0, 1]


def test_batched_nms_is_exact_in_float32_for_many_classes():
    """Class separation by masking, not by shifting boxes apart: a float32 shift by 79 classes would move
    this IoU (0.6842105) below the threshold and keep the third box."""
    boxes = torch.tensor([[0, 0, 640, 384], [100.37, 0, 130.11, 10], [105.93, 0, 135.71, 10]])
    classes = torch.tensor([0, 79, 79])
    scores = torch.tensor([0.9, 0.8, 0.7])
    iou = float(box_iou(boxes[1:2], boxes[2:3]))
    assert batched_nms(boxes, scores, classes, iou - 1e-6).tolist() == [0, 1]
    assert batched_nms(boxes, scores, classes, iou).tolist() == [0, 1, 2]


def test_a_nan_box_suppresses_nothing_wherever_it_falls():
    """A NaN IoU never suppresses (as in torchvision's kernels), within a window and across windows."""
    n = 3 * NMS_BLOCK_SIZE
    x = torch.arange(n, dtype=torch.float32) * 20
    boxes = torch.stack((x, torch.zeros(n), x + 10, torch.full((n,), 10.0)), 1)
    boxes[0] = float("nan")
    scores = torch.linspace(1, 0, n)
    assert nms(boxes, scores, 0.5).tolist() == list(range(n))
    assert batched_nms(boxes, scores, torch.zeros(n, dtype=torch.long), 0.5).tolist() == list(range(n))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: nms(torch.zeros(3, 4, dtype=torch.long), torch.zeros(3), 0.5), "floating-point"),
        (lambda: nms(torch.zeros(3, 4), torch.zeros(2), 0.5), "scores of shape"),
        (lambda: nms(torch.zeros(3, 4), torch.zeros(3), 0.5, max_candidates=-1), "max_candidates must be non-negative"),
        (lambda: nms(torch.zeros(3, 4), torch.zeros(3), 0.5, max_detections=-1), "max_detections must be non-negative"),
        (lambda: batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(2, dtype=torch.long), 0.5), "classes"),
    ],
)
def test_nms_rejects_malformed_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_empty_input_gives_empty_indices():
    empty = torch.zeros(0, 4)
    no_classes = torch.zeros(0, dtype=torch.long)
    for kept in (nms(empty, torch.zeros(0), 0.5), batched_nms(empty, torch.zeros(0), no_classes, 0.5)):
        assert kept.dtype == torch.long and kept.shape == (0,)


def test_nms_on_3000_boxes_satisfies_the_greedy_definition():
    generator = torch.Generator().manual_seed(3)
    n, threshold = 3000, 0.5
    centres = torch.rand(n, 2, generator=generator) * 640
    sizes = torch.rand(n, 2, generator=generator) * 60 + 2
    boxes = torch.cat((centres - sizes / 2, centres + sizes / 2), dim=1)
    scores = torch.rand(n, generator=generator)
    kept = nms(boxes, scores, threshold)
    assert 0 < kept.numel() < n and kept.unique().numel() == kept.numel()
    assert (scores[kept][:-1] >= scores[kept][1:]).all()
    # Greedy NMS is the one set in which (1) no kept box overlaps a better kept one and (2) every dropped
    # box overlaps a better kept one; check both over all pairs.
    iou = box_iou(boxes, boxes)
    better = scores[:, None] > scores[None, :]  # no exact ties among 3000 random floats
    is_kept = torch.zeros(n, dtype=torch.bool)
    is_kept[kept] = True
    suppresses = (iou > threshold) & better & is_kept[:, None]  # [k, i]: kept k suppresses i
    assert not suppresses[:, is_kept].any()
    assert suppresses[:, ~is_kept].any(dim=0).all()
