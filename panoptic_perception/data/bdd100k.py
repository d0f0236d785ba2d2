"""BDD100K drivable-area / lane-line folders in the YOLOP layout.

::

    ROOT/images/{train,val}/<name>.jpg
    ROOT/da_seg_annotations/{train,val}/<name>.png   drivable area
    ROOT/ll_seg_annotations/{train,val}/<name>.png   lane lines

Masks are read as grayscale, resized to the working size with INTER_LINEAR and thresholded
``value > 1`` (positive), exactly as the official TwinLiteNet / YOLOP evaluation does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class DrivingMasksSample:
    name: str
    image: np.ndarray  # (H, W, 3) uint8 BGR
    drivable_mask: np.ndarray  # (H, W) uint8 0/1
    lane_mask: np.ndarray  # (H, W) uint8 0/1


def binarize_label(label: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """A BDD mask PNG → 0/1, resized to ``size`` (width, height) first when given."""
    if size is not None and (label.shape[1], label.shape[0]) != tuple(size):
        label = cv2.resize(label, tuple(size), interpolation=cv2.INTER_LINEAR)
    return (label > 1).astype(np.uint8)


class BDD100KDrivingMasks:
    """A sequence of :class:`DrivingMasksSample` from one split of a YOLOP-layout folder."""

    def __init__(self, root: str | Path, split: str = "train", size: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        self.split = split
        self.size = size
        image_dir = self.root / "images" / split
        if not image_dir.is_dir():
            raise FileNotFoundError(f"no BDD100K image folder {image_dir} (expected the YOLOP layout)")
        self.images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.images:
            raise FileNotFoundError(f"no images in {image_dir}")
        missing = [p.name for p in self.images if not self._label_path("da_seg_annotations", p).is_file()
                   or not self._label_path("ll_seg_annotations", p).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} images of {image_dir} have no drivable/lane label, e.g. {missing[0]}")

    def _label_path(self, folder: str, image: Path) -> Path:
        return self.root / folder / self.split / f"{image.stem}.png"

    def __len__(self) -> int:
        return len(self.images)

    def _read(self, path: Path, flags: int) -> np.ndarray:
        data = cv2.imread(str(path), flags)
        if data is None:
            raise OSError(f"cannot read {path}")
        return data

    def __getitem__(self, index: int) -> DrivingMasksSample:
        path = self.images[index]
        image = self._read(path, cv2.IMREAD_COLOR)
        if self.size is not None and (image.shape[1], image.shape[0]) != tuple(self.size):
            image = cv2.resize(image, tuple(self.size), interpolation=cv2.INTER_LINEAR)
        size = (image.shape[1], image.shape[0])
        drivable = binarize_label(self._read(self._label_path("da_seg_annotations", path), cv2.IMREAD_GRAYSCALE), size)
        lane = binarize_label(self._read(self._label_path("ll_seg_annotations", path), cv2.IMREAD_GRAYSCALE), size)
        return DrivingMasksSample(path.stem, image, drivable, lane)
