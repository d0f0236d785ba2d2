"""Finishing and labels: the camera's look applied to the finished image (vignetting, colour grading, blur,
sensor noise; labels unchanged), and the label maps, segments and detections read off the segment-index map."""

from __future__ import annotations

import cv2
import numpy as np

from ...core.labels import CITYSCAPES
from ...core.types import PANOPTIC_LABEL_DIVISOR, Detections, SegmentInfo
from .canvas import FIRST_THING, Frame
from .truth import PinholeCamera, RoadOnGround, ThingOnGround
from .types import CAR, PERSON, ROAD, THING_CLASS_IDS, TRUCK, SyntheticScene


def finish_image(f: Frame, seed: int) -> dict:
    """Uneven illumination and vignetting, gamma / contrast / brightness / tint, blur and sensor noise (its
    pattern from ``seed`` and the resolution), in place on the canvas's image.  Returns the attributes
    ``blur_sigma_px`` (float) and ``noise`` (int, grey levels)."""
    rng, cfg, img = f.rng, f.config, f.canvas.image
    H, W = f.canvas.height, f.canvas.width
    # Uneven illumination and vignetting from a smooth low-resolution gain field.
    gy, gx = np.mgrid[0:9, 0:16]
    r2 = ((gx - 7.5) / 7.5) ** 2 + ((gy - 4.0) / 4.0) ** 2
    coarse = cv2.resize(rng.uniform(0.9, 1.1, (3, 4)).astype(np.float32), (16, 9), interpolation=cv2.INTER_LINEAR)
    gain = coarse * (1.0 - rng.uniform(0.05, 0.3) * r2 / 2.0)
    gain8 = np.clip(gain * 128.0, 0, 255).astype(np.uint8)
    field8 = cv2.resize(gain8, (W, H), interpolation=cv2.INTER_LINEAR)
    cv2.multiply(img, cv2.merge((field8, field8, field8)), dst=img, scale=1.0 / 128.0)
    # Colour grading: gamma, contrast, brightness and a colour cast in one lookup table.
    x = np.arange(256, dtype=np.float64) / 255.0
    gamma = rng.uniform(0.85, 1.15)
    contrast = rng.uniform(*cfg.contrast_range)
    brightness = rng.uniform(*cfg.brightness_range)
    tint = 1.0 + rng.uniform(-cfg.max_tint, cfg.max_tint, 3)
    y = ((x**gamma - 0.5) * contrast + 0.5)[:, None] * brightness * tint[None, :]
    lut = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8).reshape(1, 256, 3)
    cv2.LUT(img, lut, dst=img)
    sigma = (rng.uniform(0.7, 1.5) if rng.random() < cfg.blur_prob else rng.uniform(0.3, 0.6)) * H / 360.0
    cv2.GaussianBlur(img, (0, 0), sigma, dst=img)
    amp = int(rng.integers(cfg.noise_range[0], cfg.noise_range[1] + 1)) * (2 if f.look.night else 1)
    if amp > 0:
        noise_rng = np.random.default_rng((seed, 0x5E75))
        noise = noise_rng.integers(0, 2 * amp + 1, (H, W), dtype=np.uint8)
        cv2.add(img, cv2.merge((noise, noise, noise)), dst=img)
        cv2.subtract(img, (amp, amp, amp, 0), dst=img)
    return {"blur_sigma_px": float(sigma), "noise": amp}


def read_labels(f: Frame, seed: int, attributes: dict) -> SyntheticScene:
    """The scene of ``seed`` as drawn on ``f``'s canvas: its image, label maps, segments (in panoptic-id order),
    one detection per visible thing; its camera, each visible thing's truth on the ground by panoptic id and
    the road on the ground; ``attributes`` plus the counts of visible ``vehicles`` and ``pedestrians``."""
    canvas = f.canvas
    seg = canvas.segment_index
    hist = cv2.calcHist([seg], [0], None, [256], [0, 256]).ravel()
    sem_lut = np.zeros((1, 256), np.uint8)
    pan_lut = np.zeros(256, np.int32)
    segments: list[SegmentInfo] = []
    on_ground: dict[int, ThingOnGround] = {}  # by panoptic id
    next_instance = {c: 1 for c in THING_CLASS_IDS}
    for idx in np.flatnonzero(hist):
        idx = int(idx)
        is_thing = idx >= FIRST_THING
        if is_thing:
            cls = canvas.thing_classes[idx - FIRST_THING]
            inst = next_instance[cls]
            next_instance[cls] += 1
        else:
            cls, inst = idx, 0
        sem_lut[0, idx] = cls
        pan = cls * PANOPTIC_LABEL_DIVISOR + inst
        pan_lut[idx] = pan
        if is_thing:
            on_ground[pan] = f.things[idx]
        mask = cv2.compare(seg, idx, cv2.CMP_EQ)
        x, y, w, h = cv2.boundingRect(mask)
        area = cv2.countNonZero(mask)
        segments.append(SegmentInfo(id=pan, category_id=cls, is_thing=is_thing, area=int(area), bbox=(x, y, w, h), score=1.0))
    segments.sort(key=lambda sgm: sgm.id)
    semantic = cv2.LUT(seg, sem_lut)
    panoptic = pan_lut.take(seg)
    drivable = (seg == ROAD).view(np.uint8)
    lane = cv2.bitwise_or(canvas.paint_white, canvas.paint_yellow)
    cv2.bitwise_and(lane, drivable, dst=lane)
    cv2.min(lane, 1, dst=lane)
    things = [sgm for sgm in segments if sgm.is_thing]  # detections in panoptic-id order
    if things:
        det = Detections(
            boxes=np.array([(x, y, x + w, y + h) for x, y, w, h in (t.bbox for t in things)], np.float32),
            scores=np.ones(len(things), np.float32),
            class_ids=np.array([t.category_id for t in things], np.int64),
            class_names=[CITYSCAPES.name_of(t.category_id) for t in things],
        )
    else:
        det = Detections.empty()
    classes = [t.category_id for t in things]
    counts = {"vehicles": sum(1 for c in classes if c in (CAR, TRUCK)), "pedestrians": sum(1 for c in classes if c == PERSON)}
    return SyntheticScene(
        image=canvas.image,
        drivable_mask=drivable,
        lane_mask=lane,
        semantic=semantic,
        panoptic=panoptic,
        segments=segments,
        detections=det,
        camera=PinholeCamera.of_view(f.view, canvas.width, canvas.height),
        things=dict(sorted(on_ground.items())),
        ground_road=RoadOnGround(f.view, float(f.road.left), float(f.road.right)),
        seed=seed,
        attributes={**attributes, **counts},
    )
