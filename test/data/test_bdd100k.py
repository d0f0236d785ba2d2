import numpy as np
import pytest

from panoptic_perception.data.bdd100k import BDD100KDrivingMasks, binarize_label


def test_reads_the_yolop_layout_and_resizes(tmp_path, make_bdd100k_folder):
    make_bdd100k_folder(tmp_path)
    data = BDD100KDrivingMasks(tmp_path, "val", size=(64, 36))
    assert len(data) == 2
    sample = data[0]
    assert sample.name == "a" and sample.image.shape == (36, 64, 3)
    assert sample.drivable_mask[20:].all() and not sample.drivable_mask[:16].any()
    assert set(np.unique(sample.lane_mask)) == {0, 1}


def test_threshold_is_value_greater_than_one():
    assert binarize_label(np.array([[0, 1, 2, 255]], np.uint8)).tolist() == [[0, 0, 1, 1]]


def test_missing_labels_are_reported(tmp_path, make_bdd100k_folder):
    make_bdd100k_folder(tmp_path)
    (tmp_path / "ll_seg_annotations" / "val" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match="no drivable/lane label, e.g. b.jpg"):
        BDD100KDrivingMasks(tmp_path, "val")


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="YOLOP layout"):
        BDD100KDrivingMasks(tmp_path, "train")
