"""Backends by name: ``register_backend``, ``create_backend``, ``list_backends``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from ..errors import PanopticPerceptionError

if TYPE_CHECKING:
    from .base import Backend

BackendType = TypeVar("BackendType", bound="type[Backend]")

_BACKENDS: dict[str, "type[Backend]"] = {}


class UnknownBackendError(PanopticPerceptionError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def register_backend(name: str) -> Callable[[BackendType], BackendType]:
    """Class decorator that makes a backend available under ``name``."""

    def register(cls: BackendType) -> BackendType:
        if name in _BACKENDS and _BACKENDS[name] is not cls:
            raise ValueError(f"backend {name!r} is already registered")
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return register


def list_backends() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> "type[Backend]":
    try:
        return _BACKENDS[name]
    except KeyError:
        raise UnknownBackendError(f"unknown backend {name!r}; available: {', '.join(list_backends())}") from None


def create_backend(name: str, weights: str | None = None, device: str = "cpu", **options) -> "Backend":
    """Build the backend ``name`` with ``weights`` (a path; None for the backend's bundled default)."""
    return backend_class(name)(weights=weights, device=device, **options)
