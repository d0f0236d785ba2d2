"""The actors: vehicles (cars, vans, trucks) in the lanes, seen from behind or, on two-way roads, oncoming,
and pedestrians, mostly on the sidewalks, sometimes crossing the road.  Each is a thing with its own
instance in the label map."""

from __future__ import annotations

import math
from functools import partial

import cv2
import numpy as np

from .canvas import SHIFT, Frame, Placement
from .geometry import FU, ellipse, rects
from .look import CAR_COLORS, CLOTHES, HAIR, PANTS, SKIN, TRUCK_COLORS, jitter, pick
from .truth import ThingOnGround
from .types import CAR, PERSON, ROAD, TRUCK

#: A vehicle's place on the road: (lane, depth, length), to keep others out of it.
Slot = tuple[int, float, float]


def sample_vehicles(f: Frame) -> tuple[list[Placement], list[Slot]]:
    """Vehicles in the lanes, busier near the ego lane, not overlapping in a lane; and the slots they take
    (including that of a vehicle left out once the label map holds no more things)."""
    rng, cfg, road = f.rng, f.config, f.road
    count = int(rng.integers(cfg.vehicle_count_range[0], cfg.vehicle_count_range[1] + 1))
    objects: list[Placement] = []
    placed: list[Slot] = []
    for _ in range(count):
        truck = rng.random() < cfg.truck_fraction
        length = rng.uniform(6.5, 12.0) if truck else rng.uniform(3.9, 4.9)
        # Lanes near the ego lane are busier.
        weights = 1.0 / (1.0 + np.abs(np.arange(road.lanes) - road.ego_lane))
        lane = int(rng.choice(road.lanes, p=weights / weights.sum()))
        s_c = road.lines[lane] + road.lane_width * 0.5 + rng.uniform(-0.3, 0.3)
        z_min = 9.0 if lane == road.ego_lane else max(6.0, FU * abs(s_c) / 0.45)
        z = math.exp(rng.uniform(math.log(z_min), math.log(110.0)))
        if any(l == lane and abs(z - z2) < max(length, l2) + 2.5 for l, z2, l2 in placed):
            continue
        placed.append((lane, z, length))
        oncoming = lane < road.oncoming_lanes
        index = f.canvas.new_thing(TRUCK if truck else CAR)
        if index is None:
            break
        objects.append((z, partial(draw_truck if truck else draw_car, f, index, s_c, z, length, oncoming)))
    return objects, placed


def sample_pedestrians(f: Frame, vehicles: list[Slot]) -> list[Placement]:
    """Pedestrians beside the road (on the sidewalk or verge) or crossing it, never inside one of the
    ``vehicles``' slots."""
    rng, cfg, road = f.rng, f.config, f.road
    count = int(rng.integers(cfg.pedestrian_count_range[0], cfg.pedestrian_count_range[1] + 1))
    objects: list[Placement] = []
    for _ in range(count):
        if rng.random() < cfg.pedestrian_on_road_prob:
            s = rng.uniform(road.left + 0.3, road.right - 0.3)
            z = rng.uniform(8.0, 45.0)
            lane = int(np.clip((s - road.lines[0]) // road.lane_width, 0, road.lanes - 1))
            if any(l == lane and -1.0 < z - z2 < l2 + 1.0 for l, z2, l2 in vehicles):
                continue  # would stand inside a vehicle
        else:
            side = int(rng.integers(2))
            sign = -1.0 if side == 0 else 1.0
            edge = road.left if side == 0 else road.right
            width = road.sidewalk_widths[side] if road.sidewalks[side] else 2.0
            s = edge + sign * rng.uniform(0.3, max(0.4, width - 0.3))
            z_min = max(5.0, FU * abs(s) / 0.48)
            if z_min >= 70.0:
                continue
            z = math.exp(rng.uniform(math.log(z_min), math.log(70.0)))
        index = f.canvas.new_thing(PERSON)
        if index is None:
            break
        objects.append((z, partial(draw_pedestrian, f, index, s, z)))
    return objects


def _vehicle_shadow(f: Frame, x: float, z: float, width: float, length: float) -> None:
    """Darken the road under a vehicle just before drawing it (image only: visible road pixels)."""
    canvas = f.canvas
    zz = np.array([z - 0.15, z + length])
    xs = np.array([x - width / 2 - 0.1, x - width / 2 - 0.1, x + width / 2 + 0.1, x + width / 2 + 0.1])
    quad = f.view.project(xs, 0.0, np.array([zz[0], zz[1], zz[1], zz[0]]))
    mask = np.zeros_like(canvas.shadow)
    cv2.fillConvexPoly(mask, canvas.fixed_point(quad), 255, cv2.LINE_8, SHIFT)
    cv2.bitwise_and(mask, cv2.compare(canvas.segment_index, ROAD, cv2.CMP_EQ), dst=mask)
    canvas.scale_under(mask, 0.35)


def draw_car(f: Frame, index: int, s: float, z: float, length: float, oncoming: bool) -> None:
    """A car, van or SUV of segment index ``index`` centred ``s`` metres right of the road's reference line,
    its near end at depth ``z``: its rear (or, ``oncoming``, its front), the side facing the camera and its roof
    when the camera is higher; its shadow first."""
    rng, canvas, view, look = f.rng, f.canvas, f.view, f.look
    kind = rng.random()
    van = kind < 0.15
    suv = 0.15 <= kind < 0.35
    w = rng.uniform(1.7, 2.0) if (van or suv) else rng.uniform(1.65, 1.85)
    h = rng.uniform(1.85, 2.2) if van else (rng.uniform(1.6, 1.8) if suv else rng.uniform(1.35, 1.52))
    body_h = h * (0.48 if van else rng.uniform(0.5, 0.58))
    base = pick(rng, CAR_COLORS, 10)
    body = look.color(base, z)
    dark = look.color(base * 0.55, z)
    glass = look.color(jitter(rng, (55, 45, 40), 12) if rng.random() < 0.75 else look.sky_horizon * 0.55, z)
    tyre = look.color((22, 22, 24), z)
    x = s + view.offset(z)
    _vehicle_shadow(f, x, z, w, length)
    # Visible side (the one facing the camera) with wheels and side windows.
    if abs(x) > w / 2:
        sgn = 1.0 if x > 0 else -1.0
        s_side = s - sgn * w / 2
        L = length
        if van:
            cab = [(0.02 * L, body_h), (0.92 * L, body_h), (0.85 * L, h), (0.02 * L, h)]
        elif oncoming:
            cab = [(0.22 * L, body_h), (0.95 * L, body_h), (0.78 * L, h), (0.45 * L, h)]
        else:
            cab = [(0.05 * L, body_h), (0.78 * L, body_h), (0.55 * L, h), (0.22 * L, h)]
        cab = np.array(cab)
        canvas.fill(view.side(s_side, z, np.array([(0, 0.22), (L, 0.22), (L, body_h), (0, body_h)])), dark, index)
        canvas.fill(view.side(s_side, z, cab), dark, index)
        centre = cab.mean(axis=0)
        canvas.fill(view.side(s_side, z, centre + (cab - centre) * np.array([0.85, 0.75])), glass, index)
        wheels = np.stack([ellipse(dz, 0.32, 0.33, 0.32, 10) for dz in (0.18 * length, 0.8 * length)])
        canvas.fill(view.side(s_side, z, wheels), tyre, index)
    # Roof, seen from a camera higher than the car.
    if view.camera_height > h + 0.05:
        zr = z + length * np.array([0.25, 0.55]) if not van else z + length * np.array([0.03, 0.85])
        roof = view.project(x + np.array([-0.36, 0.36, 0.36, -0.36]) * w, h, np.array([zr[0], zr[0], zr[1], zr[1]]))
        canvas.fill(roof, look.color(base * 1.05, z), index)
    # Rear (or front) face.
    hw = w / 2
    top_hw = hw * (0.9 if van else 0.72)
    wheels = rects(np.array([-hw + 0.02, hw - 0.27]), np.array([-hw + 0.27, hw - 0.02]), 0.0, 0.38)
    canvas.fill(view.face(x, z, wheels), tyre, index)
    lower = rects(-hw, hw, 0.2, body_h)
    cabin = np.array([(-hw * 0.94, body_h), (hw * 0.94, body_h), (top_hw, h), (-top_hw, h)])
    canvas.fill(view.face(x, z, np.stack((lower, cabin))), body, index)
    canvas.fill(view.face(x, z, rects(-hw, hw, 0.2, 0.38)), dark, index)  # bumper
    wy0, wy1 = body_h + 0.06, h - 0.07
    window = np.array([(-hw * 0.84, wy0), (hw * 0.84, wy0), (top_hw * 0.88, wy1), (-top_hw * 0.88, wy1)])
    if oncoming:
        canvas.fill(view.face(x, z, window), glass, index)
        lights = rects(np.array([-hw + 0.06, hw - 0.36]), np.array([-hw + 0.36, hw - 0.06]), body_h - 0.2, body_h - 0.07)
        light_col = look.color((235, 250, 255), z, emissive=True) if look.night else look.color((200, 210, 215), z)
        canvas.fill(view.face(x, z, lights), light_col, index)
        canvas.fill(view.face(x, z, rects(-0.3, 0.3, body_h - 0.24, body_h - 0.08)), look.color((30, 30, 30), z), index)
    else:
        canvas.fill(view.face(x, z, window), glass, index)
        lights = rects(np.array([-hw + 0.03, hw - 0.3]), np.array([-hw + 0.3, hw - 0.03]), body_h - 0.22, body_h - 0.05)
        light_col = look.color((30, 30, 255), z, emissive=True) if look.night else look.color((35, 35, 170), z)
        canvas.fill(view.face(x, z, lights), light_col, index)
        canvas.fill(view.face(x, z, rects(-0.26, 0.26, 0.42, 0.54)), look.color((215, 215, 215), z), index)  # plate
    f.things[index] = ThingOnGround(CAR, z, -x, w, length, h)

def draw_truck(f: Frame, index: int, s: float, z: float, length: float, oncoming: bool) -> None:
    """A box truck of segment index ``index`` (cab ahead, or facing the camera when ``oncoming``), placed as
    :func:`draw_car` places a car."""
    rng, canvas, view, look = f.rng, f.canvas, f.view, f.look
    w = rng.uniform(2.35, 2.55)
    box_h = rng.uniform(3.0, 3.9)
    cab_h = rng.uniform(2.6, 3.0)
    cab_l = 2.3
    box_base = rng.uniform(0.95, 1.2)
    base = pick(rng, TRUCK_COLORS, 10)
    cab_base = pick(rng, TRUCK_COLORS, 10) if rng.random() < 0.5 else base
    tyre = look.color((22, 22, 24), z)
    chassis = look.color((40, 40, 45), z)
    glass = look.color(jitter(rng, (60, 50, 45), 10), z)
    x = s + view.offset(z)
    hw = w / 2
    _vehicle_shadow(f, x, z, w, length)
    box_z0 = z + (cab_l + 0.3 if oncoming else 0.0)
    box_len = length - cab_l - 0.3
    cab_z0 = z if oncoming else z + box_len + 0.3
    if abs(x) > hw:
        sgn = 1.0 if x > 0 else -1.0
        s_side = s - sgn * hw
        canvas.fill(view.side(s_side, box_z0, rects(0.0, box_len, box_base, box_h)), look.color(base * 0.8, z), index)
        canvas.fill(view.side(s_side, cab_z0, rects(0.0, cab_l, 0.6, cab_h)), look.color(cab_base * 0.8, z), index)
        canvas.fill(view.side(s_side, cab_z0, rects(0.25 if oncoming else 1.1, 1.2 if oncoming else 2.05, cab_h * 0.6, cab_h - 0.2)), glass, index)
        canvas.fill(view.side(s_side, z, rects(0.0, length, 0.5, box_base)), chassis, index)
        axles = (0.9, 2.2, length - 1.5) if not oncoming else (1.4, length - 2.2, length - 0.9)
        canvas.fill(view.side(s_side, z, np.stack([ellipse(a, 0.5, 0.5, 0.5, 10) for a in axles])), tyre, index)
    if oncoming:
        # The box's front shows above the cab, then the cab's front face.
        canvas.fill(view.face(x, box_z0, rects(-hw, hw, box_base, box_h)), look.color(base * 0.9, z), index)
        canvas.fill(view.face(x, z, rects(np.array([-hw + 0.05, hw - 0.45]), np.array([-hw + 0.45, hw - 0.05]), 0.0, 1.0)), tyre, index)
        canvas.fill(view.face(x, z, rects(-hw + 0.05, hw - 0.05, 0.45, cab_h)), look.color(cab_base, z), index)
        canvas.fill(view.face(x, z, rects(-hw + 0.2, hw - 0.2, cab_h * 0.6, cab_h - 0.15)), glass, index)
        canvas.fill(view.face(x, z, rects(-0.7, 0.7, 0.6, 1.3)), chassis, index)
        lights = rects(np.array([-hw + 0.12, hw - 0.45]), np.array([-hw + 0.45, hw - 0.12]), 0.65, 0.9)
        canvas.fill(view.face(x, z, lights), look.color((235, 250, 255), z, emissive=True) if look.night else look.color((200, 210, 215), z), index)
    else:
        wheels = rects(np.array([-hw + 0.05, hw - 0.65]), np.array([-hw + 0.65, hw - 0.05]), 0.0, 0.95)
        canvas.fill(view.face(x, z, wheels), tyre, index)
        canvas.fill(view.face(x, z, rects(-hw + 0.1, hw - 0.1, 0.45, 0.62)), chassis, index)  # under-run bar
        canvas.fill(view.face(x, z, rects(-hw, hw, box_base, box_h)), look.color(base, z), index)
        seams = rects(np.array([-0.03, -hw + 0.05, hw - 0.09]), np.array([0.03, -hw + 0.09, hw - 0.05]), box_base + 0.1, box_h - 0.1)
        canvas.fill(view.face(x, z, seams), look.color(base * 0.6, z), index)
        lights = rects(np.array([-hw + 0.1, hw - 0.4]), np.array([-hw + 0.4, hw - 0.1]), box_base - 0.35, box_base - 0.12)
        canvas.fill(view.face(x, z, lights), look.color((30, 30, 255), z, emissive=True) if look.night else look.color((35, 35, 170), z), index)
    f.things[index] = ThingOnGround(TRUCK, z, -x, w, length, box_h)  # the box is higher than the cab

def draw_pedestrian(f: Frame, index: int, s: float, z: float) -> None:
    """A pedestrian of segment index ``index`` standing ``s`` metres right of the road's reference line at
    depth ``z``: legs mid-stride, arms, torso (or skirt), head and hair, sometimes a bag."""
    rng, canvas, view, look = f.rng, f.canvas, f.view, f.look
    hp = rng.uniform(1.5, 1.95) if rng.random() < 0.9 else rng.uniform(1.05, 1.4)
    wscale = rng.uniform(0.85, 1.2) * hp
    x = s + view.offset(z)
    skin = look.color(pick(rng, SKIN, 8), z)
    shirt = look.color(pick(rng, CLOTHES, 15), z)
    pants = look.color(pick(rng, PANTS, 12), z)
    hair = look.color(pick(rng, HAIR, 8), z)
    shoes = look.color((30, 30, 35), z)
    stride = rng.uniform(-0.1, 0.1)
    swing = rng.uniform(-0.06, 0.06)
    skirt = rng.random() < 0.15

    def pts(a):  # (dx, y) in fractions of the height → world offsets
        a = np.asarray(a, np.float64)
        return np.stack((a[..., 0] * wscale, a[..., 1] * hp), -1)

    hip = 0.5
    legs = np.array(
        [
            [(-0.1, hip), (0.0, hip), (-0.04 + stride + 0.035, 0.0), (-0.04 + stride - 0.035, 0.0)],
            [(0.0, hip), (0.1, hip), (0.04 - stride + 0.035, 0.0), (0.04 - stride - 0.035, 0.0)],
        ]
    )
    canvas.fill_each(view.face(x, z, pts(legs)), pants, index)
    feet = rects(np.array([-0.085 + stride, -0.005 - stride]), np.array([0.005 + stride, 0.085 - stride]), 0.0, 0.035)
    canvas.fill_each(view.face(x, z, pts(feet)), shoes, index)
    torso = np.array([(-0.125, hip - 0.03), (0.125, hip - 0.03), (0.14, 0.82), (-0.14, 0.82)])
    if skirt:
        torso = np.array([(-0.16, 0.36), (0.16, 0.36), (0.14, 0.82), (-0.14, 0.82)])
    arms = np.array(
        [
            [(-0.175, 0.81), (-0.12, 0.81), (-0.14 - swing, 0.46), (-0.19 - swing, 0.46)],
            [(0.12, 0.81), (0.175, 0.81), (0.19 + swing, 0.46), (0.14 + swing, 0.46)],
        ]
    )
    canvas.fill(view.face(x, z, pts(arms)), shirt, index)
    canvas.fill(view.face(x, z, pts(torso)), shirt, index)
    hands = np.stack([ellipse(-0.165 - swing, 0.45, 0.025, 0.025, 8), ellipse(0.165 + swing, 0.45, 0.025, 0.025, 8)])
    canvas.fill(view.face(x, z, pts(hands)), skin, index)
    canvas.fill(view.face(x, z, pts(rects(-0.03, 0.03, 0.8, 0.85))), skin, index)  # neck
    canvas.fill(view.face(x, z, pts(ellipse(0.0, 0.9, 0.055, 0.068, 12))), skin, index)
    hair_poly = ellipse(0.0, 0.915, 0.058, 0.06, 12)
    hair_poly = hair_poly[hair_poly[:, 1] >= 0.905]
    canvas.fill(view.face(x, z, pts(hair_poly)), hair, index)
    if rng.random() < 0.25:  # bag
        side = rng.choice((-1.0, 1.0))
        canvas.fill(view.face(x, z, pts(rects(side * 0.13, side * 0.24, 0.45, 0.6))), look.color(pick(rng, CLOTHES, 20), z), index)
    # Arms at the shoulders span 2 * 0.175 of the width scale; the hair's top is at 0.975 of the stature.
    f.things[index] = ThingOnGround(PERSON, z, -x, 0.35 * wscale, 0.0, 0.975 * hp)

