"""Evaluation data from a short spec: a dataset folder, a bag, ``synthetic:N``, images or a video.

``synthetic:N[@WxH][+SEED]``
    N synthetic scenes (default 1280x720) with seeds SEED, SEED + 1, ..., by default from
    :data:`EVALUATION_FIRST_SEED` (5,000,000) on: the held-out evaluation scenes, which no training
    (seeds below 64,000 in the bundled recipes), validation (from 1,000,000) or demo (from 3,000,000)
    run uses. ``make-bag`` takes the same spec.
a rosbag2 bag (a folder with ``metadata.yaml``, or an ``.mcap`` / ``.db3`` file)
    the camera frames of its image topics (by default all) and their ``/ground_truth/*`` topics
    (:class:`~.rosbag.BagDataset`).
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
from typing import Iterable, Iterator, NamedTuple, Sequence

from ..core.io import FrameSource
from .sample import Sample
from ..errors import ConfigurationError

#: First seed of the held-out synthetic evaluation scenes (the default of every ``synthetic:N``).
EVALUATION_FIRST_SEED = 5_000_000


class SyntheticSpec(NamedTuple):
    count: int
    size: tuple[int, int] | None  # (width, height); None: not given
    first_seed: int | None  # None: not given


def parse_synthetic(spec: str) -> SyntheticSpec:
    """``synthetic:N[@WxH][+SEED]`` → its parts (size and seed None where the spec leaves them out).

    Raises ConfigurationError naming the form for anything else, N, W or H below 1 included."""
    match = re.fullmatch(r"synthetic:(\d+)(?:@(\d+)x(\d+))?(?:\+(\d+))?", spec.lower())
    if not match or int(match[1]) < 1 or (match[2] and min(int(match[2]), int(match[3])) < 1):
        raise ConfigurationError(f"synthetic data is synthetic:N[@WxH][+SEED] with positive N, W and H (e.g. synthetic:200@640x360 "
                         f"or synthetic:10+0), got {spec!r}")
    return SyntheticSpec(int(match[1]), (int(match[2]), int(match[3])) if match[2] else None,
                         int(match[4]) if match[4] is not None else None)


def _split(root: Path, images: str) -> str:
    splits = sorted(p.name for p in (root / images).iterdir() if p.is_dir())
    if "val" in splits:
        return "val"
    if len(splits) == 1:
        return splits[0]
    raise ConfigurationError(f"{root}: which split? found {splits}")


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
    def __init__(self, count: int, size: tuple[int, int], first_seed: int) -> None:
        from .synthetic import SyntheticScenes

        self.scenes = SyntheticScenes(count, *size, first_seed=first_seed)

    def __len__(self) -> int:
        return len(self.scenes)

    def __iter__(self) -> Iterator[Sample]:
        for scene in self.scenes:
            yield Sample(f"synthetic_{scene.seed}", scene.image, scene.to_truth())


def open_dataset(spec: str, image_topic: str | Sequence[str] | None = None) -> Iterable[Sample]:
    """A sized iterable of :class:`Sample` for ``spec`` (see the module docstring); ``image_topic``: a
    bag's image topic or topics (None: all)."""
    if spec.startswith("synthetic:"):
        count, size, first_seed = parse_synthetic(spec)
        return _Synthetic(count, size or (1280, 720), EVALUATION_FIRST_SEED if first_seed is None else first_seed)
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
