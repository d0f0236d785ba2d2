"""The scene's look: light and weather, the sky's and the ground's colours, and the palettes objects draw from.

Everything here changes how a pixel looks, never what it shows, except :attr:`Look.verge_class` (grass or
pavement beyond the road), drawn with the verge's colour.  Colours are BGR float64 in [0, 255].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .types import SIDEWALK, TERRAIN, SyntheticConfig

# Base colours, BGR.
BUILDING_COLORS = np.array(
    [
        (150, 170, 190), (120, 130, 140), (60, 70, 150), (175, 190, 205), (90, 100, 115), (200, 205, 210),
        (110, 140, 170), (140, 120, 100), (70, 90, 120), (160, 160, 150), (85, 85, 85), (130, 160, 200),
    ],
    np.float64,
)
CAR_COLORS = np.array(
    [
        (235, 235, 235), (30, 30, 32), (185, 185, 180), (110, 110, 112), (40, 40, 170), (150, 75, 30),
        (95, 45, 25), (60, 110, 55), (40, 190, 225), (150, 175, 195), (30, 110, 220), (70, 70, 90),
        (225, 225, 220), (20, 20, 20), (160, 160, 160),
    ],
    np.float64,
)
TRUCK_COLORS = np.array(
    [(230, 230, 230), (210, 215, 220), (40, 40, 160), (140, 80, 30), (50, 120, 60), (40, 180, 220), (120, 120, 120)],
    np.float64,
)
SKIN = np.array([(160, 190, 235), (120, 160, 210), (90, 125, 180), (60, 85, 130), (40, 60, 95)], np.float64)
HAIR = np.array([(20, 20, 25), (30, 45, 70), (60, 90, 130), (120, 170, 210), (160, 160, 165)], np.float64)
CLOTHES = np.array(
    [
        (30, 30, 30), (60, 40, 30), (130, 70, 30), (40, 40, 150), (200, 200, 200), (60, 100, 60), (40, 120, 200),
        (120, 110, 100), (90, 60, 120), (150, 150, 40), (30, 170, 220), (80, 80, 80),
    ],
    np.float64,
)
PANTS = np.array([(110, 60, 30), (40, 35, 30), (70, 70, 70), (140, 170, 190), (90, 50, 20), (25, 25, 25)], np.float64)


def jitter(rng: np.random.Generator, base, amount: float) -> np.ndarray:
    """``base`` (3,) with each channel moved by up to ``amount`` either way, clipped to [0, 255]."""
    return np.clip(np.asarray(base, np.float64) + rng.uniform(-amount, amount, 3), 0, 255)


def pick(rng: np.random.Generator, table: np.ndarray, amount: float = 12.0) -> np.ndarray:
    """A random row of the palette ``table`` (N, 3), jittered by ``amount``."""
    return jitter(rng, table[rng.integers(len(table))], amount)


@dataclass(frozen=True)
class Look:
    """Light, weather and the colours of the sky and the ground."""

    night: bool
    fog: bool
    #: Sunlit, with shadows cast on the road (never at night or in fog).
    sunny: bool
    #: Gain of the light on every non-emissive surface.
    ambient: float
    sky_top: np.ndarray
    sky_horizon: np.ndarray
    #: The colour distant surfaces fade into.
    haze: np.ndarray
    #: Depth (metres) at which a surface is 63 % haze.
    visibility: float
    road_color: np.ndarray
    sidewalk_color: np.ndarray
    kerb_color: np.ndarray
    #: Cityscapes label id of the ground beyond the road and sidewalks: terrain (grass) or sidewalk (pavement).
    verge_class: int
    verge_color: np.ndarray
    #: Lane paint.
    white: np.ndarray
    yellow: np.ndarray

    def color(self, base, z: float | None = None, emissive: bool = False) -> tuple[float, float, float]:
        """A surface colour under the scene's light (unless ``emissive``), faded into the haze with distance ``z``."""
        c = np.asarray(base, np.float64)
        if not emissive:
            c = c * self.ambient
        if z is not None:
            a = 1.0 - math.exp(-max(z, 0.0) / self.visibility)
            c = c * (1.0 - a) + self.haze * a
        return (float(c[0]), float(c[1]), float(c[2]))


def sample_look(rng: np.random.Generator, cfg: SyntheticConfig, urban: bool) -> Look:
    """The weather, the light and the colours, drawn from ``rng``; ``urban`` scenes have paler night skies and
    may have paved verges."""
    night = rng.random() < cfg.night_prob
    fog = rng.random() < cfg.fog_prob
    sunny = (not night) and (not fog) and rng.random() < cfg.shadow_prob
    if night:
        ambient = rng.uniform(0.2, 0.34)
        top = jitter(rng, (30, 12, 6), 6)
        horizon = jitter(rng, (60, 50, 45), 12) if urban else jitter(rng, (40, 28, 22), 8)
    else:
        ambient = rng.uniform(0.9, 1.08) if sunny else rng.uniform(0.75, 0.95)
        kind = rng.random()
        if fog:
            top, horizon = jitter(rng, (195, 195, 192), 12), jitter(rng, (215, 215, 212), 10)
        elif kind < 0.55:  # clear blue
            top, horizon = jitter(rng, (205, 140, 75), 25), jitter(rng, (240, 225, 205), 14)
        elif kind < 0.85:  # overcast
            g = rng.uniform(160, 205)
            top, horizon = jitter(rng, (g + 8, g, g - 6), 8), jitter(rng, (g + 28, g + 26, g + 22), 8)
        else:  # dusk / dawn
            top, horizon = jitter(rng, (150, 105, 80), 15), jitter(rng, (150, 185, 240), 15)
    sky_top = np.clip(top, 0, 255)
    sky_horizon = np.clip(horizon, 0, 255)
    haze = sky_horizon.copy() if not night else sky_horizon * 0.8
    visibility = rng.uniform(60.0, 160.0) if fog else rng.uniform(400.0, 1500.0)
    asphalt = rng.uniform(62, 118) if rng.random() < 0.85 else rng.uniform(118, 140)
    road_color = np.clip(asphalt + rng.uniform(-5, 5, 3) + rng.uniform(-4, 4), 0, 255)
    sidewalk_color = jitter(rng, (rng.uniform(120, 175),) * 3, 14)
    kerb_color = np.clip(sidewalk_color * rng.uniform(1.05, 1.25), 0, 255)
    verge_class = SIDEWALK if (urban and rng.random() < 0.5) else TERRAIN
    if verge_class == TERRAIN:
        grass = (45, 125, 85) if rng.random() < 0.7 else (70, 140, 150)  # green or dry
        verge_color = jitter(rng, grass, 18)
    else:
        verge_color = np.clip(sidewalk_color * rng.uniform(0.85, 1.0), 0, 255)
    white = jitter(rng, (228, 230, 230), 14)
    yellow = jitter(rng, (40, 190, 225), 15)
    return Look(night, fog, sunny, ambient, sky_top, sky_horizon, haze, visibility, road_color, sidewalk_color,
                kerb_color, verge_class, verge_color, white, yellow)
