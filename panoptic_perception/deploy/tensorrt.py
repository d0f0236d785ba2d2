"""TensorRT engines built from the exported ONNX files, cached on disk, and run on torch CUDA tensors.

Needs a CUDA device and the ``tensorrt`` Python package (``pip install -e .[tensorrt]``, 10.x or 11.x);
without them :func:`check_tensorrt` raises RuntimeUnavailableError saying which is missing.

Engine cache (``<cache>/tensorrt/``): an engine is keyed by :func:`engine_key`, the SHA-256 of the ONNX
file, the TensorRT version, the GPU (name and compute capability), the precision and the largest batch.
The key's hash names the file (``<onnx stem>-<precision>-<hash>.engine``) and a sidecar ``.json`` records
the key and the engine's own SHA-256. :func:`cached_engine` uses an engine only when the sidecar holds
exactly the expected key and the engine file still has its recorded hash; anything else (another ONNX
file, TensorRT version or GPU, a missing or edited sidecar, a truncated engine) is logged and rebuilt, never
used. An engine that TensorRT then fails to deserialise is rebuilt too.

Precision: ``fp32``; ``fp16`` sets TensorRT 10's FP16 builder flag, and on TensorRT 11 (strongly typed
networks only) builds from an fp16 copy of the ONNX graph with float32 inputs and outputs (ONNX Runtime's
``convert_float_to_float16``, whose inserted Casts :func:`sort_topologically` puts back in graph order:
:func:`fp16_model`). ``int8`` (TensorRT 10, whose builder still has implicit quantization) sets the INT8
flag (and FP16, for the layers INT8 does not serve) with :func:`entropy_calibrator`, an
``IInt8EntropyCalibrator2`` over the calibration frames
(:class:`~panoptic_perception.deploy.quantize.CalibrationSet`, the same the ONNX Runtime model is calibrated
on); its calibration cache (``<cache>/tensorrt/<onnx stem>-<onnx SHA-256>-<frames digest>.calibration``: a network exported again under
the same name, with other weights, is calibrated again,
:func:`calibration_cache_path`) is written once and read by every later build, so a rebuild (another
TensorRT version or GPU, a damaged engine) never calibrates again. The frames' digest is in the engine's
key. TensorRT 11 (strongly typed networks only) has no calibrator: int8 raises RuntimeUnavailableError
there. Profiles: batch 1 (optimised) to :data:`MAX_BATCH`, the exported height and
width. A file exported without a dynamic batch (batch 1, given as ``onnx_path``) builds an engine of that
fixed batch (no profile; ``max_batch`` 1 in its key), which takes one image at a time: a larger batch is
refused naming ``--dynamic-batch``
(:func:`~panoptic_perception.deploy.onnx_export.check_batch`). A dynamic-batch engine runs a batch larger
than its ``max_batch`` in consecutive chunks (:func:`batch_chunks`, :func:`join_chunks`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ..core.io import sha256_of
from .onnx_export import INPUT_NAME, check_batch, replace_readable, unflatten_outputs
from .runtime import RuntimeUnavailableError

if TYPE_CHECKING:
    from .quantize import CalibrationSet

log = logging.getLogger("panoptic_perception.deploy")

MAX_BATCH = 8
WORKSPACE_BYTES = 2 << 30


def check_tensorrt(device: torch.device) -> None:
    """Raises RuntimeUnavailableError unless ``device`` is a CUDA device and the ``tensorrt`` package imports."""
    if device.type != "cuda":
        raise RuntimeUnavailableError(f"runtime tensorrt needs a CUDA device, got {device}")
    try:
        import tensorrt  # noqa: F401
    except ImportError as error:
        raise RuntimeUnavailableError("runtime tensorrt needs the tensorrt package: pip install -e .[tensorrt]") from error


def gpu_identity(device: torch.device) -> str:
    """The GPU an engine is built for: name and compute capability (engines are specific to both)."""
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (sm_{major}{minor})"


def engine_key(onnx_path: str | Path, tensorrt_version: str, gpu: str, precision: str, max_batch: int = MAX_BATCH,
               calibration: str | None = None) -> dict[str, str]:
    """What an engine depends on, as recorded in its sidecar (``calibration``: the INT8 frames' digest)."""
    return {"onnx_sha256": sha256_of(onnx_path), "tensorrt": tensorrt_version, "gpu": gpu, "precision": precision,
            "max_batch": str(max_batch), **({"calibration": calibration} if calibration else {})}


def calibration_cache_path(cache: str | Path, onnx_path: str | Path, calibration: CalibrationSet) -> Path:
    """Where the calibration cache of ``onnx_path`` on ``calibration`` lives (see the module docstring)."""
    return Path(cache) / f"{Path(onnx_path).stem}-{sha256_of(onnx_path)[:16]}-{calibration.digest[:32]}.calibration"


def entropy_calibrator(calibration: CalibrationSet, cache_path: Path, device: torch.device):
    """A ``tensorrt.IInt8EntropyCalibrator2`` feeding ``calibration``'s frames one at a time from ``device``
    memory, and reading / writing its cache at ``cache_path`` (written through a temporary file and a
    rename); a cache present means TensorRT asks for no frame at all."""
    import tensorrt as trt

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.frames = iter(calibration.batches)
            self.current: torch.Tensor | None = None  # kept alive while TensorRT reads it
            self.used = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            frame = next(self.frames, None)
            if frame is None:
                return None
            self.current = torch.from_numpy(frame).to(device).contiguous()
            self.used += 1
            return [int(self.current.data_ptr())]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: bytes) -> None:
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=cache_path.parent, suffix=".partial")
            with os.fdopen(handle, "wb") as f:
                f.write(bytes(cache))
            replace_readable(temporary, cache_path)

    return EntropyCalibrator()


def engine_path(cache: str | Path, onnx_path: str | Path, key: dict[str, str]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return Path(cache) / f"{Path(onnx_path).stem}-{key['precision']}-{digest}.engine"


def cached_engine(path: Path, key: dict[str, str]) -> bytes | None:
    """The engine at ``path`` if its sidecar records exactly ``key`` and the engine's hash; else None (with
    the reason logged)."""
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        return None
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError) as error:
        log.warning("TensorRT engine %s: unreadable sidecar (%s); rebuilding", path, error)
        return None
    if recorded.get("key") != key:
        log.warning("TensorRT engine %s was built for %s, not %s; rebuilding", path, recorded.get("key"), key)
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != recorded.get("engine_sha256"):
        log.warning("TensorRT engine %s changed since it was built; rebuilding", path)
        return None
    return data


def store_engine(path: Path, key: dict[str, str], data: bytes) -> None:
    """Write the engine and its sidecar (each through a temporary file and a rename, readable as the umask
    says: :func:`~panoptic_perception.deploy.onnx_export.replace_readable`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {"key": key, "engine_sha256": hashlib.sha256(data).hexdigest()}
    for target, content in ((path, data), (path.with_suffix(".json"), json.dumps(sidecar, indent=2).encode())):
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".partial")
        with os.fdopen(handle, "wb") as f:
            f.write(content)
        replace_readable(temporary, target)


def sort_topologically(graph: Any) -> None:
    """Reorder the nodes of an ONNX ``GraphProto`` in place so that each comes after the nodes whose outputs
    it reads (``onnx.checker`` and TensorRT's parser require it), keeping the original order where it
    already is one.

    Raises:
        ValueError: a graph with a cycle.
    """
    nodes = list(graph.node)
    producer = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    needs = [{producer[name] for name in node.input if name in producer} - {i} for i, node in enumerate(nodes)]
    users: dict[int, list[int]] = {}
    for i, inputs in enumerate(needs):
        for j in inputs:
            users.setdefault(j, []).append(i)
    waiting = [len(inputs) for inputs in needs]
    ready = [i for i, count in enumerate(waiting) if count == 0]  # a heap: the earliest ready node next
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for user in users.get(i, ()):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(nodes):
        raise ValueError(f"the ONNX graph {graph.name!r} has a cycle")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def fp16_model(model: Any) -> Any:
    """An fp16 copy of an ONNX ``ModelProto`` with float32 inputs and outputs, for TensorRT 11's strongly
    typed networks: ONNX Runtime's ``convert_float_to_float16``, which appends the Casts it inserts at the
    end of the graph, then :func:`sort_topologically`."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(model, keep_io_types=True)
    sort_topologically(model.graph)
    return model


def batch_chunks(size: int, max_batch: int) -> list[slice]:
    """A batch of ``size`` images as consecutive slices of at most ``max_batch`` (an engine's largest batch)."""
    if size < 1 or max_batch < 1:
        raise ValueError(f"a batch of {size} in chunks of {max_batch}: both must be at least 1")
    return [slice(start, min(start + max_batch, size)) for start in range(0, size, max_batch)]


def join_chunks(chunks: Sequence[Sequence[torch.Tensor]], batched: Sequence[bool]) -> list[torch.Tensor]:
    """The flat outputs of one batch from those of its chunks (each a list of tensors, output by output):
    a batched output (``batched[i]``: its first dimension is the batch) concatenated along dimension 0, any
    other (the same for every chunk, e.g. an anchor grid) taken from the first chunk."""
    if len(chunks) == 1:  # the usual case: no copy
        return list(chunks[0])
    return [torch.cat([chunk[i] for chunk in chunks]) if per_image else chunks[0][i] for i, per_image in enumerate(batched)]


def build_engine(onnx_path: str | Path, precision: str, max_batch: int = MAX_BATCH, calibrator: Any = None) -> bytes:
    """A serialised TensorRT engine of the ONNX file (see the module docstring for fp16 and int8, whose
    ``calibrator`` is :func:`entropy_calibrator`'s): batches of 1 to ``max_batch`` for a dynamic batch, the
    file's own batch for a fixed one.

    Raises:
        RuntimeError: the parser's or the builder's errors.
        RuntimeUnavailableError: int8 on a TensorRT without the INT8 builder flag (11 and later).
    """
    import onnx
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    weakly_typed = hasattr(trt.BuilderFlag, "FP16")  # TensorRT 10; 11 has strongly typed networks only
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    model = onnx.load(str(onnx_path))
    if precision == "fp16" and not weakly_typed:
        model = fp16_model(model)
    if not parser.parse(model.SerializeToString(), str(Path(onnx_path).parent)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision == "fp16" and weakly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not weakly_typed:
            raise RuntimeUnavailableError(f"TensorRT {trt.__version__} builds strongly typed networks only and has no INT8 "
                                          "calibrator: run INT8 with runtime onnxruntime, or TensorRT 10")
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.FP16)  # layers without an INT8 kernel run fp16 rather than fp32
        config.int8_calibrator = calibrator
    images = network.get_input(0)
    if images.shape[0] == -1:  # a dynamic batch needs a profile; a fixed one (no --dynamic-batch) has its shape
        shape = tuple(images.shape)[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(images.name, (1, *shape), (1, *shape), (max_batch, *shape))
        config.add_optimization_profile(profile)
        if precision == "int8":  # the calibrator's batches of 1
            config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    return bytes(serialized)


class TensorRTNetwork:
    """An exported network part as a TensorRT engine (cached, see the module docstring).

    ``__call__(batch)``: (N, 3, H, W) float32 CUDA tensor (run in chunks of at most ``max_batch``,
    :data:`MAX_BATCH`; a file exported without a dynamic batch takes exactly its batch) → ``forward``'s
    outputs as float32 tensors on the device, nested as ``forward`` nests them.

    Raises:
        RuntimeUnavailableError: no CUDA device or no ``tensorrt`` package.
        RuntimeError: an engine that cannot be built; when called, a shape the engine refuses or a failed run.
    """

    def __init__(self, onnx_path: str | Path, device: torch.device, structure: str, precision: str, cache: Path,
                 max_batch: int = MAX_BATCH, calibration: CalibrationSet | None = None) -> None:
        check_tensorrt(device)
        import tensorrt as trt

        if (precision == "int8") != (calibration is not None):
            raise ValueError("a TensorRT engine takes calibration frames for precision int8, and only then")
        self.path, self.device, self.structure = str(onnx_path), device, json.loads(structure)
        key = engine_key(onnx_path, trt.__version__, gpu_identity(device), precision, max_batch,
                         calibration.digest if calibration else None)
        self.calibration_cache = calibration_cache_path(cache, onnx_path, calibration) if calibration else None
        path = engine_path(cache, onnx_path, key)
        self.engine_path = path
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        data = cached_engine(path, key)
        engine = runtime.deserialize_cuda_engine(data) if data is not None else None
        if engine is None:
            log.info("building the TensorRT engine %s (%s)", path, precision)
            calibrator = entropy_calibrator(calibration, self.calibration_cache, device) if calibration else None
            with torch.cuda.device(device):
                data = build_engine(onnx_path, precision, max_batch, calibrator)
            store_engine(path, key, data)
            engine = runtime.deserialize_cuda_engine(data)
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        outputs = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT]
        self.outputs = sorted(outputs, key=lambda name: int(name.rsplit("_", 1)[1]))  # output_0, output_1, ...
        self.batched = [engine.get_tensor_shape(name)[0] == -1 for name in self.outputs]  # -1: the dynamic batch
        batch = engine.get_tensor_shape(INPUT_NAME)[0]
        self.fixed_batch = None if batch == -1 else batch
        self.max_batch = max_batch

    def __call__(self, batch: torch.Tensor):
        check_batch(self.path, self.fixed_batch, batch.shape[0])
        images = batch.to(self.device, torch.float32).contiguous()
        chunks = [self._run(images[part]) for part in batch_chunks(len(images), self.max_batch)]
        return unflatten_outputs(join_chunks(chunks, self.batched), self.structure)

    def _run(self, images: torch.Tensor) -> list[torch.Tensor]:
        """One execution: a contiguous (n, 3, H, W) float32 CUDA batch, n <= ``max_batch`` → the flat outputs.

        Raises:
            RuntimeError: a shape the engine does not take, or a failed execution.
        """
        if not self.context.set_input_shape(INPUT_NAME, tuple(images.shape)):
            raise RuntimeError(f"TensorRT engine {self.engine_path} does not take an input of shape {tuple(images.shape)} "
                               f"(batches up to {self.max_batch} at the exported height and width)")
        self.context.set_tensor_address(INPUT_NAME, images.data_ptr())
        results = []
        for name in self.outputs:
            output = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=torch.float32, device=self.device)
            self.context.set_tensor_address(name, output.data_ptr())
            results.append(output)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to run {self.engine_path}")
        stream.synchronize()
        return results
