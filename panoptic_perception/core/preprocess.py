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

from ..errors import ConfigurationError, PanopticPerceptionError


class InvalidImageError(PanopticPerceptionError, ValueError):
    """An input frame that cannot be processed (wrong type, shape, dtype or size)."""


class ResizeMode(str, enum.Enum):
    RESIZE = "resize"  # stretch to the network size (TwinLiteNet's official pre-processing)
    LETTERBOX = "letterbox"  # keep the aspect ratio, pad the rest (YOLO-style)


#: What :func:`as_bgr_image` and :func:`as_bgr_images` take, for error messages and docs.
ACCEPTED_IMAGES = (
    "a uint8 image of shape (H, W) or (H, W, 1) grey, (H, W, 3) BGR or (H, W, 4) BGRA, "
    "or a batch: a list / tuple of such images or an (N, H, W, 3) array"
)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def as_bgr_image(image: object, what: str = "") -> np.ndarray:
    """One image → BGR uint8 (H, W, 3), C-contiguous, H, W > 0.

    Grey (H, W) or (H, W, 1) and BGRA (H, W, 4) uint8 images are converted (OpenCV ``GRAY2BGR`` /
    ``BGRA2BGR``, as the node converts ``mono8`` and ``bgra8``); (H, W, 3) is taken as BGR as it is.
    Views with any strides are fine. Raises :class:`InvalidImageError` naming the shape and dtype (and
    ``what``, e.g. "image 3 of the list") for anything else: another dtype (float, uint16), another
    number of dimensions or channels, a zero-sized image, a non-array.
    """
    where = f" ({what})" if what else ""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim not in (2, 3) or (
        image.ndim == 3 and image.shape[2] not in (1, 3, 4)
    ):
        raise InvalidImageError(f"expected {ACCEPTED_IMAGES}; got {_describe(image)}{where}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"image has zero size: {_describe(image)}{where}")
    image = np.ascontiguousarray(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def as_bgr_images(images: object) -> tuple[list[np.ndarray], bool]:
    """What :meth:`Backend.__call__` takes → (BGR uint8 images, whether it was a single image).

    A 2-D or 3-D array is one image (grey, BGR or BGRA, see :func:`as_bgr_image`); a 4-D (N, H, W, 3)
    array or a list / tuple is a batch. Raises :class:`InvalidImageError` naming the whole input's
    shape and dtype (and the index of a bad image in a batch) and what is accepted.
    """
    if isinstance(images, np.ndarray):
        if images.ndim in (2, 3):
            return [as_bgr_image(images)], True
        if images.ndim == 4 and images.shape[3] == 3 and images.dtype == np.uint8 and len(images) > 0:
            return [as_bgr_image(image, f"image {i} of {_describe(images)}") for i, image in enumerate(images)], False
        raise InvalidImageError(f"expected {ACCEPTED_IMAGES}; got {_describe(images)}")
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidImageError(f"expected {ACCEPTED_IMAGES}; got an empty {type(images).__name__}")
        return [as_bgr_image(image, f"image {i} of a {type(images).__name__} of {len(images)}") for i, image in enumerate(images)], False
    raise InvalidImageError(f"expected {ACCEPTED_IMAGES}; got {_describe(images)}")


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
        # at least one pixel: a 1000x1 image would round to nothing
        cw, ch = min(nw, max(1, round(sw * scale))), min(nh, max(1, round(sh * scale)))
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
        raise ConfigurationError(f"input size must be positive multiples of {multiple}, got {width}x{height}")
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
    """Images (BGR uint8 (H, W, 3); grey and BGRA are converted, see :func:`as_bgr_image`) →
    (N, 3, H, W) float32 RGB in [0, 1] and the geometry of each image.

    Matches the official TwinLiteNet / YOLOPv2 pre-processing: OpenCV INTER_LINEAR resize, BGR→RGB,
    ``/ 255``, no mean/std.
    """
    if len(images) == 0:
        raise InvalidImageError("empty batch")
    geometries, canvases = [], []
    for i, image in enumerate(images):
        image = as_bgr_image(image, f"image {i} of the batch" if len(images) > 1 else "")
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
