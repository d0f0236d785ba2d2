"""Result types every backend returns, at the input image's resolution."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

#: ``panoptic = class_id * PANOPTIC_LABEL_DIVISOR + instance``; 0 is void.
PANOPTIC_LABEL_DIVISOR = 1000


class Capability(str, enum.Enum):
    """What a backend produces."""

    DETECTION = "detection"
    DRIVABLE_AREA = "drivable_area"
    LANE_LINES = "lane_lines"
    SEMANTIC = "semantic"
    PANOPTIC = "panoptic"


@dataclass
class Detections:
    """Boxes ``(x1, y1, x2, y2)`` in input-image pixels, one row per object.

    ``candidates`` is how many boxes entered non-maximum suppression (after the score filter and the
    pre-NMS cap), the figure post-processing time grows with; ``None`` where a backend does not say.
    """

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int64
    class_names: list[str]
    candidates: int | None = None

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if self.boxes.shape != (n, 4) or len(self.scores) != n or len(self.class_ids) != n or len(self.class_names) != n:
            raise ValueError("boxes (N, 4), scores, class_ids and class_names must have the same length N")

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), [])

    def __len__(self) -> int:
        return len(self.boxes)

    def to_list(self) -> list[dict]:
        return [
            {"box": [round(float(v), 2) for v in box], "score": round(float(score), 4), "class_id": int(cid), "class_name": name}
            for box, score, cid, name in zip(self.boxes, self.scores, self.class_ids, self.class_names)
        ]


@dataclass(frozen=True)
class SegmentInfo:
    """One segment of a panoptic image (COCO panoptic ``segments_info`` fields)."""

    id: int  # the segment's value in the panoptic image
    category_id: int
    is_thing: bool
    area: int
    bbox: tuple[int, int, int, int]  # x, y, width, height
    score: float = 1.0


@dataclass
class StageTimings:
    """Milliseconds per stage for one frame (a batch's time divided by its size)."""

    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0
    batch_size: int = 1

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms

    def to_dict(self) -> dict:
        return {
            "preprocess_ms": round(self.preprocess_ms, 3),
            "inference_ms": round(self.inference_ms, 3),
            "postprocess_ms": round(self.postprocess_ms, 3),
            "total_ms": round(self.total_ms, 3),
            "batch_size": self.batch_size,
        }


@dataclass
class PerceptionResult:
    """What a backend perceived in one frame. Outputs the backend does not produce are ``None``."""

    image_size: tuple[int, int]  # (width, height) of the input image
    backend: str
    drivable_mask: np.ndarray | None = None  # (H, W) uint8, 0/1
    lane_mask: np.ndarray | None = None  # (H, W) uint8, 0/1
    detections: Detections | None = None
    semantic: np.ndarray | None = None  # (H, W) class ids of the backend's label map
    panoptic: np.ndarray | None = None  # (H, W) int32, class_id * 1000 + instance, 0 = void
    segments: list[SegmentInfo] | None = None
    timings: StageTimings = field(default_factory=StageTimings)
