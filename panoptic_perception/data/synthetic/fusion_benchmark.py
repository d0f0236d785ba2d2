"""The fusion benchmark: a busy street scene drawn directly in label space (a semantic map and a Mask
R-CNN-like instance segmentation of it, no image), and the time
:func:`~panoptic_perception.core.semantic_instance_fusion.fuse` takes on it.

Cruder than the rendered scenes of :mod:`.scene` but built for the fusion's hard cases: overlapping and
occluded objects, the semantic head's car/truck confusion, missed and false detections, misaligned masks.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from ...core.labels import CITYSCAPES
from ...core.semantic_instance_fusion import FusionConfig, InstanceSegmentation, fuse


def fusion_benchmark_scene(width: int, height: int, objects: int, seed: int) -> tuple[np.ndarray, InstanceSegmentation]:
    """A busy street scene in Cityscapes label ids and a Mask R-CNN-like instance segmentation of it.

    Semantic map: sky, buildings, trees, poles, road, sidewalk; ``objects`` cars (parked in
    overlapping rows along both kerbs or on the road), trucks and pedestrians on the sidewalks, sized
    by their distance, nearer ones occluding farther ones (with 30 objects, vehicles cover 15 to 23 %
    of the image); about a third of the vehicles half labelled with the wrong vehicle class, and
    small noise blobs. Instances: objects less than 30 % visible are not detected, and one in
    ten of the others is missed; masks are the visible part grown by 2 pixels (so neighbours'
    masks overlap) at Mask R-CNN's 28x28 resolution, shifted by up to 3 pixels and cropped by up to
    15 % on one side; one false detection on the road; scores in [0.5, 1); windows: the masks'
    bounding boxes.

    Returns the semantic map, (height, width) uint8 Cityscapes label ids, and the instances: K boolean
    masks (K, height, width) with their scores, class ids and windows (x, y, w, h).
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
    windows = [cv2.boundingRect(mask.view(np.uint8)) for mask in masks]  # the boxes Mask R-CNN pastes into
    return semantic, InstanceSegmentation(np.stack(masks), np.array(scores), np.array(class_ids), np.array(windows))


def benchmark_fusion(
    size: tuple[int, int] = (1280, 720),
    objects: int = 30,
    runs: int = 20,
    method: str = "paper",
    seed: int = 0,
    windows: bool = True,
) -> float:
    """Median milliseconds of :func:`fuse` on a synthetic street scene.

    ``size`` = (width, height); ``objects`` in the scene (30 give about 20 detected instances, see
    :func:`fusion_benchmark_scene`); boolean masks, as Mask R-CNN's are after its 0.5 threshold, with
    their windows (``windows=False``: without, so that fusion searches each mask's bounding box).
    """
    semantic, detected = fusion_benchmark_scene(size[0], size[1], objects, seed)
    if not windows:
        detected = InstanceSegmentation(detected.masks, detected.scores, detected.class_ids)
    config = FusionConfig(method=method)
    fuse(semantic, detected, CITYSCAPES, config)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fuse(semantic, detected, CITYSCAPES, config)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))
