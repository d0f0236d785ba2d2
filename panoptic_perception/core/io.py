"""Reading frames from image files, folders and videos, reporting bad ones instead of stopping."""

from __future__ import annotations

import argparse
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..errors import ConfigurationError
from .preprocess import InvalidImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})
#: Cityscapes names a camera image ``<city>_<seq>_<frame>_leftImg8bit.png`` and the frame itself
#: ``<city>_<seq>_<frame>``: the ``image_id`` of its panoptic JSON, the prefix its evaluation scripts match.
CITYSCAPES_IMAGE_TAG = "_leftImg8bit"
#: A Cityscapes frame id: the city (no underscore: the scripts split the name there), then the sequence
#: and the frame number, six digits each.
_CITYSCAPES_ID = re.compile(r"[^_]+_\d{6}_\d{6}")


def frame_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. ``640x360``, any case) → (width, height), both positive; an
    ``argparse.ArgumentTypeError`` naming the form for anything else (the commands' ``--size`` type)."""
    match = re.fullmatch(r"(\d+)x(\d+)", text.strip().lower())
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT with positive sizes (e.g. 640x360), got {text!r}")
    return int(match[1]), int(match[2])


def sha256_of(path: str | Path) -> str:
    """The SHA-256 of the file ``path``, as 64 hex digits (read in 1 MiB chunks); OSError if unreadable."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cityscapes_id(path: str | Path) -> str | None:
    """``<city>_<seq>_<frame>`` for a Cityscapes camera image file (``<city>_<seq>_<frame>_leftImg8bit.png``),
    else None (``x_leftImg8bit.png`` included)."""
    stem = Path(path).stem
    if stem.endswith(CITYSCAPES_IMAGE_TAG) and _CITYSCAPES_ID.fullmatch(stem[: -len(CITYSCAPES_IMAGE_TAG)]):
        return stem[: -len(CITYSCAPES_IMAGE_TAG)]
    return None


@dataclass
class Frame:
    """One input frame, or the reason it could not be read (``image`` is None then)."""

    name: str  # unique output stem: the file's stem (a Cityscapes image's: its cityscapes_id)
    source: str
    image: np.ndarray | None = None
    error: str | None = None


def decode_file(path: str | Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """``cv2.imread`` that also takes non-ASCII paths; None when the file is missing or undecodable."""
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError:
        return None
    return cv2.imdecode(data, flags) if data.size else None


def read_image(path: str | Path) -> np.ndarray:
    """A BGR uint8 image, or InvalidImageError naming the file."""
    image = decode_file(path)
    if image is None:
        raise InvalidImageError(f"cannot decode image {path}")
    return image


def _expand(inputs: Sequence[str | Path]) -> list[Path]:
    paths = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise FileNotFoundError(f"input not found: {path}")
        if path.is_dir():
            paths.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES))
        else:
            paths.append(path)
    return paths


def _unique(name: str, seen: set[str]) -> str:
    candidate, n = name, 2
    while candidate in seen:
        candidate, n = f"{name}_{n}", n + 1
    seen.add(candidate)
    return candidate


class FrameSource:
    """Frames of image files, folders (recursively) and videos, in order.

    A frame is named by its file's stem (Cityscapes images by their id, without ``_leftImg8bit``), a
    video's frames ``<stem>_<index:06d>``; a repeated name gets ``_2``, ``_3``, ...

    Missing inputs fail at construction; a file that cannot be decoded yields a :class:`Frame` with
    ``error`` set, so a caller can report it and go on with the others.
    """

    def __init__(self, inputs: Sequence[str | Path]) -> None:
        self.paths = _expand(inputs)

    def __len__(self) -> int:
        """Number of frames (video frame counts as the container reports them)."""
        total = 0
        for path in self.paths:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                capture = cv2.VideoCapture(str(path))
                total += max(1, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
                capture.release()
            else:
                total += 1
        return total

    def check_cityscapes_ids(self) -> None:
        """Refuse inputs of which several would be named by one Cityscapes frame id: the second would be
        ``<id>_2``, which Cityscapes' scripts match as that frame too (they take one file per frame).

        Raises:
            ValueError: naming the id and its image files.
        """
        named: dict[str, list[str]] = {}
        for path in self.paths:
            if path.suffix.lower() not in VIDEO_SUFFIXES:
                named.setdefault(cityscapes_id(path) or path.stem, []).append(str(path))
        for name, paths in named.items():
            if len(paths) > 1 and any(cityscapes_id(path) for path in paths):
                raise ConfigurationError(f"{len(paths)} inputs are Cityscapes frame {name} ({', '.join(paths)}): Cityscapes' "
                                 f"scripts take one file per frame, give each frame once")

    def __iter__(self) -> Iterator[Frame]:
        seen: set[str] = set()
        for path in self.paths:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                yield from self._video_frames(path, seen)
                continue
            name = _unique(cityscapes_id(path) or path.stem, seen)
            try:
                yield Frame(name, str(path), image=read_image(path))
            except InvalidImageError as error:
                yield Frame(name, str(path), error=str(error))

    @staticmethod
    def _video_frames(path: Path, seen: set[str]) -> Iterator[Frame]:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            yield Frame(_unique(path.stem, seen), str(path), error=f"cannot open video {path}")
            return
        index = 0
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                yield Frame(_unique(f"{path.stem}_{index:06d}", seen), f"{path}#{index}", image=image)
                index += 1
        finally:
            capture.release()
        if index == 0:
            yield Frame(_unique(path.stem, seen), str(path), error=f"no decodable frames in video {path}")
