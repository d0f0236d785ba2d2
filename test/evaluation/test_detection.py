"""Detection metrics: COCO numbers against a direct pycocotools run, YOLOP numbers against hand counts."""

import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from panoptic_perception.evaluation.detection import RECALL_GRID, DetectionMetrics, average_precision

COCO_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def random_image(rng, classes=(3, 7, 11), separated=False, n_false=3):
    """Ground truth boxes of mixed sizes and jittered (sometimes duplicated) predictions plus false ones."""
    n_true = int(rng.integers(0, 7))
    if separated:  # one box per cell of a 4x4 grid of 150 px cells: no two boxes overlap
        cells = rng.choice(16, size=n_true, replace=False)
        x0, y0 = (cells % 4) * 150.0, (cells // 4) * 150.0
        size = rng.uniform(10, 120, (n_true, 2))
        top_left = np.stack([x0, y0], 1) + rng.uniform(0, 150 - size)
    else:
        size = np.exp(rng.uniform(np.log(8), np.log(200), (n_true, 2)))
        top_left = rng.uniform(0, 500, (n_true, 2))
    gt_boxes = np.concatenate([top_left, top_left + size], 1)
    gt_classes = rng.choice(classes, n_true)
    pred_boxes, pred_classes = [], []
    for box, cls, (w, h) in zip(gt_boxes, gt_classes, size):
        for _ in range(int(rng.integers(0, 3))):  # missed, found, or found twice
            jitter = rng.normal(0, 0.12, 4) * np.array([w, h, w, h])
            pred_boxes.append(box + jitter)
            pred_classes.append(cls if rng.random() < 0.85 or separated else rng.choice(classes))
    for _ in range(int(rng.integers(0, n_false + 1))):
        corner = rng.uniform(600, 900, 2) if separated else rng.uniform(0, 500, 2)
        pred_boxes.append(np.concatenate([corner, corner + rng.uniform(8, 100, 2)]))
        pred_classes.append(rng.choice(classes))
    pred_boxes = np.array(pred_boxes).reshape(-1, 4)
    pred_boxes[:, 2:] = np.maximum(pred_boxes[:, 2:], pred_boxes[:, :2] + 1)
    scores = rng.random(len(pred_boxes))
    crowd = (rng.random(n_true) < 0.1) if not separated else np.zeros(n_true, bool)
    return pred_boxes, scores, np.array(pred_classes, np.int64), gt_boxes, gt_classes.astype(np.int64), crowd


def pycocotools_from_files(tmp_path, images):
    """A plain pycocotools run from JSON files, the way its documentation shows."""
    gt = {"images": [], "annotations": [], "categories": []}
    dets, categories = [], set()
    for image_id, (pb, ps, pc, gb, gc, crowd) in enumerate(images, start=1):
        gt["images"].append({"id": image_id, "width": 1000, "height": 1000})
        for box, cls, is_crowd in zip(gb, gc, crowd):
            x1, y1, x2, y2 = map(float, box)
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": int(cls), "bbox": [x1, y1, x2 - x1, y2 - y1],
                 "area": (x2 - x1) * (y2 - y1), "iscrowd": int(is_crowd)}
            )
        for box, score, cls in zip(pb, ps, pc):
            x1, y1, x2, y2 = map(float, box)
            dets.append({"image_id": image_id, "category_id": int(cls), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
        categories.update(map(int, gc))
        categories.update(map(int, pc))
    gt["categories"] = [{"id": c, "name": f"class{c}"} for c in sorted(categories)]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        coco_dt = coco_gt.loadRes(str(tmp_path / "dets.json"))
        evaluation = COCOeval(coco_gt, coco_dt, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def add_all(images) -> DetectionMetrics:
    metrics = DetectionMetrics()
    for image in images:
        metrics.add(*image)
    return metrics


def test_coco_numbers_equal_a_direct_pycocotools_run(tmp_path):
    rng = np.random.default_rng(0)
    images = [random_image(rng) for _ in range(12)]
    images.append((np.zeros((0, 4)), np.zeros(0), np.zeros(0), images[0][3], images[0][4], images[0][5]))  # nothing found
    images.append((images[1][0], images[1][1], images[1][2], np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool)))  # nothing there
    result = add_all(images).compute()
    reference = pycocotools_from_files(tmp_path, images)

    assert result["AP"] > 0.1 and result["AP50"] > result["AP"]
    for key, value in zip(COCO_KEYS, reference.stats):
        expected = math.nan if value == -1 else value
        assert result[key] == pytest.approx(expected, abs=1e-9, nan_ok=True), key
    precision = reference.eval["precision"]
    assert sorted(result["per_class_AP"]) == [3, 7, 11]
    for k, class_id in enumerate(reference.params.catIds):
        values = precision[:, :, k, 0, -1]
        assert result["per_class_AP"][class_id] == pytest.approx(values[values > -1].mean(), abs=1e-9)


def test_coco_keeps_at_most_100_detections_per_image_and_class():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    false = np.tile([[500.0, 500.0, 520.0, 520.0]], (100, 1))
    boxes = np.concatenate([false, gt])  # the true detection scores lowest, 101st of its class
    scores = np.linspace(1.0, 0.5, 101)
    metrics = DetectionMetrics()
    metrics.add(boxes, scores, np.zeros(101), gt, np.zeros(1))
    result = metrics.compute()
    assert result["AP50"] == 0.0 and result["AR100"] == 0.0
    assert result["recall"] == 1.0  # YOLOP-style keeps everything
    metrics.add(boxes, scores, np.r_[np.ones(100), 0], gt, np.zeros(1))  # a different class: now within 100
    assert metrics.compute()["per_class_AP"][0] > 0


def test_yolop_ap_by_hand_on_three_predictions():
    # 3 ground-truth boxes; predictions by score: exact hit on A (IoU 1), a miss, a hit on B with IoU 0.6.
    gt = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [200, 200, 210, 210]], float)
    preds = np.array([[0, 0, 10, 10], [300, 300, 310, 310], [100, 100, 110, 116]], float)  # 100 / 160 = 0.625
    metrics = DetectionMetrics()
    metrics.add(preds, np.array([0.9, 0.8, 0.7]), np.zeros(3), gt, np.zeros(3))
    result = metrics.compute()

    # B's IoU 0.625 is > 0.5, 0.55 and 0.6: those thresholds count both hits, 0.65 ... 0.95 only A's.
    # Both hits: recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3. Envelope with sentinels (0, 1) and
    # (2/3 + 0.01, 0): 1 up to recall 1/3, then 2/3 up to 2/3, then a ramp down to 0 at 0.67667.
    def curve_two_hits(x):
        if x <= 1 / 3:
            return 1.0
        if x <= 2 / 3:
            return 2 / 3
        return max(0.0, 2 / 3 * (2 / 3 + 0.01 - x) / 0.01)

    # One hit: recall 1/3, 1/3, 1/3; precision 1, 1/2, 1/3: envelope 1 up to 1/3 (last point 1/3),
    # then a ramp from 1/3 down to 0 at 1/3 + 0.01.
    def curve_one_hit(x):
        if x < 1 / 3:
            return 1.0
        return max(0.0, 1 / 3 * (1 / 3 + 0.01 - x) / 0.01)

    def trapezoid_101(curve):
        values = [curve(i / 100) for i in range(101)]
        return sum(0.01 * (values[i] + values[i + 1]) / 2 for i in range(100))

    ap_two, ap_one = trapezoid_101(curve_two_hits), trapezoid_101(curve_one_hit)
    # Spelled out: 34 samples of 1, 33 of 2/3, one of 2/3 * 2/3 at 0.67, ends counted half.
    assert ap_two == pytest.approx(0.01 * (34 + 33 * 2 / 3 + 4 / 9 - 0.5), abs=1e-12)
    assert ap_one == pytest.approx(0.01 * (34 + 1 / 9 - 0.5), abs=1e-12)
    assert result["map50"] == pytest.approx(ap_two, abs=1e-12)
    assert result["map"] == pytest.approx((3 * ap_two + 7 * ap_one) / 10, abs=1e-12)
    np.testing.assert_allclose(result["ap_per_iou"], [ap_two] * 3 + [ap_one] * 7, atol=1e-12)
    np.testing.assert_allclose(result["pr_recall"], [1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(result["pr_precision"], [1, 1 / 2, 2 / 3])
    assert result["recall"] == pytest.approx(2 / 3) and result["precision"] == pytest.approx(2 / 3)


def test_yolop_matching_quirks():
    gt = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], float)  # two overlapping targets
    # Both predictions overlap the first target most (IoU 1 and 0.85); the second one's IoU with the
    # other target is 0.79, but YOLOP does not fall back to it: a false positive.
    preds = np.array([[0, 0, 10, 10], [0.8, 0, 10.8, 10]], float)
    metrics = DetectionMetrics()
    metrics.add(preds[::-1], np.array([0.5, 0.9]), np.zeros(2), gt, np.zeros(2))  # unsorted input is fine
    result = metrics.compute()
    assert result["recall"] == 0.5 and result["precision"] == 0.5
    assert result["AP50"] == 1.0  # COCO does fall back


def test_yolop_ap50_relation_to_pycocotools(tmp_path):
    """Where the matchings agree, both evaluations see the same curve and differ only in the AP rule.

    With well separated boxes of one class (no crowd, < 100 detections per image) YOLOP's matching at
    IoU 0.5 equals COCO's, so pycocotools' AP50 is the COCO rule applied to our curve (to rounding);
    YOLOP's trapezoid rule gives a legitimately different number, within 0.02 when no recall value
    k / n (0 < k < n) falls on the 0.01 grid — the 37 ground-truth boxes here make sure of that.
    """
    rng = np.random.default_rng(5)
    images = []
    while sum(len(image[3]) for image in images) < 37:
        images.append(random_image(rng, classes=(1,), separated=True))
    extra = sum(len(image[3]) for image in images) - 37
    if extra:  # trim the last image to exactly 37 boxes in total
        pb, ps, pc, gb, gc, crowd = images[-1]
        images[-1] = (pb, ps, pc, gb[extra:], gc[extra:], crowd[extra:])
    result = add_all(images).compute()
    reference = pycocotools_from_files(tmp_path, images)

    coco_rule = average_precision(result["pr_recall"], result["pr_precision"], "coco")
    assert coco_rule == pytest.approx(reference.stats[1], abs=1e-6)
    assert result["AP50"] == pytest.approx(reference.stats[1], abs=1e-9)
    assert result["map50"] == pytest.approx(average_precision(result["pr_recall"], result["pr_precision"], "yolop"), abs=1e-12)
    assert result["map50"] != pytest.approx(coco_rule, abs=1e-6)  # they do differ
    assert abs(result["map50"] - coco_rule) <= 0.02
    assert result["recall"] == pytest.approx(reference.eval["recall"][0, 0, 0, -1], abs=1e-12)


def test_average_precision_rules_on_a_perfect_and_an_empty_curve():
    for method in ("yolop", "coco"):
        assert average_precision([0.5, 1.0], [1.0, 1.0], method) == pytest.approx(1.0)
        assert average_precision([], [], method) == 0.0
    assert len(RECALL_GRID) == 101
    with pytest.raises(ValueError):
        average_precision([1.0], [1.0], "voc")


def test_recall_and_precision_at_the_lowest_confidence():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]], float)
    preds = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [200, 0, 210, 10], [41, 0, 51, 10], [300, 0, 310, 10]], float)
    metrics = DetectionMetrics()
    # The last true positive has the lowest score of all: recall counts it, precision counts everything.
    metrics.add(preds, np.array([0.9, 0.8, 0.7, 0.01, 0.6]), np.zeros(5), gt, np.zeros(4))
    result = metrics.compute()
    assert result["recall"] == pytest.approx(3 / 4)
    assert result["precision"] == pytest.approx(3 / 5)
    assert result["pr_recall"][-1] == pytest.approx(3 / 4)


def test_images_without_predictions_or_truth():
    gt = np.array([[0, 0, 10, 10]], float)
    metrics = DetectionMetrics()
    metrics.add(np.zeros((0, 4)), [], [], gt, [0])
    metrics.add(gt, [0.9], [0], np.zeros((0, 4)), [])  # a false positive in an empty image
    metrics.add(np.zeros((0, 4)), [], [], np.zeros((0, 4)), [])
    result = metrics.compute()
    assert result["images"] == 3
    assert result["map50"] == 0.0 and result["recall"] == 0.0 and result["precision"] == 0.0
    assert result["AP"] == 0.0 and result["per_class_AP"] == {0: 0.0}


def test_no_predictions_at_all_and_no_truth_at_all():
    metrics = DetectionMetrics()
    metrics.add(np.zeros((0, 4)), [], [], np.array([[0, 0, 10, 10]]), [2])
    result = metrics.compute()
    assert result["AP"] == 0.0 and result["AR100"] == 0.0
    assert result["map50"] == 0.0 and result["map"] == 0.0 and result["recall"] == 0.0
    assert len(result["pr_recall"]) == 0

    metrics = DetectionMetrics()
    metrics.add(np.array([[0, 0, 10, 10]]), [0.5], [2], np.zeros((0, 4)), [])
    result = metrics.compute()
    assert math.isnan(result["AP"]) and math.isnan(result["per_class_AP"][2])
    assert math.isnan(result["map50"]) and math.isnan(result["recall"]) and result["precision"] == 0.0


def test_crowd_boxes():
    gt = np.array([[0, 0, 10, 10], [100, 100, 200, 200]], float)
    preds = np.array([[0, 0, 10, 10], [100, 100, 200, 200]], float)
    metrics = DetectionMetrics()
    metrics.add(preds, [0.9, 0.8], [0, 0], gt, [0, 0], gt_crowd=[False, True])
    result = metrics.compute()
    assert result["AP"] == pytest.approx(1.0)  # COCO: the detection on the crowd box is ignored
    assert result["recall"] == 1.0 and result["precision"] == 0.5  # YOLOP: the crowd box is no target


def test_empty_evaluator_and_bad_input():
    metrics = DetectionMetrics()
    with pytest.raises(ValueError, match="no images"):
        metrics.compute()
    with pytest.raises(ValueError):
        metrics.add(np.zeros((2, 4)), [0.5], [0, 0], np.zeros((0, 4)), [])
    with pytest.raises(ValueError):
        metrics.add(np.zeros((2, 3)), [0.5, 0.5], [0, 0], np.zeros((0, 4)), [])
