"""Training data: samples from synthetic scenes, Cityscapes or BDD100K (or a mix), and the geometric
augmentations the recipes share.

A source yields :class:`~panoptic_perception.data.sample.Sample` objects (an image and its ground truth as a
:class:`~panoptic_perception.core.types.PerceptionResult`), the same objects evaluation reads, so training
and evaluation see identical labels. Augmentations transform an image and every label it carries
consistently (:class:`Example`): horizontal flip, scaling and cropping / padding to the network size.
Randomness comes from a generator the caller seeds per (epoch, sample), so an epoch is reproduced
exactly after a resume, whatever the number of loader workers.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Sequence

import cv2
import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from ..core.labels import LabelMap
from ..core.types import PANOPTIC_LABEL_DIVISOR, Detections
from ..data.sample import Sample

#: Training label for pixels that do not count (void, classes outside the label map, padding).
IGNORE_INDEX = 255

SOURCES = ("synthetic", "cityscapes", "bdd100k")


@dataclass
class DataSource:
    """One source of samples.

    ``synthetic``: ``count`` scenes with seeds ``first_seed ..`` rendered at ``width`` x ``height``
    (rendered once and kept in memory). ``cityscapes`` / ``bdd100k``: the ``split`` of the dataset
    folder ``root`` (the readers of :mod:`panoptic_perception.data`), at most ``count`` samples (0: all).
    """

    source: str = "synthetic"
    root: str | None = None
    split: str = "train"
    count: int = 1000
    first_seed: int = 0
    width: int = 640
    height: int = 360

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data source must be one of {', '.join(SOURCES)}, got {self.source!r}")
        if self.source != "synthetic" and not self.root:
            raise ValueError(f"data source {self.source!r} needs a root folder")
        if self.count < 0 or self.first_seed < 0:
            raise ValueError("count and first_seed must be non-negative")


def _default_val() -> list[DataSource]:
    return [DataSource(count=100, first_seed=1_000_000)]


@dataclass
class DataConfig:
    """Training and validation sources (several of them are concatenated: a mix).

    Synthetic validation seeds default to 1,000,000 on (training uses 0 on; evaluation 5,000,000 on).
    """

    train: list[DataSource] = field(default_factory=lambda: [DataSource()])
    val: list[DataSource] = field(default_factory=_default_val)
    workers: int = 0

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("data.train needs at least one source")
        for train in self.train:
            for val in self.val:
                if train.source == val.source == "synthetic" and _overlap(train, val):
                    raise ValueError("synthetic training and validation seeds overlap")


def _overlap(a: DataSource, b: DataSource) -> bool:
    return a.first_seed < b.first_seed + b.count and b.first_seed < a.first_seed + a.count


class SampleList(Dataset):
    """Samples of one source, read on access (datasets) or rendered once and kept (synthetic)."""

    def __init__(self, source: DataSource, progress: bool = False) -> None:
        if source.source == "synthetic":
            from tqdm import tqdm

            from ..data.synthetic import SyntheticScenes

            scenes = SyntheticScenes(source.count, source.width, source.height, source.first_seed)
            self._samples = [
                _StoredSample(Sample(f"synthetic_{scene.seed}", scene.image, scene.to_result()))
                for scene in tqdm(scenes, desc=f"rendering {source.count} scenes", disable=not progress, leave=False)
            ]
            self._reader = None
        else:
            if source.source == "cityscapes":
                from ..data.cityscapes import CityscapesDataset as reader_type
            else:
                from ..data.bdd100k import BDD100KDataset as reader_type
            self._reader = reader_type(source.root, source.split)
            self._samples = None
        total = len(self._samples if self._samples is not None else self._reader)
        self._length = min(total, source.count) if source.count and source.source != "synthetic" else total

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self._length:
            raise IndexError(index)
        sample = self._samples[index].sample() if self._samples is not None else self._reader[index]
        if sample.image is None:
            raise ValueError(f"cannot train on {sample.name}: {sample.error}")
        return sample


class _StoredSample:
    """A rendered sample kept in memory with its label maps zlib-compressed (lossless).

    Rendering costs ~30 ms a scene, too much to repeat every epoch, but kept raw a 640x352 scene with its
    labels takes 2.3 MB (the int32 panoptic image alone 0.9 MB): 9,600 scenes were killed for memory at 24 GB.
    Compressed, the label maps take ~20 kB a scene and decompress in a few milliseconds (training at 640x352
    ran as fast per step as before).
    """

    _MAPS = ("drivable_mask", "lane_mask", "semantic", "panoptic")

    def __init__(self, sample: Sample) -> None:
        self._sample = replace(sample, truth=replace(sample.truth, **{name: None for name in self._MAPS}))
        self._maps = {
            name: (zlib.compress(np.ascontiguousarray(array).tobytes(), 1), array.dtype, array.shape)
            for name in self._MAPS
            if (array := getattr(sample.truth, name)) is not None
        }

    def sample(self) -> Sample:
        maps = {name: np.frombuffer(zlib.decompress(data), dtype).reshape(shape).copy() for name, (data, dtype, shape) in self._maps.items()}
        return replace(self._sample, truth=replace(self._sample.truth, **maps))


def open_sources(sources: Sequence[DataSource], progress: bool = False) -> Dataset:
    """The samples of every source, concatenated in order."""
    lists = [SampleList(source, progress) for source in sources]
    return lists[0] if len(lists) == 1 else ConcatDataset(lists)


@dataclass
class Example:
    """An image and the labels it carries, transformed together. ``None``: the label is not there.

    ``image`` (H, W, 3) uint8 BGR; ``semantic`` (H, W) uint8 label ids (0 void); ``panoptic`` (H, W) int32
    ``class * 1000 + instance``; ``drivable`` / ``lane`` (H, W) uint8 0/1; ``boxes`` (K, 4) float32 xyxy
    pixels with ``box_classes`` (K,) int64 and ``box_names``. ``valid`` (H, W) bool: pixels of the
    source image (False on padding).
    """

    image: np.ndarray
    semantic: np.ndarray | None = None
    panoptic: np.ndarray | None = None
    drivable: np.ndarray | None = None
    lane: np.ndarray | None = None
    boxes: np.ndarray | None = None
    box_classes: np.ndarray | None = None
    box_names: list[str] | None = None
    valid: np.ndarray | None = None

    @classmethod
    def from_sample(cls, sample: Sample) -> "Example":
        truth = sample.truth
        detections: Detections | None = truth.detections if truth is not None else None
        return cls(
            image=sample.image,
            semantic=None if truth is None else truth.semantic,
            panoptic=None if truth is None else truth.panoptic,
            drivable=None if truth is None else truth.drivable_mask,
            lane=None if truth is None else truth.lane_mask,
            boxes=None if detections is None else detections.boxes.astype(np.float32),
            box_classes=None if detections is None else detections.class_ids.astype(np.int64),
            box_names=None if detections is None else list(detections.class_names),
            valid=np.ones(sample.image.shape[:2], bool),
        )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.image.shape[1], self.image.shape[0]

    def _label_maps(self) -> dict[str, np.ndarray]:
        names = ("semantic", "panoptic", "drivable", "lane", "valid")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def hflip(example: Example) -> Example:
    """Mirror left-right (every label stays valid under a horizontal flip)."""
    width = example.size[0]
    changes = {name: np.ascontiguousarray(m[:, ::-1]) for name, m in example._label_maps().items()}
    boxes = None
    if example.boxes is not None:
        boxes = example.boxes.copy()
        boxes[:, [0, 2]] = width - example.boxes[:, [2, 0]]
    return replace(example, image=np.ascontiguousarray(example.image[:, ::-1]), boxes=boxes, **changes)


def resize(example: Example, size: tuple[int, int]) -> Example:
    """Scale to ``size`` (width, height): the image bilinearly, label maps by nearest neighbour."""
    if size == example.size:
        return example
    width, height = size
    sx, sy = width / example.size[0], height / example.size[1]
    changes = {
        name: cv2.resize(m.astype(np.uint8) if m.dtype == bool else m, size, interpolation=cv2.INTER_NEAREST).astype(m.dtype)
        for name, m in example._label_maps().items()
    }
    boxes = None if example.boxes is None else example.boxes * np.array([sx, sy, sx, sy], np.float32)
    return replace(example, image=cv2.resize(example.image, size, interpolation=cv2.INTER_LINEAR), boxes=boxes, **changes)


def crop_or_pad(example: Example, size: tuple[int, int], rng: np.random.Generator, pad_color: Sequence[int]) -> Example:
    """Bring to ``size`` (width, height): a random window where the image is larger, padding at the
    bottom / right where it is smaller (labels: 0, i.e. void; ``valid`` False). Boxes are clipped to the
    window and dropped when nothing of them is left."""
    width, height = size
    x0 = int(rng.integers(0, example.size[0] - width + 1)) if example.size[0] > width else 0
    y0 = int(rng.integers(0, example.size[1] - height + 1)) if example.size[1] > height else 0

    def window(array: np.ndarray, fill) -> np.ndarray:
        part = array[y0 : y0 + height, x0 : x0 + width]
        if part.shape[:2] == (height, width):
            return np.ascontiguousarray(part)
        out = np.empty((height, width, *array.shape[2:]), array.dtype)
        out[...] = fill
        out[: part.shape[0], : part.shape[1]] = part
        return out

    changes = {name: window(m, False if m.dtype == bool else 0) for name, m in example._label_maps().items()}
    boxes, classes, names = example.boxes, example.box_classes, example.box_names
    if boxes is not None:
        shifted = boxes - np.array([x0, y0, x0, y0], np.float32)
        limit = np.array([min(width, example.size[0] - x0), min(height, example.size[1] - y0)] * 2, np.float32)
        shifted = np.clip(shifted, 0, limit)
        keep = (shifted[:, 2] > shifted[:, 0]) & (shifted[:, 3] > shifted[:, 1])
        boxes, classes = shifted[keep], classes[keep]
        names = [n for n, k in zip(names, keep) if k]
    image = window(example.image, np.asarray(pad_color, np.uint8))
    return replace(example, image=image, boxes=boxes, box_classes=classes, box_names=names, **changes)


def scale_flip_crop(example: Example, size: tuple[int, int], rng: np.random.Generator, scale: tuple[float, float],
                    flip: bool, pad_color: Sequence[int]) -> Example:
    """The shared augmentation: resize to ``size`` times a random factor in ``scale`` (aspect kept: the
    source is first fitted to ``size``), mirror with probability 1/2 if ``flip``, then crop / pad to
    ``size``. With ``scale = (1, 1)`` and no flip it is a plain resize."""
    fit = min(size[0] / example.size[0], size[1] / example.size[1])
    factor = fit * float(rng.uniform(*scale))
    scaled = resize(example, (max(1, round(example.size[0] * factor)), max(1, round(example.size[1] * factor))))
    if flip and rng.random() < 0.5:
        scaled = hflip(scaled)
    return crop_or_pad(scaled, size, rng, pad_color)


def class_index_table(label_map: LabelMap, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(256,) uint8 lookup from a class id to its output channel in ``label_map``; other ids → ignore."""
    table = np.full(256, ignore_index, np.uint8)
    table[label_map.ids] = np.arange(len(label_map), dtype=np.uint8)
    return table


@dataclass
class InstanceTargets:
    """Things of a panoptic map as Mask R-CNN targets: ``boxes`` (K, 4) float32 xyxy (exclusive max),
    ``labels`` (K,) int64 indices into the thing classes (1-based; 0 is background), ``masks`` (K, H, W)
    uint8."""

    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


def instance_targets(panoptic: np.ndarray, thing_ids: Sequence[int], min_pixels: int = 1) -> InstanceTargets:
    """Every thing segment (class in ``thing_ids``, instance > 0; crowd regions, instance 0, are left out)
    with at least ``min_pixels`` pixels, in the order of their panoptic values."""
    index = {class_id: i + 1 for i, class_id in enumerate(thing_ids)}
    values, counts = np.unique(panoptic, return_counts=True)
    boxes, labels, masks = [], [], []
    for value, count in zip(values.tolist(), counts.tolist()):
        class_id, instance = divmod(value, PANOPTIC_LABEL_DIVISOR)
        if class_id not in index or instance == 0 or count < min_pixels:
            continue
        mask = panoptic == value
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        labels.append(index[class_id])
        masks.append(mask)
    height, width = panoptic.shape
    return InstanceTargets(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(labels, np.int64),
        np.stack(masks).astype(np.uint8) if masks else np.zeros((0, height, width), np.uint8),
    )
