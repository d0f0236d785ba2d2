"""Offline training, the sibling of the runtime: it imports the backends, never the reverse.

A training config is a YAML file read into a :class:`~.engine.TrainConfig`; its ``backend`` key picks
the recipe (:data:`~.recipes.RECIPES`, one per backend) that the shared loop :func:`~.engine.train` runs.
Raises FileNotFoundError for a missing file and ValueError for an unknown backend or key.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .config import from_dict
from .engine import TrainConfig, train
from .recipes import RECIPES


def train_from_config(path: str | Path, resume: bool = False, output_dir: str | None = None, progress: bool = True) -> dict:
    """Train as the YAML config at ``path`` says; ``output_dir`` overrides the config's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    if output_dir:
        values["output_dir"] = output_dir
    backend = values.get("backend")
    if backend not in RECIPES:
        raise ValueError(f"{path.name}: no recipe for backend {backend!r}; available: {', '.join(sorted(RECIPES))}")
    config = from_dict(TrainConfig, values, f"{path.name}: ")
    return train(config, RECIPES[backend](config), resume=resume, progress=progress)


__all__ = ["train_from_config"]
