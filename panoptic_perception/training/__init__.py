"""Offline training, the sibling of the runtime: it imports the backends, never the reverse.

A training config is a YAML file whose ``backend`` key picks the trainer; the other keys are that
trainer's config dataclass (e.g. :class:`~.config.TwinLiteNetTrainConfig`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import TwinLiteNetTrainConfig, from_dict
from .engine import TrainConfig, train
from .recipes import RECIPES
from .twinlitenet import train_twinlitenet

TRAINERS = {"twinlitenet": (TwinLiteNetTrainConfig, train_twinlitenet)}


def train_from_config(path: str | Path, resume: bool = False, output_dir: str | None = None, progress: bool = True) -> dict:
    """Train as the YAML config at ``path`` says; ``output_dir`` overrides the config's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    backend = values.get("backend", "twinlitenet")
    if output_dir:
        values["output_dir"] = output_dir
    if backend in RECIPES:
        config = from_dict(TrainConfig, values, f"{path.name}: ")
        return train(config, RECIPES[backend](config), resume=resume, progress=progress)
    values.pop("backend", None)
    if backend not in TRAINERS:
        raise ValueError(f"no trainer for backend {backend!r}; available: {', '.join(sorted({*TRAINERS, *RECIPES}))}")
    config_type, trainer = TRAINERS[backend]
    return trainer(from_dict(config_type, values, f"{path.name}: "), resume=resume, progress=progress)


__all__ = ["TRAINERS", "TwinLiteNetTrainConfig", "train_from_config", "train_twinlitenet"]
