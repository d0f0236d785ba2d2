"""Fusion of a semantic and an instance segmentation into a panoptic image.

Two heuristics, chosen with :attr:`FusionConfig.method`:

``"paper"``: Costea, Petrovai, Nedevschi, "Fusion Scheme for Semantic and Instance-level
Segmentation", section IV and Fig. 2. The semantic segmentation decides *where* objects
are (foreground/background and the object's category: human or vehicle), the detector decides *what*
each object is (its class, e.g. car or truck) and *which* object a pixel belongs to:

1. Foreground / background. A pixel is foreground when its semantic class is a thing class of the
   label map. Thing classes are grouped into categories (:data:`CITYSCAPES_CATEGORIES`:
   ``human`` = person, rider; ``vehicle`` = car, truck, bus, train, motorcycle, bicycle), the level at
   which a semantic head is reliable (paper: it "struggles at subcategory level"). A thing class in no
   group of :attr:`FusionConfig.categories` is a category of its own.
2. Background pixels keep their semantic class: stuff class ``c`` becomes panoptic ``c * 1000`` (one
   segment per class, instance 0); void (0) stays void.
3. Matching. Instances with ``score >= score_threshold`` claim pixels one after the other in
   descending score order (stable for equal scores). An instance keeps a pixel of its mask only where
   the pixel's semantic category is its class's category and no earlier instance holds it; the pixel
   then takes the instance's class (a car half labelled truck by the semantic head becomes all car).
   Mask pixels on background or on another category are deleted. Claim order: the detector's score,
   as in Kirillov et al.'s baseline and Detectron's panoptic combination, because it works for binary
   masks (per-pixel mask probabilities are not always available) and it makes the two methods differ
   only in what the paper adds. Not in the paper (which is silent on overlaps) but taken from that
   baseline: an instance whose compatible pixels are more than ``overlap_threshold`` claimed already
   is a duplicate and dropped; an instance with no compatible pixel at all (e.g. a false detection on
   the road) is dropped.
4. Filling. A foreground pixel no mask kept takes the instance of the closest kept pixel reachable
   through pixels of the same semantic category ("matched to the closest labeled pixel with direct
   semantic path ... breadth-first-search based region growing"). Distances are geodesic, counted in
   steps between ``connectivity``-neighbours (8: chessboard steps, the default, so that diagonally
   touching pixels of a thin object stay one region; 4: city-block). Equal distances go to the
   higher-scoring instance. The growing is a multi-source breadth-first search that touches only
   the frontier, one vectorised numpy pass per BFS layer (no Python loop per pixel): linear in the
   pixels it labels, plus a small fixed cost per layer; the number of layers is the largest
   geodesic distance (a few pixels for misaligned masks, an object's width when an undetected
   object touches a detected one of its category: the paper's scheme then gives it to that one).
5. New instances. The foreground pixels no instance reached form regions (``connectivity``-
   connected, one category): undetected objects, like Fig. 2's pedestrian. A region of at least
   ``min_area`` pixels becomes a new instance; its class is the most frequent semantic class in it
   (lowest id on ties), its score the mean of ``semantic_confidence`` over it, or
   ``new_instance_score`` without one. A smaller region is noise (the paper's threshold "to avoid
   the instance labeling of small foreground noise segments"): void in the panoptic image (a
   prediction there neither matches nor counts as a false positive in PQ), its semantic class kept
   in the refined semantic map.
6. Output: :class:`FusedPanoptic`.

``"kirillov"``: the baseline of Kirillov et al., "Panoptic Segmentation" (CVPR 2019), section 7,
with Detectron2's defaults: instances with ``score >= score_threshold`` in descending score order
claim their *whole* mask's unclaimed pixels (dropped when more than ``overlap_threshold`` of the mask
is claimed already); instance pixels override the semantic segmentation; the remaining pixels of each
stuff class form its segment, and a stuff class with fewer than ``stuff_area_threshold`` remaining
pixels becomes void. Remaining pixels of thing classes (objects no instance covers) become void: the
baseline takes things from the detector only.

Both methods: the refined semantic map is the panoptic segment's class where the panoptic image is
not void, and the input semantic class elsewhere. Instances are numbered per class from 1 (instance 0
of a thing class means a crowd region in this project's ground truth): kept detections in descending
score order, then new instances. At most 999 instances of one class (``PANOPTIC_LABEL_DIVISOR``).

Instance masks as Mask R-CNN gives them: ``(K, H, W)`` (or ``(K, 1, H, W)``, torchvision's layout)
pasted at image size, either boolean (or 0/1 integers) or probabilities, which are binarised with
``mask > mask_threshold`` (0.5, Mask R-CNN's). They may overlap and need not be sorted. numpy arrays
or torch tensors (any device; copied to the CPU). Binary masks are cheaper than probabilities (one
threshold pass less per instance).

Speed: the paper's fusion takes 3 ms on a GTX 1080 Ti. On this project's 2-core development CPU,
shared with other jobs, :func:`benchmark_fusion` (a 1280x720 street scene, 17 to 20 instances,
boolean masks) measured a median of 14 to 22 ms for the paper's fusion and 7 ms for the baseline;
float probability masks add one threshold pass over each mask (about 6 ms for 17 masks).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np

from .labels import CITYSCAPES, VOID_ID, LabelMap
from .types import PANOPTIC_LABEL_DIVISOR, Detections, SegmentInfo

#: Cityscapes label ids of the thing categories the semantic head tells apart reliably (paper IV).
CITYSCAPES_CATEGORIES: Mapping[str, tuple[int, ...]] = {
    "human": (24, 25),  # person, rider
    "vehicle": (26, 27, 28, 31, 32, 33),  # car, truck, bus, train, motorcycle, bicycle
}

_METHODS = ("paper", "kirillov")


def _numpy(array: Any) -> np.ndarray:
    """A numpy view of an array or a torch tensor (moved to the CPU), without importing torch."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


@dataclass
class InstanceSegmentation:
    """An instance segmentation at image size: one mask, score and class per detected object.

    ``masks``: (K, H, W) or (K, 1, H, W), bool, 0/1 integers or float probabilities.
    ``scores``: (K,) detector confidences. ``class_ids``: (K,) label ids of thing classes.
    numpy arrays or torch tensors; stored as numpy. Raises ValueError on inconsistent shapes.
    """

    masks: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        self.masks = _numpy(self.masks)
        self.scores = _numpy(self.scores).astype(np.float32, copy=False).reshape(-1)
        self.class_ids = _numpy(self.class_ids).astype(np.int64, copy=False).reshape(-1)
        if self.masks.ndim == 4 and self.masks.shape[1] == 1:
            self.masks = self.masks[:, 0]
        k = len(self.masks)
        if self.masks.ndim != 3 or len(self.scores) != k or len(self.class_ids) != k:
            raise ValueError(
                f"masks (K, H, W) or (K, 1, H, W), scores (K,) and class_ids (K,) expected, got masks "
                f"{self.masks.shape}, scores {self.scores.shape}, class_ids {self.class_ids.shape}"
            )

    @classmethod
    def empty(cls, height: int, width: int) -> InstanceSegmentation:
        return cls(np.zeros((0, height, width), bool), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.masks)


@dataclass(frozen=True)
class FusionConfig:
    """Parameters of :func:`fuse` (see the module docstring for where each one acts).

    ``method``: ``"paper"`` (Costea et al.) or ``"kirillov"`` (the Panoptic Segmentation baseline).
    ``categories``: thing-class groups for the paper's matching, name → label ids.
    ``min_area``: paper, step 5: smallest isolated foreground segment (pixels) made a new instance.
    ``connectivity``: 4 or 8, neighbourhood of the paper's region growing and segments.
    ``score_threshold``: instances scoring lower are ignored (both methods; Detectron2: 0.5).
    ``overlap_threshold``: an instance is dropped when more than this fraction of its (paper:
    compatible) mask pixels is claimed by higher-scoring instances (both; Detectron2: 0.5).
    ``mask_threshold``: probability masks are binarised with ``> mask_threshold``.
    ``stuff_area_threshold``: kirillov: a stuff class with fewer remaining pixels becomes void
    (Detectron2's 4096, for images of about 800x1333 pixels, about the area of 1280x720).
    ``new_instance_score``: paper: score of new instances when no semantic confidence is given.
    Raises ValueError on values out of range.
    """

    method: Literal["paper", "kirillov"] = "paper"
    categories: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: dict(CITYSCAPES_CATEGORIES))
    min_area: int = 256
    connectivity: int = 8
    score_threshold: float = 0.5
    overlap_threshold: float = 0.5
    mask_threshold: float = 0.5
    stuff_area_threshold: int = 4096
    new_instance_score: float = 0.5

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if self.connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {self.connectivity}")
        if self.min_area < 1 or self.stuff_area_threshold < 0:
            raise ValueError(
                f"min_area must be >= 1 and stuff_area_threshold >= 0, got {self.min_area}, {self.stuff_area_threshold}"
            )
        for name in ("score_threshold", "mask_threshold", "new_instance_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.overlap_threshold < 1.0:
            raise ValueError(f"overlap_threshold must be in [0, 1), got {self.overlap_threshold}")


@dataclass
class FusedPanoptic:
    """The fused output, at the input's resolution.

    ``panoptic``: (H, W) int32 ``class_id * 1000 + instance``, 0 = void.
    ``segments``: one :class:`SegmentInfo` per non-void panoptic value, sorted by id; thing segments
    carry their instance's score, stuff segments 1.0.
    ``semantic``: (H, W) uint8 refined label ids.
    ``detections``: one box per thing segment, ``(x1, y1, x2, y2)`` = ``(min_x, min_y, max_x + 1,
    max_y + 1)`` of the fused segment, sorted by descending score.
    ``sources``: thing segment id → index of its instance in the input, -1 for a new instance.
    """

    panoptic: np.ndarray
    segments: list[SegmentInfo]
    semantic: np.ndarray
    detections: Detections
    sources: dict[int, int]


@dataclass
class _Instance:
    """A fused instance: its value in the working label image, class, score and input index."""

    value: int
    class_id: int
    score: float
    source: int


def _semantic_ids(semantic: Any, label_map: LabelMap) -> np.ndarray:
    """(H, W) integer label ids → contiguous uint8; ids neither void nor in the label map raise ValueError."""
    semantic = _numpy(semantic)
    if semantic.ndim != 2 or not np.issubdtype(semantic.dtype, np.integer):
        raise ValueError(f"semantic must be an (H, W) integer array of label ids, got {semantic.shape} {semantic.dtype}")
    if semantic.dtype != np.uint8:
        if semantic.size and (semantic.min() < 0 or semantic.max() > 255):
            raise ValueError(f"semantic label ids must be in [0, 255], got [{semantic.min()}, {semantic.max()}]")
        semantic = semantic.astype(np.uint8)
    semantic = np.ascontiguousarray(semantic)
    present = np.flatnonzero(cv2.calcHist([semantic], [0], None, [256], [0, 256]).ravel())
    unknown = sorted(set(present.tolist()) - set(label_map.ids.tolist()) - {VOID_ID})
    if unknown:
        raise ValueError(f"semantic holds ids {unknown} that are neither void nor classes of label map {label_map.name!r}")
    return semantic


def _category_table(label_map: LabelMap, categories: Mapping[str, tuple[int, ...]]) -> np.ndarray:
    """(256,) uint8: label id → category number (1, 2, ...) of thing classes; 0 for stuff and void."""
    table = np.zeros(256, np.uint8)
    for number, (name, ids) in enumerate(categories.items(), 1):
        for class_id in ids:
            if class_id not in label_map.thing_ids:
                raise ValueError(f"category {name!r} lists {class_id}, not a thing class of label map {label_map.name!r}")
            if table[class_id]:
                raise ValueError(f"class {class_id} is in two categories")
            table[class_id] = number
    number = len(categories)
    for class_id in sorted(label_map.thing_ids):
        if not table[class_id]:  # a thing class in no group is a category of its own
            number += 1
            table[class_id] = number
    return table


def _binary_masks(masks: np.ndarray, threshold: float) -> np.ndarray:
    """(K, H, W) masks of any dtype → contiguous uint8 0/1 (a view for bool masks)."""
    if masks.dtype == bool:
        return np.ascontiguousarray(masks).view(np.uint8)
    if np.issubdtype(masks.dtype, np.floating):
        return np.ascontiguousarray(masks > threshold).view(np.uint8)
    return np.ascontiguousarray(masks != 0).view(np.uint8)


def _region_stats(labels: np.ndarray, count: int) -> tuple[np.ndarray, ...]:
    """Area and inclusive box ``(x0, y0, x1, y1)`` of each value ``0..count-1`` of an (H, W) int map.

    Computed on the row runs of equal values: one pass over the image, then work per run. Boxes of
    absent values are empty (``x0 > x1``).
    """
    height, width = labels.shape
    starts = np.empty((height, width), bool)
    starts[:, 0] = True
    np.not_equal(labels[:, 1:], labels[:, :-1], out=starts[:, 1:])
    index = np.flatnonzero(starts)
    values = labels.ravel()[index]
    length = np.diff(index, append=labels.size)
    rows, columns = np.divmod(index, width)
    area = np.bincount(values, weights=length, minlength=count).astype(np.int64)
    x0 = np.full(count, width)
    np.minimum.at(x0, values, columns)
    x1 = np.full(count, -1)
    np.maximum.at(x1, values, columns + length - 1)
    y0 = np.full(count, height)
    np.minimum.at(y0, values, rows)
    y1 = np.full(count, -1)
    np.maximum.at(y1, values, rows)
    return area, x0, y0, x1, y1


def _neighbours(connectivity: int, row_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat-index offsets of a pixel's 4 or 8 neighbours in rows of ``row_length``, and the 3x3 kernel."""
    if connectivity == 8:
        offsets = [-row_length - 1, -row_length, -row_length + 1, -1, 1, row_length - 1, row_length, row_length + 1]
        return np.array(offsets), cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    return np.array([-row_length, -1, 1, row_length]), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _claim(
    masks: np.ndarray,
    instances: InstanceSegmentation,
    category: np.ndarray | None,
    category_of: np.ndarray,
    labels: np.ndarray,
    config: FusionConfig,
) -> list[_Instance]:
    """Step 3: instances claim mask pixels in descending score order; returns the kept ones.

    ``category``: the semantic category image for the paper's compatibility test, ``None`` for
    Kirillov's baseline (whole masks). ``labels`` (H, W) int32, 0 where unclaimed, is written in
    place. Label values decrease with the rank, so that the region growing's maximum prefers the
    higher score.
    """
    order = np.argsort(-instances.scores, kind="stable")
    order = order[instances.scores[order] >= config.score_threshold]
    kept: list[_Instance] = []
    for rank, k in enumerate(order.tolist()):
        x, y, w, h = cv2.boundingRect(masks[k])
        if w == 0:
            continue
        window = (slice(y, y + h), slice(x, x + w))
        candidate = masks[k][window].view(bool)
        if category is not None:
            candidate = candidate & (category[window] == category_of[instances.class_ids[k]])
        n_candidate = np.count_nonzero(candidate)
        free = candidate & (labels[window] == 0)
        n_free = np.count_nonzero(free)
        if n_free == 0 or n_candidate - n_free > config.overlap_threshold * n_candidate:
            continue
        value = len(order) - rank
        labels[window][free] = value
        kept.append(_Instance(value, int(instances.class_ids[k]), float(instances.scores[k]), k))
    return kept


def _grow(labels: np.ndarray, category: np.ndarray, connectivity: int) -> np.ndarray:
    """Step 4: breadth-first region growing of the instance labels over unlabelled foreground, in place.

    ``labels`` (H, W) int32, 0 = unlabelled; ``category`` (H, W) uint8, 0 = background. A label
    moves from a pixel to an unlabelled neighbour of the same category. Each loop pass is one BFS
    layer and touches the frontier's pixels only (linear time in the pixels labelled); a pixel
    reached by several labels in the same layer takes the largest (the higher score). Returns the
    (H, W) bool image of the foreground pixels no label reached.
    """
    unlabelled = np.zeros(labels.shape, bool)
    x, y, w, h = cv2.boundingRect(category)
    if w == 0:
        return unlabelled
    window = (slice(y, y + h), slice(x, x + w))
    # Copies of the foreground's window with a 1-pixel border of background, so that neighbour
    # offsets never leave it.
    label_image = np.zeros((h + 2, w + 2), np.int32)
    label_image[1:-1, 1:-1] = labels[window]
    category_image = np.zeros((h + 2, w + 2), np.uint8)
    category_image[1:-1, 1:-1] = category[window]
    todo_image = (category_image > 0) & (label_image == 0)
    offsets, kernel = _neighbours(connectivity, w + 2)
    seeds = cv2.dilate(todo_image.view(np.uint8), kernel).view(bool) & (label_image > 0)
    label_flat, category_flat, todo = label_image.ravel(), category_image.ravel(), todo_image.ravel()
    frontier = np.flatnonzero(seeds)
    stamp = np.empty(label_flat.size, np.int32)
    while frontier.size:
        reached = (frontier[:, None] + offsets).ravel()
        same = todo[reached] & (category_flat[reached] == np.repeat(category_flat[frontier], len(offsets)))
        values = np.repeat(label_flat[frontier], len(offsets))[same]
        reached = reached[same]
        np.maximum.at(label_flat, reached, values)
        todo[reached] = False
        # The next frontier: each reached pixel once (the last of its repeats).
        position = np.arange(reached.size, dtype=np.int32)
        stamp[reached] = position
        frontier = reached[stamp[reached] == position]
    labels[window] = label_image[1:-1, 1:-1]
    unlabelled[window] = todo_image[1:-1, 1:-1]
    return unlabelled


def _new_instances(
    semantic: np.ndarray,
    category: np.ndarray,
    categories: int,
    labels: np.ndarray,
    unlabelled: np.ndarray,
    first_value: int,
    config: FusionConfig,
    semantic_confidence: np.ndarray | None,
) -> list[_Instance]:
    """Step 5: connected regions of unlabelled foreground of one category become new instances.

    ``semantic``, ``category`` (numbers 1 to ``categories``), ``labels`` (written in place) and
    ``unlabelled`` (bool) are (H, W). Regions smaller than ``config.min_area`` stay unlabelled (noise).
    """
    created: list[_Instance] = []
    for g in range(1, categories + 1):
        # numpy, not cv2.compare: OpenCV takes a 1x1 array for a scalar
        rest = np.logical_and(unlabelled, category == g).view(np.uint8)
        x, y, w, h = cv2.boundingRect(rest)
        if w == 0:
            continue
        window = (slice(y, y + h), slice(x, x + w))
        count, regions = cv2.connectedComponents(rest[window], connectivity=config.connectivity, ltype=cv2.CV_32S)
        area = np.bincount(regions.ravel(), minlength=count)
        for region_id in np.flatnonzero(area[1:] >= config.min_area) + 1:
            inside = regions == region_id
            classes = np.bincount(semantic[window][inside], minlength=256)
            score = (
                float(semantic_confidence[window][inside].mean())
                if semantic_confidence is not None
                else config.new_instance_score
            )
            value = first_value + len(created)
            labels[window][inside] = value
            created.append(_Instance(value, int(classes.argmax()), score, -1))
    return created


def fuse(
    semantic: Any,
    instances: InstanceSegmentation,
    label_map: LabelMap = CITYSCAPES,
    config: FusionConfig | None = None,
    semantic_confidence: Any = None,
) -> FusedPanoptic:
    """Fuse a semantic segmentation and an instance segmentation into a panoptic image.

    ``semantic``: (H, W) integer label ids of ``label_map`` (0 = void), numpy or torch.
    ``instances``: masks (K, H, W) at the same size, scores, thing class ids.
    ``semantic_confidence``: optional (H, W) float, the semantic head's probability of each pixel's
    class; the score of the paper's new instances is its mean over the instance.
    Method and parameters: ``config`` (default :class:`FusionConfig`); see the module docstring.
    Raises ValueError on mismatched shapes, ids outside the label map, instance classes that are not
    thing classes, or more than 999 instances of one class.
    """
    config = config or FusionConfig()
    semantic = _semantic_ids(semantic, label_map)
    height, width = semantic.shape
    if instances.masks.shape[1:] != (height, width):
        raise ValueError(f"instance masks {instances.masks.shape} do not match semantic {semantic.shape}")
    if semantic_confidence is not None:
        semantic_confidence = _numpy(semantic_confidence)
        if semantic_confidence.shape != (height, width):
            raise ValueError(f"semantic_confidence {semantic_confidence.shape} does not match semantic {semantic.shape}")
    not_things = sorted(set(instances.class_ids.tolist()) - label_map.thing_ids)
    if not_things:
        raise ValueError(f"instance class ids {not_things} are not thing classes of label map {label_map.name!r}")
    paper = config.method == "paper"
    category_of = _category_table(label_map, config.categories)
    masks = _binary_masks(instances.masks, config.mask_threshold)

    # Step 1: the category of each pixel, 0 for background.
    category = cv2.LUT(semantic, category_of)
    labels = np.zeros((height, width), np.int32)  # 0: no instance, else the instance's value
    fused = _claim(masks, instances, category if paper else None, category_of, labels, config)
    if paper:
        unlabelled = _grow(labels, category, config.connectivity)
        fused += _new_instances(
            semantic, category, int(category_of.max()), labels, unlabelled, len(instances) + 1, config, semantic_confidence
        )
    return _assemble(semantic, labels, fused, label_map, config)


def _assemble(
    semantic: np.ndarray, labels: np.ndarray, fused: list[_Instance], label_map: LabelMap, config: FusionConfig
) -> FusedPanoptic:
    """Step 6: panoptic image, segments, refined semantic map and detections from the label image."""
    # One index image for stuff and things: label id (< 256) where no instance, 255 + value elsewhere.
    count = 256 + max((i.value for i in fused), default=0)
    index = semantic.astype(np.uint16 if count <= 1 << 16 else np.int32)
    np.add(labels, 255, out=index, where=labels > 0, casting="unsafe")
    area, x0, y0, x1, y1 = _region_stats(index, count)
    to_panoptic = np.zeros(count, np.int32)
    to_semantic = np.zeros(count, np.uint8)
    to_semantic[:256] = np.arange(256)
    segments: list[SegmentInfo] = []

    def segment(i: int, segment_id: int, class_id: int, is_thing: bool, score: float) -> SegmentInfo:
        to_panoptic[i] = segment_id
        to_semantic[i] = class_id
        box = (int(x0[i]), int(y0[i]), int(x1[i] - x0[i] + 1), int(y1[i] - y0[i] + 1))
        info = SegmentInfo(segment_id, class_id, is_thing, int(area[i]), box, score)
        segments.append(info)
        return info

    paper = config.method == "paper"
    for c in label_map.classes:
        if not c.is_thing and area[c.id] > 0 and (paper or area[c.id] >= config.stuff_area_threshold):
            segment(c.id, c.id * PANOPTIC_LABEL_DIVISOR, c.id, False, 1.0)
    numbers: dict[int, int] = {}
    things: list[SegmentInfo] = []
    sources: dict[int, int] = {}
    for instance in fused:
        number = numbers.get(instance.class_id, 0) + 1
        if number >= PANOPTIC_LABEL_DIVISOR:
            raise ValueError(f"more than {PANOPTIC_LABEL_DIVISOR - 1} instances of class {instance.class_id}")
        numbers[instance.class_id] = number
        segment_id = instance.class_id * PANOPTIC_LABEL_DIVISOR + number
        things.append(segment(255 + instance.value, segment_id, instance.class_id, True, instance.score))
        sources[segment_id] = instance.source
    segments.sort(key=lambda s: s.id)

    things.sort(key=lambda s: -s.score)  # stable: kept detections before new instances on ties
    if things:
        detections = Detections(
            boxes=np.array([(x, y, x + w, y + h) for x, y, w, h in (s.bbox for s in things)], np.float32),
            scores=np.array([s.score for s in things], np.float32),
            class_ids=np.array([s.category_id for s in things], np.int64),
            class_names=[label_map.name_of(s.category_id) for s in things],
        )
    else:
        detections = Detections.empty()
    return FusedPanoptic(
        panoptic=to_panoptic.take(index),
        segments=segments,
        semantic=to_semantic.take(index),
        detections=detections,
        sources=sources,
    )


def _benchmark_scene(width: int, height: int, objects: int, seed: int) -> tuple[np.ndarray, InstanceSegmentation]:
    """A busy street scene in Cityscapes label ids and a Mask R-CNN-like instance segmentation of it.

    Semantic map: sky, buildings, trees, poles, road, sidewalk; ``objects`` cars (parked in
    overlapping rows along both kerbs or on the road), trucks and pedestrians on the sidewalks, sized
    by their distance, nearer ones occluding farther ones (with 30 objects, vehicles cover 15 to 23 %
    of the image); about a third of the vehicles half labelled with the wrong vehicle class, and
    small noise blobs. Instances: objects less than 30 % visible are not detected, and one in
    ten of the others is missed; masks are the visible part grown by 2 pixels (so neighbours'
    masks overlap) at Mask R-CNN's 28x28 resolution, shifted by up to 3 pixels and cropped by up to
    15 % on one side; one false detection on the road; scores in [0.5, 1).
    """
    rng = np.random.default_rng(seed)
    semantic = np.full((height, width), 23, np.uint8)  # sky
    horizon = int(0.45 * height)
    for x in np.sort(rng.uniform(0, width, 12)).astype(int):  # buildings and trees
        top, wide = int(rng.uniform(0.05, 0.35) * height), int(rng.uniform(0.05, 0.2) * width)
        semantic[top:horizon, x : x + wide] = rng.choice([11, 21])
    semantic[horizon:] = 8  # sidewalk
    road = [(0.42, 0.45), (0.58, 0.45), (1.0, 0.8), (1.0, 1.0), (0.0, 1.0), (0.0, 0.8)]
    cv2.fillPoly(semantic, [(np.array(road) * (width, height)).astype(np.int32)], 7)
    for x in rng.integers(0, width, 6):  # poles
        semantic[int(0.2 * height) : horizon + 20, x : x + 4] = 17

    shapes: list[tuple[np.ndarray, int]] = []
    for depth in np.sort(rng.uniform(0.05, 1.0, objects) ** 2):  # far to near, more far ones
        bottom = int(horizon + depth * (height - horizon))
        kerb = (0.42 - 0.42 * min(depth / 0.64, 1.0)) * width  # left road edge at this distance
        shape = np.zeros((height, width), np.uint8)
        kind = int(rng.choice([26, 26, 26, 26, 27, 24, 24, 24]))
        if kind == 24:  # on a sidewalk
            tall = (0.06 + 0.3 * depth) * height
            x = rng.choice([kerb - 0.1 * width, width - kerb + 0.1 * width]) + rng.normal(0, 0.02 * width)
            cv2.ellipse(shape, (int(x), int(bottom - tall / 2)), (int(tall / 6) + 1, int(tall / 2)), 0, 0, 360, 1, -1)
        else:  # parked at a kerb or on the road
            long = (0.03 + 0.22 * depth) * width * (1.4 if kind == 27 else 1.0)
            x = rng.choice([kerb - 0.7 * long, width - kerb - 0.3 * long, rng.uniform(kerb, width - kerb - long)])
            top = bottom - (0.9 if kind == 27 else 0.55) * long
            cv2.rectangle(shape, (int(x), int(top)), (int(x + long), bottom), 1, -1)
        shapes.append((shape.view(bool), kind))

    owner = np.zeros((height, width), np.int32)  # which object each pixel shows, nearest last
    for k, (shape, kind) in enumerate(shapes, 1):
        owner[shape] = k
        semantic[shape] = kind
    masks, scores, class_ids = [], [], []
    columns = np.arange(width)
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    for k, (shape, kind) in enumerate(shapes, 1):
        visible = owner == k
        ys, xs = np.nonzero(visible)
        if not len(ys) or len(ys) < 0.3 * np.count_nonzero(shape):
            continue  # mostly hidden: not in the semantic map's list of objects to detect
        if kind != 24 and rng.random() < 0.3:  # the semantic head's sub-class confusion (Fig. 2)
            semantic[visible & (columns > xs.mean())] = 27 if kind == 26 else 26
        if rng.random() < 0.1:
            continue  # missed by the detector
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        # The visible part, 2 pixels wider (masks overlap their neighbours), at 28x28 resolution.
        visible = cv2.dilate(visible.view(np.uint8), grow)
        coarse = cv2.resize(visible[y0:y1, x0:x1], (28, 28), interpolation=cv2.INTER_AREA)
        mask = np.zeros((height, width), np.uint8)
        mask[y0:y1, x0:x1] = cv2.resize(coarse, (int(x1 - x0), int(y1 - y0)), interpolation=cv2.INTER_NEAREST)
        mask = np.roll(mask, tuple(rng.integers(-3, 4, 2)), (0, 1))
        mask[:, : x0 + int(rng.uniform(0, 0.15) * (x1 - x0))] = 0
        masks.append(mask.view(bool))
        scores.append(rng.uniform(0.5, 1.0))
        class_ids.append(kind)
    for x, y in rng.integers(0, (width - 6, height - 6), (10, 2)):  # noise blobs
        semantic[y : y + rng.integers(2, 6), x : x + rng.integers(2, 6)] = rng.choice([24, 25, 26, 33])
    false = np.zeros((height, width), bool)
    false[height - height // 12 : height - height // 36, width // 2 : width // 2 + width // 20] = True
    masks.append(false)  # a "car" on the road
    scores.append(0.55)
    class_ids.append(26)
    return semantic, InstanceSegmentation(np.stack(masks), np.array(scores), np.array(class_ids))


def benchmark_fusion(
    size: tuple[int, int] = (1280, 720), objects: int = 30, runs: int = 20, method: str = "paper", seed: int = 0
) -> float:
    """Median milliseconds of :func:`fuse` on a synthetic street scene.

    ``size`` = (width, height); ``objects`` in the scene (30 give about 20 detected instances, see
    :func:`_benchmark_scene`); boolean masks, as Mask R-CNN's are after its 0.5 threshold.
    """
    semantic, detected = _benchmark_scene(size[0], size[1], objects, seed)
    config = FusionConfig(method=method)
    fuse(semantic, detected, CITYSCAPES, config)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fuse(semantic, detected, CITYSCAPES, config)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))
