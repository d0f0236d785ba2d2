"""Rendering a scene: the order in which its parts are drawn from the random stream and onto the canvas.

All random choices of a scene come from one ``np.random.default_rng(seed)``, in this order: camera and
road, look, roadside objects, vehicles, pedestrians (their places), then while drawing back to front the
sky, ground, road, sidewalks, lane lines, ground light, skyline and the placed objects (their shapes and
colours), and last the finishing.  Changing this order changes every scene.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ...errors import ConfigurationError
from .actors import sample_pedestrians, sample_vehicles
from .canvas import Canvas, Frame
from .finishing import finish_image, read_labels
from .geometry import Road, View, sample_geometry
from .ground import apply_ground_light, draw_ground, draw_lane_lines, draw_road, draw_sidewalks
from .look import Look, sample_look
from .roadside import sample_roadside
from .sky import draw_sky, draw_skyline
from .types import SyntheticConfig, SyntheticScene


def generate_scene(seed: int, width: int = 640, height: int = 360, config: SyntheticConfig | None = None) -> SyntheticScene:
    """Render the scene of ``seed`` (a non-negative int) at ``width`` x ``height`` (each at least 16).

    Raises:
        ValueError: a negative seed or an image smaller than 16x16.
    """
    seed = int(seed)
    if seed < 0:
        raise ConfigurationError(f"seed must be non-negative, got {seed}")
    if width < 16 or height < 16:
        raise ConfigurationError(f"image size must be at least 16x16, got {width}x{height}")
    return _render(seed, int(width), int(height), config or SyntheticConfig())


class SyntheticScenes:
    """The sequence of scenes with seeds ``first_seed .. first_seed + count - 1`` (rendered on access).

    Raises:
        ValueError: a negative ``count`` or ``first_seed``.
    """

    def __init__(self, count: int, width: int = 640, height: int = 360, first_seed: int = 0, config: SyntheticConfig | None = None) -> None:
        if count < 0:
            raise ConfigurationError(f"count must be non-negative, got {count}")
        if first_seed < 0:
            raise ConfigurationError(f"first_seed must be non-negative, got {first_seed}")
        self.count = int(count)
        self.width = int(width)
        self.height = int(height)
        self.first_seed = int(first_seed)
        self.config = config or SyntheticConfig()

    def __len__(self) -> int:
        return self.count

    def seed_of(self, index: int) -> int:
        """The seed of scene ``index`` (negative counts from the end); IndexError outside the sequence."""
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(f"scene index {index} out of range for {self.count} scenes")
        return self.first_seed + index

    def __getitem__(self, index: int | slice) -> SyntheticScene | list[SyntheticScene]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        return generate_scene(self.seed_of(int(index)), self.width, self.height, self.config)

    def __iter__(self) -> Iterator[SyntheticScene]:
        for i in range(self.count):
            yield generate_scene(self.first_seed + i, self.width, self.height, self.config)


def _render(seed: int, width: int, height: int, cfg: SyntheticConfig) -> SyntheticScene:
    rng = np.random.default_rng(seed)
    view, road = sample_geometry(rng, cfg)
    look = sample_look(rng, cfg, road.urban)
    frame = Frame(rng, cfg, Canvas(width, height), view, road, look)
    objects = sample_roadside(frame)
    vehicles, vehicle_slots = sample_vehicles(frame)
    objects += vehicles
    objects += sample_pedestrians(frame, vehicle_slots)

    draw_sky(frame)
    draw_ground(frame)
    road_depths = draw_road(frame)
    draw_sidewalks(frame, road_depths)
    draw_lane_lines(frame)
    apply_ground_light(frame)
    draw_skyline(frame)
    # Far to near, so that nearer objects occlude farther ones; the sort is stable: equal depths keep the
    # order in which they were placed.
    objects.sort(key=lambda placed: -placed[0])
    for _, draw in objects:
        draw()
    attributes = _attributes(view, road, look)
    attributes.update(finish_image(frame, seed))
    return read_labels(frame, seed, attributes)


def _attributes(view: View, road: Road, look: Look) -> dict:
    """What the camera, the road and the look drew, as :attr:`SyntheticScene.attributes` lists it."""
    return {
        "night": look.night,
        "fog": look.fog,
        "sunny": look.sunny,
        "urban": road.urban,
        "curved": bool(view.curvature != 0.0),
        "curvature": float(view.curvature),
        "s_curve": view.curvature_rate != 0.0,
        "lanes": road.lanes,
        "lane_width": float(road.lane_width),
        "ego_lane": road.ego_lane,
        "two_way": road.two_way,
        "dashed": road.dashed,
        "edge_lines": road.edge_lines,
        "sidewalks": road.sidewalks,
        "horizon": float(view.horizon),
        "camera_height": float(view.camera_height),
    }
