"""The ground and the road: the verge, the asphalt with its texture, sidewalks with kerbs, painted lane
lines, and the light on the ground (cast shadows, the headlights' beam at night)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from .canvas import Frame
from .geometry import FU, Z_FAR, ellipse
from .types import ROAD, SIDEWALK, TERRAIN


def draw_ground(f: Frame) -> None:
    """Everything below the horizon as verge (grass or pavement), with patches on grass."""
    rng, view, look = f.rng, f.view, f.look
    ground = np.array([[-0.02, view.horizon], [1.02, view.horizon], [1.02, 1.02], [-0.02, 1.02]])
    f.canvas.fill(ground, look.color(look.verge_color, 60.0), look.verge_class)
    # Patchy grass / pavement: irregular blobs on the ground, a little darker or lighter.
    if look.verge_class == TERRAIN:
        outer = f.road.outer
        for _ in range(int(rng.integers(4, 14))):
            side = -1.0 if rng.random() < 0.5 else 1.0
            s = outer[0 if side < 0 else 1] + side * rng.uniform(0.0, 25.0)
            z = math.exp(rng.uniform(math.log(4.0), math.log(120.0)))
            blob = ellipse(s, z, rng.uniform(1.0, 5.0), rng.uniform(2.0, 10.0), 10, rng.uniform(0.7, 1.2, 10))
            col = look.color(look.verge_color * rng.uniform(0.75, 1.15), z)
            f.canvas.fill(view.road_point(blob[:, 0], 0.0, np.maximum(blob[:, 1], 1.0)), col, TERRAIN)


def draw_road(f: Frame) -> np.ndarray:
    """The asphalt, fading into the haze, with tyre tracks and patches.  Returns the depths (72,) it was
    drawn over, for the sidewalks beside it."""
    rng, canvas, view, road, look = f.rng, f.canvas, f.view, f.road, f.look
    z = np.geomspace(view.z_near, Z_FAR, 72)
    canvas.fill(view.strip(road.left, road.right, z), look.color(look.road_color, 25.0), ROAD)
    # Far road fades into the haze: a few nested bands, each drawn with the same road label.
    for zb in (40.0, 80.0, 160.0):
        zz = z[z >= zb]
        if len(zz) >= 2:
            canvas.fill(view.strip(road.left, road.right, zz), look.color(look.road_color, zb * 1.3), ROAD)
    # Tyre tracks: slightly darker bands in each lane.
    if rng.random() < 0.6:
        factor = rng.uniform(0.86, 0.96)
        zt = z[z < 120.0]
        for i in range(road.lanes):
            for off in (0.27, 0.73):
                c = road.lines[i] + off * road.lane_width
                canvas.fill(view.strip(c - 0.3, c + 0.3, zt), look.color(look.road_color * factor, 25.0), ROAD)
    # Repair patches and darker/lighter asphalt sections.
    for _ in range(int(rng.integers(0, 6))):
        s0 = rng.uniform(road.left + 0.2, road.right - 1.0)
        s1 = min(s0 + rng.uniform(0.8, 4.0), road.right - 0.2)
        z0 = math.exp(rng.uniform(math.log(view.z_near), math.log(100.0)))
        z1 = z0 + rng.uniform(1.0, 12.0)
        c = look.color(look.road_color * rng.uniform(0.75, 1.2), z0)
        canvas.fill(view.strip(s0, s1, np.geomspace(z0, z1, 4)), c, ROAD)
    return z


def draw_sidewalks(f: Frame, z: np.ndarray) -> None:
    """Sidewalks with a kerb band and paving joints along the road's depths ``z``, where the road has them."""
    rng, canvas, view, road, look = f.rng, f.canvas, f.view, f.road, f.look
    for side in (0, 1):
        if not road.sidewalks[side]:
            continue
        w = road.sidewalk_widths[side]
        if side == 0:
            s0, s1, k0, k1 = road.left - w, road.left, road.left - 0.25, road.left
        else:
            s0, s1, k0, k1 = road.right, road.right + w, road.right, road.right + 0.25
        canvas.fill(view.strip(s0, s1, z), look.color(look.sidewalk_color, 20.0), SIDEWALK)
        canvas.fill(view.strip(k0, k1, z), look.color(look.kerb_color, 20.0), SIDEWALK)
        # Paving joints across the sidewalk.
        if rng.random() < 0.6:
            step = rng.uniform(1.5, 4.0)
            zs = np.arange(view.z_near + rng.uniform(0, step), 60.0, step)
            if len(zs):
                zz = np.stack((zs, zs + 0.08), axis=-1)
                a, b = (s0, k0) if side == 0 else (k1, s1)
                canvas.fill(view.strip(a, b, zz), look.color(look.sidewalk_color * 0.8, 20.0), SIDEWALK)


def _line_strip(f: Frame, s_center, width: float, z: np.ndarray) -> np.ndarray:
    """A painted line of ``width`` metres along the road, widened to at least ``min_lane_line_px`` pixels."""
    z = np.asarray(z, np.float64)
    c = f.view.road_point(s_center, 0.0, z)
    half = np.maximum(FU * 0.5 * width / z, 0.5 * f.config.min_lane_line_px / f.canvas.width)
    left = c.copy()
    left[..., 0] -= half
    right = c
    right[..., 0] += half
    return np.concatenate((left, right[..., ::-1, :]), axis=-2)


def draw_lane_lines(f: Frame) -> None:
    """Lane separators (solid or dashed), a yellow centre line on two-way roads, edge lines; painted on the
    visible road only (they are labelled road: the lane mask is read from the paint masks)."""
    rng, canvas, road, look = f.rng, f.canvas, f.road, f.look
    w = road.line_width
    z_end = min(Z_FAR, FU * road.lane_width / 0.012)
    z = np.geomspace(f.view.z_near, z_end, 56)
    solid: list[tuple[float, np.ndarray]] = []  # (s, target mask)
    centre = road.oncoming_lanes if road.two_way else -1
    separators = [float(road.lines[i]) for i in range(1, road.lanes) if i != centre]
    dashed = separators if road.dashed else []
    if not road.dashed:
        solid += [(s, canvas.paint_white) for s in separators]
    if centre > 0:
        s = road.lines[centre]
        kind = rng.random()
        if kind < 0.45:  # double solid yellow
            gap = rng.uniform(0.6, 1.2) * w
            solid += [(s - 0.5 * gap - 0.5 * w, canvas.paint_yellow), (s + 0.5 * gap + 0.5 * w, canvas.paint_yellow)]
        elif kind < 0.8:
            solid.append((s, canvas.paint_yellow))
        else:
            _dashes(f, [s], z_end, canvas.paint_yellow)
    if road.edge_lines:
        left_paint = canvas.paint_yellow if (rng.random() < 0.2 and not road.two_way) else canvas.paint_white
        solid += [(float(road.lines[0]), left_paint), (float(road.lines[-1]), canvas.paint_white)]
    for s, target in solid:
        canvas.mark(target, _line_strip(f, s, w, z))
    if dashed:
        _dashes(f, dashed, z_end, canvas.paint_white)
    # Lines are paint on the road: only where the road is visible now.
    visible_road = cv2.compare(canvas.segment_index, ROAD, cv2.CMP_EQ)
    for mask, col in ((canvas.paint_white, look.white), (canvas.paint_yellow, look.yellow)):
        cv2.bitwise_and(mask, visible_road, dst=mask)
        x, y, bw, bh = cv2.boundingRect(mask)
        if bw and bh:
            roi = canvas.image[y : y + bh, x : x + bw]
            paint = np.empty_like(roi)
            paint[:] = np.asarray(look.color(col, 30.0), np.float64).astype(np.uint8)
            cv2.copyTo(paint, mask[y : y + bh, x : x + bw], roi)


def _dashes(f: Frame, lines_s: list[float], z_end: float, target: np.ndarray) -> None:
    """Dashed lines at the lateral positions ``lines_s`` up to depth ``z_end``, marked in ``target``; dashes
    shrink with perspective."""
    rng, z_near = f.rng, f.view.z_near
    period = rng.uniform(6.0, 13.0)
    dash = period * rng.uniform(0.25, 0.5)
    phase = rng.uniform(0.0, period)
    starts = np.arange(z_near - period + phase, z_end, period)
    if not len(starts):
        return
    zz = np.linspace(starts, starts + dash, 3, axis=-1)
    zz = np.clip(zz, z_near * 0.5, z_end)
    polys = np.concatenate([_line_strip(f, s, f.road.line_width, zz) for s in lines_s])
    f.canvas.mark(target, polys)


def apply_ground_light(f: Frame) -> None:
    """Shadows cast across the road in sunlit scenes and the ego headlights' beam at night (image only;
    labels unchanged)."""
    rng, canvas, view, road = f.rng, f.canvas, f.view, f.road
    if f.look.sunny:
        # Shadows thrown across the road by trees and buildings out of view or at the roadside.
        outer = road.outer
        sun_dir = rng.uniform(-1.2, 1.2)  # lateral shift of a shadow per metre of height
        for _ in range(int(rng.integers(0, 5))):
            z0 = math.exp(rng.uniform(math.log(view.z_near), math.log(60.0)))
            z1 = z0 + rng.uniform(0.5, 8.0)
            s0 = (outer[0] if sun_dir > 0 else road.left + rng.uniform(0, 6)) - 1.0
            s1 = (road.right - rng.uniform(0, 6) if sun_dir > 0 else outer[1]) + 1.0
            zs = np.geomspace(z0, z1, 4)
            canvas.mark(canvas.shadow, view.strip(s0, s1, zs))
        for _ in range(int(rng.integers(0, 4))):  # dappled blobs
            z = math.exp(rng.uniform(math.log(view.z_near + 2.0), math.log(50.0)))
            s = rng.uniform(road.left - 2.0, road.right + 2.0)
            blob = ellipse(s, z, rng.uniform(1.0, 3.5), rng.uniform(1.0, 4.0), 12, rng.uniform(0.6, 1.25, 12))
            canvas.mark(canvas.shadow, view.road_point(blob[:, 0], 0.0, np.maximum(blob[:, 1], 1.0)))
    masks = [(canvas.shadow, rng.uniform(0.45, 0.7), 0.0)]
    if f.look.night:  # the ego headlights: a bright beam inside a dimmer, wider one
        reach = rng.uniform(25.0, 45.0)
        spread = rng.uniform(0.07, 0.11)
        gain = rng.uniform(1.8, 2.6)
        z = np.geomspace(view.z_near, reach * 1.4, 8)
        canvas.mark(canvas.glow, view.strip(-1.6 - 1.3 * spread * z, 1.6 + 1.3 * spread * z, z))
        inner = np.zeros_like(canvas.glow)
        z = np.geomspace(view.z_near, reach, 8)
        canvas.mark(inner, view.strip(-1.0 - spread * z, 1.0 + spread * z, z))
        masks += [(canvas.glow, 0.5 + 0.5 * gain, 4.0), (inner, gain / (0.5 + 0.5 * gain), 4.0)]
    for mask, alpha, beta in masks:
        canvas.scale_under(mask, alpha, beta)
