"""Reading and writing weights safely.

Checkpoints are read with ``torch.load(..., weights_only=True)`` only: tensors and plain containers,
never arbitrary pickled objects. Accepted layouts: a plain state dict (optionally saved from
``DataParallel``, keys prefixed ``module.``), a ``{"state_dict": ...}`` / ``{"model": ...}`` training
checkpoint, this project's format (:func:`save_checkpoint`), which also records the backend name,
its architecture config and metadata such as validation metrics, and the trainer's resume state
(``last.pth``: its EMA weights where it keeps an EMA, else the model's, with the backend and config).
"""

from __future__ import annotations

import copy
import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

CHECKPOINT_FORMAT = "panoptic_perception.checkpoint/1"
TRAINING_STATE_FORMAT_PREFIX = "panoptic_perception.training_state/"  # the trainer's last.pth (resume state)
MODULE_PREFIX = "module."
_LISTED = 8  # keys named per category in an error message


class WeightsError(RuntimeError):
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
    state_dict: dict[str, torch.Tensor]
    backend: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a weights-only checkpoint; raise :class:`WeightsError` with a clear reason otherwise."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    with path.open("rb") as file:
        head = file.read(4)
    # torch.save writes a zip archive (since torch 1.6) or, before, a pickle (protocol 2+: b"\x80").
    if not (head == b"PK\x03\x04" or head[:1] == b"\x80"):
        raise WeightsError(f"cannot read {path} as a weights-only PyTorch checkpoint: not a file torch.save wrote "
                           f"(neither a zip archive nor a pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for foreign or unsafe files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise WeightsError(f"cannot read {path} as a weights-only PyTorch checkpoint: "
                           f"{type(error).__name__}{': ' + reason if reason else ''}") from error
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
