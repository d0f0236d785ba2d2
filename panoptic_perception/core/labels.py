"""Label maps: which class id means what, its colour, and whether it has instances.

Ids follow the dataset's own convention so outputs can be evaluated with the dataset's tools:
Cityscapes classes use Cityscapes *label ids* (road = 7, car = 26, ...), which keeps 0 free for void
in panoptic images (``class_id * 1000 + instance``). A network's output channel ``i`` is the label
map's ``classes[i]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class LabelClass:
    id: int
    name: str
    color: tuple[int, int, int]  # RGB
    is_thing: bool = False


@dataclass(frozen=True)
class LabelMap:
    """An ordered set of classes; the order is the order of a network's output channels."""

    name: str
    classes: tuple[LabelClass, ...]

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"label map {self.name!r} repeats class ids")
        if any(not 0 <= i < 256 for i in ids):
            raise ValueError(f"label map {self.name!r}: class ids must be in [0, 255]")

    def __len__(self) -> int:
        return len(self.classes)

    @cached_property
    def ids(self) -> np.ndarray:
        """Class id of each output channel."""
        return np.array([c.id for c in self.classes], dtype=np.int64)

    @cached_property
    def _by_id(self) -> dict[int, LabelClass]:
        return {c.id: c for c in self.classes}

    def __getitem__(self, class_id: int) -> LabelClass:
        try:
            return self._by_id[int(class_id)]
        except KeyError:
            raise KeyError(f"class id {class_id} is not in label map {self.name!r}") from None

    def id_of(self, name: str) -> int:
        for c in self.classes:
            if c.name == name:
                return c.id
        raise KeyError(f"class {name!r} is not in label map {self.name!r}")

    def name_of(self, class_id: int) -> str:
        return self[class_id].name

    @cached_property
    def thing_ids(self) -> frozenset[int]:
        return frozenset(c.id for c in self.classes if c.is_thing)

    @cached_property
    def color_table(self) -> np.ndarray:
        """(256, 3) uint8 RGB lookup table indexed by class id; unknown ids are black."""
        table = np.zeros((256, 3), np.uint8)
        for c in self.classes:
            table[c.id] = c.color
        return table


#: The 19 Cityscapes evaluation classes, in train-id order, with their label ids and colours.
CITYSCAPES = LabelMap(
    "cityscapes",
    (
        LabelClass(7, "road", (128, 64, 128)),
        LabelClass(8, "sidewalk", (244, 35, 232)),
        LabelClass(11, "building", (70, 70, 70)),
        LabelClass(12, "wall", (102, 102, 156)),
        LabelClass(13, "fence", (190, 153, 153)),
        LabelClass(17, "pole", (153, 153, 153)),
        LabelClass(19, "traffic light", (250, 170, 30)),
        LabelClass(20, "traffic sign", (220, 220, 0)),
        LabelClass(21, "vegetation", (107, 142, 35)),
        LabelClass(22, "terrain", (152, 251, 152)),
        LabelClass(23, "sky", (70, 130, 180)),
        LabelClass(24, "person", (220, 20, 60), is_thing=True),
        LabelClass(25, "rider", (255, 0, 0), is_thing=True),
        LabelClass(26, "car", (0, 0, 142), is_thing=True),
        LabelClass(27, "truck", (0, 0, 70), is_thing=True),
        LabelClass(28, "bus", (0, 60, 100), is_thing=True),
        LabelClass(31, "train", (0, 80, 100), is_thing=True),
        LabelClass(32, "motorcycle", (0, 0, 230), is_thing=True),
        LabelClass(33, "bicycle", (119, 11, 32), is_thing=True),
    ),
)

#: Cityscapes label id of unlabeled pixels: void in semantic and panoptic maps.
VOID_ID = 0

#: The train id of pixels Cityscapes does not evaluate (void and the classes not among the 19).
IGNORE_TRAIN_ID = 255


def _train_id_table() -> np.ndarray:
    table = np.full(256, IGNORE_TRAIN_ID, np.uint8)
    table[CITYSCAPES.ids] = np.arange(len(CITYSCAPES))
    return table


#: (256,) uint8: Cityscapes label id → train id, the class's index in :data:`CITYSCAPES` (road = 0 ..
#: bicycle = 18), as most training code and ``createTrainIdLabelImgs`` / ``createPanopticImgs
#: --use-train-id`` use them; :data:`IGNORE_TRAIN_ID` for every other label id, void included.
CITYSCAPES_TRAIN_IDS = _train_id_table()

#: The two binary masks of the drivable-area / lane-line backends (ids as published in LabelInfo).
DRIVING_MASKS = LabelMap(
    "driving_masks",
    (
        LabelClass(1, "drivable_area", (0, 200, 80)),
        LabelClass(2, "lane_line", (255, 40, 40)),
    ),
)

#: BDD100K / YOLOP "vehicle": the class names merged into it where a backend's only class is "vehicle"
#: (the released YOLOPv2).
VEHICLE_CLASSES = frozenset({"car", "truck", "bus", "train", "vehicle"})
