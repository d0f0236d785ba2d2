"""Backends by name: ``register_backend``, ``create_backend``, ``list_backends``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from ..errors import ConfigurationError, PanopticPerceptionError

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
    """Build the backend ``name``, its network part in torch, by the constructor its arguments call for:

    - ``network=MODULE`` (and no ``weights``): :meth:`~.base.Backend.from_network`;
    - ``weights`` a TorchScript file: :meth:`~.base.Backend.from_torchscript`;
    - otherwise :meth:`~.base.Backend.from_checkpoint` (``weights`` a checkpoint path, or None for the
      bundled default weights).

    ``**options``: the constructor's keyword arguments (``input_size``, ``thresholds``, ``fast``,
    ``allow_random_weights``) and the backend's config options; ``fast`` and ``allow_random_weights`` do not
    apply to a TorchScript file or an in-memory network and are ignored there. Another runtime (ONNX
    Runtime, TensorRT) is attached by :func:`panoptic_perception.create_backend`, which takes ``runtime``.

    Raises:
        UnknownBackendError: no backend of that name.
        ConfigurationError: both ``weights`` and ``network``; bad options.
        WeightsError: see the constructors.
    """
    from .weights import is_torchscript_archive

    cls = backend_class(name)
    network = options.pop("network", None)
    if network is None and not (weights is not None and is_torchscript_archive(weights)):
        return cls.from_checkpoint(weights, device, **options)
    if network is not None and weights is not None:
        raise ConfigurationError("pass either weights or a network, not both")
    options.pop("fast", None)
    options.pop("allow_random_weights", None)
    if network is not None:
        return cls.from_network(network, device, **options)
    return cls.from_torchscript(str(weights), device, **options)
