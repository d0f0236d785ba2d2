"""Cityscapes fine annotations: semantic, panoptic and instance boxes.

::

    ROOT/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png      images
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png       uint8 label ids
    ROOT/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png    uint16 instance ids
    ROOT/gtFine/cityscapes_panoptic_{split}.json                              panoptic segments
    ROOT/gtFine/cityscapes_panoptic_{split}/{city}_{seq}_{frame}_gtFine_panoptic.png

A sample's ``name`` is ``{city}_{seq}_{frame}``. Its truth (a :class:`PanopticTruth`, i.e. a
:class:`~panoptic_perception.core.types.PerceptionResult` with ``crowd_segments``) holds:

``semantic``
    uint8 Cityscapes *label ids* (:data:`~panoptic_perception.core.labels.CITYSCAPES`). Classes that
    Cityscapes does not evaluate (``ignoreInEval``: label ids 0-6, 9, 10, 14-16, 18, 29, 30 and the
    license plate) become 0 = void; crowd pixels keep their class. From ``labelIds``; without it,
    the class of the panoptic map.
``panoptic``
    int32 ``class_id * 1000 + instance`` (this project's encoding, 0 = void). Stuff has instance 0;
    the thing instances of each class are numbered 1..k in the order of their Cityscapes ids
    (instanceIds ``labelId * 1000 + k``, or the segment ids of the panoptic PNG), so both sources give
    the same map.
``segments``
    One :class:`~panoptic_perception.core.types.SegmentInfo` per distinct non-zero value of the
    returned panoptic map (sorted by id; area and ``(x, y, w, h)`` box counted on that map).
``detections``
    One box per thing instance (not per crowd region), ``x2 = max_x + 1``, ``y2 = max_y + 1``, measured
    at the annotation's resolution and scaled to the returned image; class ids are label ids, names
    those of CITYSCAPES, scores 1, ordered by panoptic id.

Crowd regions
-------------
Pixels of a thing class that carry no instance id (instanceIds value = the label id, e.g. a group of
cars labelled 26) are crowd regions, as in Cityscapes' own panoptic conversion (``iscrowd = 1``). In
the panoptic map they keep their class with **instance 0** (``class_id * 1000``), one crowd segment per
class and image; they are listed in ``segments`` (``is_thing=True``) and their ids are in
``truth.crowd_segments`` (a frozenset). Instance 0 of a thing class always means crowd here. They get
no detection box. A panoptic evaluator should treat them the COCO way: not a false negative when
missed, and a predicted segment of that class lying mostly inside one is not a false positive.

Sources
-------
The panoptic JSON + PNG are preferred when ``gtFine/cityscapes_panoptic_{split}.json`` exists and lists
the frame (``iscrowd`` comes from the JSON; ``category_id`` is mapped through the JSON's category
names, so a JSON written with train ids works too). Otherwise panoptic, segments and detections are
derived from ``instanceIds`` as above. A frame without any of these files has ``truth=None``; a frame
with ``labelIds`` only has ``semantic`` only.

``size`` = (width, height) resizes the image with INTER_LINEAR and the label maps with INTER_NEAREST.
A frame whose image or label file cannot be decoded is returned as ``Sample(name, None, error=...)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..core.io import decode_file
from ..core.labels import CITYSCAPES, VOID_ID
from ..core.types import PANOPTIC_LABEL_DIVISOR, Detections, PerceptionResult, SegmentInfo
from .sample import ImageFileDataset, Sample

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"
PANOPTIC_SUFFIX = "_gtFine_panoptic.png"

#: (256,) uint8: label id → itself when Cityscapes evaluates it, else void (0).
EVAL_LUT = np.zeros(256, np.uint8)
EVAL_LUT[CITYSCAPES.ids] = CITYSCAPES.ids


@dataclass
class PanopticTruth(PerceptionResult):
    """Ground truth with the ids of the panoptic map's crowd segments (``iscrowd = 1``)."""

    crowd_segments: frozenset[int] = frozenset()


def semantic_from_label_ids(label_ids: np.ndarray) -> np.ndarray:
    """labelIds → uint8 label ids with the classes Cityscapes does not evaluate set to void (0)."""
    label_ids = np.asarray(label_ids)
    if label_ids.dtype == np.uint8:
        return EVAL_LUT[label_ids]
    label_ids = label_ids.astype(np.int64)
    return np.where((label_ids >= 0) & (label_ids < 256), EVAL_LUT[np.clip(label_ids, 0, 255)], VOID_ID).astype(np.uint8)


def _thing_ids(classes: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Panoptic ids of segments sorted by raw id, given their label ids (0 = void) and crowd flags."""
    out = np.zeros(len(classes), np.int64)
    next_instance: dict[int, int] = {}
    for i, (cls, is_crowd) in enumerate(zip(classes.tolist(), crowd.tolist())):
        if cls == VOID_ID:
            continue
        instance = 0
        if cls in CITYSCAPES.thing_ids and not is_crowd:
            instance = next_instance.get(cls, 0) + 1
            next_instance[cls] = instance
        out[i] = cls * PANOPTIC_LABEL_DIVISOR + instance
    return out


def _positions(values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each value, its index in the sorted ``keys`` and whether it is there at all."""
    if keys.size == 0:
        return np.zeros(values.shape, np.intp), np.zeros(values.shape, bool)
    pos = np.searchsorted(keys, values).clip(max=keys.size - 1)
    return pos, keys[pos] == values


def panoptic_from_instance_ids(instance_ids: np.ndarray) -> tuple[np.ndarray, frozenset[int]]:
    """gtFine instanceIds (uint16) → (panoptic int32 in this project's encoding, crowd segment ids).

    Values >= 1000 are ``labelId * 1000 + k`` thing instances; smaller values are label ids (stuff,
    or a thing class's crowd region). Classes not evaluated become void.
    """
    instance_ids = np.asarray(instance_ids)
    if instance_ids.dtype == np.uint16:
        raw = np.flatnonzero(np.bincount(instance_ids.ravel(), minlength=1))
    else:
        instance_ids = instance_ids.astype(np.int64)
        raw = np.unique(instance_ids)
    classes = np.where(raw >= PANOPTIC_LABEL_DIVISOR, raw // PANOPTIC_LABEL_DIVISOR, raw)
    classes = np.where((classes >= 0) & (classes < 256), EVAL_LUT[np.clip(classes, 0, 255)], VOID_ID)
    crowd = (raw < PANOPTIC_LABEL_DIVISOR) & np.isin(classes, list(CITYSCAPES.thing_ids))
    ids = _thing_ids(classes, crowd)
    if instance_ids.dtype == np.uint16:
        lut = np.zeros(65536, np.int32)
        lut[raw] = ids
        panoptic = lut[instance_ids]
    else:
        pos, _ = _positions(instance_ids, raw)
        panoptic = ids[pos].astype(np.int32)
    return panoptic, frozenset(int(i) for i in ids[crowd & (classes != VOID_ID)])


def rgb_to_id(image_bgr: np.ndarray) -> np.ndarray:
    """A panoptic PNG as read by OpenCV (BGR) → segment ids ``R + 256 G + 256² B`` (int64)."""
    image = image_bgr.astype(np.int64)
    return image[..., 2] + 256 * image[..., 1] + 256 * 256 * image[..., 0]


def panoptic_to_png(panoptic: np.ndarray, segments: Sequence[SegmentInfo]) -> tuple[np.ndarray, list[dict]]:
    """This project's panoptic map and segments → a Cityscapes / COCO panoptic PNG (BGR, for OpenCV) and
    its ``segments_info``: segment id ``R + 256 G + 256² B``, as cityscapesscripts writes its ground truth
    (``label_id * 1000 + instance`` for things, the label id for stuff), ``category_id`` the label id;
    void pixels are 0. The inverse of :func:`panoptic_from_png` (up to the numbering of instances)."""
    ids = np.where(panoptic % PANOPTIC_LABEL_DIVISOR == 0, panoptic // PANOPTIC_LABEL_DIVISOR, panoptic).astype(np.int64)
    png = np.stack([ids // (256 * 256), (ids // 256) % 256, ids % 256], -1).astype(np.uint8)
    info = []
    for segment in segments:
        class_id, instance = divmod(segment.id, PANOPTIC_LABEL_DIVISOR)
        info.append({"id": segment.id if instance else class_id, "category_id": segment.category_id, "iscrowd": 0,
                     "bbox": list(segment.bbox), "area": segment.area})
    return png, info


def panoptic_from_png(segment_ids: np.ndarray, segments_info: list[dict], category_to_label: dict[int, int]
                      ) -> tuple[np.ndarray, frozenset[int]]:
    """Decoded panoptic PNG + its ``segments_info`` → (panoptic in this project's encoding, crowd ids).

    ``category_to_label`` maps the JSON's ``category_id`` to a Cityscapes label id. Pixels whose
    segment is not listed, or whose class is not evaluated, become void.
    """
    info = {int(s["id"]): s for s in segments_info}
    info.pop(0, None)
    keys = np.array(sorted(info), np.int64)
    pos, listed = _positions(segment_ids, keys)
    present = np.bincount(pos[listed], minlength=keys.size) > 0
    classes = np.zeros(keys.size, np.int64)
    crowd = np.zeros(keys.size, bool)
    for i in np.flatnonzero(present).tolist():
        s = info[int(keys[i])]
        label = category_to_label.get(int(s["category_id"]), VOID_ID)
        classes[i] = EVAL_LUT[label] if 0 <= label < 256 else VOID_ID
        crowd[i] = bool(s.get("iscrowd", 0)) and classes[i] in CITYSCAPES.thing_ids
    ids = _thing_ids(classes, crowd)
    panoptic = np.where(listed, ids[pos] if keys.size else 0, 0).astype(np.int32)
    return panoptic, frozenset(int(i) for i in ids[crowd & (classes != VOID_ID)])


def segment_boxes(panoptic: np.ndarray) -> dict[int, tuple[int, tuple[int, int, int, int]]]:
    """Non-zero panoptic id → (pixel area, (x, y, w, h) bounding box)."""
    height, width = panoptic.shape
    flat = np.asarray(panoptic).ravel()
    if flat.size and 0 <= flat.min() and flat.max() < 1 << 20:  # this project's ids: < 256 * 1000
        counts = np.bincount(flat)
        ids = np.flatnonzero(counts)
        areas = counts[ids]
        lut = np.zeros(counts.size, np.intp)
        lut[ids] = np.arange(ids.size)
        inverse = lut[panoptic]
    else:
        ids, inverse, areas = np.unique(panoptic, return_inverse=True, return_counts=True)
        inverse = inverse.reshape(height, width)
    rows = np.zeros((len(ids), height), bool)
    cols = np.zeros((len(ids), width), bool)
    rows[inverse, np.arange(height)[:, None]] = True
    cols[inverse, np.arange(width)[None, :]] = True
    y0 = rows.argmax(1)
    y1 = height - rows[:, ::-1].argmax(1)
    x0 = cols.argmax(1)
    x1 = width - cols[:, ::-1].argmax(1)
    return {
        int(i): (int(a), (int(x0[k]), int(y0[k]), int(x1[k] - x0[k]), int(y1[k] - y0[k])))
        for k, (i, a) in enumerate(zip(ids, areas))
        if i != 0
    }


class CityscapesDataset(ImageFileDataset):
    """Evaluation samples from one split of a Cityscapes folder (see the module docstring)."""

    def __init__(self, root: str | Path, split: str = "val", size: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.size = None if size is None else (int(size[0]), int(size[1]))
        image_dir = self.root / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"no Cityscapes image folder {image_dir} (expected ROOT/leftImg8bit/{split}/<city>/)")
        self.images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"), key=lambda p: (p.parent.name, p.name))
        if not self.images:
            raise FileNotFoundError(f"no *{IMAGE_SUFFIX} images in {image_dir}/<city>/")
        #: name → panoptic annotation (``file_name``, ``segments_info``) from the panoptic JSON, if any.
        self.panoptic_annotations: dict[str, dict] = {}
        self.category_to_label: dict[int, int] = {}
        json_path = self.root / "gtFine" / f"cityscapes_panoptic_{split}.json"
        self.panoptic_json = json_path if json_path.is_file() else None
        if self.panoptic_json is not None:
            self._load_panoptic_json(json_path)

    def _load_panoptic_json(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        for cat in data.get("categories", []):
            try:
                self.category_to_label[int(cat["id"])] = CITYSCAPES.id_of(cat["name"])
            except KeyError:
                self.category_to_label[int(cat["id"])] = VOID_ID  # a class Cityscapes does not evaluate
        for ann in data.get("annotations", []):
            file_name = ann.get("file_name", "")
            name = str(ann.get("image_id") or file_name.removesuffix(PANOPTIC_SUFFIX))
            self.panoptic_annotations[name] = ann

    def _category_to_label(self, category_id: int) -> int:
        if self.category_to_label:
            return self.category_to_label.get(category_id, VOID_ID)
        return category_id  # no categories listed: category ids are label ids

    @property
    def names(self) -> list[str]:
        return [self._name(p) for p in self.images]

    @staticmethod
    def _name(path: Path) -> str:
        return path.name.removesuffix(IMAGE_SUFFIX)

    def __getitem__(self, index: int) -> Sample:
        path = self.images[index]
        name = self._name(path)
        city = path.parent.name
        image = decode_file(path, cv2.IMREAD_COLOR)
        if image is None:
            return Sample(name, None, error=f"cannot decode image {path}")
        if self.size is not None and (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_LINEAR)
        size = (image.shape[1], image.shape[0])
        gt_dir = self.root / "gtFine" / self.split / city

        semantic = None
        label_path = gt_dir / f"{name}{LABEL_IDS_SUFFIX}"
        if label_path.is_file():
            label_ids = decode_file(label_path, cv2.IMREAD_UNCHANGED)
            if label_ids is None or label_ids.ndim != 2:
                return Sample(name, None, error=f"cannot decode label {label_path}")
            semantic = semantic_from_label_ids(label_ids)

        panoptic, crowd = None, frozenset()
        annotation = self.panoptic_annotations.get(name)
        instance_path = gt_dir / f"{name}{INSTANCE_IDS_SUFFIX}"
        if annotation is not None:
            png_path = self.panoptic_json.parent / f"cityscapes_panoptic_{self.split}" / annotation.get(
                "file_name", f"{name}{PANOPTIC_SUFFIX}")
            png = decode_file(png_path, cv2.IMREAD_COLOR)
            if png is None:
                return Sample(name, None, error=f"cannot decode label {png_path}")
            try:
                panoptic, crowd = panoptic_from_png(
                    rgb_to_id(png), annotation.get("segments_info", []),
                    {c: self._category_to_label(c) for c in {int(s["category_id"]) for s in annotation.get("segments_info", [])}},
                )
            except (KeyError, TypeError, ValueError) as exc:
                return Sample(name, None, error=f"bad panoptic annotation for {name} in {self.panoptic_json}: {exc!r}")
        elif instance_path.is_file():
            instance_ids = decode_file(instance_path, cv2.IMREAD_UNCHANGED)
            if instance_ids is None or instance_ids.ndim != 2:
                return Sample(name, None, error=f"cannot decode label {instance_path}")
            panoptic, crowd = panoptic_from_instance_ids(instance_ids)

        if semantic is None and panoptic is None:
            return Sample(name, image)

        detections = segments = None
        if panoptic is not None:
            native = panoptic.shape[1], panoptic.shape[0]
            scale = np.array([size[0] / native[0], size[1] / native[1]] * 2, np.float32)
            stats = segment_boxes(panoptic)
            things = sorted((i, box) for i, (_, box) in stats.items()
                            if i // PANOPTIC_LABEL_DIVISOR in CITYSCAPES.thing_ids and i not in crowd)
            if things:
                detections = Detections(
                    boxes=np.array([(x, y, x + w, y + h) for _, (x, y, w, h) in things], np.float32) * scale,
                    scores=np.ones(len(things), np.float32),
                    class_ids=np.array([i // PANOPTIC_LABEL_DIVISOR for i, _ in things], np.int64),
                    class_names=[CITYSCAPES.name_of(i // PANOPTIC_LABEL_DIVISOR) for i, _ in things],
                )
            else:
                detections = Detections.empty()
            if native != size:
                panoptic = cv2.resize(panoptic, size, interpolation=cv2.INTER_NEAREST)
                stats = segment_boxes(panoptic)
            segments = [
                SegmentInfo(id=i, category_id=i // PANOPTIC_LABEL_DIVISOR,
                            is_thing=i // PANOPTIC_LABEL_DIVISOR in CITYSCAPES.thing_ids, area=area, bbox=box)
                for i, (area, box) in sorted(stats.items())
            ]
            crowd = frozenset(i for i in crowd if i in stats)
        if semantic is not None and (semantic.shape[1], semantic.shape[0]) != size:
            semantic = cv2.resize(semantic, size, interpolation=cv2.INTER_NEAREST)
        if semantic is None:
            semantic = (panoptic // PANOPTIC_LABEL_DIVISOR).astype(np.uint8)
        truth = PanopticTruth(
            size, "ground truth", detections=detections, semantic=semantic, panoptic=panoptic,
            segments=segments, crowd_segments=crowd,
        )
        return Sample(name, image, truth=truth)
