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
   higher-scoring instance. A label never leaves a region of unlabelled foreground (connected, one
   category), so a region that touches kept pixels of a single instance (a misaligned mask's gap;
   an undetected object touching a detected one of its category: the paper's scheme then gives it
   to that one) takes that instance whole, found with one flood fill. Only regions between two or
   more instances need the multi-source breadth-first search, which touches only the frontier, one
   vectorised numpy pass per BFS layer (no Python loop per pixel), and stops once a single instance
   holds the whole frontier.
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
score order, then new instances. At most 999 instances of one class fit the panoptic format (label
divisor ``PANOPTIC_LABEL_DIVISOR`` = 1000): beyond that, the class's smallest instances are dropped (their
pixels void in the panoptic image, their semantic class kept) and counted in ``FusedPanoptic.dropped``, so
that a crowded frame still gives its output.

Instance masks as Mask R-CNN gives them: ``(K, H, W)`` (or ``(K, 1, H, W)``, torchvision's layout)
pasted at image size, either boolean (or 0/1 integers) or probabilities, which are binarised with
``mask > mask_threshold`` (0.5, Mask R-CNN's). They may overlap and need not be sorted. numpy arrays
or torch tensors (any device; copied to the CPU). With each mask's window (the box it was pasted
into, :attr:`InstanceSegmentation.windows`), fusion reads masks only there; without, it searches
each whole mask for its bounding box. Binary masks are cheaper than probabilities (one threshold
pass less per instance; only inside the windows when given).

Fusion changes pixels only inside one window (the paper: the foreground's bounding box; Kirillov:
the bounding box of the masks that may claim pixels). Steps 3 to 5 work there only; outside it the
panoptic image is a lookup of the semantic map, and segment statistics are merged from the row runs
of the parts.

Speed: the paper's fusion takes 3 ms on a GTX 1080 Ti. On this project's 2-core development CPU,
shared with other jobs (OpenCV on 2 threads),
:func:`~panoptic_perception.data.synthetic.fusion_benchmark.benchmark_fusion` (street scenes, boolean masks
with their windows, median of 20 calls) measured 4.7 ms for the paper's fusion and 2 ms for the
baseline at 1280x720 (19 instances), 9 ms and 3.6 ms at 1920x1080 (19 instances; 6.6 and 2.9 ms with
13); without windows (each mask's bounding box searched) 5.7 and 3 ms, 11 and 5.8 ms (8.5 and 4.3
ms). The former implementation (whole-image passes, one BFS layer at a time everywhere) took 11 and
6 ms, 37 and 25 ms (30 and 11 ms) on the same inputs and machine. Probability masks add one
threshold pass per mask (inside its window when given).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

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
    """An instance segmentation: one mask, score and class per detected object.

    ``masks``: (K, H, W) or (K, 1, H, W) at image size, bool, 0/1 integers or float probabilities;
    or, with ``windows`` and ``image_size``, a sequence of K masks each covering only its window
    (``(h_k, w_k)``, as Mask R-CNN pastes a mask into its box): memory then grows with the boxes'
    area, not with K times the image's.
    ``scores``: (K,) detector confidences. ``class_ids``: (K,) label ids of thing classes.
    ``windows``: optional (K, 4) integers ``(x, y, w, h)`` (``cv2.boundingRect``'s layout), one per
    mask, inside the image: a promise that the mask is zero outside its window; the window may be
    larger than the mask's bounding box. :func:`fuse` then reads each mask only inside its window,
    instead of searching the whole mask for its bounding box: a pixel outside counts as 0 and is not
    checked (which would cost a pass over the whole mask). Stored as int64.
    ``image_size``: (H, W); taken from full-size masks, required with windowed ones.
    numpy arrays or torch tensors; stored as numpy. Raises ValueError on inconsistent shapes, and on
    windows that are not (K, 4) integers or reach outside the image.
    """

    masks: np.ndarray | Sequence[np.ndarray]
    scores: np.ndarray
    class_ids: np.ndarray
    windows: np.ndarray | None = None
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.scores = _numpy(self.scores).astype(np.float32, copy=False).reshape(-1)
        self.class_ids = _numpy(self.class_ids).astype(np.int64, copy=False).reshape(-1)
        k = len(self.scores)
        windowed = isinstance(self.masks, (list, tuple))
        if windowed:
            if self.windows is None or self.image_size is None:
                raise ValueError("masks given per window need windows and image_size")
            self.masks = tuple(_numpy(mask) for mask in self.masks)
            shapes = [mask.shape for mask in self.masks]
            valid = all(len(shape) == 2 for shape in shapes)
        else:
            self.masks = _numpy(self.masks)
            if self.masks.ndim == 4 and self.masks.shape[1] == 1:
                self.masks = self.masks[:, 0]
            shapes = self.masks.shape
            valid = self.masks.ndim == 3
            if valid:
                self.image_size = self.masks.shape[1:]
        if not valid or len(self.masks) != k or len(self.class_ids) != k:
            raise ValueError(
                f"masks (K, H, W) or (K, 1, H, W) (or K windowed masks), scores (K,) and class_ids (K,) expected, "
                f"got masks {shapes}, scores {self.scores.shape}, class_ids {self.class_ids.shape}"
            )
        self.image_size = tuple(int(v) for v in self.image_size)
        if self.windows is not None:
            windows = _numpy(self.windows)
            if windows.shape != (k, 4) or not (np.issubdtype(windows.dtype, np.integer) or windows.size == 0):
                raise ValueError(
                    f"windows must be (K, 4) = ({k}, 4) integers (x, y, w, h), got {windows.shape} {windows.dtype}"
                )
            windows = windows.astype(np.int64)
            height, width = self.image_size
            x, y, w, h = windows.T
            outside = (x < 0) | (y < 0) | (w < 0) | (h < 0) | (x + w > width) | (y + h > height)
            if outside.any():
                bad = int(np.flatnonzero(outside)[0])
                raise ValueError(
                    f"window {bad} (x, y, w, h) = {tuple(windows[bad].tolist())} is not inside the {width}x{height} image"
                )
            if windowed:
                sizes = [(h, w) for _, _, w, h in windows.tolist()]
                wrong = [i for i, (shape, size) in enumerate(zip(shapes, sizes)) if shape != size]
                if wrong:
                    raise ValueError(f"windowed mask {wrong[0]} is {shapes[wrong[0]]}, its window "
                                     f"{sizes[wrong[0]][0]}x{sizes[wrong[0]][1]} (h x w)")
            self.windows = windows

    @classmethod
    def empty(cls, height: int, width: int) -> InstanceSegmentation:
        return cls(np.zeros((0, height, width), bool), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)

    def window_mask(self, k: int) -> np.ndarray:
        """Mask ``k`` inside its window (``windows`` must be given): a view, in the masks' dtype."""
        if isinstance(self.masks, tuple):
            return self.masks[k]
        x, y, w, h = self.windows[k].tolist()
        return self.masks[k, y : y + h, x : x + w]


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
    ``dropped``: instances left out because their class had more than 999 (see :func:`fuse`).
    """

    panoptic: np.ndarray
    segments: list[SegmentInfo]
    semantic: np.ndarray
    detections: Detections
    sources: dict[int, int]
    dropped: int = 0


@dataclass
class _Instance:
    """A fused instance: its value in the working label image, class, score and input index."""

    value: int
    class_id: int
    score: float
    source: int


def _semantic_ids(semantic: Any, label_map: LabelMap) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) integer label ids → contiguous uint8 and its :func:`_region_stats` (256 values).

    The statistics serve as the check (ids neither void nor in the label map raise ValueError), give
    the foreground's bounding box and, in the paper's method, the stuff segments (whose pixels fusion
    never changes): one pass over the image for all three.
    """
    semantic = _numpy(semantic)
    if semantic.ndim != 2 or not np.issubdtype(semantic.dtype, np.integer):
        raise ValueError(f"semantic must be an (H, W) integer array of label ids, got {semantic.shape} {semantic.dtype}")
    if semantic.dtype != np.uint8:
        if semantic.size and (semantic.min() < 0 or semantic.max() > 255):
            raise ValueError(f"semantic label ids must be in [0, 255], got [{semantic.min()}, {semantic.max()}]")
        semantic = semantic.astype(np.uint8)
    semantic = np.ascontiguousarray(semantic)
    stats = _region_stats(semantic, 256)
    present = np.flatnonzero(stats[0])
    unknown = sorted(set(present.tolist()) - set(label_map.ids.tolist()) - {VOID_ID})
    if unknown:
        raise ValueError(f"semantic holds ids {unknown} that are neither void nor classes of label map {label_map.name!r}")
    return semantic, stats


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


def _nonzero(image: np.ndarray) -> np.ndarray:
    """Flat indices (int64, ascending) of the nonzero pixels of an (h, w) uint8 image, as
    ``np.flatnonzero`` (which is several times slower on uint8 than ``cv2.findNonZero``)."""
    points = cv2.findNonZero(image)
    if points is None:
        return np.zeros(0, np.int64)
    points = points.reshape(-1, 2).astype(np.int64)
    return points[:, 1] * image.shape[1] + points[:, 0]


def _region_stats(
    labels: np.ndarray, count: int, origin: tuple[int, int] = (0, 0), size: tuple[int, int] | None = None
) -> np.ndarray:
    """(5, count) int64: area and inclusive box ``x0, y0, x1, y1`` of each value ``0..count-1`` of an
    (h, w) non-negative integer map (a view is fine).

    The map may be a window of a larger image: ``origin`` is its top-left pixel ``(x, y)`` there and
    ``size`` that image's ``(width, height)`` (default: the map itself). Boxes are in the image's
    coordinates; those of absent values are empty (``x0 = width > x1 = -1``, ``y0 = height > y1 =
    -1``), so that statistics of disjoint windows merge with :func:`_merge_stats`. Computed on the row
    runs of equal values: one pass over the map, then work per run.
    """
    height, width = labels.shape
    image_width, image_height = size or (width, height)
    stats = np.empty((5, count), np.int64)
    stats[0], stats[1], stats[2], stats[3], stats[4] = 0, image_width, image_height, -1, -1
    if labels.size == 0:
        return stats
    starts = np.empty((height, width), np.uint8)
    starts[:, 0] = 1
    if width > 1:  # (OpenCV's comparison is several times faster than numpy's)
        cv2.compare(labels[:, 1:], labels[:, :-1], cv2.CMP_NE, dst=starts[:, 1:])
    index = _nonzero(starts)
    rows, columns = np.divmod(index, width)
    values = labels[rows, columns]
    length = np.diff(index, append=labels.size)
    columns += origin[0]
    rows += origin[1]
    stats[0] = np.bincount(values, weights=length, minlength=count)[:count]
    np.minimum.at(stats[1], values, columns)
    np.maximum.at(stats[3], values, columns + length - 1)
    np.minimum.at(stats[2], values, rows)
    np.maximum.at(stats[4], values, rows)
    return stats


def _merge_stats(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Statistics of the union of two disjoint windows from theirs (areas add, boxes join)."""
    return np.concatenate(
        [first[:1] + second[:1], np.minimum(first[1:3], second[1:3]), np.maximum(first[3:], second[3:])]
    )


def _neighbours(connectivity: int, row_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat-index offsets of a pixel's 4 or 8 neighbours in rows of ``row_length``, and the 3x3 kernel."""
    if connectivity == 8:
        offsets = [-row_length - 1, -row_length, -row_length + 1, -1, 1, row_length - 1, row_length, row_length + 1]
        return np.array(offsets), cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    return np.array([-row_length, -1, 1, row_length]), cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _intersect(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The intersection of two ``(x, y, w, h)`` boxes; ``w`` or ``h`` is 0 when it is empty."""
    x, y = max(a[0], b[0]), max(a[1], b[1])
    return x, y, max(0, min(a[0] + a[2], b[0] + b[2]) - x), max(0, min(a[1] + a[3], b[1] + b[3]) - y)


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``cv2.boundingRect`` ``(x, y, w, h)`` of an (h, w) bool mask (a C-contiguous one of a width
    divisible by 8 in about a third of its time: OR-reductions of 8 pixels at a time)."""
    if mask.shape[1] % 8 or not mask.flags.c_contiguous:
        return cv2.boundingRect(mask.view(np.uint8))
    words = mask.view(np.uint64)
    rows = np.flatnonzero(np.bitwise_or.reduce(words, axis=1))
    if not rows.size:
        return 0, 0, 0, 0
    columns = np.flatnonzero(np.bitwise_or.reduce(words[rows[0] : rows[-1] + 1], axis=0).view(np.uint8))
    return int(columns[0]), int(rows[0]), int(columns[-1] - columns[0] + 1), int(rows[-1] - rows[0] + 1)


def _mask_crops(
    instances: InstanceSegmentation, order: np.ndarray, threshold: float, clip: tuple[int, int, int, int] | None
) -> list[tuple[int, int, tuple[int, int, int, int], np.ndarray]]:
    """``(rank, k, (x, y, w, h), bool crop)`` of each instance in ``order`` whose binary mask is not
    empty inside ``clip`` (default: the image); the crop holds all its pixels there.

    Masks are binarised (``> threshold`` for probabilities, ``!= 0`` for integers) only inside their
    :attr:`InstanceSegmentation.windows` when given; otherwise in the rows of ``clip``, where their
    bounding box is searched.
    """
    windows = instances.windows
    height, width = instances.image_size
    top, bottom = (clip[1], clip[1] + clip[3]) if clip is not None else (0, height)
    crops: list[tuple[int, int, tuple[int, int, int, int], np.ndarray]] = []
    if bottom <= top or width == 0:
        return crops
    for rank, k in enumerate(order.tolist()):
        if windows is None:
            mask = _binary(instances.masks[k][top:bottom], threshold)  # the rows of clip
            x, y, w, h = _bounding_box(np.ascontiguousarray(mask))
            box, origin = (x, y + top, w, h), (0, top)
        else:
            mask, box = instances.window_mask(k), tuple(windows[k].tolist())
            origin = box[:2]
        if clip is not None:
            box = _intersect(box, clip)
        x, y, w, h = box
        if w == 0 or h == 0:
            continue
        crop = mask[y - origin[1] : y - origin[1] + h, x - origin[0] : x - origin[0] + w]
        crops.append((rank, k, box, crop if windows is None else _binary(crop, threshold)))
    return crops


def _binary(mask: np.ndarray, threshold: float) -> np.ndarray:
    """A mask of any dtype as bool: ``> threshold`` for probabilities, ``!= 0`` for integers."""
    if mask.dtype == bool:
        return mask
    return mask > threshold if np.issubdtype(mask.dtype, np.floating) else mask != 0


def _claim(
    crops: list[tuple[int, int, tuple[int, int, int, int], np.ndarray]],
    ranks: int,
    instances: InstanceSegmentation,
    category: np.ndarray | None,
    category_of: np.ndarray,
    labels: np.ndarray,
    window: tuple[int, int, int, int],
    overlap_threshold: float,
) -> list[_Instance]:
    """Step 3: instances claim mask pixels in descending score order; returns the kept ones.

    ``crops``: from :func:`_mask_crops`, in claim order, inside ``window`` ``(x, y, w, h)``.
    ``labels``: (h + 2, w + 2) uint8 or int32, the window with a 1-pixel border, 0 where unclaimed,
    written in place. ``category``: the semantic category image of the same layout for the paper's
    compatibility test, ``None`` for Kirillov's baseline (whole masks). Label values decrease with the
    rank (``ranks - rank``), so that the region growing's maximum prefers the higher score.
    """
    kept: list[_Instance] = []
    for rank, k, (x, y, w, h), candidate in crops:
        inside = (slice(y - window[1] + 1, y - window[1] + 1 + h), slice(x - window[0] + 1, x - window[0] + 1 + w))
        if category is not None:
            candidate = candidate & (category[inside] == category_of[instances.class_ids[k]])
        n_candidate = np.count_nonzero(candidate)
        free = candidate & (labels[inside] == 0)
        n_free = np.count_nonzero(free)
        if n_free == 0 or n_candidate - n_free > overlap_threshold * n_candidate:
            continue
        value = ranks - rank
        labels[inside][free] = value
        kept.append(_Instance(value, int(instances.class_ids[k]), float(instances.scores[k]), k))
    return kept


def _breadth_first(
    labels: np.ndarray, category: np.ndarray, todo: np.ndarray, frontier: np.ndarray, offsets: np.ndarray, finish: bool
) -> None:
    """Multi-source breadth-first search on flattened images (``offsets``: the neighbours', see
    :func:`_neighbours`), in place: labels move from the ``frontier`` pixels to neighbours of the same
    category that are still ``todo`` (their category there, 0 elsewhere), one BFS layer per loop
    pass; a pixel reached by several labels in the same layer takes the largest. Touches the
    frontier's pixels only.

    ``finish``: every todo pixel is reachable. Then, as soon as one label holds the whole frontier,
    every shortest path to the rest passes through it: the rest takes that label at once.
    """
    stamp = np.empty(labels.size, np.int32)
    while frontier.size:
        values = labels[frontier]
        if finish and values.min() == values.max():
            np.copyto(labels, values[0], where=todo != 0)
            return
        reached = (frontier[:, None] + offsets).ravel()
        same = todo[reached] == np.repeat(category[frontier], len(offsets))
        values = np.repeat(values, len(offsets))[same]
        reached = reached[same]
        np.maximum.at(labels, reached, values)
        todo[reached] = 0
        # The next frontier: each reached pixel once (the last of its repeats).
        position = np.arange(reached.size, dtype=np.int32)
        stamp[reached] = position
        frontier = reached[stamp[reached] == position]


def _grow(labels: np.ndarray, category: np.ndarray, connectivity: int) -> None:
    """Step 4: breadth-first region growing of the instance labels over unlabelled foreground, in place.

    ``labels`` (h + 2, w + 2) uint8 or int32, 0 = unlabelled; ``category`` (h + 2, w + 2) uint8, 0 =
    background; both with a border of 0. A label moves from a pixel to an unlabelled neighbour of the
    same category: a pixel takes the largest (highest-scoring) label among those at the smallest
    geodesic distance, and foreground no label reaches stays unlabelled.

    Labels never leave a region of unlabelled foreground (``connectivity``-connected, one category).
    So each region touching a kept pixel of its category is numbered with one ``cv2.floodFill`` (its
    mask-only mode, with kept pixels as barriers: work in proportion to the region), and the regions
    touching a single label take it whole (one lookup for all). Only regions between two or more
    labels need the breadth-first search (:func:`_breadth_first`, in their bounding box), as all
    regions do when their number (over 253) or the labels (int32) outgrow uint8.
    """
    offsets, kernel = _neighbours(connectivity, labels.shape[1])
    free = category * (labels == 0)  # the category of each unlabelled pixel, 0 elsewhere
    # Kept pixels next to unlabelled foreground, and their pairs with such neighbours of their category.
    kept = (labels > 0).view(np.uint8)
    seeds = _nonzero(cv2.min(cv2.dilate(free, kernel), kept))
    label_flat, category_flat, free_flat = labels.ravel(), category.ravel(), free.ravel()
    reached = (seeds[:, None] + offsets).ravel()
    same = free_flat[reached] == np.repeat(category_flat[seeds], len(offsets))  # kept pixels are foreground
    neighbour = reached[same]
    if not neighbour.size:
        return
    if labels.dtype != np.uint8:
        _breadth_first(label_flat, category_flat, free_flat, seeds, offsets, False)
        return
    image = category[1:-1, 1:-1]  # floodFill's mask has the image's size plus a 1-pixel border
    flags = connectivity | cv2.FLOODFILL_MASK_ONLY | cv2.FLOODFILL_FIXED_RANGE

    # Number the regions the pairs reach: flood each once into the kept pixels' mask (1: barriers)
    # with 2, 3, ...; the pairs are scanned in blocks, so that the Python loop turns once per region.
    scratch, scratch_flat = kept, kept.ravel()
    boxes: list[tuple[int, int, int, int]] = []  # of the regions, from floodFill
    index = 0
    while index < neighbour.size:
        block = np.flatnonzero(scratch_flat[neighbour[index : index + 1024]] == 0)
        if not block.size:
            index += 1024
            continue
        if len(boxes) == 254:  # more regions than uint8 numbers
            _breadth_first(label_flat, category_flat, free_flat, seeds, offsets, False)
            return
        index += int(block[0])
        row, column = divmod(int(neighbour[index]), labels.shape[1])
        boxes.append(cv2.floodFill(image, scratch, (column - 1, row - 1), 0, 0, 0, flags | (len(boxes) + 2) << 8)[3])
        index += 1
    region = scratch_flat[neighbour].astype(np.intp) - 2
    touching = np.repeat(label_flat[seeds], len(offsets))[same]
    low = np.full(len(boxes), 255, np.uint8)
    np.minimum.at(low, region, touching)
    high = np.zeros(len(boxes), np.uint8)
    np.maximum.at(high, region, touching)
    contested = low < high
    table = np.zeros(256, np.uint8)  # region number → its label where it touches one label only
    table[2 : 2 + len(boxes)] = np.where(contested, 0, high)
    cv2.max(labels, cv2.LUT(scratch, table), dst=labels)
    if contested.any():
        # The search runs in the contested regions' bounding box, 2 pixels wider (their kept
        # neighbours and theirs: neighbour offsets never leave it).
        box = np.array(boxes)[contested]
        x0, y0 = np.maximum(box[:, :2].min(0) - 1, 0).tolist()  # floodFill's boxes: 1 pixel inside the border
        x1, y1 = np.minimum((box[:, :2] + box[:, 2:]).max(0) + 3, labels.shape[::-1]).tolist()
        crop = (slice(y0, y1), slice(x0, x1))
        table[2 : 2 + len(boxes)] = np.where(contested, 255, 0)
        todo = cv2.min(free[crop], cv2.LUT(scratch[crop], table)).ravel()  # contested pixels (kept: 0 in free)
        cropped = np.ascontiguousarray(labels[crop])
        # The first BFS layer is the pairs' neighbours in contested regions.
        rows, columns = np.divmod(neighbour[contested[region]], labels.shape[1])
        first = (rows - y0) * (x1 - x0) + columns - x0
        np.maximum.at(cropped.ravel(), first, touching[contested[region]])
        todo[first] = 0
        offsets = _neighbours(connectivity, x1 - x0)[0]
        category = np.ascontiguousarray(category[crop])
        _breadth_first(cropped.ravel(), category.ravel(), todo, np.unique(first), offsets, True)
        labels[crop] = cropped


def _new_instances(
    semantic: np.ndarray,
    window: tuple[int, int, int, int],
    labels: np.ndarray,
    category: np.ndarray,
    categories: list[int],
    first_value: int,
    config: FusionConfig,
    semantic_confidence: np.ndarray | None,
) -> tuple[np.ndarray, list[_Instance]]:
    """Step 5: connected regions of unlabelled foreground of one category become new instances.

    ``semantic`` (H, W) uint8 and ``semantic_confidence`` (H, W) are the whole image's; ``labels``
    and ``category`` cover ``window`` ``(x, y, w, h)`` with a 1-pixel border, ``categories`` are the
    category numbers present. Regions smaller than ``config.min_area`` stay unlabelled (noise).
    Returns ``labels`` (written in place; widened to int32 when the values outgrow uint8) and the
    new instances, numbered by category, then in ``cv2.connectedComponents``'s order on the
    category's unlabelled pixels cropped to their bounding box.
    """
    created: list[_Instance] = []
    unlabelled = category * (labels == 0)  # the category of each unlabelled pixel
    for g in categories:
        rest = np.equal(unlabelled, g).view(np.uint8)
        pixels = np.count_nonzero(rest)
        if pixels < config.min_area:  # no region can be large enough
            continue
        x, y, w, h = cv2.boundingRect(rest)
        ltype = cv2.CV_16U if pixels < 1 << 16 else cv2.CV_32S  # as many regions as pixels at most
        count, regions = cv2.connectedComponents(rest[y : y + h, x : x + w], connectivity=config.connectivity, ltype=ltype)
        stats = _region_stats(regions, count)
        for region_id in (np.flatnonzero(stats[0, 1:] >= config.min_area) + 1).tolist():
            _, x0, y0, x1, y1 = stats[:, region_id].tolist()
            inside = regions[y0 : y1 + 1, x0 : x1 + 1] == region_id
            # The region's own box: the same pixels in the same (row-major) order as in the crop.
            image_window = (
                slice(window[1] + y - 1 + y0, window[1] + y + y1),
                slice(window[0] + x - 1 + x0, window[0] + x + x1),
            )
            classes = np.bincount(semantic[image_window][inside], minlength=256)
            score = (
                float(semantic_confidence[image_window][inside].mean())
                if semantic_confidence is not None
                else config.new_instance_score
            )
            value = first_value + len(created)
            if value > 255 and labels.dtype == np.uint8:
                labels = labels.astype(np.int32)
            labels[y + y0 : y + y1 + 1, x + x0 : x + x1 + 1][inside] = value
            created.append(_Instance(value, int(classes.argmax()), score, -1))
    return labels, created


def fuse(
    semantic: Any,
    instances: InstanceSegmentation,
    label_map: LabelMap = CITYSCAPES,
    config: FusionConfig | None = None,
    semantic_confidence: Any = None,
) -> FusedPanoptic:
    """Fuse a semantic segmentation and an instance segmentation into a panoptic image.

    ``semantic``: (H, W) integer label ids of ``label_map`` (0 = void), numpy or torch.
    ``instances``: masks (K, H, W) at the same size, scores, thing class ids, optional windows.
    ``semantic_confidence``: optional (H, W) float, the semantic head's probability of each pixel's
    class; the score of the paper's new instances is its mean over the instance.
    Method and parameters: ``config`` (default :class:`FusionConfig`); see the module docstring.
    Raises ValueError on mismatched shapes, ids outside the label map or instance classes that are not
    thing classes. More than 999 instances of one class: the smallest are dropped and counted
    (``FusedPanoptic.dropped``).

    Steps 3 to 5 work on the window fusion can change (module docstring), with a 1-pixel border.
    """
    config = config or FusionConfig()
    semantic, semantic_stats = _semantic_ids(semantic, label_map)
    height, width = semantic.shape
    if instances.image_size != (height, width):
        raise ValueError(f"instance masks of a {instances.image_size} image do not match semantic {semantic.shape}")
    if semantic_confidence is not None:
        semantic_confidence = _numpy(semantic_confidence)
        if semantic_confidence.shape != (height, width):
            raise ValueError(f"semantic_confidence {semantic_confidence.shape} does not match semantic {semantic.shape}")
    not_things = sorted(set(instances.class_ids.tolist()) - label_map.thing_ids)
    if not_things:
        raise ValueError(f"instance class ids {not_things} are not thing classes of label map {label_map.name!r}")
    paper = config.method == "paper"
    category_of = _category_table(label_map, config.categories)
    order = np.argsort(-instances.scores, kind="stable")
    order = order[instances.scores[order] >= config.score_threshold]

    if paper:  # step 1: the foreground (thing classes) and its bounding box, from the semantic statistics
        things = np.flatnonzero(category_of)
        things = things[semantic_stats[0, things] > 0]
        x0, y0 = semantic_stats[1:3, things].min(1, initial=1 << 30).tolist()
        x1, y1 = semantic_stats[3:5, things].max(1, initial=-1).tolist()
        window = (x0, y0, x1 - x0 + 1, y1 - y0 + 1) if len(things) else (0, 0, 0, 0)
        crops = _mask_crops(instances, order, config.mask_threshold, window)  # masks off the foreground cannot claim
    else:
        crops = _mask_crops(instances, order, config.mask_threshold, None)
        boxes = np.array([box for _, _, box, _ in crops], np.int64).reshape(-1, 4)
        x0, y0 = boxes[:, :2].min(0, initial=1 << 30).tolist()
        x1, y1 = (boxes[:, :2] + boxes[:, 2:]).max(0, initial=0).tolist()
        window = (x0, y0, x1 - x0, y1 - y0) if len(crops) else (0, 0, 0, 0)
    x, y, w, h = window
    # 0: no instance, else the instance's value; values fit uint8 unless there are many instances
    labels = np.zeros((h + 2, w + 2), np.uint8 if len(order) <= 255 else np.int32)
    fused: list[_Instance] = []
    if paper and w:
        category = np.zeros((h + 2, w + 2), np.uint8)
        cv2.LUT(semantic[y : y + h, x : x + w], category_of, dst=category[1:-1, 1:-1])
        fused = _claim(crops, len(order), instances, category, category_of, labels, window, config.overlap_threshold)
        _grow(labels, category, config.connectivity)
        present = [int(g) for g in np.unique(category_of[np.flatnonzero(semantic_stats[0])]) if g]
        labels, created = _new_instances(
            semantic, window, labels, category, present, len(order) + 1, config, semantic_confidence
        )
        fused += created
    elif w:
        fused = _claim(crops, len(order), instances, None, category_of, labels, window, config.overlap_threshold)
    labels = labels[1:-1, 1:-1]
    fused, dropped = _fit_label_divisor(labels, fused)
    assembled = _assemble(semantic, semantic_stats, window, labels, fused, label_map, config)
    assembled.dropped = dropped
    return assembled


def _fit_label_divisor(labels: np.ndarray, fused: list[_Instance]) -> tuple[list[_Instance], int]:
    """At most 999 instances of one class fit the panoptic format (``class * 1000 + instance``): beyond
    that, the class's smallest instances (fewest pixels; the later one on equal areas) are dropped, so that
    a crowded frame still gives its output. A dropped instance's pixels get no instance (``labels``
    written in place): void in the panoptic image, their semantic class kept. Returns the instances kept
    and how many were dropped."""
    counts = Counter(instance.class_id for instance in fused)
    if max(counts.values(), default=0) < PANOPTIC_LABEL_DIVISOR:
        return fused, 0
    area = np.bincount(labels.ravel(), minlength=1 + max(instance.value for instance in fused))
    dropped: set[int] = set()
    for class_id, count in counts.items():
        if count >= PANOPTIC_LABEL_DIVISOR:
            members = sorted((i for i in fused if i.class_id == class_id), key=lambda i: -area[i.value])  # stable
            dropped.update(i.value for i in members[PANOPTIC_LABEL_DIVISOR - 1 :])
    labels[np.isin(labels, list(dropped))] = 0
    return [i for i in fused if i.value not in dropped], len(dropped)


def _assemble(
    semantic: np.ndarray,
    semantic_stats: np.ndarray,
    window: tuple[int, int, int, int],
    labels: np.ndarray,
    fused: list[_Instance],
    label_map: LabelMap,
    config: FusionConfig,
) -> FusedPanoptic:
    """Step 6: panoptic image, segments, refined semantic map and detections.

    ``semantic`` (H, W) uint8 with its statistics; ``labels`` (h, w), the instance values inside
    ``window`` ``(x, y, w, h)``, 0 elsewhere. Outside the window the panoptic image is a lookup of
    the semantic map and the refined map is the semantic map; segment statistics are merged from
    the parts.
    """
    height, width = semantic.shape
    x, y, w, h = window
    paper = config.method == "paper"
    values = 1 + max((i.value for i in fused), default=0)
    if paper:
        # Stuff pixels never change: the semantic map's statistics are the stuff segments'.
        stuff_stats = semantic_stats
        thing_stats = _region_stats(labels, values, (x, y), (width, height))
    else:
        # Stuff outside the window (up to four bands around it) and inside it where no instance:
        # inside, one index image for stuff and things, the label id (< 256) where no instance,
        # 255 + value elsewhere.
        index = semantic[y : y + h, x : x + w].astype(np.uint16 if 255 + values <= 1 << 16 else np.int32)
        np.add(labels, 255, out=index, where=labels > 0, dtype=index.dtype, casting="unsafe")
        stats = _region_stats(index, 255 + values, (x, y), (width, height))
        bands = (
            ((0, 0), semantic[:y]),
            ((0, y + h), semantic[y + h :]),
            ((0, y), semantic[y : y + h, :x]),
            ((x + w, y), semantic[y : y + h, x + w :]),
        )
        for origin, band in bands:
            stats = _merge_stats(stats, _region_stats(band, 255 + values, origin, (width, height)))
        stuff_stats, thing_stats = stats[:, :256], stats[:, 255:]  # value v at 255 + v
    to_panoptic = np.zeros(256, np.int32)  # stuff classes; thing classes and void: 0
    value_panoptic = np.zeros(values, np.int32)
    value_class = np.zeros(values, np.uint8)
    segments: list[SegmentInfo] = []

    def segment(stats: np.ndarray, segment_id: int, class_id: int, is_thing: bool, score: float) -> SegmentInfo:
        area, x0, y0, x1, y1 = stats.tolist()
        info = SegmentInfo(segment_id, class_id, is_thing, int(area), (x0, y0, x1 - x0 + 1, y1 - y0 + 1), score)
        segments.append(info)
        return info

    for c in label_map.classes:
        area = stuff_stats[0, c.id]
        if not c.is_thing and area > 0 and (paper or area >= config.stuff_area_threshold):
            to_panoptic[c.id] = c.id * PANOPTIC_LABEL_DIVISOR
            segment(stuff_stats[:, c.id], c.id * PANOPTIC_LABEL_DIVISOR, c.id, False, 1.0)
    numbers: dict[int, int] = {}
    things: list[SegmentInfo] = []
    sources: dict[int, int] = {}
    for instance in fused:
        number = numbers.get(instance.class_id, 0) + 1
        numbers[instance.class_id] = number
        segment_id = instance.class_id * PANOPTIC_LABEL_DIVISOR + number
        value_panoptic[instance.value] = segment_id
        value_class[instance.value] = instance.class_id
        things.append(segment(thing_stats[:, instance.value], segment_id, instance.class_id, True, instance.score))
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

    # Both images by lookup from one uint8 code image: the semantic map, where instances are the
    # code of their value, an id absent from the semantic map; or, with too many values for the
    # free ids, lookups of the semantic map with the instances' pixels written over.
    free_ids = np.flatnonzero(semantic_stats[0] == 0)
    if fused and labels.dtype == np.uint8 and values - 1 <= len(free_ids):
        code_of = np.zeros(256, np.uint8)
        code_of[1:values] = free_ids[: values - 1]
        to_panoptic[code_of[1:values]] = value_panoptic[1:values]
        to_semantic = np.arange(256, dtype=np.uint8)
        to_semantic[code_of[1:values]] = value_class[1:values]
        code = semantic.copy()
        cv2.copyTo(cv2.LUT(labels, code_of), labels, code[y : y + h, x : x + w])
        panoptic, refined = cv2.LUT(code, to_panoptic), cv2.LUT(code, to_semantic)
    else:
        panoptic, refined = cv2.LUT(semantic, to_panoptic), semantic.copy()
        if fused:
            instance = labels > 0
            np.copyto(panoptic[y : y + h, x : x + w], value_panoptic.take(labels), where=instance)
            np.copyto(refined[y : y + h, x : x + w], value_class.take(labels), where=instance)
    return FusedPanoptic(panoptic=panoptic, segments=segments, semantic=refined, detections=detections, sources=sources)
