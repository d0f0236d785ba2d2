"""The yolopv2 backend: the TorchScript path, decoding and detection selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import randomized_yolopv2 as randomized

from panoptic_perception.backends import WeightsError, create_backend
from panoptic_perception.backends.yolopv2 import detection_candidates, select_detections
from panoptic_perception.data.synthetic import generate_scene
from panoptic_perception.models.yolopv2 import ANCHORS, YOLOPv2

SMALL = {"width": 0.25, "depth": 0.33}


@pytest.fixture(scope="module")
def small_checkpoint(yolopv2_small_checkpoint):
    return yolopv2_small_checkpoint


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def test_decode_follows_the_official_formula():
    raw = torch.zeros(1, 255, 2, 3)  # sigmoid(0) = 0.5 everywhere
    raw[0, 0, 1, 2] = 2.0  # x of anchor 0 in row 1, column 2
    raw[0, 85 + 5 + 7, 0, 0] = 3.0  # class 7 of anchor 1 in row 0, column 0
    anchors = [torch.tensor(ANCHORS[0], dtype=torch.float32).view(1, 3, 1, 1, 2)]
    boxes, scores, classes = detection_candidates([raw], anchors, 16, 0, -1.0)  # a negative threshold keeps all
    assert boxes.shape == (18, 4) and scores.shape == classes.shape == (18,)
    stride = 8
    row = 0 * 6 + 1 * 3 + 2  # rows: level, anchor, cell row, cell column
    cx, cy = (2 * torch.sigmoid(torch.tensor(2.0)).item() - 0.5 + 2) * stride, (2 * 0.5 - 0.5 + 1) * stride
    w, h = 12.0, 16.0  # wh = (2 * 0.5)^2 * anchor
    assert boxes[row].tolist() == pytest.approx([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    assert boxes[2 * 6].tolist() == pytest.approx([4 - 20, 4 - 14, 4 + 20, 4 + 14]), "anchor 2 (40 x 28) of cell (0, 0)"
    assert scores[row].item() == pytest.approx(0.25) and classes[row].item() == 0  # 0.5 * 0.5, ties: first class
    assert scores[6].item() == pytest.approx(0.5 * torch.sigmoid(torch.tensor(3.0)).item()) and classes[6].item() == 7


def test_selection_filters_by_objectness_and_score_and_keeps_overlaps_of_other_classes():
    raw = torch.full((1, 3 * 7, 1, 5), -20.0)  # two classes; every probability ~0 unless set below
    anchors = [torch.tensor([[20.0, 20.0]] * 3).view(1, 3, 1, 1, 2)]

    def cell(column: int, anchor: int, obj: float, class_probs: tuple[float, float]) -> None:
        base = anchor * 7
        raw[0, base : base + 4, 0, column] = 0.0  # box centred in the cell, wh = anchor
        raw[0, base + 4, 0, column] = logit(obj)
        for k, p in enumerate(class_probs):
            raw[0, base + 5 + k, 0, column] = logit(p)

    # stride 16 / 1 row: cell c is centred at x = 16 c + 8 (so cells 0 and 1 overlap with 20 px boxes)
    cell(0, 0, 0.9, (0.9, 0.1))  # kept: class 0, score 0.81
    cell(1, 0, 0.9, (0.8, 0.1))  # 16 px to the right: IoU 4/36 with the first, kept as well at 0.45
    cell(0, 1, 0.9, (0.7, 0.1))  # the first's duplicate (same box, class 0, score 0.63): suppressed
    cell(0, 2, 0.9, (0.1, 0.7))  # same box, class 1: NMS is per class, kept
    cell(3, 0, 0.2, (0.999, 0.001))  # objectness below 0.3
    cell(4, 0, 0.5, (0.5, 0.001))  # score 0.25 below 0.3
    candidates = detection_candidates([raw], anchors, 16, 0, 0.3)
    assert candidates.scores.tolist() == pytest.approx([0.81, 0.72, 0.63, 0.63])
    kept, entered = select_detections(candidates, 0.45, 300)
    assert entered == 4
    assert kept[:, 5].tolist() == [0.0, 0.0, 1.0] and kept[:, 4].tolist() == pytest.approx([0.81, 0.72, 0.63])
    assert kept[0, :4].tolist() == pytest.approx([-2.0, -2.0, 18.0, 18.0])
    assert select_detections(candidates, 0.45, max_detections=1)[0].tolist() == kept[:1].tolist()
    capped, entered = select_detections(candidates, 0.45, 300, max_candidates=2)
    assert entered == 2 and capped[:, 4].tolist() == pytest.approx([0.81, 0.72])
    empty, entered = select_detections(detection_candidates([raw], anchors, 16, 0, 0.95), 0.45, 300)
    assert empty.shape == (0, 6) and entered == 0


def test_backend_maps_boxes_and_masks_back_to_any_input_size(small_checkpoint):
    path, _ = small_checkpoint
    backend = create_backend("yolopv2", path)
    backend.set_thresholds(score=0.2)
    image = np.ascontiguousarray(generate_scene(3, 800, 600).image)  # 4:3: letterboxed left and right
    result = backend(image)
    assert result.drivable_mask.shape == result.lane_mask.shape == (600, 800)
    boxes = result.detections.boxes
    assert len(boxes) > 0 and (boxes[:, [0, 2]] <= 800).all() and (boxes[:, [1, 3]] <= 600).all() and (boxes >= 0).all()
    assert set(result.detections.class_names) <= {"vehicle"} | {f"class_{i}" for i in range(1, 80)}
    assert result.detections.scores.min() > 0.2 and len(boxes) <= backend.thresholds.max_detections


def test_torchscript_file_runs_like_the_eager_network(small_checkpoint, tmp_path):
    path, network = small_checkpoint
    exported = randomized(YOLOPv2(**SMALL))
    exported.load_state_dict(network.state_dict())
    exported.export = True
    traced = torch.jit.trace(exported, torch.rand(1, 3, 384, 640), strict=False)
    script = tmp_path / "yolopv2.pt"
    torch.jit.save(traced, str(script))

    from_script = create_backend("yolopv2", str(script))
    eager = create_backend("yolopv2", path, fast=False)
    assert from_script.weights_info.source == "torchscript" and from_script.input_size == (640, 384)
    for backend in (from_script, eager):
        backend.set_thresholds(score=0.2)
    image = generate_scene(5, 1280, 720).image
    a, b = from_script(image), eager(image)
    assert len(a.detections) == len(b.detections) > 0
    assert np.allclose(a.detections.boxes, b.detections.boxes, atol=1e-2)
    assert np.allclose(a.detections.scores, b.detections.scores, atol=1e-4)
    assert np.array_equal(a.detections.class_ids, b.detections.class_ids)
    assert (a.drivable_mask == b.drivable_mask).mean() > 0.9999 and (a.lane_mask == b.lane_mask).mean() > 0.9999


def test_torchscript_is_refused_where_a_state_dict_is_needed(small_checkpoint, tmp_path):
    script = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(script))
    with pytest.raises(WeightsError, match="TorchScript file; backend twinlitenet needs a state dict"):
        create_backend("twinlitenet", str(script))
