"""Reading training configurations: YAML mappings into dataclasses, unknown keys reported by name."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


_SCALARS = (bool, int, float, str)


def _check_scalar(hint: Any, value: Any, place: str) -> None:
    """Raise ValueError where ``value`` is not of the scalar type ``hint`` (int passes for float; None for an
    optional one); other hints (lists, mappings, tuples) are left to the dataclass's own checks."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    scalars = tuple(t for t in options if t in _SCALARS)
    if not scalars or len(scalars) + (type(None) in options) < len(options):
        return
    if value is None and type(None) in options:
        return
    accepted = scalars + ((int,) if float in scalars else ())
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in scalars):
        raise ValueError(f"{place} must be {' or '.join(t.__name__ for t in scalars)}, got {value!r}")


def from_dict(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses (and lists of them).

    Raises ValueError naming the place (``where`` + key) of an unknown key, of a value that is not a
    mapping (or a list) where one is expected, or of a scalar of the wrong type (``epochs: abc``)."""
    if not isinstance(values, dict):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown keys in {where.rstrip(' :.') or cls.__name__}: {', '.join(unknown)}")
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
        else:
            _check_scalar(hint, value, f"{where}{name}")
        kwargs[name] = value
    return cls(**kwargs)
