"""Decoding ROS messages into numpy images and perception results, without ROS.

Works on any object with the fields of the message — rclpy messages in the node and in live replay,
rosbags messages when reading bags — so they all share one decoder: camera images
(``sensor_msgs/Image``, ``CompressedImage``) to BGR, label images to their values, and this
package's outputs (masks, ``Detection2DArray``, ``PanopticSegmentation``) back to the
:class:`~panoptic_perception.core.types.PerceptionResult` fields.
"""

from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np

from .preprocess import InvalidImageError
from .types import Detections, PerceptionResult, SegmentInfo

#: Input encodings: channels and the OpenCV conversion to BGR (None: already BGR).
INPUT_ENCODINGS = {
    "bgr8": (3, None),
    "rgb8": (3, cv2.COLOR_RGB2BGR),
    "bgra8": (4, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, cv2.COLOR_RGBA2BGR),
    "mono8": (1, cv2.COLOR_GRAY2BGR),
}


class RejectedImage(InvalidImageError):
    """An input message that cannot be turned into an image; ``cause`` names the kind of problem."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause


def check_image_msg(msg) -> None:
    """Reject what is wrong with a camera message's fields, without touching its pixels (cheap).

    Both: a header stamp with negative seconds (no time can be made of it); ``sensor_msgs/Image``:
    encoding, zero size, row step, data length; ``CompressedImage``: format and emptiness (corrupt
    compressed data only shows when decoding). Raises :class:`RejectedImage`.
    """
    if msg.header.stamp.sec < 0:
        raise RejectedImage("negative stamp", f"stamp {msg.header.stamp.sec} s")
    if hasattr(msg, "format"):
        kind = msg.format.lower()
        if "jpeg" not in kind and "jpg" not in kind and "png" not in kind:
            raise RejectedImage("unsupported format", f"{msg.format!r} (supported: jpeg, png)")
        if len(msg.data) == 0:
            raise RejectedImage("zero size", "no compressed data")
        return
    if msg.encoding not in INPUT_ENCODINGS:
        raise RejectedImage("unsupported encoding", f"{msg.encoding!r} (supported: {', '.join(INPUT_ENCODINGS)})")
    channels, _ = INPUT_ENCODINGS[msg.encoding]
    if msg.height == 0 or msg.width == 0:
        raise RejectedImage("zero size", f"{msg.width}x{msg.height}")
    if msg.step < msg.width * channels:
        raise RejectedImage("bad step", f"step {msg.step} < width {msg.width} x {channels} channels")
    if len(msg.data) < msg.step * msg.height:
        raise RejectedImage("data too short", f"{len(msg.data)} bytes < step {msg.step} x height {msg.height}")


def image_to_bgr(msg) -> np.ndarray:
    """A sensor_msgs/Image (bgr8, rgb8, bgra8, rgba8, mono8; rows may be padded) → BGR uint8 (H, W, 3)."""
    check_image_msg(msg)
    channels, conversion = INPUT_ENCODINGS[msg.encoding]
    height, width, step = msg.height, msg.width, msg.step
    rows = np.frombuffer(msg.data, np.uint8, count=step * height).reshape(height, step)
    image = rows[:, : width * channels].reshape(height, width, channels)
    if conversion is None:
        return np.ascontiguousarray(image)
    return cv2.cvtColor(image, conversion)


def compressed_to_bgr(msg) -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg or png) → BGR uint8 (H, W, 3)."""
    check_image_msg(msg)
    image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise RejectedImage("corrupt data", f"cannot decode {len(msg.data)} bytes of {msg.format}")
    return image


#: Label-image encodings: channels and numpy dtype (little-endian).
VALUE_ENCODINGS = {"mono8": (1, np.uint8), "8UC1": (1, np.uint8), "mono16": (1, "<u2"), "16UC1": (1, "<u2"),
                   "32SC1": (1, "<i4")}


def image_values(msg) -> np.ndarray:
    """A label image (mono8, mono16, 32SC1; rows may be padded) → its (H, W) values."""
    if msg.encoding not in VALUE_ENCODINGS:
        raise RejectedImage("unsupported encoding", f"{msg.encoding!r} for a label image")
    _, dtype = VALUE_ENCODINGS[msg.encoding]
    itemsize = np.dtype(dtype).itemsize
    if msg.height == 0 or msg.width == 0:
        raise RejectedImage("zero size", f"{msg.width}x{msg.height}")
    if msg.step < msg.width * itemsize or len(msg.data) < msg.step * msg.height:
        raise RejectedImage("data too short", f"{len(msg.data)} bytes for {msg.width}x{msg.height}, step {msg.step}")
    rows = np.frombuffer(msg.data, np.uint8, count=msg.step * msg.height).reshape(msg.height, msg.step)
    return rows[:, : msg.width * itemsize].copy().view(dtype).reshape(msg.height, msg.width).astype(np.dtype(dtype).newbyteorder("="))


def detections_from_msg(msg, names: Mapping[int, str] | None = None) -> Detections:
    """A ``vision_msgs/Detection2DArray`` → boxes (x1, y1, x2, y2), best-hypothesis scores and class ids."""
    boxes, scores, ids = [], [], []
    for detection in msg.detections:
        box = detection.bbox
        cx, cy = box.center.position.x, box.center.position.y
        boxes.append([cx - box.size_x / 2, cy - box.size_y / 2, cx + box.size_x / 2, cy + box.size_y / 2])
        best = max(detection.results, key=lambda r: r.hypothesis.score) if detection.results else None
        scores.append(best.hypothesis.score if best else 1.0)
        ids.append(int(best.hypothesis.class_id) if best and best.hypothesis.class_id.lstrip("-").isdigit() else -1)
    names = names or {}
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), np.asarray(ids, np.int64),
        [names.get(i, str(i)) for i in ids],
    )


def panoptic_from_msg(msg) -> tuple[np.ndarray, list[SegmentInfo]]:
    """A ``PanopticSegmentation`` → (H, W) int32 ids (``class * label_divisor + instance``) and segments."""
    segments = [
        SegmentInfo(int(s.id), int(s.category_id), bool(s.is_thing), int(s.area),
                    (int(s.bbox.x_offset), int(s.bbox.y_offset), int(s.bbox.width), int(s.bbox.height)), float(s.score))
        for s in msg.segments
    ]
    return image_values(msg.panoptic).astype(np.int32), segments


def result_from_messages(
    image_size: tuple[int, int],
    backend: str,
    drivable=None,
    lanes=None,
    semantic=None,
    panoptic=None,
    detections=None,
    names: Mapping[int, str] | None = None,
) -> PerceptionResult:
    """Messages of one frame (any may be None or an empty image) → a :class:`PerceptionResult`."""

    def values(msg):
        return image_values(msg) if msg is not None and msg.width > 0 else None

    panoptic_map, segments = panoptic_from_msg(panoptic) if panoptic is not None and panoptic.panoptic.width > 0 else (None, None)
    return PerceptionResult(
        image_size, backend, drivable_mask=values(drivable), lane_mask=values(lanes), semantic=values(semantic),
        panoptic=panoptic_map, segments=segments,
        detections=detections_from_msg(detections, names) if detections is not None else None,
    )
