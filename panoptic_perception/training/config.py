"""Reading training configurations: YAML mappings into dataclasses, unknown keys reported by name."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from ..backends.base import scalar_type_error
from ..errors import ConfigurationError

T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses (and lists of them).

    Raises ConfigurationError naming the place (``where`` + key) of an unknown key, of a value that is not
    a mapping (or a list) where one is expected, of a scalar of the wrong type (``epochs: abc``), or of a
    value the dataclass's own checks refuse."""
    if not isinstance(values, dict):
        raise ConfigurationError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigurationError(f"unknown keys in {where.rstrip(' :.') or cls.__name__}: {', '.join(unknown)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list else None
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value, f"{where}{name}.")
        elif item is not None and dataclasses.is_dataclass(item):
            if not isinstance(value, list):
                raise ConfigurationError(f"{where}{name}: expected a list, got {type(value).__name__}")
            value = [from_dict(item, v, f"{where}{name}[{i}].") for i, v in enumerate(value)]
        elif error := scalar_type_error(hint, value):
            raise ConfigurationError(f"{where}{name} {error}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ValueError as error:  # the dataclass's own checks (a value out of range) refuse what was given
        raise ConfigurationError(str(error)) from error
