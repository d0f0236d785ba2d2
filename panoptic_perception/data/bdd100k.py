"""BDD100K folders in the YOLOP layout: drivable area, lane lines and detection boxes.

::

    ROOT/images/{train,val}/<name>.jpg
    ROOT/det_annotations/{train,val}/<name>.json    detection boxes (BDD100K per-image labels)
    ROOT/da_seg_annotations/{train,val}/<name>.png  drivable area
    ROOT/ll_seg_annotations/{train,val}/<name>.png  lane lines

Masks are read as grayscale, resized to the working size with INTER_LINEAR and thresholded
``value > 1`` (positive), exactly as the official TwinLiteNet / YOLOP evaluation does.

The reader, :class:`BDD100KDataset` (training and evaluation), yields
:class:`~panoptic_perception.data.sample.Sample` s whose truth holds the masks and the detection boxes.
Each annotation folder is optional.

Detection labels
----------------
A detection JSON is BDD100K's per-image label file as YOLOP reads it::

    {"name": "<name>", "frames": [{"objects": [
        {"category": "car", "box2d": {"x1": 10.5, "y1": 20.0, "x2": 50.0, "y2": 60.2}}, ...]}]}

(the newer per-image form ``{"name": ..., "labels": [{"category": ..., "box2d": ...}]}`` is read too).
Objects without ``box2d`` (lanes, drivable areas) are skipped, and so are boxed objects whose
category is not in :data:`BDD100K_DETECTION_CLASSES` (e.g. ``other vehicle``, ``trailer`` of the
2020 labels). Boxes are ``(x1, y1, x2, y2)`` in pixels of the returned image: BDD's coordinates
multiplied by ``returned width / original width`` and ``returned height / original height`` when
the image is resized. Class names are kept as written in the file (``person``, ``bike``,
``motor`` in the 2018 labels YOLOP ships; ``pedestrian``, ``bicycle``, ``motorcycle`` in 2020);
class ids come from :data:`BDD100K_DETECTION_CLASSES`, the ids of BDD100K's detection benchmark
(1 pedestrian/person ... 10 traffic sign), so both spellings of a class share one id. Scores are 1.

YOLOP and YOLOPv2 detect one class, ``vehicle``: they keep car, bus, truck and train and merge them.
:func:`merge_vehicles` (or ``BDD100KDataset(..., vehicles_only=True)``) turns the truth into that
form: those four classes renamed ``vehicle`` with id :data:`VEHICLE_CLASS_ID` (0), the rest dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..core.io import decode_file
from ..core.types import Detections, PerceptionResult
from .sample import ImageFileDataset, Sample

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

#: Category name → class id: BDD100K's ten detection classes with the ids of its detection benchmark.
#: The 2018 names (``person``, ``motor``, ``bike``) share the ids of the 2020 names.
BDD100K_DETECTION_CLASSES: dict[str, int] = {
    "pedestrian": 1,
    "person": 1,
    "rider": 2,
    "car": 3,
    "truck": 4,
    "bus": 5,
    "train": 6,
    "motorcycle": 7,
    "motor": 7,
    "bicycle": 8,
    "bike": 8,
    "traffic light": 9,
    "traffic sign": 10,
}

#: The categories YOLOP merges into its single ``vehicle`` class.
VEHICLE_CATEGORIES = frozenset({"car", "bus", "truck", "train"})
VEHICLE_CLASS_NAME = "vehicle"
#: Class id of ``vehicle`` (YOLOP's single detection class, output slot 0).
VEHICLE_CLASS_ID = 0

DETECTION_FOLDER = "det_annotations"
DRIVABLE_FOLDER = "da_seg_annotations"
LANE_FOLDER = "ll_seg_annotations"


def binarize_label(label: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """A BDD mask PNG → 0/1, resized to ``size`` (width, height) first when given."""
    if size is not None and (label.shape[1], label.shape[0]) != tuple(size):
        label = cv2.resize(label, tuple(size), interpolation=cv2.INTER_LINEAR)
    return (label > 1).astype(np.uint8)


def _list_images(root: Path, split: str) -> list[Path]:
    image_dir = root / "images" / split
    if not image_dir.is_dir():
        raise FileNotFoundError(f"no BDD100K image folder {image_dir} (expected the YOLOP layout)")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FileNotFoundError(f"no images in {image_dir}")
    return images


# ------------------------------------------------------------------------------ detection labels


def parse_detection_label(label: dict) -> tuple[np.ndarray, list[str]]:
    """A BDD100K per-image label (parsed JSON) → ``(boxes (N, 4) float32 x1 y1 x2 y2, category names)``.

    Reads the objects of ``frames[0]`` (or ``labels``); skips objects without ``box2d`` and those
    whose category is not in :data:`BDD100K_DETECTION_CLASSES`. Coordinates are the file's pixels.
    """
    if not isinstance(label, dict):
        raise ValueError("a BDD100K label must be a JSON object")
    if "frames" in label:
        frames = label["frames"] or [{}]
        objects = frames[0].get("objects") or []
    else:
        objects = label.get("labels") or []
    boxes, names = [], []
    for obj in objects:
        box = obj.get("box2d")
        category = obj.get("category")
        if not box or category not in BDD100K_DETECTION_CLASSES:
            continue
        boxes.append([float(box["x1"]), float(box["y1"]), float(box["x2"]), float(box["y2"])])
        names.append(category)
    return np.array(boxes, np.float32).reshape(-1, 4), names


def make_detections(boxes: np.ndarray, names: list[str]) -> Detections:
    """Ground-truth :class:`Detections` (scores 1) with the ids of :data:`BDD100K_DETECTION_CLASSES`."""
    return Detections(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.ones(len(names), np.float32),
        class_ids=np.array([BDD100K_DETECTION_CLASSES[n] for n in names], np.int64),
        class_names=list(names),
    )


def merge_vehicles(detections: Detections) -> Detections:
    """YOLOP's single-class form: car, bus, truck, train → ``vehicle`` (id 0); other classes dropped.

    Also accepts detections that are already merged (``vehicle`` rows are kept).
    """
    keep = [i for i, n in enumerate(detections.class_names) if n in VEHICLE_CATEGORIES or n == VEHICLE_CLASS_NAME]
    return Detections(
        boxes=detections.boxes[keep].astype(np.float32).reshape(-1, 4),
        scores=detections.scores[keep].astype(np.float32),
        class_ids=np.full(len(keep), VEHICLE_CLASS_ID, np.int64),
        class_names=[VEHICLE_CLASS_NAME] * len(keep),
    )


# ------------------------------------------------------------------------------ evaluation reader


class BDD100KDataset(ImageFileDataset):
    """Evaluation samples from one split of a YOLOP-layout BDD100K folder.

    A sequence of :class:`~panoptic_perception.data.sample.Sample`: ``name`` is the image's file stem,
    ``image`` BGR uint8 (resized with INTER_LINEAR to ``size`` = (width, height) when given), and
    ``truth`` a :class:`~panoptic_perception.core.types.PerceptionResult` (backend ``"ground truth"``)
    with ``drivable_mask`` / ``lane_mask`` (0/1 uint8 at the returned image's size, ``value > 1`` as
    in :func:`binarize_label`) and ``detections`` (see the module docstring; with
    ``vehicles_only=True`` merged by :func:`merge_vehicles`).

    Only ``images/{split}`` must exist. A missing annotation folder leaves that part of every truth
    ``None``; a folder that lacks one frame's file leaves that part of that frame's truth ``None``
    (those names are listed in :attr:`missing`, by folder). When no annotation exists for a frame,
    ``truth`` is ``None``. A frame whose image or label file cannot be decoded is returned as
    ``Sample(name, None, error=...)`` instead of raising, so that an evaluator can report and skip it.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        size: tuple[int, int] | None = None,
        vehicles_only: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.vehicles_only = vehicles_only
        self.images = _list_images(self.root, split)
        #: Annotation folders present, e.g. ``{"det_annotations", "da_seg_annotations"}``.
        self.folders = frozenset(
            f for f in (DETECTION_FOLDER, DRIVABLE_FOLDER, LANE_FOLDER) if (self.root / f / split).is_dir()
        )
        #: folder → names of the images that folder has no file for.
        self.missing: dict[str, list[str]] = {
            f: [p.stem for p in self.images if not self._label_path(f, p).is_file()] for f in sorted(self.folders)
        }

    @property
    def names(self) -> list[str]:
        return [p.stem for p in self.images]

    def _label_path(self, folder: str, image: Path) -> Path:
        suffix = ".json" if folder == DETECTION_FOLDER else ".png"
        return self.root / folder / self.split / f"{image.stem}{suffix}"

    def __getitem__(self, index: int) -> Sample:
        path = self.images[index]
        name = path.stem
        image = decode_file(path, cv2.IMREAD_COLOR)
        if image is None:
            return Sample(name, None, error=f"cannot decode image {path}")
        original = (image.shape[1], image.shape[0])
        if self.size is not None and original != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)
        size = (image.shape[1], image.shape[0])

        masks: dict[str, np.ndarray | None] = {}
        for folder in (DRIVABLE_FOLDER, LANE_FOLDER):
            label_path = self._label_path(folder, path)
            if folder not in self.folders or not label_path.is_file():
                masks[folder] = None
                continue
            label = decode_file(label_path, cv2.IMREAD_GRAYSCALE)
            if label is None:
                return Sample(name, None, error=f"cannot decode label {label_path}")
            masks[folder] = binarize_label(label, size)

        detections = None
        label_path = self._label_path(DETECTION_FOLDER, path)
        if DETECTION_FOLDER in self.folders and label_path.is_file():
            try:
                boxes, names = parse_detection_label(json.loads(label_path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
                return Sample(name, None, error=f"cannot read label {label_path}: {exc}")
            boxes *= np.array([size[0] / original[0], size[1] / original[1]] * 2, np.float32)
            detections = make_detections(boxes, names)
            if self.vehicles_only:
                detections = merge_vehicles(detections)

        if detections is None and masks[DRIVABLE_FOLDER] is None and masks[LANE_FOLDER] is None:
            return Sample(name, image)
        truth = PerceptionResult(
            size,
            "ground truth",
            drivable_mask=masks[DRIVABLE_FOLDER],
            lane_mask=masks[LANE_FOLDER],
            detections=detections,
        )
        return Sample(name, image, truth=truth)
