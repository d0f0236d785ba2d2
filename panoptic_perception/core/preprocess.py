"""Pre-processing shared by all backends: validate, resize or letterbox, and map results back.

A :class:`Geometry` records how one input image was placed into the network input, so boxes and masks
can be mapped back to the input image exactly: ``network = source * scale + pad``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch


class InvalidImageError(ValueError):
    """An input frame that cannot be processed (wrong type, shape, dtype or size)."""


class ResizeMode(str, enum.Enum):
    RESIZE = "resize"  # stretch to the network size (TwinLiteNet's official pre-processing)
    LETTERBOX = "letterbox"  # keep the aspect ratio, pad the rest (YOLO-style)


def validate_image(image: object) -> np.ndarray:
    """Return ``image`` if it is a BGR uint8 (H, W, 3) array with H, W > 0; raise InvalidImageError otherwise."""
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"expected a numpy array (H, W, 3) uint8 BGR image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidImageError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidImageError(f"expected an (H, W, 3) BGR image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"image has zero size {image.shape}")
    return image


@dataclass(frozen=True)
class Geometry:
    """Where one source image lies inside the network input."""

    source_size: tuple[int, int]  # (width, height) of the input image
    network_size: tuple[int, int]  # (width, height) of the network input
    content_size: tuple[int, int]  # (width, height) of the resized image inside the network input
    pad: tuple[int, int]  # (left, top) padding

    @classmethod
    def resize(cls, source_size: tuple[int, int], network_size: tuple[int, int]) -> "Geometry":
        return cls(source_size, network_size, network_size, (0, 0))

    @classmethod
    def letterbox(cls, source_size: tuple[int, int], network_size: tuple[int, int]) -> "Geometry":
        (sw, sh), (nw, nh) = source_size, network_size
        scale = min(nw / sw, nh / sh)
        cw, ch = min(nw, round(sw * scale)), min(nh, round(sh * scale))
        return cls(source_size, network_size, (cw, ch), ((nw - cw) // 2, (nh - ch) // 2))

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factors from source pixels to network pixels."""
        return self.content_size[0] / self.source_size[0], self.content_size[1] / self.source_size[1]

    def boxes_to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) x1, y1, x2, y2 boxes from network pixels to source pixels, clipped to the image."""
        sx, sy = self.scale
        left, top = self.pad
        out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        out[:, [0, 2]] = ((out[:, [0, 2]] - left) / sx).clip(0, self.source_size[0])
        out[:, [1, 3]] = ((out[:, [1, 3]] - top) / sy).clip(0, self.source_size[1])
        return out

    def boxes_to_network(self, boxes: np.ndarray) -> np.ndarray:
        """Map (N, 4) boxes from source pixels to network pixels (the inverse of :meth:`boxes_to_source`)."""
        sx, sy = self.scale
        left, top = self.pad
        out = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        out[:, [0, 2]] = out[:, [0, 2]] * sx + left
        out[:, [1, 3]] = out[:, [1, 3]] * sy + top
        return out

    def crop_content(self, maps: torch.Tensor) -> torch.Tensor:
        """The part of (..., H, W) network-resolution maps that covers the image (padding removed)."""
        (left, top), (cw, ch) = self.pad, self.content_size
        return maps[..., top : top + ch, left : left + cw]


#: torchvision's ImageNet normalisation (RGB in [0, 1]), which its ResNet / Mask R-CNN weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The mean as a BGR uint8 colour: padding of this colour is zero after normalisation.
IMAGENET_MEAN_BGR = tuple(round(255 * m) for m in reversed(IMAGENET_MEAN))


def normalize(batch: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] → ``(x - mean) / std`` per channel."""
    return (batch - batch.new_tensor(mean).view(1, 3, 1, 1)) / batch.new_tensor(std).view(1, 3, 1, 1)


def network_input_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    """Check a requested (width, height) network input size."""
    width, height = (int(v) for v in size)
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise ValueError(f"input size must be positive multiples of {multiple}, got {width}x{height}")
    return width, height


def place_image(image: np.ndarray, geometry: Geometry, pad_value: int = 114) -> np.ndarray:
    """The (H, W, 3) uint8 network-size canvas with ``image`` resized into its content area."""
    cw, ch = geometry.content_size
    resized = image if (image.shape[1], image.shape[0]) == (cw, ch) else cv2.resize(image, (cw, ch), interpolation=cv2.INTER_LINEAR)
    if geometry.content_size == geometry.network_size:
        return resized
    nw, nh = geometry.network_size
    canvas = np.full((nh, nw, 3), pad_value, np.uint8)
    left, top = geometry.pad
    canvas[top : top + ch, left : left + cw] = resized
    return canvas


def prepare_batch(
    images: Sequence[np.ndarray],
    network_size: tuple[int, int],
    mode: ResizeMode = ResizeMode.RESIZE,
    pad_value: int = 114,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> tuple[torch.Tensor, list[Geometry]]:
    """BGR uint8 images → (N, 3, H, W) float32 RGB in [0, 1] and the geometry of each image.

    Matches the official TwinLiteNet / YOLOPv2 pre-processing: OpenCV INTER_LINEAR resize, BGR→RGB,
    ``/ 255``, no mean/std.
    """
    if len(images) == 0:
        raise InvalidImageError("empty batch")
    geometries, canvases = [], []
    for image in images:
        validate_image(image)
        source_size = (image.shape[1], image.shape[0])
        if mode is ResizeMode.LETTERBOX:
            geometry = Geometry.letterbox(source_size, network_size)
        else:
            geometry = Geometry.resize(source_size, network_size)
        geometries.append(geometry)
        canvases.append(place_image(image, geometry, pad_value))
    nhwc = torch.from_numpy(np.stack(canvases)).to(device)
    # NHWC uint8 → NCHW float; flipping channels reverses BGR to RGB.
    batch = nhwc.permute(0, 3, 1, 2).flip(1).float().div_(255.0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return batch.contiguous(memory_format=memory_format), geometries
