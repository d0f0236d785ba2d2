"""INT8: an exported network part quantized with ONNX Runtime, calibrated on the user's own frames.

Calibration frames come from any source :func:`~panoptic_perception.data.sources.open_dataset` reads (a
folder of images, a video, a rosbag2 bag, ``synthetic:N``), through the backend's own pre-processing
(:func:`~panoptic_perception.core.preprocess.prepare_batch` at its input size and resize mode): what the
network sees at run time. :func:`calibration_frames` reads them once into a :class:`CalibrationSet`, whose
``digest`` (SHA-256 of the input size and of every prepared tensor) keys the cached INT8 models and the
TensorRT engines and calibration caches: a model calibrated on other frames is never reused.

:func:`quantize_onnx` is ONNX Runtime's static quantization (``onnxruntime.quantization``, not our own
code): ``quant_pre_process`` (graph optimisation and shape inference), then ``quantize_static`` in QDQ
format (ONNX Runtime fuses the DequantizeLinear / QuantizeLinear pairs into QLinearConv, QLinearAdd,
QLinearConcat, ... when it loads the model), per-channel int8 weights, uint8 activations, the calibration
method :data:`DEFAULT_METHOD`.
The quantized file keeps the export's metadata (so
:func:`~panoptic_perception.deploy.onnx_export.check_exported` still ties it to its network) and adds
``precision`` (``int8``), ``calibration`` (the digest), ``calibration_method`` and ``float_nodes``.

Choices, by measurement (README, Deployment: INT8; ``panoptic-perception quantize`` prints the report
they come from, ``--profile`` ONNX Runtime's profile per operator), on this kind of CPU (AVX2, no VNNI;
onnxruntime 1.30, 2 intra-op threads):

- Activations uint8, weights int8 (U8S8). On the bundled TwinLiteNet at 640x360, S8S8 ran at 1.3x the
  fp32 time (260.6 against 198.0 ms) where U8S8 ran at 1.03x (197.7 against 192.8 ms), with the same mask
  agreement; ``reduce_range`` (7-bit weights, against the saturation of AVX2's ``vpmaddubsw`` without
  VNNI) ran no faster (194.7 against 216.0 ms fp32, a noisy machine) and lost 0.5 points of drivable
  agreement (98.59 against 99.05 %), so it is off.
- Calibration method :data:`DEFAULT_METHOD`, percentile (99.999 %): the official TwinLiteNet weights,
  calibrated on 16 synthetic scenes and scored on the 14 real reference frames, agree with fp32 on
  99.17 % of drivable and 99.83 % of lane pixels, against 98.68 and 99.72 % with MinMax (an outlier
  stretches MinMax's scale). Entropy is not offered: ``quantize_static`` (onnxruntime 1.30) runs ONNX
  Runtime's Entropy calibrator with its defaults, 128 histogram bins for 128 quantized bins, so its search
  has one candidate, the whole range, and every activation scale is MinMax's (found in review; the
  "Entropy" figures measured earlier, 98.68 and 99.72 %, were MinMax's).
- QDQ over QOperator, for accuracy. QOperator ran faster or as fast in interleaved runs (the sessions
  alternating run by run, medians of 15-20; MinMax on 4 frames; the machine's load varied from run to
  run, so compare within a network): official TwinLiteNet 640x360 QOperator 1.40 / 1.62 / 1.25x against
  QDQ 1.18 / 1.45 / 1.14x in three runs; cross_cooperative 1.46 against 1.36x; CycleNet 1.75x both;
  YOLOPv2 0.96 / 1.11 against 1.00 / 1.10x; fusion_panoptic 1.33 against 1.49x (one run), as ONNX
  Runtime's QDQ fusion leaves more DequantizeLinear / QuantizeLinear and layout Transposes (``--profile``:
  52 against 15 DequantizeLinear on TwinLiteNet). But QOperator broke cross_cooperative: semantic pixels
  89.5 % as fp32 and semantic mIoU 80.04 → 62.53 on 200 held-out scenes (percentile), against 99.5 % with
  QDQ on 10 scenes; not QLinearResize (Resize left float: 90.0 %), mostly QLinearAdd / QLinearMul (Add and
  Mul left float: 98.2 %, still −5.2 points).
- Tried on the official TwinLiteNet and not kept (no gain beyond the noise, or a loss), in one
  interleaved QDQ run against the recipe's 1.37x: ``extra_options`` ``ForceQuantizeNoInputCheck`` 1.28x;
  ``op_types_to_quantize`` with Add, Concat, Mul, Resize, PRelu, LeakyRelu, Sigmoid and the pools 1.25x
  (ONNX Runtime has no int8 PReLU, the operator that matters here: Q/DQ around it only add work);
  without ``quant_pre_process`` 1.35x (kept for its shape inference); ``ActivationSymmetric`` 1.30x. In
  earlier runs: graph optimisation level ``ORT_ENABLE_EXTENDED`` instead of ``ALL`` (QDQ 1.19 against
  1.18x, QOperator 1.26 against 1.40x: ``ALL``'s NHWC layout for QLinearConv is worth keeping); S8S8
  with QOperator 0.47x (AVX2 without VNNI has no fast int8 × int8); on YOLOPv2 (width 0.25) the output
  convolutions quantized too (1.06 against 1.11x, QOperator) and ``ForceQuantizeNoInputCheck`` (1.10x).
- Float layers (``nodes_to_exclude``, :func:`float_nodes`): the attention (MatMul, Softmax: an N×N energy
  matrix has a range no uint8 scale covers) and each output's last layers, back to the convolution that
  writes its logits (whose argmax is a mask, whose sigmoid is a score). Measured on the official
  TwinLiteNet: quantizing these too changed the agreement by less than 0.01 points (98.69 against
  98.68 % with MinMax), so they stay float at no measurable cost or gain; what mattered was the
  calibration method.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigurationError
from .onnx_export import INPUT_NAME, META_PREFIX, ExportError, read_metadata, replace_readable

if TYPE_CHECKING:
    from ..backends.base import Backend

log = logging.getLogger("panoptic_perception.deploy")

#: ``--method`` → ONNX Runtime's ``CalibrationMethod`` name. MinMax takes the observed range; Percentile
#: (99.999 %) clips outliers, from histograms that cost memory and time. No Entropy: see the module docstring.
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile"}
DEFAULT_METHOD = "percentile"
#: Calibration frames read by default (the first of the source).
DEFAULT_FRAMES = 32
#: Operators kept in float wherever they are (see the module docstring).
FLOAT_OPERATORS = frozenset({"MatMul", "Softmax"})


@dataclass
class CalibrationSet:
    """Prepared calibration frames: ``batches`` each (1, 3, H, W) float32 RGB in [0, 1] at ``input_size``
    (W, H), ``names`` the frames' names, ``digest`` the SHA-256 that keys what is built from them."""

    source: str
    input_size: tuple[int, int]
    batches: list[np.ndarray]
    names: list[str]
    digest: str

    def frame_digests(self) -> set[str]:
        """The SHA-256 of each prepared frame (:func:`frame_digest`): what a held-out frame must not be."""
        return {frame_digest(batch) for batch in self.batches}


def prepared_frame(backend: Backend, image: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) uint8 BGR as ``backend``'s network sees it: (1, 3, h, w) float32 RGB in [0, 1] at its
    input size, through its own pre-processing."""
    from ..core.preprocess import prepare_batch

    batch, _ = prepare_batch([image], backend.input_size, backend.resize_mode, backend.pad_value)
    return np.ascontiguousarray(batch.numpy(), dtype=np.float32)


def frame_digest(prepared: np.ndarray) -> str:
    """SHA-256 of a prepared frame's bytes: the same frame under any name (a folder's PNG, a bag's message)."""
    return hashlib.sha256(prepared.tobytes()).hexdigest()


def calibration_frames(backend: Backend, source: str, limit: int = DEFAULT_FRAMES, image_topic: str | None = None,
                       progress: bool = False) -> CalibrationSet:
    """The first ``limit`` frames of ``source`` (see :func:`~panoptic_perception.data.sources.open_dataset`)
    through ``backend``'s pre-processing. Frames that cannot be decoded are skipped (logged).

    Raises:
        ConfigurationError: a malformed spec, ``limit`` below 1, or a source without one readable frame.
        FileNotFoundError: no such file or folder.
    """
    from tqdm import tqdm

    from ..data.sources import open_dataset

    if limit < 1:
        raise ConfigurationError(f"calibration needs at least 1 frame, got a limit of {limit}")
    dataset = open_dataset(source, image_topic)
    digest = hashlib.sha256(f"{backend.input_size}".encode())
    batches, names = [], []
    frames = itertools.islice(dataset, limit)
    for sample in tqdm(frames, total=min(limit, len(dataset)), desc="calibration frames", disable=not progress):
        if sample.image is None:
            log.warning("calibration: skipping %s (%s)", sample.name, sample.error)
            continue
        array = prepared_frame(backend, sample.image)
        digest.update(array.tobytes())
        batches.append(array)
        names.append(sample.name)
    if not batches:
        raise ConfigurationError(f"calibration data {source!r} holds no readable frame")
    return CalibrationSet(source, tuple(backend.input_size), batches, names, digest.hexdigest())


def float_nodes(model) -> list[str]:
    """Names of the nodes of an ONNX ``ModelProto`` kept in float (see the module docstring): every
    :data:`FLOAT_OPERATORS` node, every node writing a graph output, and the Conv / ConvTranspose nearest
    upstream of each output (through element-wise and shape operators)."""
    producer = {name: node for node in model.graph.node for name in node.output}
    keep = {node.name for node in model.graph.node if node.op_type in FLOAT_OPERATORS}
    for output in model.graph.output:
        node = producer.get(output.name)
        while node is not None:
            keep.add(node.name)
            if node.op_type in ("Conv", "ConvTranspose"):
                break
            node = next((producer[name] for name in node.input if name in producer), None)
    return sorted(keep)


class _Reader:
    """``CalibrationDataReader`` of a :class:`CalibrationSet`, with a progress bar over its frames."""

    def __init__(self, calibration: CalibrationSet, progress: bool) -> None:
        from tqdm import tqdm

        self.bar = tqdm(calibration.batches, desc="calibrating", disable=not progress)
        self.frames = iter(self.bar)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.frames, None)
        if batch is None:
            self.bar.close()
        return None if batch is None else {INPUT_NAME: batch}


def quantize_onnx(source: str | Path, output: str | Path, calibration: CalibrationSet, method: str = DEFAULT_METHOD,
                  progress: bool = False) -> Path:
    """Quantize the exported ONNX file ``source`` to ``output`` (see the module docstring), calibrated on
    ``calibration``; written through a temporary file and a rename. Returns ``output`` as a Path.

    Raises:
        ConfigurationError: an unknown ``method``.
        ExportError: ``source`` is already quantized, or ONNX Runtime cannot quantize it.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ConfigurationError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, got {method!r}")
    metadata = read_metadata(source)
    if metadata.get("precision", "fp32") != "fp32":
        raise ExportError(f"{source} is already quantized ({metadata['precision']}); quantize the float32 export")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    reader = type("CalibrationReader", (_Reader, CalibrationDataReader), {})(calibration, progress)
    with tempfile.TemporaryDirectory(dir=output.parent) as work:
        prepared, quantized = Path(work) / "prepared.onnx", Path(work) / "quantized.onnx"
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer warns on the root logger for every per-channel PReLU slope
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            excluded = float_nodes(onnx.load(str(prepared)))
            quantize_static(str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
                            nodes_to_exclude=excluded)
        except (ValueError, RuntimeError, onnx.onnx_cpp2py_export.checker.ValidationError) as error:
            raise ExportError(f"ONNX Runtime cannot quantize {source}: {error}") from error
        finally:
            root.setLevel(level)
        model = onnx.load(str(quantized))
        metadata.update(precision="int8", calibration=calibration.digest, calibration_method=method,
                        float_nodes=str(len(excluded)))
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, {META_PREFIX + key: value for key, value in metadata.items()})
        handle, temporary = tempfile.mkstemp(suffix=".onnx.partial", dir=output.parent)
        os.close(handle)
        try:
            onnx.save(model, temporary)
            replace_readable(temporary, output)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    log.info("quantized %s to %s (%s, %d frames, %d nodes in float)", source, output, method,
             len(calibration.batches), len(excluded))
    return output


def code_digest() -> str:
    """SHA-256 of this module: a changed quantization recipe makes new cached INT8 models."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

