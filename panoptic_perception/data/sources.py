"""Evaluation data from a short spec: a dataset folder, a bag, ``synthetic:N``, images or a video.

``synthetic:N[@WxH]``
    N synthetic scenes (default 1280x720) from seed 5,000,000 on: seeds no training, validation or
    demo run uses.
a rosbag2 bag (a folder with ``metadata.yaml``, or an ``.mcap`` / ``.db3`` file)
    its camera frames and ``/ground_truth/*`` topics (:class:`~.rosbag.BagDataset`).
a BDD100K folder in the YOLOP layout (``images/``, ``da_seg_annotations/``, ...)
    its ``val`` split (or the only split present).
a Cityscapes folder (``leftImg8bit/``, ``gtFine/``)
    its ``val`` split.
image files, a folder of images, or a video
    frames without ground truth (latency only).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from ..core.io import FrameSource
from .sample import Sample

EVALUATION_FIRST_SEED = 5_000_000


def _split(root: Path, images: str) -> str:
    splits = sorted(p.name for p in (root / images).iterdir() if p.is_dir())
    if "val" in splits:
        return "val"
    if len(splits) == 1:
        return splits[0]
    raise ValueError(f"{root}: which split? found {splits}")


class _Frames:
    """Samples without ground truth from image files, folders or videos."""

    def __init__(self, inputs: list[str]) -> None:
        self.source = FrameSource(inputs)

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[Sample]:
        for frame in self.source:
            yield Sample(frame.name, frame.image, None, error=frame.error)


class _Synthetic:
    def __init__(self, count: int, size: tuple[int, int]) -> None:
        from .synthetic import SyntheticScenes

        self.scenes = SyntheticScenes(count, *size, first_seed=EVALUATION_FIRST_SEED)

    def __len__(self) -> int:
        return len(self.scenes)

    def __iter__(self) -> Iterator[Sample]:
        for scene in self.scenes:
            yield Sample(f"synthetic_{scene.seed}", scene.image, scene.to_result())


def open_dataset(spec: str, image_topic: str | None = None) -> Iterable[Sample]:
    """A sized iterable of :class:`Sample` for ``spec`` (see the module docstring)."""
    if spec.startswith("synthetic:"):
        match = re.fullmatch(r"synthetic:(\d+)(?:@(\d+)x(\d+))?", spec.lower())
        if not match or int(match[1]) < 1 or (match[2] and min(int(match[2]), int(match[3])) < 1):
            raise ValueError(f"synthetic data is synthetic:N or synthetic:N@WxH with positive N, W and H, got {spec!r}")
        return _Synthetic(int(match[1]), (int(match[2]), int(match[3])) if match[2] else (1280, 720))
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"data not found: {spec}")
    from .rosbag import BagDataset, is_bag

    if is_bag(path):
        return BagDataset(path, image_topic)
    if path.is_dir() and (path / "images").is_dir() and any((path / d).is_dir() for d in ("da_seg_annotations", "ll_seg_annotations", "det_annotations")):
        from .bdd100k import BDD100KDataset

        return BDD100KDataset(path, _split(path, "images"))
    if path.is_dir() and (path / "leftImg8bit").is_dir():
        from .cityscapes import CityscapesDataset

        return CityscapesDataset(path, _split(path, "leftImg8bit"))
    return _Frames([spec])
