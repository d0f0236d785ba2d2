import numpy as np

from panoptic_perception.core.labels import CITYSCAPES, DRIVING_MASKS
from panoptic_perception.core.types import Detections, PerceptionResult
from panoptic_perception.core.visualize import draw_overlay


def test_masks_are_blended_only_where_set_and_input_is_untouched():
    image = np.full((20, 30, 3), 100, np.uint8)
    drivable = np.zeros((20, 30), np.uint8)
    drivable[10:] = 1
    lane = np.zeros((20, 30), np.uint8)
    lane[:, 0] = 1
    result = PerceptionResult((30, 20), "test", drivable_mask=drivable, lane_mask=lane)
    overlay = draw_overlay(image, result, DRIVING_MASKS, alpha=0.5)
    assert np.all(image == 100), "the input must not be modified"
    assert np.all(overlay[:10, 1:] == 100)
    green = DRIVING_MASKS.classes[0].color[1]
    assert np.all(overlay[10:, 1:, 1] == int(0.5 * 100 + 0.5 * green))
    assert not np.array_equal(overlay[:, 0], image[:, 0])


def test_boxes_are_drawn():
    image = np.zeros((100, 100, 3), np.uint8)
    detections = Detections(np.array([[10, 10, 60, 60]], np.float32), np.array([0.9], np.float32), np.array([26]), ["car"])
    overlay = draw_overlay(image, PerceptionResult((100, 100), "t", detections=detections), CITYSCAPES)
    assert overlay[35, 10].any() and not overlay[35, 35].any()


def test_colorize_semantic_and_panoptic():
    from panoptic_perception.core.visualize import colorize_panoptic, colorize_semantic

    semantic = np.array([[7, 26], [0, 26]], np.uint8)
    colors = colorize_semantic(semantic, CITYSCAPES)
    assert tuple(colors[0, 0]) == (128, 64, 128)[::-1] and tuple(colors[1, 0]) == (0, 0, 0)
    panoptic = np.array([[7000, 26001], [0, 26002]], np.int32)
    shades = colorize_panoptic(panoptic, CITYSCAPES)
    assert tuple(shades[0, 0]) == (128, 64, 128)[::-1], "stuff keeps its class colour"
    assert tuple(shades[0, 1]) != tuple(shades[1, 1]), "two car instances get different shades"
    assert np.array_equal(colorize_panoptic(panoptic, CITYSCAPES), shades), "shades are stable"
