"""Overlays for people: masks blended onto the frame, boxes and labels drawn."""

from __future__ import annotations

import cv2
import numpy as np

from .labels import DRIVING_MASKS, LabelMap
from .types import PANOPTIC_LABEL_DIVISOR, PerceptionResult

_DRIVABLE_BGR = DRIVING_MASKS.classes[0].color[::-1]
_LANE_BGR = DRIVING_MASKS.classes[1].color[::-1]


def blend(image: np.ndarray, mask: np.ndarray, color_bgr: tuple[int, int, int] | np.ndarray, alpha: float) -> None:
    """Blend ``color`` (one colour, or an (H, W, 3) colour image) into ``image`` where ``mask``, in place."""
    if isinstance(color_bgr, np.ndarray) and color_bgr.ndim == 3:
        layer = color_bgr
    else:
        layer = np.empty_like(image)
        layer[:] = color_bgr
    # Blend everywhere in OpenCV, then copy only the masked pixels: far faster than boolean indexing.
    blended = cv2.addWeighted(image, 1 - alpha, layer, alpha, 0)
    cv2.copyTo(blended, mask.astype(np.uint8, copy=False), image)


def colorize_semantic(semantic: np.ndarray, label_map: LabelMap) -> np.ndarray:
    """Class ids → a BGR image in the label map's colours (unknown ids black)."""
    return label_map.color_table[semantic][..., ::-1].copy()


def colorize_panoptic(panoptic: np.ndarray, label_map: LabelMap) -> np.ndarray:
    """Panoptic ids → BGR: stuff in its class colour, each thing instance in its own shade of it."""
    ids, inverse = np.unique(panoptic, return_inverse=True)
    colors = np.zeros((len(ids), 3), np.uint8)
    for i, segment_id in enumerate(ids):
        class_id, instance = divmod(int(segment_id), PANOPTIC_LABEL_DIVISOR)
        color = label_map.color_table[class_id].astype(np.int64)
        if instance:  # a fixed shade per segment id, so colours are stable across frames
            color = np.clip(color + np.random.default_rng(int(segment_id)).integers(-80, 81, 3), 0, 255)
        colors[i] = color[::-1]
    return colors[inverse.reshape(panoptic.shape)]


def draw_overlay(image: np.ndarray, result: PerceptionResult, label_map: LabelMap | None = None, alpha: float = 0.5) -> np.ndarray:
    """A BGR copy of ``image`` with every output of ``result`` drawn on it."""
    canvas = image.copy()
    if result.panoptic is not None and label_map is not None:  # instances in their own shades
        blend(canvas, result.panoptic > 0, colorize_panoptic(result.panoptic, label_map), alpha)
    elif result.semantic is not None and label_map is not None:
        blend(canvas, result.semantic > 0, colorize_semantic(result.semantic, label_map), alpha)
    if result.drivable_mask is not None:
        blend(canvas, result.drivable_mask, _DRIVABLE_BGR, alpha)
    if result.lane_mask is not None:
        blend(canvas, result.lane_mask, _LANE_BGR, min(1.0, alpha + 0.3))
    if result.detections is not None:
        scale = max(image.shape[:2]) / 1280
        thickness = max(1, round(2 * scale))
        for box, score, class_id, name in zip(
            result.detections.boxes, result.detections.scores, result.detections.class_ids, result.detections.class_names
        ):
            color = tuple(int(c) for c in label_map[class_id].color[::-1]) if label_map and class_id in label_map.ids else (0, 255, 255)
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
            cv2.putText(canvas, f"{name} {score:.2f}", (x1, max(0, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale + 0.2,
                        color, thickness, cv2.LINE_AA)
    return canvas
