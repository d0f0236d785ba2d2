import cv2
import numpy as np
import pytest

from panoptic_perception.data.bdd100k import BDD100KDrivingMasks, binarize_label


def make_folder(root, split="val", names=("a", "b")):
    for folder in ("images", "da_seg_annotations", "ll_seg_annotations"):
        (root / folder / split).mkdir(parents=True)
    for name in names:
        cv2.imwrite(str(root / "images" / split / f"{name}.jpg"), np.full((72, 128, 3), 90, np.uint8))
        drivable = np.zeros((72, 128), np.uint8)
        drivable[36:] = 255
        lane = np.zeros((72, 128), np.uint8)
        lane[:, 60:62] = 255
        cv2.imwrite(str(root / "da_seg_annotations" / split / f"{name}.png"), drivable)
        cv2.imwrite(str(root / "ll_seg_annotations" / split / f"{name}.png"), lane)


def test_reads_the_yolop_layout_and_resizes(tmp_path):
    make_folder(tmp_path)
    data = BDD100KDrivingMasks(tmp_path, "val", size=(64, 36))
    assert len(data) == 2
    sample = data[0]
    assert sample.name == "a" and sample.image.shape == (36, 64, 3)
    assert sample.drivable_mask[20:].all() and not sample.drivable_mask[:16].any()
    assert set(np.unique(sample.lane_mask)) == {0, 1}


def test_threshold_is_value_greater_than_one():
    assert binarize_label(np.array([[0, 1, 2, 255]], np.uint8)).tolist() == [[0, 0, 1, 1]]


def test_missing_labels_are_reported(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "ll_seg_annotations" / "val" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="no drivable/lane label, e.g. b.jpg"):
        BDD100KDrivingMasks(tmp_path, "val")


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="YOLOP layout"):
        BDD100KDrivingMasks(tmp_path, "train")
