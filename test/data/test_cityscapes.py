"""CityscapesDataset on tiny fake Cityscapes folders (64x32 frames) in both annotation formats."""

import json

import cv2
import numpy as np
import pytest

from panoptic_perception.data.cityscapes import (
    CityscapesDataset,
    PanopticTruth,
    panoptic_from_instance_ids,
    semantic_from_label_ids,
)
from panoptic_perception.core.types import SegmentInfo

W, H = 64, 32
NAMES = ("aachen_000000_000019", "bremen_000001_000002")


def scene_instance_ids() -> np.ndarray:
    """instanceIds of frame 0: label ids for stuff / crowd / void, labelId*1000+k for instances."""
    ids = np.zeros((H, W), np.uint16)
    ids[0:8] = 23  # sky
    ids[8:16] = 11  # building
    ids[8:16, 0:8] = 18  # polegroup: not evaluated
    ids[16:32] = 7  # road
    ids[16:18, 0:10] = 9  # parking: not evaluated
    ids[18:24, 10:20] = 26000  # car, Cityscapes instance 0
    ids[20:28, 30:40] = 26001  # car, Cityscapes instance 1
    ids[24:30, 50:60] = 26  # car group without instance: crowd
    ids[10:18, 44:48] = 24000  # person
    ids[26:32, 0:6] = 29000  # caravan: not evaluated
    ids[30:32, 20:30] = 1  # ego vehicle: not evaluated
    return ids


def expected_panoptic() -> np.ndarray:
    pan = np.zeros((H, W), np.int32)
    pan[0:8] = 23000
    pan[8:16] = 11000
    pan[16:32] = 7000
    pan[16:18, 0:10] = 0
    pan[8:16, 0:8] = 0
    pan[18:24, 10:20] = 26001
    pan[20:28, 30:40] = 26002
    pan[24:30, 50:60] = 26000  # crowd: instance 0
    pan[10:18, 44:48] = 24001
    pan[26:32, 0:6] = 0
    pan[30:32, 20:30] = 0
    return pan


EXPECTED_BOXES = [[44, 10, 48, 18], [10, 18, 20, 24], [30, 20, 40, 28]]  # person, car 1, car 2


def label_ids_of(instance_ids: np.ndarray) -> np.ndarray:
    return np.where(instance_ids >= 1000, instance_ids // 1000, instance_ids).astype(np.uint8)


def id_to_bgr(ids: np.ndarray) -> np.ndarray:
    ids = ids.astype(np.int64)
    return np.stack([ids // 65536, ids // 256 % 256, ids % 256], -1).astype(np.uint8)


def make_cityscapes(root, split="val", label_files=True, panoptic=False, train_ids=False):
    """Two frames in two cities; frame 1 is all road. Optionally the panoptic JSON + PNGs."""
    rng = np.random.default_rng(0)
    annotations = []
    for index, name in enumerate(NAMES):
        city = name.split("_")[0]
        for folder in ("leftImg8bit", "gtFine"):
            (root / folder / split / city).mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png"), image)
        inst = scene_instance_ids() if index == 0 else np.full((H, W), 7, np.uint16)
        if label_files:
            cv2.imwrite(str(root / "gtFine" / split / city / f"{name}_gtFine_labelIds.png"), label_ids_of(inst))
            cv2.imwrite(str(root / "gtFine" / split / city / f"{name}_gtFine_instanceIds.png"), inst)
        if panoptic:
            # As Cityscapes' createPanopticImgs: segment id = instanceIds value, evaluated classes only.
            segments = []
            png = np.zeros((H, W), np.int64)
            for value in np.unique(inst):
                label = value // 1000 if value >= 1000 else value
                if label not in (7, 11, 23, 24, 26):
                    continue
                mask = inst == value
                png[mask] = value
                ys, xs = np.nonzero(mask)
                category = {7: 0, 11: 2, 23: 10, 24: 11, 26: 13}[label] if train_ids else int(label)
                segments.append({"id": int(value), "category_id": category, "iscrowd": int(label == 26 and value < 1000),
                                 "area": int(mask.sum()), "bbox": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1]})
            folder = root / "gtFine" / f"cityscapes_panoptic_{split}"
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{name}_gtFine_panoptic.png"), id_to_bgr(png))
            annotations.append({"image_id": name, "file_name": f"{name}_gtFine_panoptic.png", "segments_info": segments})
    if panoptic:
        names = {7: "road", 11: "building", 23: "sky", 24: "person", 26: "car"}
        train = {7: 0, 11: 2, 23: 10, 24: 11, 26: 13}
        categories = [{"id": train[i] if train_ids else i, "name": n, "isthing": int(i in (24, 26))} for i, n in names.items()]
        (root / "gtFine" / f"cityscapes_panoptic_{split}.json").write_text(json.dumps(
            {"images": [{"id": n, "file_name": f"{n}_leftImg8bit.png"} for n in NAMES],
             "annotations": annotations, "categories": categories}))
    return root


def check_frame0(sample):
    truth = sample.truth
    assert isinstance(truth, PanopticTruth) and truth.image_size == (W, H) and truth.backend == "ground truth"
    assert sample.name == NAMES[0] and sample.image.shape == (H, W, 3) and sample.error is None
    assert truth.panoptic.dtype == np.int32 and truth.semantic.dtype == np.uint8
    np.testing.assert_array_equal(truth.panoptic, expected_panoptic())
    np.testing.assert_array_equal(truth.semantic, expected_panoptic() // 1000)
    assert truth.crowd_segments == {26000}
    assert truth.segments == [
        SegmentInfo(7000, 7, False, 16 * 64 - 20 - 60 - 80 - 60 - 8 - 36 - 20, (0, 16, 64, 16)),
        SegmentInfo(11000, 11, False, 8 * 56 - 24, (8, 8, 56, 8)),
        SegmentInfo(23000, 23, False, 8 * 64, (0, 0, 64, 8)),
        SegmentInfo(24001, 24, True, 32, (44, 10, 4, 8)),
        SegmentInfo(26000, 26, True, 60, (50, 24, 10, 6)),
        SegmentInfo(26001, 26, True, 60, (10, 18, 10, 6)),
        SegmentInfo(26002, 26, True, 80, (30, 20, 10, 8)),
    ]
    for segment in truth.segments:
        assert segment.area == int((truth.panoptic == segment.id).sum())
    det = truth.detections
    assert det.class_ids.tolist() == [24, 26, 26] and det.class_names == ["person", "car", "car"]
    np.testing.assert_array_equal(det.boxes, EXPECTED_BOXES)
    assert det.boxes.dtype == np.float32 and det.scores.tolist() == [1, 1, 1]
    assert truth.drivable_mask is None and truth.lane_mask is None


def check_frame1(sample):
    truth = sample.truth
    assert sample.name == NAMES[1]
    assert (truth.panoptic == 7000).all() and (truth.semantic == 7).all()
    assert truth.segments == [SegmentInfo(7000, 7, False, W * H, (0, 0, W, H))]
    assert len(truth.detections) == 0 and truth.crowd_segments == frozenset()


def test_derives_panoptic_from_label_and_instance_ids(tmp_path):
    data = CityscapesDataset(make_cityscapes(tmp_path))
    assert len(data) == 2 and data.names == list(NAMES) and data.panoptic_json is None
    check_frame0(data[0])
    check_frame1(data[1])
    expected_image = cv2.imread(str(tmp_path / "leftImg8bit" / "val" / "aachen" / f"{NAMES[0]}_leftImg8bit.png"))
    np.testing.assert_array_equal(data[0].image, expected_image)


def test_prefers_the_panoptic_json_and_png(tmp_path):
    make_cityscapes(tmp_path, panoptic=True)
    for path in tmp_path.glob("gtFine/val/*/*_instanceIds.png"):
        path.unlink()  # only the panoptic format can give instances now
    data = CityscapesDataset(tmp_path)
    assert data.panoptic_json is not None
    check_frame0(data[0])
    check_frame1(data[1])


def test_panoptic_only_and_train_id_categories(tmp_path):
    make_cityscapes(tmp_path, label_files=False, panoptic=True, train_ids=True)
    data = CityscapesDataset(tmp_path)
    check_frame0(data[0])  # semantic comes from the panoptic classes
    check_frame1(data[1])


def test_iscrowd_comes_from_the_json(tmp_path):
    make_cityscapes(tmp_path, panoptic=True)
    path = tmp_path / "gtFine" / "cityscapes_panoptic_val.json"
    data = json.loads(path.read_text())
    for segment in data["annotations"][0]["segments_info"]:
        if segment["id"] == 26001:
            segment["iscrowd"] = 1
    path.write_text(json.dumps(data))
    truth = CityscapesDataset(tmp_path)[0].truth
    assert truth.crowd_segments == {26000}  # both crowd regions merge into car instance 0
    assert set(np.unique(truth.panoptic[truth.panoptic // 1000 == 26]).tolist()) == {26000, 26001}
    assert (truth.panoptic[20:28, 30:40] == 26000).all() and (truth.panoptic[18:24, 10:20] == 26001).all()
    assert truth.detections.class_names == ["person", "car"]


def test_resizes_image_nearest_labels_and_scales_boxes(tmp_path):
    data = CityscapesDataset(make_cityscapes(tmp_path), size=(32, 16))
    truth = data[0].truth
    assert data[0].image.shape == (16, 32, 3) and truth.image_size == (32, 16)
    np.testing.assert_array_equal(truth.panoptic, expected_panoptic()[::2, ::2])
    np.testing.assert_array_equal(truth.semantic, expected_panoptic()[::2, ::2] // 1000)
    np.testing.assert_array_equal(truth.detections.boxes, np.array(EXPECTED_BOXES) / 2)
    car = next(s for s in truth.segments if s.id == 26002)
    assert car.area == 20 and car.bbox == (15, 10, 5, 4)
    assert sum(s.area for s in truth.segments) == int((truth.panoptic > 0).sum())


def test_conversion_helpers():
    assert semantic_from_label_ids(np.array([[0, 1, 7, 9, 26, 29, 30, 33, 34]], np.uint8)).tolist() == [
        [0, 0, 7, 0, 26, 0, 0, 33, 0]]
    pan, crowd = panoptic_from_instance_ids(np.array([[24, 24005, 24002, 26, 30001, 7]], np.uint16))
    assert pan.tolist() == [[24000, 24002, 24001, 26000, 0, 7000]] and crowd == {24000, 26000}


def test_bad_frames_and_missing_labels(tmp_path):
    make_cityscapes(tmp_path)
    (tmp_path / "leftImg8bit" / "val" / "aachen" / f"{NAMES[0]}_leftImg8bit.png").write_bytes(b"garbage")
    (tmp_path / "gtFine" / "val" / "bremen" / f"{NAMES[1]}_gtFine_instanceIds.png").write_bytes(b"garbage")
    a, b = CityscapesDataset(tmp_path)
    assert a.name == NAMES[0] and a.image is None and a.truth is None and "cannot decode image" in a.error
    assert b.image is None and "instanceIds" in b.error

    (tmp_path / "gtFine" / "val" / "bremen" / f"{NAMES[1]}_gtFine_instanceIds.png").unlink()
    truth = CityscapesDataset(tmp_path)[1].truth  # labelIds only: semantic only
    assert (truth.semantic == 7).all() and truth.panoptic is None and truth.segments is None and truth.detections is None
    (tmp_path / "gtFine" / "val" / "bremen" / f"{NAMES[1]}_gtFine_labelIds.png").unlink()
    sample = CityscapesDataset(tmp_path)[1]
    assert sample.image is not None and sample.truth is None and sample.error is None


def test_missing_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        CityscapesDataset(tmp_path)
    (tmp_path / "leftImg8bit" / "val" / "aachen").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no \\*_leftImg8bit.png images"):
        CityscapesDataset(tmp_path)
