"""ONNX export of a backend's network part, with what a runtime needs to use the file safely.

What is exported is :meth:`Backend.forward <panoptic_perception.backends.base.Backend.forward>`: the
prepared batch ``images`` (N, 3, H, W) float32 RGB in [0, 1] (as ``prepare_batch`` makes it) → the
network's tensors. Pre-processing (resize, letterbox) and post-processing (decode, NMS, masks at the input
size, panoptic fusion) stay in Python, unchanged. ``fusion_panoptic`` exports its convolutional part
(ResNet-FPN, semantic head, RPN head) and keeps the data-dependent rest in torch (proposal top-N and NMS,
RoIAlign, box and mask heads, :meth:`Backend.finish <panoptic_perception.backends.base.Backend.finish>`).
CycleNet's deformable convolution exports with standard operators (GridSample, MatMul).

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export, then onnxscript's translation and graph
optimisation), opset :data:`OPSET` (GridSample needs 16 or later). A TorchScript file as the network (the official
``yolopv2.pt``) cannot be exported: torch.export does not take TorchScript, and the TorchScript-based
exporter cannot trace a loaded TorchScript module inside the wrapper that flattens its outputs. The height and width are fixed; the
batch dimension is dynamic with ``dynamic_batch`` (the runtimes of this package always export so into their
cache). A file exported without it (batch 1) still runs when given as ``onnx_path``, but only one image at a
time: a larger batch is refused by :func:`check_batch` naming ``--dynamic-batch`` (the runtimes cannot tell
which outputs of a fixed-batch graph are per image, so they do not split batches for it).

Outputs are flat in ONNX (``output_0``, ``output_1``, ...); the nesting of ``forward``'s outputs (tuples and
lists of tensors) is stored as JSON in the model's metadata and restored by :func:`unflatten_outputs`.
Metadata (``metadata_props``, keys prefixed ``panoptic_perception.``): ``backend``, ``network`` (the
:func:`network_digest` of the exported network), ``input_size`` (``WxH``), ``dynamic_batch``, ``outputs``,
``torch``. :func:`check_exported` refuses a file whose backend, network or input size differ from the
backend's: an ONNX file of other weights is never used silently.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from ..errors import PanopticPerceptionError

if TYPE_CHECKING:
    from ..backends.base import Backend

log = logging.getLogger("panoptic_perception.deploy")

#: The ONNX opset of every export (GridSample, used by the deformable convolution, needs 16).
OPSET = 18
INPUT_NAME = "images"
META_PREFIX = "panoptic_perception."
PACKAGE = Path(__file__).resolve().parents[1]


class ExportError(PanopticPerceptionError, RuntimeError):
    """An export that cannot be made, or an ONNX file that does not belong to the backend."""


# -- output nesting -------------------------------------------------------------------------------------
def flatten_outputs(outputs: Any) -> tuple[list[torch.Tensor], Any]:
    """Nested tuples / lists of tensors → (the tensors in depth-first order, their nesting as JSON-able
    data: a leaf is its index, a tuple or list a list).

    Raises:
        ExportError: for anything but tensors, tuples and lists (e.g. dicts of detections).
    """
    tensors: list[torch.Tensor] = []

    def walk(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            tensors.append(value)
            return len(tensors) - 1
        if isinstance(value, (tuple, list)):
            return [walk(item) for item in value]
        raise ExportError(f"the exported network must return tensors in tuples or lists, got {type(value).__name__}")

    return tensors, walk(outputs)


def unflatten_outputs(tensors: Sequence[Any], structure: Any) -> Any:
    """The inverse of :func:`flatten_outputs` (lists where there were tuples)."""
    if isinstance(structure, int):
        return tensors[structure]
    return [unflatten_outputs(tensors, item) for item in structure]


# -- identity of an exported network --------------------------------------------------------------------
def code_files(module_file: str | Path) -> list[Path]:
    """The code that shapes an exported graph: the backend's module and its paper's network in ``models/``
    (same file name), ``backends/base.py`` (whose ``forward`` a backend uses unless it defines its own),
    ``nn/``, the pre-processing and this exporter."""
    network = PACKAGE / "models" / Path(module_file).name
    return [Path(module_file), *([network] if network.is_file() else []), PACKAGE / "backends" / "base.py",
            *sorted((PACKAGE / "nn").glob("*.py")), PACKAGE / "core" / "preprocess.py", Path(__file__).resolve()]


@functools.lru_cache(maxsize=None)
def _code_digest(module_file: str) -> str:
    """SHA-256 of :func:`code_files`."""
    digest = hashlib.sha256()
    for path in code_files(module_file):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def network_digest(backend: Backend) -> str:
    """SHA-256 identifying what an export of ``backend`` computes: backend name, config, fast path, input
    size, every tensor of the network's state dict (name, dtype, shape, values) and the code's digest."""
    digest = hashlib.sha256()
    header = {"backend": backend.name, "config": repr(backend.config), "fast": backend.fast,
              "input_size": list(backend.input_size)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for name, tensor in sorted(backend.network.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    digest.update(_code_digest(inspect.getfile(type(backend))).encode())
    return digest.hexdigest()


# -- export ---------------------------------------------------------------------------------------------
def replace_readable(temporary: str | Path, path: str | Path) -> None:
    """Rename a finished temporary file to ``path`` with the mode a plain ``open()`` would have given it
    (0666 less the umask): ``tempfile.mkstemp`` makes files 0600, which another user (a ROS service
    account reading the cache or an exported file) could not read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, path)


class _NetworkPart(nn.Module):
    """``backend.forward`` as a module that owns the network (so that its weights become initialisers)."""

    def __init__(self, backend: Backend) -> None:
        super().__init__()
        self.network = backend.network
        self._forward = backend.forward

    def forward(self, images: torch.Tensor):
        return tuple(flatten_outputs(self._forward(images))[0])


def export_onnx(backend: Backend, path: str | Path, *, dynamic_batch: bool = False, opset: int = OPSET) -> Path:
    """Export ``backend``'s network part (see the module docstring) at its input size to ``path``, checked
    with ``onnx.checker`` (full check, with shape inference). Written to a temporary file in the same
    folder first, then renamed (:func:`replace_readable`, mode as the umask says): a reader never sees half
    a file.

    Returns:
        ``path`` as a Path.

    Raises:
        ExportError: a network that torch cannot export (a TorchScript file as weights) or outputs
            that are not tensors.
    """
    import onnx

    if isinstance(backend.network, torch.jit.ScriptModule):
        raise ExportError(f"backend {backend.name} runs a TorchScript file, which torch cannot export to ONNX "
                          "(torch.export does not take TorchScript); run it with runtime torch")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = backend.input_size
    # A batch of 2: torch.export specialises a dimension of size 1 and would refuse a dynamic batch.
    example = torch.rand(2 if dynamic_batch else 1, 3, height, width, device=backend.device)
    with torch.inference_mode():
        _, structure = flatten_outputs(backend.forward(example))
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=1024)},) if dynamic_batch else None
    handle, temporary = tempfile.mkstemp(suffix=".onnx.partial", dir=path.parent)
    os.close(handle)
    try:
        output_names = [f"output_{i}" for i in range(_count_leaves(structure))]
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporters' deprecation and tracing chatter, and progress lines
            model = torch.onnx.export(
                _NetworkPart(backend).eval(), (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=output_names, dynamic_shapes=dynamic_shapes, verbose=False,
            ).model_proto
        metadata = {
            "backend": backend.name, "network": network_digest(backend), "input_size": f"{width}x{height}",
            "dynamic_batch": json.dumps(dynamic_batch), "outputs": json.dumps(structure), "torch": torch.__version__,
        }
        onnx.helper.set_model_props(model, {META_PREFIX + key: value for key, value in metadata.items()})
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, temporary)
        replace_readable(temporary, path)
    except Exception as error:  # torch.export's and onnxscript's many error types
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"cannot export backend {backend.name} to ONNX: {first}") from error
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    log.info("%s: exported to %s (opset %d, %dx%d, dynamic batch %s)", backend.name, path, opset, width, height, dynamic_batch)
    return path


def _count_leaves(structure: Any) -> int:
    return 1 if isinstance(structure, int) else sum(_count_leaves(item) for item in structure)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``panoptic_perception.*`` metadata of an ONNX file (prefix removed; the graph is not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def check_batch(path: str | Path, fixed_batch: int | None, size: int) -> None:
    """Raises ValueError for a batch of ``size`` images given to a file exported with a fixed batch
    (``fixed_batch``, 1 without ``--dynamic-batch``; None: dynamic, anything goes)."""
    if fixed_batch is not None and size != fixed_batch:
        raise ValueError(f"{path} was exported for a batch of {fixed_batch} (without --dynamic-batch), got {size} "
                         "images: export it with --dynamic-batch to run batches, or give it one image at a time")


def check_exported(path: str | Path, backend: Backend) -> dict[str, str]:
    """The metadata of ``path`` if it is an export of exactly ``backend``'s network at its input size.

    Raises:
        FileNotFoundError: no such file.
        ExportError: a file not made by :func:`export_onnx`, or made for another backend, other weights,
            config, code or input size (the message says which).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        metadata = read_metadata(path)
    except Exception as error:  # protobuf's decode errors
        raise ExportError(f"{path} is not a readable ONNX file: {error}") from error
    width, height = backend.input_size
    if "network" not in metadata:
        raise ExportError(f"{path} was not exported by panoptic-perception (no network metadata)")
    if metadata.get("backend") != backend.name:
        raise ExportError(f"{path} is an export of backend {metadata.get('backend')!r}, not {backend.name!r}")
    if metadata.get("input_size") != f"{width}x{height}":
        raise ExportError(f"{path} takes {metadata.get('input_size')} inputs, the backend {width}x{height}")
    if metadata["network"] != network_digest(backend):
        raise ExportError(f"{path} was exported from another network than this backend's (other weights, options, "
                          "fast path or package version): export it again")
    return metadata
