import pytest

from panoptic_perception.core.labels import CITYSCAPES, CITYSCAPES_TRAIN_IDS, DRIVING_MASKS, IGNORE_TRAIN_ID, LabelClass, LabelMap


def test_cityscapes_has_the_19_evaluation_classes_with_label_ids():
    assert len(CITYSCAPES) == 19
    assert CITYSCAPES.id_of("road") == 7 and CITYSCAPES.id_of("car") == 26 and CITYSCAPES.id_of("bicycle") == 33
    assert CITYSCAPES.thing_ids == {24, 25, 26, 27, 28, 31, 32, 33}
    assert 0 not in CITYSCAPES.ids, "0 stays free for void"


def test_color_table_maps_ids_to_rgb():
    table = CITYSCAPES.color_table
    assert table.shape == (256, 3) and tuple(table[26]) == (0, 0, 142) and tuple(table[0]) == (0, 0, 0)


def test_lookups_and_errors():
    assert DRIVING_MASKS.name_of(2) == "lane_line"
    with pytest.raises(KeyError, match="not in label map"):
        CITYSCAPES[99]
    with pytest.raises(ValueError, match="repeats"):
        LabelMap("bad", (LabelClass(1, "a", (0, 0, 0)), LabelClass(1, "b", (0, 0, 0))))


def test_cityscapes_train_ids():
    # cityscapesscripts' labels.py: road 7 -> 0, sidewalk 8 -> 1, ..., car 26 -> 13, bicycle 33 -> 18
    assert CITYSCAPES_TRAIN_IDS[[7, 8, 11, 17, 23, 24, 26, 33]].tolist() == [0, 1, 2, 5, 10, 11, 13, 18]
    evaluated = set(CITYSCAPES.ids.tolist())
    assert all(CITYSCAPES_TRAIN_IDS[i] == IGNORE_TRAIN_ID == 255 for i in range(256) if i not in evaluated)
