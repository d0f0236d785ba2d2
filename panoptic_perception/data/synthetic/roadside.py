"""The roadside: building facades with windows and shop fronts (town scenes), trees, hedges and houses
(country roads), street lamps and utility poles, all following the road's curve."""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from .canvas import Frame, Placement
from .geometry import ellipse
from .look import BUILDING_COLORS, CLOTHES, jitter, pick
from .types import BUILDING, POLE, VEGETATION


def sample_roadside(f: Frame) -> list[Placement]:
    """The roadside objects of both sides, left first, each with the depth it is drawn at (far to near)."""
    rng, road = f.rng, f.road
    objects: list[Placement] = []
    for side, sign in ((0, -1.0), (1, 1.0)):
        edge = road.left if side == 0 else road.right
        outer = road.outer[side]
        has_walk = road.sidewalks[side]
        kerb = edge + sign * 0.4  # poles stand on the sidewalk / verge just beyond the kerb
        if road.urban:
            z = rng.uniform(-15.0, 12.0)
            z_end = rng.uniform(120.0, 320.0)
            while z < z_end:
                if rng.random() < 0.35:
                    z += rng.uniform(3.0, 14.0)  # gap between buildings
                length = rng.uniform(8.0, 35.0)
                height = rng.uniform(5.0, 16.0) if rng.random() < 0.6 else rng.uniform(14.0, 40.0)
                setback = rng.uniform(0.0, 1.0) if has_walk else rng.uniform(1.0, 6.0)
                s_face = outer + sign * setback
                z2 = z + length
                if z2 > 2.0:
                    objects.append((z2, partial(draw_building, f, s_face, sign, max(z, 1.5), z2, height, z >= 1.5)))
                z = z2
            if has_walk and rng.random() < 0.45:  # trees along the sidewalk
                z = rng.uniform(8.0, 20.0)
                step = rng.uniform(9.0, 20.0)
                while z < 140.0:
                    s_t = outer - sign * rng.uniform(0.6, 1.0)
                    objects.append((z, partial(draw_tree, f, s_t, z, False, 0.7)))
                    z += step * rng.uniform(0.8, 1.2)
        else:
            if rng.random() < 0.5:  # hedge / bushes along the verge
                z1 = rng.uniform(2.0, 40.0)
                z2 = z1 + rng.uniform(20.0, 150.0)
                s_h = outer + sign * rng.uniform(0.5, 3.0)
                objects.append((z2, partial(draw_hedge, f, s_h, sign, z1, z2)))
            for _ in range(int(rng.integers(3, 16))):
                z = math.exp(rng.uniform(math.log(7.0), math.log(180.0)))
                s_t = outer + sign * rng.uniform(1.5, 14.0)
                objects.append((z, partial(draw_tree, f, s_t, z, rng.random() < 0.3, 1.0)))
            if rng.random() < 0.3:  # a house set back from the road
                z1 = rng.uniform(20.0, 80.0)
                s_face = outer + sign * rng.uniform(5.0, 15.0)
                objects.append((z1 + 12.0, partial(draw_building, f, s_face, sign, z1, z1 + rng.uniform(8.0, 14.0), rng.uniform(4.0, 8.0), True)))
        if rng.random() < (0.55 if road.urban else 0.35):  # street lamps / utility poles
            z = rng.uniform(5.0, 30.0)
            step = rng.uniform(22.0, 45.0)
            lamp = road.urban or rng.random() < 0.5
            while z < 220.0:
                objects.append((z, partial(draw_pole, f, kerb, sign, z, lamp)))
                z += step
    return objects


def draw_building(f: Frame, s_face: float, sign: float, z1: float, z2: float, height: float, front_wall: bool) -> None:
    """A facade at ``s_face`` from depth ``z1`` to ``z2`` with cornice, shop band and windows; with
    ``front_wall``, also its near end wall (facing the camera, away from the road on side ``sign``)."""
    rng, canvas, view, look = f.rng, f.canvas, f.view, f.look
    base = pick(rng, BUILDING_COLORS, 18)
    zmid = 0.5 * (z1 + z2)
    n = 2 if view.straight else max(2, int((z2 - z1) / 4.0) + 1)
    zs = np.linspace(z1, z2, n)
    bottom = view.road_point(s_face, 0.0, zs)
    top = view.road_point(s_face, height, zs)
    canvas.fill(np.concatenate((bottom, top[::-1])), look.color(base, zmid), BUILDING)
    if front_wall:  # the wall facing the camera at the near end, shaded differently
        depth = rng.uniform(8.0, 15.0)
        x = s_face + view.offset(z1) + np.array([0.0, sign * depth])
        wall = view.project(np.array([x[0], x[1], x[1], x[0]]), np.array([0.0, 0.0, height, height]), z1)
        canvas.fill(wall, look.color(base * rng.uniform(0.6, 0.85), z1), BUILDING)
    # Roof cornice and ground-floor shop band.
    if rng.random() < 0.6:
        band = np.concatenate((view.road_point(s_face, height - 0.6, zs), top[::-1]))
        canvas.fill(band, look.color(base * 0.7, zmid), BUILDING)
    floor_h = rng.uniform(2.8, 3.6)
    ground_h = rng.uniform(3.2, 4.5)
    shop = rng.random() < (0.5 if f.road.urban else 0.0)
    if shop and height > ground_h + 1.0:
        band = np.concatenate((bottom, view.road_point(s_face, ground_h, zs)[::-1]))
        canvas.fill(band, look.color(pick(rng, CLOTHES, 20) * 0.7, zmid), BUILDING)
    # Windows on a grid over the facade, each quad projected with the curve.
    spacing = rng.uniform(2.5, 4.0)
    win_w = spacing * rng.uniform(0.4, 0.7)
    win_h = floor_h * rng.uniform(0.4, 0.6)
    cols = np.arange(z1 + 0.8, z2 - win_w - 0.5, spacing)
    rows = np.arange(ground_h + 0.6 if shop else 1.0, height - win_h - 0.8, floor_h)
    lit = rng.random(len(cols) * len(rows)) < (rng.uniform(0.15, 0.6) if look.night else 0.0)
    if len(cols) and len(rows) and z1 < 160.0:
        za, ya = np.meshgrid(cols, rows)
        za, ya = za.ravel(), ya.ravel()
        zc = np.stack((za, za + win_w, za + win_w, za), -1)
        yc = np.stack((ya, ya, ya + win_h, ya + win_h), -1)
        quads = view.road_point(s_face, yc, zc)
        glass = look.color(jitter(rng, (70, 60, 50), 25) if rng.random() < 0.7 else look.sky_horizon * 0.7, zmid)
        if (~lit).any():
            canvas.fill(quads[~lit], glass, BUILDING)
        if lit.any():
            canvas.fill(quads[lit], look.color(jitter(rng, (90, 190, 245), 20), zmid, emissive=True), BUILDING)
    if shop and height > ground_h + 1.0:
        za = np.arange(z1 + 0.5, z2 - 2.0, rng.uniform(3.0, 6.0))
        if len(za):
            zc = np.stack((za, za + 2.5, za + 2.5, za), -1)
            yc = np.broadcast_to(np.array([0.4, 0.4, ground_h - 0.6, ground_h - 0.6]), zc.shape)
            quads = view.road_point(s_face, yc, zc)
            c = look.color((120, 110, 90), zmid, emissive=False) if not look.night else look.color((120, 200, 240), zmid, emissive=True)
            canvas.fill(quads, c, BUILDING)


def draw_tree(f: Frame, s: float, z: float, conifer: bool, size: float) -> None:
    """A tree at ``s`` metres beside the road at depth ``z``: a conifer, or a leafy canopy scaled by ``size``."""
    rng, canvas, view, look = f.rng, f.canvas, f.view, f.look
    x = s + view.offset(z)
    trunk_h = rng.uniform(1.5, 3.5)
    trunk_w = rng.uniform(0.2, 0.45)
    green = jitter(rng, (40, 105, 55), 22)
    trunk = view.project(np.array([x - trunk_w / 2, x + trunk_w / 2, x + trunk_w / 2, x - trunk_w / 2]), np.array([0, 0, trunk_h + 1.0, trunk_h + 1.0]), z)
    canvas.fill(trunk, look.color(jitter(rng, (45, 60, 75), 10), z), VEGETATION)
    if conifer:
        r = rng.uniform(1.2, 2.5)
        top = trunk_h + rng.uniform(5.0, 10.0)
        levels = int(rng.integers(3, 6))
        ys = np.linspace(trunk_h * 0.6, top - (top - trunk_h) / levels, levels)
        polys = []
        for i, y0 in enumerate(ys):
            rr = r * (1.0 - 0.7 * i / levels)
            polys.append(view.project(np.array([x - rr, x + rr, x]), np.array([y0, y0, min(y0 + (top - trunk_h) * 0.55, top)]), z))
        canvas.fill_each(polys, look.color(green * 0.75, z), VEGETATION)
        return
    r = rng.uniform(1.5, 3.8) * size
    cy = trunk_h + r * 0.8
    blobs = []
    for _ in range(int(rng.integers(2, 5))):
        bx = x + rng.uniform(-0.6, 0.6) * r
        by = cy + rng.uniform(-0.3, 0.5) * r
        e = ellipse(bx, by, r * rng.uniform(0.6, 1.0), r * rng.uniform(0.55, 0.9), 18, rng.uniform(0.85, 1.12, 18))
        blobs.append(view.project(e[:, 0], e[:, 1], z))
    canvas.fill_each(blobs, look.color(green, z), VEGETATION)
    # Lit and shaded parts of the canopy.
    e = ellipse(x + rng.uniform(-0.3, 0.3) * r, cy + 0.25 * r, 0.55 * r, 0.45 * r, 12, rng.uniform(0.8, 1.15, 12))
    canvas.fill(view.project(e[:, 0], e[:, 1], z), look.color(green * rng.uniform(1.1, 1.3), z), VEGETATION)
    e = ellipse(x + rng.uniform(-0.3, 0.3) * r, cy - 0.35 * r, 0.6 * r, 0.3 * r, 12, rng.uniform(0.8, 1.15, 12))
    canvas.fill(view.project(e[:, 0], e[:, 1], z), look.color(green * 0.7, z), VEGETATION)


def draw_hedge(f: Frame, s: float, sign: float, z1: float, z2: float) -> None:
    """A hedge of uneven height at ``s`` from depth ``z1`` to ``z2``, with its near end (towards ``sign``)."""
    rng, view, look = f.rng, f.view, f.look
    zs = np.geomspace(z1, z2, 24)
    height = rng.uniform(0.8, 2.5) * (1.0 + rng.uniform(-0.25, 0.25, len(zs)))
    bottom = view.road_point(s, 0.0, zs)
    top = view.road_point(s, height, zs)
    green = jitter(rng, (40, 100, 50), 20)
    f.canvas.fill(np.concatenate((bottom, top[::-1])), look.color(green, 0.5 * (z1 + z2)), VEGETATION)
    x = s + view.offset(z1) + np.array([0.0, sign * rng.uniform(0.8, 2.0)])
    end = view.project(np.array([x[0], x[1], x[1], x[0]]), np.array([0.0, 0.0, height[0], height[0]]), z1)
    f.canvas.fill(end, look.color(green * 0.75, z1), VEGETATION)


def draw_pole(f: Frame, s: float, sign: float, z: float, lamp: bool) -> None:
    """A utility pole, or with ``lamp`` a street lamp whose arm reaches over the road (against ``sign``);
    lamps glow at night."""
    rng, canvas, view, look = f.rng, f.canvas, f.view, f.look
    x = s + view.offset(z)
    h = rng.uniform(6.5, 9.5)
    w = rng.uniform(0.14, 0.28)
    col = look.color(jitter(rng, (95, 100, 105) if lamp else (60, 80, 100), 12), z)
    canvas.fill(view.project(np.array([x - w / 2, x + w / 2, x + w / 2, x - w / 2]), np.array([0.0, 0.0, h, h]), z), col, POLE)
    if lamp:
        arm = rng.uniform(1.2, 2.5)
        xe = x - sign * arm
        canvas.fill(view.project(np.array([x, xe, xe, x]), np.array([h - 0.3, h - 0.1, h - 0.02, h - 0.2]), z), col, POLE)
        head = view.project(np.array([xe - 0.35, xe + 0.35, xe + 0.25, xe - 0.25]), np.array([h - 0.25, h - 0.25, h - 0.05, h - 0.05]), z)
        canvas.fill(head, look.color((200, 245, 255), z, emissive=True) if look.night else col, POLE)
