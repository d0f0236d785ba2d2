"""Offline training, the sibling of the runtime: it imports the backends, never the reverse.

A training config is a YAML file read into a :class:`~.engine.TrainConfig`; its ``backend`` key picks
the recipe (:data:`~.recipes.RECIPES`, one per backend) that the shared loop :func:`~.engine.train` runs.
Raises FileNotFoundError for a missing file and ValueError for an unknown backend or key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from .config import from_dict
from ..errors import ConfigurationError
from .engine import TrainConfig, train
from .recipes import RECIPES


def apply_overrides(values: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``dotted.key=value`` pairs in the nested config dict ``values`` (in place; also returned). A value
    is read as YAML (``none``, ``0.3``, ``[128, 128]``, ``{name: sgd}``); a number indexes a list
    (``data.train.0.count=4``). Raises ConfigurationError for a pair without ``=``, a key below a value that is not a
    mapping or list, or a list index that is not a number in range."""
    for pair in overrides:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"override {pair!r} is not KEY=VALUE (e.g. model.layer_connections=none)")
        *parents, leaf = key.split(".")
        node = values
        for name in parents:
            node = node.setdefault(name, {}) if isinstance(node, dict) else node[_list_index(node, name, pair)]
            if not isinstance(node, (dict, list)):
                raise ConfigurationError(f"override {pair!r}: {name!r} is not a section of the config")
        node[leaf if isinstance(node, dict) else _list_index(node, leaf, pair)] = yaml.safe_load(text)
    return values


def _list_index(items: list, name: str, pair: str) -> int:
    if not (name.isdigit() and int(name) < len(items)):
        raise ConfigurationError(f"override {pair!r}: {name!r} must index a list of {len(items)} (0..{len(items) - 1})")
    return int(name)


def load_train_config(path: str | Path, overrides: Sequence[str] = (), output_dir: str | None = None) -> tuple[TrainConfig, Any]:
    """The :class:`~.engine.TrainConfig` of the YAML file at ``path`` with ``overrides`` (``dotted.key=value``,
    see :func:`apply_overrides`) applied and ``output_dir`` replacing the file's, and its backend's recipe
    (which checks the ``model`` and ``recipe`` options). Raises FileNotFoundError for a missing file and
    ConfigurationError for an unknown backend, key or option."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    values = apply_overrides(yaml.safe_load(path.read_text()) or {}, overrides)
    if output_dir:
        values["output_dir"] = output_dir
    backend = values.get("backend")
    if backend not in RECIPES:
        raise ConfigurationError(f"{path.name}: no recipe for backend {backend!r}; available: {', '.join(sorted(RECIPES))}")
    config = from_dict(TrainConfig, values, f"{path.name}: ")
    try:
        recipe = RECIPES[backend](config)
    except ValueError as error:  # the recipe's checks of its options (an input size it cannot take)
        raise ConfigurationError(str(error)) from error
    return config, recipe


def train_from_config(path: str | Path, resume: bool = False, output_dir: str | None = None, progress: bool = True,
                      overrides: Sequence[str] = ()) -> dict:
    """Train as the YAML config at ``path`` says (see :func:`load_train_config`)."""
    config, recipe = load_train_config(path, overrides, output_dir)
    return train(config, recipe, resume=resume, progress=progress)


__all__ = ["apply_overrides", "load_train_config", "train_from_config"]
