import json
import shutil

import cv2
import numpy as np
import pytest

from panoptic_perception.data.bdd100k import (
    BDD100K_DETECTION_CLASSES,
    BDD100KDataset,
    binarize_label,
    make_detections,
    merge_vehicles,
    parse_detection_label,
)


def test_threshold_is_value_greater_than_one():
    assert binarize_label(np.array([[0, 1, 2, 255]], np.uint8)).tolist() == [[0, 0, 1, 1]]


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="YOLOP layout"):
        BDD100KDataset(tmp_path, "train")


# ------------------------------------------------------------------------------ BDD100KDataset

OBJECTS = [
    {"category": "car", "box2d": {"x1": 10.0, "y1": 20.0, "x2": 30.0, "y2": 40.0}},
    {"category": "person", "box2d": {"x1": 100.5, "y1": 8.0, "x2": 110.0, "y2": 30.0}},
    {"category": "truck", "box2d": {"x1": 40.0, "y1": 30.0, "x2": 80.0, "y2": 70.0}},
    {"category": "traffic light", "attributes": {"trafficLightColor": "green"},
     "box2d": {"x1": 0.0, "y1": 0.0, "x2": 4.0, "y2": 10.0}},
    {"category": "lane", "poly2d": [[0, 0], [5, 5]]},  # no box2d: skipped
    {"category": "drivable area", "poly2d": [[0, 0], [5, 5]]},
]


def write_det_json(root, name, objects, split="val", key="frames"):
    """A BDD100K per-image label next to make_bdd100k_folder's output."""
    folder = root / "det_annotations" / split
    folder.mkdir(parents=True, exist_ok=True)
    label = {"name": name, "frames": [{"timestamp": 10000, "objects": objects}]} if key == "frames" else {
        "name": name, "labels": objects}
    (folder / f"{name}.json").write_text(json.dumps(label))


@pytest.fixture
def bdd_folder(tmp_path, make_bdd100k_folder):
    make_bdd100k_folder(tmp_path)  # a.jpg, b.jpg 128x72
    write_det_json(tmp_path, "a", OBJECTS)
    write_det_json(tmp_path, "b", [])
    return tmp_path


def test_dataset_yields_masks_and_detections(bdd_folder):
    data = BDD100KDataset(bdd_folder)
    assert len(data) == 2 and data.names == ["a", "b"] and data.split == "val"
    sample = data[0]
    assert sample.name == "a" and sample.image.shape == (72, 128, 3) and sample.error is None
    truth = sample.truth
    assert truth.image_size == (128, 72) and truth.backend == "ground truth"
    assert truth.lane_mask.dtype == np.uint8 and np.flatnonzero(truth.lane_mask.any(0)).tolist() == [60, 61]
    assert truth.lane_mask[:, 60:62].all()
    assert truth.drivable_mask.dtype == np.uint8 and truth.drivable_mask[36:].all() and not truth.drivable_mask[:36].any()
    det = truth.detections
    assert det.class_names == ["car", "person", "truck", "traffic light"]
    assert det.class_ids.tolist() == [3, 1, 4, 9]
    assert det.boxes.dtype == np.float32
    np.testing.assert_array_equal(det.boxes, [[10, 20, 30, 40], [100.5, 8, 110, 30], [40, 30, 80, 70], [0, 0, 4, 10]])
    assert det.scores.tolist() == [1, 1, 1, 1]
    assert truth.semantic is None and truth.panoptic is None and truth.segments is None
    empty = data[1].truth.detections
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
    assert [s.name for s in data] == ["a", "b"]


def test_dataset_resizes_image_masks_and_boxes(bdd_folder):
    sample = BDD100KDataset(bdd_folder, size=(64, 36))[0]
    assert sample.image.shape == (36, 64, 3) and sample.truth.image_size == (64, 36)
    assert sample.truth.drivable_mask.shape == (36, 64) and sample.truth.lane_mask.shape == (36, 64)
    assert sample.truth.drivable_mask[20:].all() and not sample.truth.drivable_mask[:16].any()
    np.testing.assert_allclose(sample.truth.detections.boxes[:3], [[5, 10, 15, 20], [50.25, 4, 55, 15], [20, 15, 40, 35]])


def test_class_table_and_vehicle_merge(bdd_folder):
    assert BDD100K_DETECTION_CLASSES["person"] == BDD100K_DETECTION_CLASSES["pedestrian"] == 1
    assert BDD100K_DETECTION_CLASSES["bike"] == BDD100K_DETECTION_CLASSES["bicycle"] == 8
    assert BDD100K_DETECTION_CLASSES["motor"] == BDD100K_DETECTION_CLASSES["motorcycle"] == 7
    boxes = np.arange(20, dtype=np.float32).reshape(5, 4)
    merged = merge_vehicles(make_detections(boxes, ["car", "person", "bus", "train", "truck"]))
    assert merged.class_names == ["vehicle"] * 4 and merged.class_ids.tolist() == [0] * 4
    np.testing.assert_array_equal(merged.boxes, boxes[[0, 2, 3, 4]])
    assert len(merge_vehicles(merged)) == 4 and len(merge_vehicles(make_detections(boxes[:0], []))) == 0
    truth = BDD100KDataset(bdd_folder, vehicles_only=True)[0].truth
    assert truth.detections.class_names == ["vehicle", "vehicle"]
    np.testing.assert_array_equal(truth.detections.boxes, [[10, 20, 30, 40], [40, 30, 80, 70]])


def test_parse_skips_unboxed_and_unknown_objects_and_reads_the_labels_form():
    boxes, names = parse_detection_label({"name": "x", "labels": [
        {"category": "pedestrian", "box2d": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}},
        {"category": "other vehicle", "box2d": {"x1": 1, "y1": 2, "x2": 3, "y2": 4}},
        {"category": "lane", "poly2d": []},
    ]})
    assert names == ["pedestrian"] and boxes.tolist() == [[1, 2, 3, 4]]
    boxes, names = parse_detection_label({"name": "x", "frames": [{}]})
    assert names == [] and boxes.shape == (0, 4)


def test_missing_annotation_folders_leave_parts_none(tmp_path, make_bdd100k_folder):
    make_bdd100k_folder(tmp_path)
    data = BDD100KDataset(tmp_path)  # no det_annotations
    assert data.folders == {"da_seg_annotations", "ll_seg_annotations"}
    assert data.missing == {"da_seg_annotations": [], "ll_seg_annotations": []}
    truth = data[0].truth
    assert truth.detections is None and truth.drivable_mask is not None and truth.lane_mask is not None
    write_det_json(tmp_path, "a", OBJECTS[:1])
    shutil.rmtree(tmp_path / "da_seg_annotations")
    (tmp_path / "ll_seg_annotations" / "val" / "b.png").unlink()
    data = BDD100KDataset(tmp_path)
    assert data.missing == {"det_annotations": ["b"], "ll_seg_annotations": ["b"]}
    a, b = data
    assert a.truth.drivable_mask is None and a.truth.lane_mask is not None and len(a.truth.detections) == 1
    assert b.image is not None and b.truth is None and b.error is None  # nothing labels b


def test_undecodable_frames_become_error_samples(bdd_folder):
    (bdd_folder / "images" / "val" / "a.jpg").write_bytes(b"not a jpeg")
    (bdd_folder / "det_annotations" / "val" / "b.json").write_text("{broken")
    a, b = BDD100KDataset(bdd_folder)
    assert a.name == "a" and a.image is None and a.truth is None and "cannot decode image" in a.error
    assert b.name == "b" and b.image is None and "b.json" in b.error
    cv2.imwrite(str(bdd_folder / "images" / "val" / "a.jpg"), np.zeros((72, 128, 3), np.uint8))
    (bdd_folder / "da_seg_annotations" / "val" / "a.png").write_bytes(b"")
    assert "cannot decode label" in BDD100KDataset(bdd_folder)[0].error


def test_dataset_needs_the_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="YOLOP layout"):
        BDD100KDataset(tmp_path)
    (tmp_path / "images" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        BDD100KDataset(tmp_path)
