"""The interface every backend implements: BGR image(s) in, :class:`PerceptionResult` (s) out.

A backend is built from a checkpoint (or its bundled default weights), holds one network in eval
mode, and runs pre-processing → network → post-processing, timing each stage. Subclasses say what the
network is (:meth:`Backend.build_network`), how to speed it up for inference
(:meth:`Backend.optimize_network`) and how to turn its outputs into results (:meth:`Backend.postprocess`).
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
import types
import typing
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from ..core.io import sha256_of
from ..core.labels import LabelMap
from ..core.preprocess import Geometry, ResizeMode, as_bgr_images, network_input_size, prepare_batch
from ..core.types import Capability, PerceptionResult, StageTimings
from ..errors import ConfigurationError
from ..nn.reparameterize import reparameterize
from .registry import backend_class, list_backends
from .weights import (
    Checkpoint,
    WeightsError,
    WeightsInfo,
    bundled_weights_path,
    load_state_dict_strictly,
    read_checkpoint,
)

log = logging.getLogger("panoptic_perception")


def resolve_device(device: str | torch.device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device} requested but CUDA is not available on this machine")
    return device


def build_config(config_type: type, values: dict[str, Any]) -> Any:
    """Instantiate a config dataclass, naming unknown keys and values of the wrong type (int, float, bool
    and str fields) instead of failing later with a TypeError deep inside the network. Raises
    ConfigurationError for those, and for a value the config's own checks refuse."""
    names = {f.name for f in dataclasses.fields(config_type)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigurationError(f"unknown {config_type.__name__} options: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    hints = typing.get_type_hints(config_type)
    for name, value in values.items():
        error = scalar_type_error(hints[name], value)
        if error:
            raise ConfigurationError(f"{config_type.__name__} option {name} {error}")
    try:
        return config_type(**values)
    except ValueError as error:  # the config's own checks (a value out of range) refuse what was given
        raise ConfigurationError(str(error)) from error


_SCALARS = (bool, int, float, str)


def scalar_type_error(hint: Any, value: Any) -> str | None:
    """Why ``value`` does not fit the scalar type hint ``hint`` ("must be int, got 'abc'"), or None where it
    fits. int passes for float, bool only for bool, None for an optional hint (``float | None``); other
    hints (lists, tuples, dataclasses) are not checked here."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else (hint,)
    scalars = tuple(t for t in options if t in _SCALARS)
    if not scalars or len(scalars) + (type(None) in options) < len(options) or (value is None and type(None) in options):
        return None
    accepted = scalars + ((int,) if float in scalars else ())
    if isinstance(value, accepted) and not (isinstance(value, bool) and bool not in scalars):
        return None
    got = "no value" if value is None else repr(value)  # `--option output=` reads as None
    return f"must be {' or '.join(t.__name__ for t in scalars)}, got {got}"


def parse_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` backend options (items may hold several, comma-separated); values are read as YAML
    (``width=0.25`` → 0.25, ``fusion=paper`` → "paper"). Raises ConfigurationError on an item without ``=``."""
    import yaml

    options = {}
    for item in pairs:
        for pair in filter(None, (p.strip() for p in item.split(","))):
            key, separator, value = pair.partition("=")
            if not separator or not key.strip():
                raise ConfigurationError(f"backend options are KEY=VALUE, got {pair!r}")
            options[key.strip()] = yaml.safe_load(value)
    return options


@dataclass
class Thresholds:
    """Post-processing thresholds a backend applies to the outputs it produces; adjustable at runtime."""

    score: float = 0.3  # minimum detection confidence
    iou: float = 0.45  # non-maximum suppression IoU
    max_detections: int = 300
    mask: float = 0.5  # probability above which a binary-mask pixel is set (0.5: argmax)

    def __post_init__(self) -> None:
        for name in ("score", "iou", "mask"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"{name} threshold must be in [0, 1], got {value}")
        if self.max_detections < 1:
            raise ConfigurationError(f"max_detections must be at least 1, got {self.max_detections}")


class Backend(abc.ABC):
    """Base class of all backends: pre-processing → network → post-processing, one network in eval mode.

    Built by one of three named constructors (:func:`~panoptic_perception.backends.registry.create_backend`
    picks one from its arguments): :meth:`from_checkpoint` (a checkpoint file, or the bundled weights),
    :meth:`from_torchscript` (a TorchScript file of the whole network) and :meth:`from_network` (an
    in-memory network). The network part runs in torch; :mod:`panoptic_perception.deploy` can attach
    another runtime to a built backend (ONNX Runtime, TensorRT: :func:`~panoptic_perception.deploy.runtime.attach_runtime`).

    ``__init__`` only assembles what a constructor has made:

    Args:
        network: the network, ready to run (eval mode, on ``device``).
        config: the backend's config dataclass (:attr:`config_type`), describing ``network``.
        device: torch device string ("cpu", "cuda", "cuda:1") or device.
        input_size: network input (width, height), rounded to :attr:`input_multiple`; default from ``config``.
        thresholds: post-processing thresholds (default: the backend's ``default_thresholds``); see
            :meth:`set_thresholds`.
        weights_info: where the weights came from (for :meth:`describe`).
        metadata: the checkpoint's metadata (training, validation); empty by default.
        fast: whether ``network`` is the inference-optimised one (:meth:`optimize_network`).
        channels_last: whether batches are prepared in channels-last memory format.
    """

    name: ClassVar[str] = ""  # set by register_backend
    capabilities: ClassVar[frozenset[Capability]]
    label_map: LabelMap  # a class attribute, or set per instance from the config
    config_type: ClassVar[type]  # a dataclass with at least input_width and input_height
    bundled_weights: ClassVar[str | None] = None  # file name under panoptic_perception/weights/
    #: What to pass as ``weights`` for real cameras, named in the bundled weights' warning.
    real_weights: ClassVar[str] = "a checkpoint trained on Cityscapes"
    input_multiple: ClassVar[int] = 32
    resize_mode: ClassVar[ResizeMode] = ResizeMode.LETTERBOX
    pad_value: ClassVar[int] = 114
    accepts_torchscript: ClassVar[bool] = False  # may ``weights`` be a TorchScript file of the whole network?
    #: Other frameworks' formats (:attr:`Checkpoint.origin` values) that :meth:`adapt_checkpoint` converts.
    converts: ClassVar[frozenset[str]] = frozenset()
    #: What else the backend loads, added to the error of weights that do not fit (empty: nothing).
    other_formats: ClassVar[str] = ""
    default_thresholds: ClassVar[Thresholds] = Thresholds()  # the paper's / official post-processing values
    #: The :class:`Thresholds` fields post-processing reads (a semantic-only backend reads none).
    thresholds_used: ClassVar[tuple[str, ...]] = ("score", "iou", "max_detections", "mask")

    def __init__(
        self,
        network: nn.Module,
        config: Any,
        device: str | torch.device = "cpu",
        *,
        input_size: tuple[int, int] | None = None,
        thresholds: Thresholds | None = None,
        weights_info: WeightsInfo = WeightsInfo("in-memory network"),
        metadata: dict[str, Any] | None = None,
        fast: bool = False,
        channels_last: bool = False,
    ) -> None:
        self.log = log.getChild(self.name)
        self.network, self.config = network, config
        self.device = resolve_device(device)
        self.thresholds = thresholds or self.default_thresholds
        self.weights_info, self.metadata = weights_info, metadata or {}
        self.fast, self.channels_last = fast, channels_last
        self.input_size = network_input_size(input_size or (config.input_width, config.input_height), self.input_multiple)
        # What runs the network part; the deploy layer replaces it (and these names) with another runtime.
        self.run_network: Callable[[torch.Tensor], Any] = self.forward
        self.runtime, self.precision = "torch", "fp32"

    @classmethod
    def from_checkpoint(
        cls,
        weights: str | None = None,
        device: str | torch.device = "cpu",
        *,
        input_size: tuple[int, int] | None = None,
        fast: bool = True,
        thresholds: Thresholds | None = None,
        allow_random_weights: bool = False,
        **config: Any,
    ) -> "Backend":
        """The backend with the weights of the checkpoint ``weights`` (a path in this package's format, a
        plain state dict, or another framework's format the backend converts: :meth:`adapt_checkpoint`).

        ``weights=None`` loads the bundled default weights (with a warning that they know synthetic scenes
        only), or runs untrained random weights of any architecture the options give when
        ``allow_random_weights`` is set (for tests and speed measurements only, logged loudly). ``fast``
        runs the inference-optimised network (:meth:`optimize_network`) in channels-last memory format;
        False runs it as trained. ``**config``: architecture and output options of :attr:`config_type`,
        over the checkpoint's own.

        Raises:
            WeightsError: unreadable weights, weights of another backend, or keys / shapes that do not fit
                the network (naming options that differ from the checkpoint's config, the usual cause).
            ValueError: unknown options or values of the wrong type; an unavailable device.
        """
        device = resolve_device(device)  # before reading any weights
        checkpoint, weights_info = cls._resolve_weights(weights, allow_random_weights)
        built = build_config(cls.config_type, {**(checkpoint.config if checkpoint else {}), **config})
        network = cls.build_network(built)
        if checkpoint is not None:
            cls._load_weights(network, checkpoint, weights_info, config)
        backend = cls(network.eval().requires_grad_(False), built, device, input_size=input_size,
                      thresholds=thresholds, weights_info=weights_info, metadata=checkpoint.metadata if checkpoint else {})
        if fast:
            backend.network = backend.optimize_network(backend.network)
        backend.network = backend.network.to(backend.device)
        if fast:  # channels-last makes the CPU convolutions of these networks markedly faster (see benchmark)
            backend.network = backend.network.to(memory_format=torch.channels_last)
        backend.fast = backend.channels_last = fast
        return backend

    @classmethod
    def from_torchscript(
        cls,
        path: str,
        device: str | torch.device = "cpu",
        *,
        input_size: tuple[int, int] | None = None,
        thresholds: Thresholds | None = None,
        **config: Any,
    ) -> "Backend":
        """The backend running the TorchScript file ``path`` as its network (already traced for inference: no
        further optimisation), for backends whose official release is one (:attr:`accepts_torchscript`).

        Raises:
            WeightsError: the backend takes no TorchScript file, or the archive is damaged.
        """
        if not cls.accepts_torchscript:
            raise WeightsError(f"{path} is a TorchScript file; backend {cls.name} needs a state dict checkpoint")
        device = resolve_device(device)
        try:
            with warnings.catch_warnings():  # torch deprecates TorchScript, but it is the official release format
                warnings.simplefilter("ignore", DeprecationWarning)
                network = torch.jit.load(str(path), map_location=device).eval()
        except Exception as error:  # a damaged archive
            raise WeightsError(f"cannot load TorchScript file {path}: {str(error).strip().splitlines()[0]}") from error
        log.getChild(cls.name).info("%s: running the TorchScript file %s as the network", cls.name, path)
        return cls(network, build_config(cls.config_type, config), device, input_size=input_size,
                   thresholds=thresholds, weights_info=WeightsInfo("torchscript", str(path), sha256_of(path)))

    @classmethod
    def from_network(
        cls,
        network: nn.Module,
        device: str | torch.device = "cpu",
        *,
        input_size: tuple[int, int] | None = None,
        thresholds: Thresholds | None = None,
        **config: Any,
    ) -> "Backend":
        """The backend running the in-memory ``network`` as it is (e.g. a model being trained, for validation
        with the backend's own pre- and post-processing): not copied, moved or put in eval mode;
        ``**config`` options describe it."""
        return cls(network, build_config(cls.config_type, config), device, input_size=input_size,
                   thresholds=thresholds)

    @classmethod
    def _load_weights(cls, network: nn.Module, checkpoint: Checkpoint, weights_info: WeightsInfo,
                      options: dict[str, Any]) -> None:
        try:
            load_state_dict_strictly(network, checkpoint.state_dict, weights_info.path or "")
        except WeightsError as error:
            changed = sorted(k for k, v in options.items() if checkpoint.config.get(k, v) != v)
            if not changed and cls.other_formats:
                raise WeightsError(f"{error} ({cls.other_formats})") from error
            if not changed:
                raise
            # The usual cause: an option that changes the architecture, over weights built without it.
            raise WeightsError(f"{error}. The options {', '.join(f'{k}={options[k]!r}' for k in changed)} "
                               f"differ from the config these weights were trained with "
                               f"({', '.join(f'{k}={checkpoint.config[k]!r}' for k in changed)}); options "
                               f"that change the architecture need weights trained with them") from error

    @classmethod
    def _resolve_weights(cls, weights: str | None, allow_random: bool) -> tuple[Checkpoint | None, WeightsInfo]:
        backend_log = log.getChild(cls.name)
        if weights is None and cls.bundled_weights and not allow_random:
            path = bundled_weights_path(cls.bundled_weights)
            backend_log.warning(
                "%s: using the bundled weights %s, trained on synthetic scenes only; they do not know real "
                "roads. Pass weights=PATH (%s) for real cameras.",
                cls.name,
                path.name,
                cls.real_weights,
            )
            source = "bundled"
        elif weights is None:
            if not allow_random:
                raise WeightsError(
                    f"backend {cls.name} needs weights: pass weights=PATH "
                    "(allow_random_weights=True runs untrained weights, for tests only)"
                )
            backend_log.warning("!" * 72)
            backend_log.warning("%s: RANDOM WEIGHTS - outputs are meaningless (allow_random_weights=True)", cls.name)
            backend_log.warning("!" * 72)
            return None, WeightsInfo("random")
        else:
            path, source = weights, "file"
        checkpoint = read_checkpoint(path)
        if checkpoint.backend is not None and checkpoint.backend != cls.name:
            raise WeightsError(f"{path} holds weights of backend {checkpoint.backend!r}, not {cls.name!r}")
        return cls.adapt_checkpoint(checkpoint, str(path)), WeightsInfo(source, str(path), sha256_of(path))

    def set_thresholds(self, **values: float) -> None:
        """Change thresholds (score, iou, max_detections, mask) for the next frames; invalid values raise."""
        self.thresholds = replace(self.thresholds, **values)

    # -- what subclasses define -------------------------------------------------------------------
    @classmethod
    def adapt_checkpoint(cls, checkpoint: Checkpoint, path: str) -> Checkpoint:
        """The checkpoint read from ``path`` in this backend's layout. A backend that loads another
        framework's format converts it here (tensors renamed, config and metadata filled); by default the
        checkpoint is taken as it is. Raises WeightsError for a format the backend cannot convert (a
        checkpoint whose ``origin`` is not in :attr:`converts`), naming the backends that can."""
        if checkpoint.origin is not None and checkpoint.origin not in cls.converts:
            able = [name for name in list_backends() if checkpoint.origin in backend_class(name).converts]
            raise WeightsError(f"{path} is a {checkpoint.origin} checkpoint, which backend {cls.name} cannot use"
                               + (f" ({', '.join(able)} converts it)" if able else ""))
        return checkpoint

    @classmethod
    @abc.abstractmethod
    def build_network(cls, config: Any) -> nn.Module:
        """The untrained network described by ``config``."""

    def optimize_network(self, network: nn.Module) -> nn.Module:
        """An equivalent network that is faster at inference (``fast=True``): by default the re-parameterised
        copy (:func:`~panoptic_perception.nn.reparameterize.reparameterize`: BatchNorms folded into
        convolutions and whatever else the network's modules fuse or drop), with what changed logged."""
        fused = reparameterize(network)
        self.log.info("%s fast path: %s", self.name, fused.summary())
        return fused.network

    def forward(self, batch: torch.Tensor) -> Any:
        """The network part: the prepared batch (N, 3, H, W) float32 RGB in [0, 1] → tensors, in tuples or
        lists. A fixed graph, what ONNX export takes and the other runtimes run."""
        return self.network(batch)

    def finish(self, outputs: Any, batch: torch.Tensor) -> Any:
        """The part of the network kept in torch (data-dependent steps no runtime graph holds), from
        :meth:`forward`'s outputs to what :meth:`postprocess` takes; nothing by default."""
        return outputs

    @abc.abstractmethod
    def postprocess(self, outputs: Any, geometries: Sequence[Geometry]) -> list[PerceptionResult]:
        """Network outputs → one result per image, at each image's own resolution."""

    # -- running ------------------------------------------------------------------------------------
    def __call__(self, images: np.ndarray | Sequence[np.ndarray]) -> PerceptionResult | list[PerceptionResult]:
        """One image → its result; a batch → a list of results, in order.

        One image: a uint8 array of shape (H, W) or (H, W, 1) grey, (H, W, 3) BGR (OpenCV's order) or
        (H, W, 4) BGRA, any size (grey and BGRA are converted to BGR, as the node converts ``mono8`` and
        ``bgra8``). A batch: a list / tuple of such images (sizes may differ) or an (N, H, W, 3) BGR
        array. Results are at each image's own resolution. Raises
        :class:`~panoptic_perception.core.preprocess.InvalidImageError` naming the input's shape and dtype
        for anything else (float or uint16 arrays, other shapes, empty batches); the backend is unchanged
        and takes the next call.
        """
        bgr, single = as_bgr_images(images)
        results = self.process(bgr)
        return results[0] if single else results

    def process(self, images: np.ndarray | Sequence[np.ndarray]) -> list[PerceptionResult]:
        """Run what :meth:`__call__` takes (one image or a batch) → always a list of results, one per
        image. Raises InvalidImageError as :meth:`__call__` does."""
        start = time.perf_counter()
        images, _ = as_bgr_images(images)
        batch, geometries = prepare_batch(
            images, self.input_size, self.resize_mode, self.pad_value, self.device, self.channels_last
        )
        preprocessed = time.perf_counter()
        with torch.inference_mode():
            outputs = self.finish(self.run_network(batch), batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        inferred = time.perf_counter()
        results = self.postprocess(outputs, geometries)
        done = time.perf_counter()
        n = len(images)
        for result in results:
            result.timings = StageTimings(
                (preprocessed - start) * 1e3 / n, (inferred - preprocessed) * 1e3 / n, (done - inferred) * 1e3 / n, n
            )
        return results

    def extra_benchmarks(self) -> dict[str, float]:
        """Timings (ms) of the backend's own stages worth reporting beside the per-stage latency; none by
        default."""
        return {}

    def applied_thresholds(self) -> dict[str, float]:
        """The thresholds post-processing applies now, by name (those in :attr:`thresholds_used`)."""
        return {name: getattr(self.thresholds, name) for name in self.thresholds_used}

    def describe(self) -> dict[str, Any]:
        """What this backend is, for logs, reports and JSON outputs."""
        return {
            "backend": self.name,
            "capabilities": sorted(c.value for c in self.capabilities),
            "device": str(self.device),
            "input_size": list(self.input_size),
            "fast": self.fast,
            "runtime": self.runtime,
            **({"onnx": self.run_network.path} if self.runtime != "torch" else {}),
            **({"providers": self.run_network.providers} if self.runtime == "onnxruntime" else {}),
            **({"precision": self.precision} if self.runtime != "torch" else {}),
            "thresholds": self.applied_thresholds(),
            "weights": self.weights_info.to_dict(),
            # options such as output or output_stride; the input size is the one above, not the checkpoint's
            "config": {k: v for k, v in dataclasses.asdict(self.config).items() if k not in ("input_width", "input_height")},
        }

