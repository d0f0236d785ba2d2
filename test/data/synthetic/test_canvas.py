"""The canvas: one polygon fills the image and the label map alike; things are numbered up to the map's limit."""

from __future__ import annotations

import numpy as np

from panoptic_perception.data.synthetic.canvas import FIRST_THING, MAX_THINGS, Canvas
from panoptic_perception.data.synthetic.geometry import rects


def test_a_polygon_fills_the_image_and_the_segment_index_map_alike():
    canvas = Canvas(64, 36)
    canvas.image[:] = 0
    canvas.segment_index[:] = 0
    # Corners at pixel coordinates 15.5 .. 31.5 and 8.5 .. 26.5 (u = 0 is the left edge of pixel 0); fillPoly
    # fills the boundary pixels too.
    canvas.fill(rects(0.25, 0.5, 0.25, 0.75), (10, 20, 30), 7)
    labelled = canvas.segment_index == 7
    np.testing.assert_array_equal(np.all(canvas.image == (10, 20, 30), axis=-1), labelled)
    expected = np.zeros_like(labelled)
    expected[9:28, 16:33] = True
    np.testing.assert_array_equal(labelled, expected)


def test_image_only_effects_leave_the_labels_alone():
    canvas = Canvas(32, 18)
    canvas.image[:] = 100
    canvas.segment_index[:] = 7
    canvas.mark(canvas.shadow, rects(0.0, 0.5, 0.0, 1.0))
    canvas.scale_under(canvas.shadow, 0.5)
    assert np.all(canvas.segment_index == 7)
    np.testing.assert_array_equal(canvas.image[..., 0] == 50, canvas.shadow == 255)
    assert np.all(np.isin(canvas.image, (50, 100)))


def test_things_are_numbered_until_the_map_is_full():
    canvas = Canvas(16, 16)
    assert [canvas.new_thing(26) for _ in range(MAX_THINGS)] == list(range(FIRST_THING, 256))
    assert canvas.new_thing(24) is None
    assert len(canvas.thing_classes) == MAX_THINGS
