"""One evaluation sample: an image and whatever ground truth a dataset has for it.

Ground truth is a :class:`~panoptic_perception.core.types.PerceptionResult` like a prediction, with
the outputs the dataset does not label left ``None``, so predictions and truth are compared field by
field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.types import PerceptionResult


@dataclass
class Sample:
    name: str  # unique within the dataset; used for per-frame outputs
    image: np.ndarray | None  # BGR uint8 (H, W, 3); None when the frame could not be read
    truth: PerceptionResult | None = None  # None: no labels at all (e.g. a bag without ground truth)
    stamp_ns: int | None = None  # capture time, for bags and videos
    error: str | None = None  # why image is None
    frame_id: str = ""  # the camera frame, for bags


class ImageFileDataset:
    """A dataset of labelled image files (``images``, sorted paths) read one :class:`Sample` per index:
    subclasses define ``__getitem__``."""

    images: list[Path]

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]
