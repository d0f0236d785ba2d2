"""Reading and writing weights safely.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: tensors and plain containers,
never arbitrary pickled objects. Accepted layouts: a plain state dict (optionally saved from
``DataParallel``, keys prefixed ``module.``), a ``{"state_dict": ...}`` / ``{"model": ...}`` training
checkpoint, this project's format (:func:`save_checkpoint`), which also records the backend name,
its architecture config and metadata such as validation metrics, and the trainer's resume state
(``last.pth``: its EMA weights where it keeps an EMA, else the model's, with the backend and config).

Detectron2's ``.pkl`` checkpoints (its model zoo's format: a pickle of ``{"model": {name: numpy array},
"__author__": ..., ...}``, of any pickle protocol) are plain pickles that ``torch.load`` refuses; they are
read by an unpickler that resolves only numpy's array-reconstruction functions, ``numpy.ndarray``, ``numpy.dtype``,
``collections.OrderedDict`` and the byte-string helpers of Python 2 pickles, and refuses any other global
before anything could call it, so no code in the file runs. Their tensors keep Detectron2's names
(``Checkpoint.origin`` is ``"Detectron2"``); a backend that knows the layout converts them
(:meth:`~panoptic_perception.backends.base.Backend.adapt_checkpoint`). A file that is neither fails
with one line saying what it is (ANSI escapes of torch's messages removed).
"""

from __future__ import annotations

import codecs
import collections
import copy
import functools
import io
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import PanopticPerceptionError

CHECKPOINT_FORMAT = "panoptic_perception.checkpoint/1"
TRAINING_STATE_FORMAT_PREFIX = "panoptic_perception.training_state/"  # the trainer's last.pth (resume state)
MODULE_PREFIX = "module."
_LISTED = 8  # keys named per category in an error message
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class WeightsError(PanopticPerceptionError, RuntimeError):
    """Weights that are missing, unreadable, or do not fit the architecture."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backend's weights came from."""

    source: str  # "file", "bundled", "torchscript", "random" or "in-memory network"
    path: str | None = None
    sha256: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "path": self.path, "sha256": self.sha256}


@dataclass
class Checkpoint:
    """Tensors by name, and what the file says about them: the backend they belong to, its config, metadata;
    ``origin`` names another framework's format (``"Detectron2"``) whose names a backend must convert."""

    state_dict: dict[str, torch.Tensor]
    backend: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    origin: str | None = None


def bundled_weights_path(name: str) -> Path:
    """Path of a checkpoint shipped inside the package (``panoptic_perception/weights/``).

    The package may span several folders (the generated ROS interfaces installed beside a pip
    install): every one of them is searched.
    """
    import panoptic_perception

    candidates = [Path(folder) / "weights" / name for folder in panoptic_perception.__path__]
    for path in candidates:
        if path.is_file():
            return path
    raise WeightsError(f"bundled weights {name} are not installed (looked in {', '.join(map(str, candidates))})")


def is_torchscript_archive(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): a zip with ``code/`` and ``constants.pkl``.

    ``torch.save`` zips hold ``data.pkl`` but no ``code/`` folder, so the two never match.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in name for name in names) and any(name.endswith("constants.pkl") for name in names)


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if all(k.startswith(MODULE_PREFIX) for k in state_dict):
        return {k[len(MODULE_PREFIX) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


@functools.lru_cache(maxsize=None)
def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals a pickle of numpy arrays needs, by (module, name) as pickles spell them: numpy 2 renamed
    ``numpy.core`` to ``numpy._core``, and files written before name the old module."""
    core = getattr(np, "_core", None) or np.core
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): codecs.encode,  # byte strings of protocol-2 pickles
        ("builtins", "bytes"): bytes,
        ("__builtin__", "bytes"): bytes,
    }
    for module in ("numpy.core", "numpy._core"):
        allowed[(f"{module}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{module}.multiarray", "scalar")] = core.multiarray.scalar
        allowed[(f"{module}.numeric", "_frombuffer")] = core.numeric._frombuffer
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle naming a global that :class:`_NumpyUnpickler` does not resolve."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class _NumpyUnpickler(pickle.Unpickler):
    """Numpy arrays in plain containers, nothing else: ``find_class`` resolves only :func:`_numpy_globals`
    (pickle calls nothing it did not get from there), and without ``persistent_load`` a persistent id
    (torch's legacy storages) raises."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _numpy_globals()[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def _reason(error: Exception) -> str:
    """One line on why ``torch.load`` failed: the global its weights-only unpickler refused, or that
    unpickler's own reason, or the first line of the message; without ANSI escapes."""
    text = _ANSI_ESCAPE.sub("", str(error))
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return f"it refers to the Python object {refused.group(1)}, which a weights-only load does not create"
    unpickler = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if unpickler:
        return f"torch's weights-only unpickler: {unpickler.group(1).strip()}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}{': ' + first if first else ''}"


def _read_plain_pickle(path: Path, torch_error: Exception) -> Checkpoint:
    """A pickle that ``torch.load`` refused, read as numpy arrays in plain containers: Detectron2's format.

    Raises:
        WeightsError: naming the global the file needs where it needs another, saying what a Detectron /
            Caffe2 pickle is, and otherwise giving torch's reason.
    """
    try:
        with path.open("rb") as file:
            obj = _NumpyUnpickler(file, encoding="latin1").load()  # latin1: Python 2 pickles, as Detectron2 reads them
    except _RefusedGlobal as refused:
        raise WeightsError(f"cannot read {path}: a pickle that refers to the Python object {refused.name}, which is "
                           f"not loaded (only tensors and numpy arrays in plain containers are: torch.save "
                           f"checkpoints, Detectron2 .pkl files)") from None
    except Exception:  # not a plain pickle either: torch's reason is the one to give
        raise WeightsError(f"cannot read {path} as a weights-only PyTorch checkpoint: {_reason(torch_error)}") from torch_error
    caffe2 = isinstance(obj, Mapping) and obj and "model" not in obj and (
        "blobs" in obj or all(isinstance(v, np.ndarray) for v in obj.values()))  # Detectron's, or an ImageNet model's
    if caffe2:
        raise WeightsError(f"{path} is a Detectron / Caffe2 checkpoint (numpy blobs with Caffe2 names), which is not "
                           f"supported: Detectron2 .pkl files and torch.save checkpoints are")
    if isinstance(obj, int) and obj == torch.serialization.MAGIC_NUMBER:  # torch.save's format before zip archives
        raise WeightsError(f"cannot read {path} as a weights-only PyTorch checkpoint: {_reason(torch_error)}") from torch_error
    if not (isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping)):
        raise WeightsError(f"cannot read {path}: a pickle of a {type(obj).__name__}, neither a torch.save checkpoint nor "
                           f"a Detectron2 one (a dict with a \"model\" dict of numpy arrays)")
    model = obj["model"]
    numeric = {k: np.asarray(v) for k, v in model.items() if isinstance(v, (np.ndarray, np.generic))}
    others = sorted(str(k) for k in model if k not in numeric or numeric[k].dtype.kind not in "biuf")
    if others:
        raise WeightsError(f"{path} is a pickle in Detectron2's layout whose model holds entries that are not "
                           f"numeric arrays: {_listing(others)}")
    state = {str(k): torch.from_numpy(v.copy()) for k, v in numeric.items()}  # copy: the buffers may be read-only
    return Checkpoint(state, metadata={"author": str(obj.get("__author__", ""))}, origin="Detectron2")


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a weights-only checkpoint or a Detectron2 ``.pkl`` (module docstring); raise :class:`WeightsError`
    with a one-line reason otherwise."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    with path.open("rb") as file:
        head = file.read(4)
        file.seek(max(file.seek(0, io.SEEK_END) - 1, 0))
        last = file.read(1)
    # torch.save writes a zip archive (since torch 1.6) or, before, a pickle (protocol 2+: b"\x80"). A pickle of
    # protocol 0 or 1 (Python 2's default) has no header but ends with the STOP opcode "."; it is read as below.
    if not (head == b"PK\x03\x04" or head[:1] == b"\x80" or last == b"."):
        raise WeightsError(f"cannot read {path} as a weights-only PyTorch checkpoint: not a file torch.save wrote "
                           f"(neither a zip archive nor a pickle)")
    try:
        with warnings.catch_warnings():  # a pickle of another protocol is not torch's to warn about: read below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or unsafe files
        if head != b"PK\x03\x04":
            return _read_plain_pickle(path, error)
        raise WeightsError(f"cannot read {path} as a weights-only PyTorch checkpoint: {_reason(error)}") from error
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        return Checkpoint(
            _strip_module_prefix(obj["state_dict"]),
            obj.get("backend"),
            dict(obj.get("config", {})),
            dict(obj.get("metadata", {})),
        )
    if isinstance(obj, Mapping) and str(obj.get("format", "")).startswith(TRAINING_STATE_FORMAT_PREFIX):
        # The trainer's last.pth: its EMA weights, when kept, are what validation scored and best.pth holds.
        weights = obj["ema"]["model"] if obj.get("ema") else obj["model"]
        return Checkpoint(_strip_module_prefix(weights), obj.get("backend"), dict(obj.get("config", {})),
                          {"epoch": obj.get("epoch")})
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and _is_state_dict(obj.get(key)):
            return Checkpoint(_strip_module_prefix(obj[key]))
    if _is_state_dict(obj):
        return Checkpoint(_strip_module_prefix(obj))
    raise WeightsError(f"{path} does not contain a state dict (found {type(obj).__name__})")


def save_checkpoint(
    path: str | Path,
    backend: str,
    state_dict: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write weights in this project's format, loadable by :func:`read_checkpoint`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "backend": backend,
        "config": dict(config),
        "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in state_dict.items()},
    }
    torch.save(payload, path)
    return path


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LISTED])
    return shown + (f", ... ({len(items) - _LISTED} more)" if len(items) > _LISTED else "")


def _meta_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and buffers are meta tensors (shapes only, no data): loading
    into it runs every module's own loading rules without touching ``module``."""
    memo: dict[int, Any] = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
                            for p in module.parameters()}
    memo.update((id(b), torch.empty_like(b, device="meta")) for b in module.buffers())
    return copy.deepcopy(module, memo)


def load_state_dict_strictly(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module``: every entry the module loads must be there with its shape and every
    entry of ``state_dict`` must be one the module loads, as ``nn.Module.load_state_dict(strict=True)``
    decides it: the modules' own loading rules count, so e.g. the ``num_batches_tracked`` entries that
    :class:`~panoptic_perception.nn.resnet.FrozenBatchNorm2d` ignores (every checkpoint trained with
    ``nn.BatchNorm2d`` has them) are not unexpected.

    Raises:
        WeightsError: naming the missing, unexpected and mis-shaped keys (``source`` says whose); ``module``
            is then unchanged.
    """
    expected = module.state_dict()
    misshaped_keys = {k for k in expected.keys() & state_dict.keys() if state_dict[k].shape != expected[k].shape}
    # A dry run on a data-less copy: which keys the modules take and which they lack.
    fitting = {k: v for k, v in state_dict.items() if k not in misshaped_keys}
    result = _meta_copy(module).load_state_dict(fitting, strict=False, assign=True)
    missing = sorted(set(result.missing_keys) - misshaped_keys)
    unexpected = sorted(result.unexpected_keys)
    misshaped = [f"{k} (checkpoint {tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)})"
                 for k in sorted(misshaped_keys)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if misshaped:
        problems.append(f"{len(misshaped)} mis-shaped keys: {_listing(misshaped)}")
    if problems:
        raise WeightsError(f"weights {source} do not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state_dict)
