"""Training configurations as dataclasses, read from YAML with unknown keys reported by name."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class DataConfig:
    """Where training and validation images come from.

    ``source: synthetic`` generates scenes (seeds ``first_seed .. first_seed + count - 1``; validation
    seeds are disjoint from training seeds). ``source: bdd100k`` reads ``root`` in the YOLOP layout
    (splits ``train`` and ``val``).
    """

    source: str = "synthetic"
    root: str | None = None
    train_count: int = 2000
    val_count: int = 200
    train_first_seed: int = 0
    val_first_seed: int = 1_000_000
    workers: int = 0

    def __post_init__(self) -> None:
        if self.source not in ("synthetic", "bdd100k"):
            raise ValueError(f"data.source must be 'synthetic' or 'bdd100k', got {self.source!r}")
        if self.source == "bdd100k" and not self.root:
            raise ValueError("data.source 'bdd100k' needs data.root")
        if self.source == "synthetic":
            train = range(self.train_first_seed, self.train_first_seed + self.train_count)
            val = range(self.val_first_seed, self.val_first_seed + self.val_count)
            if train.start < val.stop and val.start < train.stop:
                raise ValueError("synthetic training and validation seeds overlap")


@dataclass
class TwinLiteNetTrainConfig:
    """The paper's recipe (§III-C): Adam, learning rate decreasing over epochs, focal + Tversky loss.

    The paper trains 100 epochs at batch 32 on 640x360 BDD100K images. The learning rate follows
    ``lr * (1 - epoch / epochs) ** lr_power`` per epoch (the official poly schedule).
    """

    input_width: int = 640
    input_height: int = 360
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 5e-4
    weight_decay: float = 5e-4
    lr_power: float = 1.5
    focal_gamma: float = 2.0
    tversky_alpha: float = 0.7
    tversky_beta: float = 0.3
    horizontal_flip: bool = True
    val_every: int = 1
    seed: int = 0
    threads: int | None = None
    output_dir: str = "runs/twinlitenet"
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        if self.input_width % 8 or self.input_height % 8:
            raise ValueError(f"input size must be multiples of 8, got {self.input_width}x{self.input_height}")
        if self.epochs < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ValueError("epochs, batch_size and val_every must be at least 1")


def from_dict(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses."""
    if not isinstance(values, dict):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown keys in {where or cls.__name__}: {', '.join(unknown)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, f"{where}{name}.")
        elif item is not None and dataclasses.is_dataclass(item):
            if not isinstance(value, list):
                raise ValueError(f"{where}{name}: expected a list, got {type(value).__name__}")
            value = [from_dict(item, v, f"{where}{name}[{i}].") for i, v in enumerate(value)]
        kwargs[name] = value
    return cls(**kwargs)
