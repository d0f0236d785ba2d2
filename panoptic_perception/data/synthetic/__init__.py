"""Seeded synthetic dash-camera driving frames with exact, pixel-consistent labels.

The project cannot download a dataset, so this module draws its own test and training data: a
forward-looking dash-camera view of a road, rendered with flat-shaded polygons (OpenCV ``fillPoly``,
no anti-aliasing) and post-processed so that it looks less synthetic.

What a frame shows
------------------
* **Sky** with a vertical colour gradient (clear, overcast, dusk or night) and sometimes clouds.
* **A skyline** at the horizon: distant buildings, tree lines or hills.
* **A road** on a flat ground plane, seen by a pinhole camera 1.2-1.8 m above it with a random
  pitch (the horizon row).  The road is straight or curved (its lateral offset is a cubic
  polynomial of depth, so left and right curves and S-bends occur), has 2-4 lanes of random width,
  shoulders, and the camera drives in one of its lanes, not necessarily centred.
* **Lane lines** painted on it: solid or dashed (dashes shrink with perspective), white or yellow
  (a yellow centre line on two-way roads, sometimes doubled), sometimes road-edge lines.  They
  follow the road's curve; they are ~4-10 px wide at the bottom of a 640x360 frame and never
  thinner than ``SyntheticConfig.min_lane_line_px`` near the horizon.
* **Sidewalks** (with a kerb band) beside the road on none, one or both sides, and grass or pavement
  beyond them.
* **Roadside objects**: building facades with windows and shop fronts (urban scenes), trees, hedges,
  street lamps and utility poles (all following the road's curve).
* **Vehicles** (cars, vans, trucks) in the lanes, seen from behind or, on two-way roads, oncoming;
  **pedestrians**, mostly on the sidewalks, sometimes crossing the road.  Everything is sized by the
  same perspective projection and drawn back to front, so nearer objects occlude farther ones.
* **Appearance variety** that never changes a label: colour palettes, night scenes (dark ambient
  light, headlight beam, street-lamp pools, lit windows and tail lights), fog/haze, road texture
  (tyre tracks, patches), cast shadows, vignetting, brightness/contrast/gamma/tint, blur and sensor
  noise.

Label conventions
-----------------
* ``semantic``: Cityscapes *label ids* (:data:`panoptic_perception.core.labels.CITYSCAPES`):
  road 7, sidewalk 8, building 11, pole 17, vegetation 21, terrain 22, sky 23, person 24, car 26,
  truck 27.  Every pixel gets a class; void (0) does not occur.
* ``panoptic``: ``class_id * 1000 + instance`` (int32).  Stuff classes have instance 0; every visible
  person / car / truck (the *things*) gets its own instance number 1..k, counted per class.
  ``segments`` lists each distinct panoptic value with its pixel area and bounding box; ``detections``
  holds one tight box per thing instance (``x2 = max_x + 1``, ``y2 = max_y + 1``).
* ``drivable_mask``: the visible road surface, i.e. exactly ``semantic == 7`` - lane markings are
  included, vehicles and pedestrians standing on the road are not.
* ``lane_mask``: visible painted lane-line pixels (a subset of the drivable mask).

The label maps are drawn from the very polygons that draw the image, so they are exact; the
image-only effects (paint colour, shadows, light pools, blur, noise, colour grading) change how a
pixel looks, never what it shows.

Scenes are defined in normalised image coordinates (``u = x / width``, ``v = y / height``; the
projection's focal lengths are fractions of the image size), and all random choices are drawn from
``np.random.default_rng(seed)`` before they are scaled to pixels, so ``generate_scene(s, 1280, 720)``
is the scene of ``generate_scene(s, 640, 360)`` at twice the size.  Only the sensor noise pattern and
the 1-pixel minimum width of far lane lines depend on the resolution.  The focal lengths assume a
16:9 frame; other aspect ratios show the same scene stretched.

``python -m panoptic_perception.data.synthetic --benchmark`` prints the generation speed on one CPU
core; ``--save DIR --count N`` writes images and colour-coded labels to look at.

Modules, by scene layer: :mod:`.types` (config, scene, label ids), :mod:`.geometry` (camera, projection,
road layout), :mod:`.look` (light, weather, colours), :mod:`.canvas` (image and label map, the frame every
layer draws with), :mod:`.sky`, :mod:`.ground` (ground and road), :mod:`.roadside`, :mod:`.actors`,
:mod:`.finishing` (image effects and labels), :mod:`.scene` (the order of the draws), :mod:`.truth` (ground
truth in metres: the camera, things and road on the ground), :mod:`.cli`.
Beside them, :mod:`.fusion_benchmark` draws a street scene in label space to time the semantic-instance
fusion (not imported here).
"""

from .cli import benchmark, main, save_scene
from .scene import SyntheticScenes, generate_scene
from .truth import PinholeCamera, RoadOnGround, ThingOnGround
from .types import (
    BUILDING,
    CAR,
    PERSON,
    POLE,
    ROAD,
    SIDEWALK,
    SKY,
    TERRAIN,
    THING_CLASS_IDS,
    TRUCK,
    VEGETATION,
    SyntheticConfig,
    SyntheticScene,
)

__all__ = [
    "BUILDING",
    "CAR",
    "PERSON",
    "POLE",
    "ROAD",
    "SIDEWALK",
    "SKY",
    "TERRAIN",
    "THING_CLASS_IDS",
    "TRUCK",
    "VEGETATION",
    "PinholeCamera",
    "RoadOnGround",
    "SyntheticConfig",
    "SyntheticScene",
    "SyntheticScenes",
    "ThingOnGround",
    "benchmark",
    "generate_scene",
    "main",
    "save_scene",
]
