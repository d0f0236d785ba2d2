"""The backdrop: the sky (a vertical gradient, clouds by day) and the skyline at the horizon (distant
buildings, tree lines or hills)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .canvas import Frame
from .geometry import ellipse, rects
from .look import BUILDING_COLORS, jitter, pick
from .types import BUILDING, SKY, VEGETATION


def draw_sky(f: Frame) -> None:
    """Fill the whole frame with the sky's gradient and label it sky; clouds unless at night or in fog."""
    rng, canvas, look, horizon = f.rng, f.canvas, f.look, f.view.horizon
    v = (np.arange(canvas.height) + 0.5) / canvas.height
    t = np.clip(v / horizon, 0.0, 1.0) ** 0.8
    top = np.asarray(look.color(look.sky_top, emissive=True))
    hor = np.asarray(look.color(look.sky_horizon, emissive=True))
    grad = top[None, :] * (1.0 - t[:, None]) + hor[None, :] * t[:, None]
    cv2.resize(grad.astype(np.uint8)[:, None, :], (canvas.width, canvas.height), dst=canvas.image, interpolation=cv2.INTER_NEAREST)
    canvas.segment_index[:] = SKY
    if not look.night and not look.fog:
        for _ in range(int(rng.integers(0, 6))):
            cx = rng.uniform(-0.1, 1.1)
            cy = rng.uniform(0.02, max(0.03, horizon - 0.12))
            row = np.clip(cy / horizon, 0, 1) ** 0.8
            base = look.sky_top * (1 - row) + look.sky_horizon * row
            c = look.color(base + (255 - base) * rng.uniform(0.25, 0.7), emissive=True)
            w = rng.uniform(0.04, 0.16)
            blobs = []
            for _ in range(int(rng.integers(2, 5))):
                ry = min(rng.uniform(0.01, 0.035), 0.5 * (horizon - cy))
                blobs.append(ellipse(cx + rng.uniform(-w, w), cy + rng.uniform(-0.01, 0.01), w * rng.uniform(0.4, 0.9), ry, 14))
            canvas.fill_each(blobs, c, SKY)


def draw_skyline(f: Frame) -> None:
    """Distant buildings (town scenes, a quarter of the others) and a tree line or hills standing on the horizon."""
    rng, look, urban = f.rng, f.look, f.road.urban
    base = f.view.horizon + 0.004
    z_far = 1500.0
    if urban or rng.random() < 0.25:
        n = int(rng.integers(8, 30))
        x0 = np.sort(rng.uniform(-0.05, 1.05, n))
        widths = rng.uniform(0.02, 0.12, n)
        heights = rng.uniform(0.01, 0.11, n) * (1.0 if urban else 0.4)
        for i in range(n):
            col = look.color(pick(rng, BUILDING_COLORS, 20) * rng.uniform(0.8, 1.05), z_far * rng.uniform(0.35, 1.0))
            f.canvas.fill(rects(x0[i], x0[i] + widths[i], base - heights[i], base), col, BUILDING)
    # Tree line / hills: a smooth irregular silhouette.
    if not urban or rng.random() < 0.5:
        xs = np.linspace(-0.05, 1.05, 40)
        h = np.zeros_like(xs)
        for _ in range(3):
            freq, phase = rng.uniform(2.0, 12.0), rng.uniform(0, 2 * math.pi)
            h += rng.uniform(0.003, 0.02) * (1 + np.sin(freq * xs * 2 * math.pi / 3 + phase))
        h += rng.uniform(0.0, 0.006, len(xs))
        if urban:
            h *= 0.5
        top = np.stack((xs, base - h), axis=-1)
        poly = np.concatenate((top, [[1.05, base], [-0.05, base]]))
        col = look.color(jitter(rng, (50, 95, 60), 15), z_far * rng.uniform(0.2, 0.6))
        f.canvas.fill(poly, col, VEGETATION)
